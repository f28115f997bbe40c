//! The namespace test harness the whole suite stands on.
//!
//! It builds small topologies (namespaces, veth pairs, addresses, routes),
//! runs commands and daemons inside a namespace (and optionally inside a
//! cgroup), captures packets with tcpdump, and tears everything down on every
//! exit path: each resource is a guard whose `Drop` removes it, so a failing
//! assertion (a panic) cleans up as well as a pass. Every name carries the
//! `vpnt-<pid>-` prefix, so two runs never collide and leftovers of a killed
//! run are recognised (and swept) by the next one.
//!
//! Namespaces are entered with `setns(2)` in the child before `exec`, not with
//! `ip netns exec`, which remounts /sys and so hides the cgroup and bpffs
//! mounts the tests need.
//!
//! It is the crate `vpn-harness` (library `netns_harness`), used by the
//! end-to-end suite (`tests/`), `cargo xtask bench` and the steering
//! benchmark example; it depends on no part of vpn. Besides this file:
//! [`packet`] (Ethernet/IP/TCP/UDP fixtures) and, with the `bpf` feature,
//! [`bpf`] (running a loaded program with BPF_PROG_TEST_RUN).
#[cfg(feature = "bpf")]
pub mod bpf;
pub mod packet;

use std::{
    fs::{self, File},
    io::{BufRead, BufReader, Write},
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

/// Prefix of everything the harness creates.
pub const PREFIX: &str = "vpnt";

static COUNTER: AtomicU32 = AtomicU32::new(0);
static SWEPT: std::sync::Once = std::sync::Once::new();

/// A unique short name: `vpnt-<pid>-<n>` (fits interface names for pid < 10^7).
pub fn unique() -> String {
    SWEPT.call_once(sweep_stale);
    format!(
        "{PREFIX}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

static IFACE_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique interface name of at most 15 bytes, `vt<pid % 100000><tag><n>`
/// (UAPI sockets and /run/vpn are shared by every namespace, so names must
/// differ across the whole suite: each file uses its own tag letters).
pub fn ifname(tag: char) -> String {
    format!(
        "vt{}{tag}{}",
        std::process::id() % 100_000,
        IFACE_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls `f` every 10 ms until it holds; panics naming `what` after
/// `timeout`. Returns how long it took.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

/// A live process with this id (zombies count as dead).
pub fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// A scratch directory in the temp dir, removed with its contents on drop.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    /// Creates `<tmp>/vpnt-<pid>-<n>`.
    ///
    /// # Errors
    /// If the directory cannot be created.
    pub fn new() -> Result<Self> {
        let p = std::env::temp_dir().join(unique());
        fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(Self(p))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes a file readable by root only (keys, wg-quick files: wg-quick
    /// warns about anything looser) and returns its path.
    ///
    /// # Panics
    /// If the file cannot be written (a test helper: the test fails there).
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.0.join(name);
        fs::write(&p, text).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Python for an "internet" host: listens on `argv[1]`:8080 and prints
/// `seen <peer address> <first line it sent>` per connection, so a test
/// sees which source address arrived (the tunnel's, or the underlay's).
pub const REPORTER_PY: &str = r#"
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 8080)); s.listen(16)
print("listening", flush=True)
while True:
    c, (addr, _) = s.accept()
    c.settimeout(2)
    try:
        msg = c.recv(128).decode(errors="replace").strip()
    except OSError:
        msg = ""
    print("seen", addr, msg, flush=True)
    c.close()
"#;

fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?
        .strip_prefix('-')?
        .split('-')
        .next()?
        .parse()
        .ok()
}

fn dead(name: &str) -> bool {
    owner_pid(name).is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
}

/// Removes namespaces, cgroups and pins left by runs whose process is gone.
pub fn sweep_stale() {
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            let name = l.split_whitespace().next().unwrap_or("");
            if dead(name) {
                let _ = Command::new("ip").args(["netns", "del", name]).status();
            }
        }
    }
    if let Ok(mount) = cgroup2_mount() {
        for_each_prefixed(&mount, |p| {
            if dead(&p.file_name().unwrap_or_default().to_string_lossy()) {
                remove_cgroup_tree(p);
            }
        });
    }
    for_each_prefixed(Path::new("/sys/fs/bpf"), |p| {
        if dead(&p.file_name().unwrap_or_default().to_string_lossy()) {
            let _ = fs::remove_dir_all(p);
        }
    });
    // Scratch directories and daemon output files.
    for_each_prefixed(&std::env::temp_dir(), |p| {
        if dead(&p.file_name().unwrap_or_default().to_string_lossy()) {
            let _ = fs::remove_dir_all(p).or_else(|_| fs::remove_file(p));
        }
    });
}

fn for_each_prefixed(dir: &Path, mut f: impl FnMut(&Path)) {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(PREFIX) {
                f(&e.path());
            }
        }
    }
}

/// Runs a command, returning stdout; fails with stderr on a non-zero exit.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("spawning {cmd:?}"))?;
    check(cmd, &out)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn check(cmd: &Command, out: &Output) -> Result<()> {
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// `ip ARGS...` in the host namespace (only ever on the harness's own objects).
pub fn ip(args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(args))
}

/// A network namespace, deleted (with its interfaces) on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// A new namespace with `lo` up.
    pub fn new() -> Result<Self> {
        let name = unique();
        ip(&["netns", "add", &name])?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `ip -n NS ARGS...`
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// A `Command` that runs inside this namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.command_in(program, None)
            .expect("opening the namespace")
    }

    /// A `Command` that runs inside this namespace and, if given, this cgroup.
    pub fn command_in(
        &self,
        program: impl AsRef<std::ffi::OsStr>,
        cgroup: Option<&Cgroup>,
    ) -> Result<Command> {
        self.command_as(program, cgroup, None)
    }

    /// Like [`command_in`](Self::command_in), and as this uid (and gid):
    /// switched after entering the namespace, which needs root.
    pub fn command_as(
        &self,
        program: impl AsRef<std::ffi::OsStr>,
        cgroup: Option<&Cgroup>,
        uid: Option<u32>,
    ) -> Result<Command> {
        let ns = File::open(self.path())
            .with_context(|| format!("opening {}", self.path().display()))?;
        let procs = match cgroup {
            Some(cg) => Some(
                fs::OpenOptions::new()
                    .write(true)
                    .open(cg.path().join("cgroup.procs"))
                    .with_context(|| format!("opening {}", cg.path().display()))?,
            ),
            None => None,
        };
        let mut cmd = Command::new(program);
        // SAFETY: the closure only makes async-signal-safe calls (write,
        // setns) on descriptors opened before fork.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(p) = &procs {
                    // "0" moves the writing process itself.
                    if libc::write(p.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(uid) = uid {
                    if libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setgid(uid) != 0
                        || libc::setuid(uid) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        Ok(cmd)
    }

    /// Runs `sh -c SCRIPT` inside the namespace; stdout on success.
    pub fn sh(&self, script: &str) -> Result<String> {
        run(self.command("sh").args(["-c", script]))
    }

    /// Runs `sh -c SCRIPT` inside the namespace and cgroup.
    pub fn sh_in(&self, cgroup: &Cgroup, script: &str) -> Result<String> {
        run(self.command_in("sh", Some(cgroup))?.args(["-c", script]))
    }

    /// Starts a long-running command inside the namespace; killed on drop.
    pub fn spawn(&self, cmd: &mut Command) -> Result<Daemon> {
        Daemon::spawn(cmd)
    }

    /// Runs `f` on a thread that has entered this namespace (the caller's
    /// thread stays where it is): for library calls that act on the
    /// calling thread's namespace, such as attaching to an interface.
    ///
    /// # Errors
    /// If the namespace cannot be entered (or the thread panicked).
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let ns = File::open(self.path())
            .with_context(|| format!("opening {}", self.path().display()))?;
        thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: moves only this scoped thread into the namespace.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    bail!("setns: {}", std::io::Error::last_os_error());
                }
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the thread in {} panicked", self.name))?
        })
    }

    /// Reads a sysctl inside this namespace.
    pub fn sysctl(&self, key: &str) -> Result<String> {
        Ok(run(self.command("sysctl").args(["-n", key]))?
            .trim()
            .to_owned())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Kill anything still running inside first, or the delete leaves the
        // namespace alive until those processes exit.
        let _ = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<i32>() {
                        // SAFETY: plain signal to a process id we just listed.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            });
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// One end of a veth: its interface name and addresses (CIDR).
pub type End<'a> = (&'a str, &'a [&'a str]);

/// Two new namespaces joined by one veth, both ends up with their addresses:
/// the topology most tests start from.
///
/// ```no_run
/// let netns_harness::Pair { a, b } =
///     netns_harness::Pair::new(("eth0", &["198.18.0.1/24"]), ("eth0", &["198.18.0.2/24"]))?;
/// # Ok::<(), anyhow::Error>(())
/// ```
#[derive(Debug)]
pub struct Pair {
    pub a: Netns,
    pub b: Netns,
}

impl Pair {
    /// `a` holds the end `a.0` with addresses `a.1`, `b` the end `b.0` with
    /// `b.1` (CIDR; see [`veth`]).
    ///
    /// # Errors
    /// If a namespace, the link or an address cannot be created.
    pub fn new(a: End, b: End) -> Result<Self> {
        let (na, nb) = (Netns::new()?, Netns::new()?);
        veth(&na, a, &nb, b)?;
        Ok(Self { a: na, b: nb })
    }
}

/// Creates a veth pair `a_if` (in `a`) — `b_if` (in `b`), both up, with the
/// given addresses (CIDR; empty for none; IPv6 ones without duplicate
/// address detection, so they are usable at once).
pub fn veth(a: &Netns, (a_if, a_addr): End, b: &Netns, (b_if, b_addr): End) -> Result<()> {
    // Created inside `a` so the host namespace never holds either end.
    a.ip(&[
        "link",
        "add",
        a_if,
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ])?;
    for (ns, ifname, addrs) in [(a, a_if, a_addr), (b, b_if, b_addr)] {
        for addr in addrs {
            if addr.contains(':') {
                ns.ip(&["addr", "add", addr, "dev", ifname, "nodad"])?;
            } else {
                ns.ip(&["addr", "add", addr, "dev", ifname])?;
            }
        }
        ns.ip(&["link", "set", ifname, "up"])?;
    }
    Ok(())
}

/// A child process killed (SIGTERM, then SIGKILL) on drop; output captured.
pub struct Daemon {
    child: Option<Child>,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Daemon {
    pub fn spawn(cmd: &mut Command) -> Result<Self> {
        let base = std::env::temp_dir().join(unique());
        let stdout = base.with_extension("out");
        let stderr = base.with_extension("err");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(File::create(&stdout)?)
            .stderr(File::create(&stderr)?)
            .spawn()
            .with_context(|| format!("spawning {cmd:?}"))?;
        Ok(Self {
            child: Some(child),
            stdout,
            stderr,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until stdout or stderr contains `needle`, for at most `timeout`.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.stdout().contains(needle) || self.stderr().contains(needle) {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    bail!(
                        "process exited ({status}) before printing {needle:?}:\n{}{}",
                        self.stdout(),
                        self.stderr()
                    );
                }
            }
            thread::sleep(Duration::from_millis(20));
        }
        bail!(
            "timed out after {timeout:?} waiting for {needle:?}:\n{}{}",
            self.stdout(),
            self.stderr()
        )
    }

    /// Lets the process run on unsupervised (something else must end it,
    /// as a cgroup guard does) and returns its pid; its output files go.
    pub fn detach(mut self) -> u32 {
        let pid = self.pid();
        // Dropping a `Child` neither kills nor waits for it.
        drop(self.child.take());
        pid
    }

    /// Sends a signal without waiting.
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: signal to our own child.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// Stops the process (SIGTERM, up to 5 s, then SIGKILL) and returns its status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        // Already reaped: its pid may belong to someone else by now.
        if let Ok(Some(s)) = c.try_wait() {
            return Some(s);
        }
        // SAFETY: signal to our own child, not yet reaped.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        if let Ok(Some(s)) = wait_timeout(&mut c, Duration::from_secs(5)) {
            return Some(s);
        }
        let _ = c.kill();
        c.wait().ok()
    }

    /// Waits for the process to exit by itself, for at most `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Result<Option<std::process::ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => Ok(wait_timeout(c, timeout)?),
            None => Ok(None),
        }
    }
}

fn wait_timeout(
    c: &mut Child,
    timeout: Duration,
) -> std::io::Result<Option<std::process::ExitStatus>> {
    let start = Instant::now();
    loop {
        if let Some(s) = c.try_wait()? {
            return Ok(Some(s));
        }
        if start.elapsed() >= timeout {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_file(&self.stdout);
        let _ = fs::remove_file(&self.stderr);
    }
}

/// A tcpdump capture on an interface inside a namespace (real tcpdump,
/// line-buffered text output, one line per packet).
pub struct Capture {
    daemon: Daemon,
}

impl Capture {
    /// Starts capturing; returns once tcpdump is listening.
    pub fn start(ns: &Netns, ifname: &str, filter: &str) -> Result<Self> {
        let mut cmd = ns.command("tcpdump");
        cmd.args(["-i", ifname, "-n", "-l", "-U"])
            .args(filter.split_whitespace());
        let mut daemon = Daemon::spawn(&mut cmd)?;
        daemon.wait_for("listening on", Duration::from_secs(10))?;
        Ok(Self { daemon })
    }

    /// Stops the capture and returns one text line per packet.
    pub fn finish(mut self) -> Result<Vec<String>> {
        // Give in-flight packets a moment to be printed.
        thread::sleep(Duration::from_millis(200));
        self.daemon.signal(libc::SIGINT);
        let status = self.daemon.wait(Duration::from_secs(5))?;
        self.daemon.stop();
        let err = self.daemon.stderr();
        if !err.contains(" captured") {
            bail!("tcpdump did not finish cleanly ({status:?}): {err}");
        }
        Ok(self
            .daemon
            .stdout()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect())
    }
}

/// The cgroup v2 mount of this machine (never assumed): the first
/// `cgroup2` filesystem in /proc/self/mountinfo.
pub fn cgroup2_mount() -> Result<PathBuf> {
    let info =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    info.lines()
        .find_map(|line| {
            // `id parent dev root MOUNT opts... - FSTYPE source superopts`
            let (left, right) = line.split_once(" - ")?;
            if right.split(' ').next()? != "cgroup2" {
                return None;
            }
            left.split(' ').nth(4).map(unescape_mount_point)
        })
        .context("no cgroup v2 mount (mount -t cgroup2 none /sys/fs/cgroup)")
}

/// mountinfo writes space, tab, newline and backslash as `\ooo` (octal).
fn unescape_mount_point(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).and_then(|d| {
            d.iter()
                .all(|c| (b'0'..=b'7').contains(c))
                .then(|| d.iter().fold(0u32, |n, c| n * 8 + u32::from(c - b'0')))
        });
        match octal {
            Some(v) if b[i] == b'\\' && v <= 0xff => {
                out.push(v as u8);
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// A cgroup sub-tree of the harness's own; its processes are killed and the
/// tree removed on drop.
#[derive(Debug)]
pub struct Cgroup {
    path: PathBuf,
    owned_root: bool,
}

impl Cgroup {
    /// A new top-level test cgroup `<mount>/vpnt-...`.
    pub fn new() -> Result<Self> {
        let path = cgroup2_mount()?.join(unique());
        fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self {
            path,
            owned_root: true,
        })
    }

    /// A child cgroup (removed with its parent).
    pub fn child(&self, name: &str) -> Result<Self> {
        let path = self.path.join(name);
        fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self {
            path,
            owned_root: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The kernel's cgroup id (the directory's inode number on cgroup v2).
    pub fn id(&self) -> Result<u64> {
        use std::os::unix::fs::MetadataExt;
        Ok(fs::metadata(&self.path)?.ino())
    }

    pub fn add_pid(&self, pid: u32) -> Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(self.path.join("cgroup.procs"))?;
        write!(f, "{pid}")?;
        Ok(())
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if self.owned_root {
            remove_cgroup_tree(&self.path);
        }
    }
}

/// Kills every process in a cgroup tree, then removes it bottom-up.
fn remove_cgroup_tree(path: &Path) {
    let kill = path.join("cgroup.kill");
    if kill.exists() {
        let _ = fs::write(&kill, "1");
    } else {
        kill_procs(path);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if remove_dirs(path) {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn kill_procs(path: &Path) {
    if let Ok(f) = File::open(path.join("cgroup.procs")) {
        for pid in BufReader::new(f).lines().map_while(Result::ok) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                // SAFETY: plain signal to a process in our own test cgroup.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    if let Ok(rd) = fs::read_dir(path) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                kill_procs(&e.path());
            }
        }
    }
}

fn remove_dirs(path: &Path) -> bool {
    if let Ok(rd) = fs::read_dir(path) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                remove_dirs(&e.path());
            }
        }
    }
    fs::remove_dir(path).is_ok() || !path.exists()
}

/// A bpffs directory of the harness's own, for a controller's pins.
#[derive(Debug)]
pub struct PinRoot {
    path: PathBuf,
}

impl PinRoot {
    pub fn new() -> Result<Self> {
        let path = Path::new("/sys/fs/bpf").join(unique());
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PinRoot {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// What a harness-created object of this process left behind.
pub fn leftovers() -> Vec<String> {
    let mine = format!("{PREFIX}-{}-", std::process::id());
    let mut left = Vec::new();
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            if l.starts_with(&mine) {
                left.push(format!("netns {l}"));
            }
        }
    }
    let mut dirs = vec![PathBuf::from("/sys/fs/bpf"), std::env::temp_dir()];
    dirs.extend(cgroup2_mount().ok());
    for d in dirs {
        for_each_prefixed(&d, |p| {
            if p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .starts_with(&mine)
            {
                left.push(p.display().to_string());
            }
        });
    }
    left
}

/// The controller binary under test: `VPN_CTL_BIN` (set by `cargo xtask
/// test`), or the release build next to the workspace.
pub fn vpn_ctl_bin() -> PathBuf {
    std::env::var_os("VPN_CTL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/vpn-ctl"))
}

/// The wireguard-go drop-in under test: `VPN_WG_BIN`, or `vpn-wg` next to
/// [`vpn_ctl_bin`].
pub fn vpn_wg_bin() -> PathBuf {
    std::env::var_os("VPN_WG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| vpn_ctl_bin().with_file_name("vpn-wg"))
}

/// Skips nothing: the suite needs root, and says so.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert!(
        unsafe { libc::geteuid() } == 0,
        "the end-to-end suite needs root (run `cargo xtask test` as root)"
    );
}

/// A WireGuard key pair (private, public), base64, made by the controller
/// under test (`vpn-ctl genkey` / `pubkey`).
pub fn key_pair() -> Result<(String, String)> {
    let private = run(Command::new(vpn_ctl_bin()).arg("genkey"))?
        .trim()
        .to_owned();
    let mut child = Command::new(vpn_ctl_bin())
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("spawning vpn-ctl pubkey")?;
    child
        .stdin
        .take()
        .context("pubkey stdin")?
        .write_all(private.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("vpn-ctl pubkey failed ({})", out.status);
    }
    Ok((private, String::from_utf8(out.stdout)?.trim().to_owned()))
}
