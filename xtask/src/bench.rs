//! `cargo xtask bench`: measurements printed side by side, as ratios.
//!
//! - `bench tunnel`: iperf3 TCP (1 and 4 streams), UDP loss at a fixed
//!   offered rate, and ping RTT, through plain veth, wireguard-go (Debian),
//!   boringtun-cli, gotatun-cli and vpn, each between two fresh network
//!   namespaces joined by a veth. Absolute figures vary from machine to
//!   machine, so every figure is also given as a ratio to the best WireGuard
//!   peer of the same run.
//! - `bench crypto`: the AEAD micro-benchmark (`vpn-ctl/benches/aead.rs`).
//!
//! Safety: everything happens inside namespaces named `vpnb-<pid>-<n>`
//! (tunnel interfaces `vb<pid>x<n>`, whose UAPI sockets live in the global
//! /var/run/wireguard). Every namespace, daemon and file is a guard removed on
//! drop, Ctrl-C and SIGTERM are turned into an error that unwinds through
//! those guards, every child runs under a deadline, and leftovers of a killed
//! run are swept by the next one. The host's interfaces are never touched:
//! the veth pair is created inside the first namespace with its peer moved
//! straight into the second.
use std::{
    fmt::Write as _,
    fs::{self, File},
    io,
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicBool, AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::setup;

#[derive(Subcommand)]
pub enum What {
    /// iperf3 TCP 1/4 streams, UDP loss, ping RTT through veth, wireguard-go,
    /// boringtun, gotatun and vpn between two namespaces; ratios to the best peer.
    Tunnel(TunnelArgs),
    /// ChaCha20-Poly1305 seal+open per core: RustCrypto (default and AVX2
    /// dispatch), ring, aws-lc-rs (vpn-ctl/benches/aead.rs).
    Crypto,
    /// Steering classifiers: ns per packet with 1, 100 and 10 000 sources,
    /// vpn's eBPF beside nftables (xtask/src/bench_steer.rs).
    Steer {
        /// --packets N, --rounds N, --repeat N
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Args)]
pub struct TunnelArgs {
    /// Seconds per iperf3 run.
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// Only these, comma-separated: veth, wireguard-go, boringtun, gotatun, vpn.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// UDP offered rate (iperf3 -b syntax).
    #[arg(long, default_value = "1G")]
    udp_rate: String,
    /// UDP payload length (fits the 1420 B tunnel MTU).
    #[arg(long, default_value_t = 1372)]
    udp_len: u32,
    /// Number of pings (at a 10 ms interval) for the RTT.
    #[arg(long, default_value_t = 50)]
    pings: u32,
    /// Benchmark this vpn-ctl binary instead of building target/release/vpn-ctl.
    #[arg(long, value_name = "PATH")]
    vpn_ctl: Option<PathBuf>,
}

pub fn run(what: What) -> Result<()> {
    setup::run()?;
    match what {
        What::Tunnel(args) => tunnel(args),
        What::Crypto => crypto(),
        What::Steer { args } => crate::bench_steer::run(&args),
    }
}

// ---------------------------------------------------------------- crypto

fn crypto() -> Result<()> {
    eprintln!("==> building and running vpn-ctl/benches/aead.rs (release)");
    crate::run_checked(crate::cargo().args([
        "bench",
        "-p",
        "vpn-ctl",
        "--features",
        "bench-aead",
        "--bench",
        "aead",
    ]))
}

// ---------------------------------------------------------------- tunnel

const PREFIX: &str = "vpnb";
const IF_PREFIX: &str = "vb";
const UAPI_DIR: &str = "/var/run/wireguard";
const PORT: u16 = 51820;
const IPERF_PORT: u16 = 5201;
const TUNNEL_MTU: u32 = 1420;
/// Underlay (198.18.0.0/15) and tunnel (100.64.0.0/10) addresses of the two ends.
const UNDERLAY: [&str; 2] = ["198.18.0.1", "198.18.0.2"];
const TUNNEL: [&str; 2] = ["100.64.0.1", "100.64.0.2"];
const START_TIMEOUT: Duration = Duration::from_secs(15);

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static COUNTER: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

fn interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps, waking early (with an error) on Ctrl-C.
fn nap(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        interrupted()?;
        thread::sleep(Duration::from_millis(20).min(end - Instant::now()));
    }
    interrupted()
}

fn next() -> u32 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

fn pid() -> u32 {
    std::process::id()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes namespaces and UAPI sockets of earlier runs whose process is gone.
fn sweep_stale() {
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            let name = l.split_whitespace().next().unwrap_or("");
            let owner = name
                .strip_prefix(PREFIX)
                .and_then(|r| r.strip_prefix('-'))
                .and_then(|r| r.split('-').next())
                .and_then(|p| p.parse::<u32>().ok());
            if owner.is_some_and(|p| !alive(p)) {
                eprintln!("==> removing namespace {name} left by a killed run");
                kill_netns_pids(name);
                let _ = Command::new("ip").args(["netns", "del", name]).status();
            }
        }
    }
    if let Ok(rd) = fs::read_dir(UAPI_DIR) {
        for e in rd.flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            let owner = file
                .strip_prefix(IF_PREFIX)
                .and_then(|r| r.split('x').next())
                .and_then(|p| p.parse::<u32>().ok());
            if file.ends_with(".sock") && owner.is_some_and(|p| !alive(p)) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

fn kill_netns_pids(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for p in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(p) = p.parse::<i32>() {
                // SAFETY: plain kill(2) of a process inside our own namespace.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
        }
    }
}

/// A scratch directory for configs and logs, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        let p = std::env::temp_dir().join(format!("{PREFIX}-{}", pid()));
        fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(Self(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A child process killed (TERM, then KILL) and reaped on drop.
struct Proc {
    child: Child,
    what: String,
    log: PathBuf,
    /// A file the process creates and may leave behind when killed.
    leftover: Option<PathBuf>,
}

impl Proc {
    fn spawn(mut cmd: Command, what: &str, log: PathBuf) -> Result<Self> {
        let f = File::create(&log)?;
        cmd.stdin(Stdio::null()).stdout(f.try_clone()?).stderr(f);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {what} ({cmd:?})"))?;
        Ok(Self {
            child,
            what: what.to_owned(),
            log,
            leftover: None,
        })
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn log_tail(&self) -> String {
        tail(&fs::read_to_string(&self.log).unwrap_or_default())
    }

    fn died(&mut self) -> Option<String> {
        self.exited()
            .map(|s| format!("{} exited ({s}): {}", self.what, self.log_tail()))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited().is_none() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let end = Instant::now() + Duration::from_secs(3);
            while self.exited().is_none() && Instant::now() < end {
                thread::sleep(Duration::from_millis(20));
            }
            if self.exited().is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        if let Some(p) = &self.leftover {
            let _ = fs::remove_file(p);
        }
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    let t = lines[lines.len().saturating_sub(3)..].join(" | ");
    if t.is_empty() {
        "(no output)".into()
    } else {
        t.chars().take(400).collect()
    }
}

/// A network namespace, deleted (with anything still running in it) on drop.
struct Netns {
    name: String,
    fd: File,
}

impl Netns {
    fn new() -> Result<Self> {
        let name = format!("{PREFIX}-{}-{}", pid(), next());
        run_quiet(Command::new("ip").args(["netns", "add", &name]))?;
        let fd = match File::open(format!("/run/netns/{name}")) {
            Ok(fd) => fd,
            Err(e) => {
                let _ = Command::new("ip").args(["netns", "del", &name]).status();
                return Err(e).context("opening the new namespace");
            }
        };
        let ns = Self { name, fd };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A command that runs inside this namespace (setns in the child; unlike
    /// `ip netns exec`, /sys and the cgroup and bpffs mounts stay as they are).
    fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        let fd = self.fd.as_raw_fd();
        // SAFETY: setns is async-signal-safe; fd stays open until exec.
        unsafe {
            c.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        c
    }

    fn ip(&self, args: &[&str]) -> Result<()> {
        run_quiet(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        kill_netns_pids(&self.name);
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs a short command to completion under a deadline; error with its stderr.
fn run_quiet(cmd: &mut Command) -> Result<()> {
    let out = run_bounded(cmd, Duration::from_secs(10))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}", out.status, tail(&out.stderr));
    }
    Ok(())
}

struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs a command with a wall-clock limit, killing it when it expires or on
/// Ctrl-C. Output goes through files so that large outputs cannot block it.
fn run_bounded(cmd: &mut Command, limit: Duration) -> Result<Output> {
    let n = next();
    let dir = std::env::temp_dir();
    let (o, e) = (
        dir.join(format!("{PREFIX}-{}-{n}.out", pid())),
        dir.join(format!("{PREFIX}-{}-{n}.err", pid())),
    );
    let result = (|| {
        cmd.stdin(Stdio::null())
            .stdout(File::create(&o)?)
            .stderr(File::create(&e)?);
        let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
        let end = Instant::now() + limit;
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            if INTERRUPTED.load(Ordering::SeqCst) || Instant::now() > end {
                let _ = child.kill();
                let _ = child.wait();
                interrupted()?;
                bail!("{cmd:?} timed out after {}s", limit.as_secs());
            }
            thread::sleep(Duration::from_millis(10));
        };
        Ok(Output {
            status,
            stdout: fs::read_to_string(&o).unwrap_or_default(),
            stderr: fs::read_to_string(&e).unwrap_or_default(),
        })
    })();
    let _ = fs::remove_file(&o);
    let _ = fs::remove_file(&e);
    result
}

fn stdout_of(cmd: &mut Command, stdin: Option<&str>) -> Result<String> {
    let out = if let Some(input) = stdin {
        // Only for `wg pubkey`: tiny input, no deadline needed beyond its own.
        use std::io::Write;
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(input.as_bytes())?;
        let o = child.wait_with_output()?;
        Output {
            status: o.status,
            stdout: String::from_utf8_lossy(&o.stdout).into(),
            stderr: String::from_utf8_lossy(&o.stderr).into(),
        }
    } else {
        run_bounded(cmd, Duration::from_secs(10))?
    };
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}", out.status, tail(&out.stderr));
    }
    Ok(out.stdout.trim().to_owned())
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Veth,
    WireguardGo,
    Boringtun,
    Gotatun,
    Vpn,
}

const KINDS: [Kind; 5] = [
    Kind::Veth,
    Kind::WireguardGo,
    Kind::Boringtun,
    Kind::Gotatun,
    Kind::Vpn,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Veth => "veth",
            Kind::WireguardGo => "wireguard-go",
            Kind::Boringtun => "boringtun",
            Kind::Gotatun => "gotatun",
            Kind::Vpn => "vpn",
        }
    }

    /// The WireGuard peers nobody here wrote: the yardstick for the ratios.
    fn is_peer(self) -> bool {
        matches!(self, Kind::WireguardGo | Kind::Boringtun | Kind::Gotatun)
    }
}

#[derive(Default, Clone)]
struct Metrics {
    tcp1_gbps: Option<f64>,
    tcp1_retrans: Option<u64>,
    tcp4_gbps: Option<f64>,
    tcp4_retrans: Option<u64>,
    udp_loss_pct: Option<f64>,
    udp_recv_gbps: Option<f64>,
    rtt_ms: Option<f64>,
    errors: Vec<String>,
}

enum Outcome {
    Measured(Metrics),
    Unavailable(String),
}

struct Ctx {
    args: TunnelArgs,
    tmp: TempDir,
    gotatun: Result<PathBuf, String>,
    vpn: Result<PathBuf, String>,
}

fn tunnel(args: TunnelArgs) -> Result<()> {
    if !setup::is_root() {
        bail!("the tunnel benchmark creates network namespaces: run it as root");
    }
    for o in &args.only {
        if !KINDS.iter().any(|k| k.name() == o) {
            bail!(
                "--only: unknown `{o}` (known: {})",
                KINDS.map(Kind::name).join(", ")
            );
        }
    }
    let kinds: Vec<Kind> = KINDS
        .into_iter()
        .filter(|k| args.only.is_empty() || args.only.iter().any(|o| o == k.name()))
        .collect();
    install_signal_handlers();
    sweep_stale();

    let gotatun = if kinds.contains(&Kind::Gotatun) {
        ensure_gotatun()
    } else {
        Err("not selected".into())
    };
    let vpn = if kinds.contains(&Kind::Vpn) {
        vpn_available(args.vpn_ctl.as_deref())
    } else {
        Err("not selected".into())
    };
    let ctx = Ctx {
        args,
        tmp: TempDir::new()?,
        gotatun,
        vpn,
    };

    let t = Instant::now();
    let mut results = Vec::new();
    for kind in kinds {
        interrupted()?;
        eprintln!("==> bench {}", kind.name());
        let outcome = match bench_one(&ctx, kind) {
            Ok(o) => o,
            Err(e) if INTERRUPTED.load(Ordering::SeqCst) => return Err(e),
            Err(e) => Outcome::Unavailable(format!("{e:#}")),
        };
        if let Outcome::Unavailable(why) = &outcome {
            eprintln!("    not available: {why}");
        }
        results.push((kind, outcome));
    }
    eprintln!("==> benchmark took {:.0}s", t.elapsed().as_secs_f64());

    let best = best_peer(&results);
    print!("{}", table(&ctx.args, &results, &best));
    if let Some(path) = &ctx.args.json {
        let v = to_json(&ctx.args, &results, &best);
        fs::write(path, serde_json::to_string_pretty(&v)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("==> wrote {}", path.display());
    }
    Ok(())
}

fn which(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/local/bin")])
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

fn ensure_gotatun() -> Result<PathBuf, String> {
    if let Some(p) = which("gotatun") {
        return Ok(p);
    }
    eprintln!("==> installing gotatun-cli from crates.io (a few minutes)");
    let status = Command::new("cargo")
        .args(["install", "--locked", "gotatun-cli", "--root", "/usr/local"])
        .status();
    match status {
        Ok(s) if s.success() => which("gotatun").ok_or_else(|| "installed but not found".into()),
        Ok(s) => Err(format!("cargo install gotatun-cli failed ({s})")),
        Err(e) => Err(format!("cargo install gotatun-cli: {e}")),
    }
}

/// Builds the release binaries and checks that `vpn-ctl up` exists. A build
/// failure or a missing command makes vpn "not available", not a failure.
fn vpn_available(given: Option<&Path>) -> Result<PathBuf, String> {
    let bin = match given {
        Some(p) => p.to_owned(),
        None => {
            if crate::build().is_err() {
                return Err("the release build failed (cargo's errors are above)".into());
            }
            crate::vpn_ctl_bin()
        }
    };
    let help = run_bounded(Command::new(&bin).args(["up", "--help"]), START_TIMEOUT);
    match help {
        Ok(o) if o.status.success() && o.stdout.contains("--foreground") => Ok(bin),
        Ok(o) if o.status.success() => Err("`vpn-ctl up` has no --foreground option yet".into()),
        Ok(o) => Err(format!(
            "`vpn-ctl up` does not exist yet: {}",
            tail(&o.stderr)
        )),
        Err(e) => Err(format!("{e:#}")),
    }
}

/// One end of the pair: its namespace and, for a tunnel, its daemon.
struct End {
    ns: Netns,
    iface: String,
}

fn bench_one(ctx: &Ctx, kind: Kind) -> Result<Outcome> {
    let bin = match kind {
        Kind::Veth => None,
        Kind::WireguardGo => which("wireguard-go"),
        Kind::Boringtun => which("boringtun-cli"),
        Kind::Gotatun => match &ctx.gotatun {
            Ok(p) => Some(p.clone()),
            Err(e) => return Ok(Outcome::Unavailable(e.clone())),
        },
        Kind::Vpn => match &ctx.vpn {
            Ok(p) => Some(p.clone()),
            Err(e) => return Ok(Outcome::Unavailable(e.clone())),
        },
    };
    if kind != Kind::Veth && bin.is_none() {
        return Ok(Outcome::Unavailable(format!(
            "{} is not installed",
            kind.name()
        )));
    }

    // Declaration order matters: locals drop in reverse, so daemons (declared
    // later) are stopped before their namespaces are deleted.
    let ends = [new_end()?, new_end()?];
    ends[0].ns.ip(&[
        "link",
        "add",
        "ul0",
        "type",
        "veth",
        "peer",
        "name",
        "ul0",
        "netns",
        &ends[1].ns.name,
    ])?;
    for (i, e) in ends.iter().enumerate() {
        e.ns.ip(&["addr", "add", &format!("{}/24", UNDERLAY[i]), "dev", "ul0"])?;
        e.ns.ip(&["link", "set", "ul0", "up"])?;
    }

    let mut daemons = Vec::new();
    let target = if let Some(bin) = bin {
        match start_tunnel(ctx, kind, &bin, &ends, &mut daemons)? {
            Ok(()) => TUNNEL[0],
            Err(why) => return Ok(Outcome::Unavailable(why)),
        }
    } else {
        UNDERLAY[0]
    };
    wait_reachable(&ends[1].ns, target, &mut daemons)?;

    let server = Proc::spawn(
        {
            let mut c = ends[0].ns.cmd("iperf3");
            c.args(["-s", "-p", &IPERF_PORT.to_string()]);
            c
        },
        "iperf3 server",
        ctx.tmp.0.join(format!("iperf3-{}.log", kind.name())),
    )?;
    wait_listening(&ends[0].ns, IPERF_PORT)?;

    let mut m = Metrics::default();
    let client = &ends[1].ns;
    let secs = ctx.args.seconds;
    let mut errors: Vec<String> = Vec::new();
    let mut m_errors_push = |what: &str, e: anyhow::Error| errors.push(format!("{what}: {e:#}"));

    for streams in [1u32, 4] {
        interrupted()?;
        match iperf_tcp(client, target, secs, streams) {
            Ok((gbps, retr)) => {
                eprintln!("    TCP {streams} stream(s): {gbps:.3} Gbit/s, {retr} retransmits");
                if streams == 1 {
                    (m.tcp1_gbps, m.tcp1_retrans) = (Some(gbps), Some(retr));
                } else {
                    (m.tcp4_gbps, m.tcp4_retrans) = (Some(gbps), Some(retr));
                }
            }
            Err(e) => {
                interrupted()?;
                eprintln!("    TCP {streams} stream(s): {e:#}");
                m_errors_push(&format!("tcp{streams}"), e);
            }
        }
        if let Some(why) = daemons.iter_mut().find_map(Proc::died) {
            m_errors_push("daemon", anyhow!(why));
        }
    }
    interrupted()?;
    match iperf_udp(client, target, secs, &ctx.args.udp_rate, ctx.args.udp_len) {
        Ok((loss, gbps)) => {
            eprintln!(
                "    UDP at {}: {loss:.2}% lost, {gbps:.3} Gbit/s received",
                ctx.args.udp_rate
            );
            (m.udp_loss_pct, m.udp_recv_gbps) = (Some(loss), Some(gbps));
        }
        Err(e) => {
            interrupted()?;
            eprintln!("    UDP: {e:#}");
            m_errors_push("udp", e);
        }
    }
    interrupted()?;
    match ping(client, target, ctx.args.pings) {
        Ok(rtt) => {
            eprintln!("    ping: {rtt:.3} ms");
            m.rtt_ms = Some(rtt);
        }
        Err(e) => {
            interrupted()?;
            eprintln!("    ping: {e:#}");
            m_errors_push("ping", e);
        }
    }
    drop(server);
    drop(daemons);
    m.errors = errors;
    Ok(Outcome::Measured(m))
}

fn new_end() -> Result<End> {
    let ns = Netns::new()?;
    let iface = format!("{IF_PREFIX}{}x{}", pid(), next());
    debug_assert!(iface.len() <= 15);
    Ok(End { ns, iface })
}

struct Keys {
    private: String,
    public: String,
}

fn keypair() -> Result<Keys> {
    let private = stdout_of(Command::new("wg").arg("genkey"), None)?;
    let public = stdout_of(Command::new("wg").arg("pubkey"), Some(&private))?;
    Ok(Keys { private, public })
}

/// The wg(8) `setconf` file of end `i` (no Address, MTU...: those are wg-quick's).
fn wg_conf(i: usize, keys: &[Keys; 2]) -> String {
    let j = 1 - i;
    format!(
        "[Interface]\nPrivateKey = {}\nListenPort = {PORT}\n\n[Peer]\nPublicKey = {}\nEndpoint = {}:{PORT}\nAllowedIPs = {}/32\n",
        keys[i].private, keys[j].public, UNDERLAY[j], TUNNEL[j]
    )
}

/// Starts the daemons of both ends and configures them. `Ok(Err(why))` when
/// the implementation cannot run here (reported as "not available").
fn start_tunnel(
    ctx: &Ctx,
    kind: Kind,
    bin: &Path,
    ends: &[End; 2],
    daemons: &mut Vec<Proc>,
) -> Result<Result<(), String>> {
    let keys = [keypair()?, keypair()?];
    for (i, end) in ends.iter().enumerate() {
        let conf = ctx.tmp.0.join(format!("{}.conf", end.iface));
        let mut text = wg_conf(i, &keys);
        if kind == Kind::Vpn {
            // vpn-ctl up reads a wg-quick file: the interface is named after
            // the file stem, and it may set the address and MTU itself.
            text = text.replacen(
                "[Interface]\n",
                &format!(
                    "[Interface]\nAddress = {}/24\nMTU = {TUNNEL_MTU}\n",
                    TUNNEL[i]
                ),
                1,
            );
        }
        fs::write(&conf, text)?;
        let mut cmd = end.ns.cmd(bin);
        match kind {
            Kind::WireguardGo => {
                cmd.args(["-f", &end.iface])
                    .env("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1");
            }
            Kind::Boringtun | Kind::Gotatun => {
                cmd.args(["--foreground", "--disable-drop-privileges", &end.iface]);
            }
            Kind::Vpn => {
                cmd.arg("up").arg(&conf).arg("--foreground");
            }
            Kind::Veth => unreachable!(),
        }
        let log = ctx.tmp.0.join(format!("{}.log", end.iface));
        let mut d = Proc::spawn(cmd, &format!("{} ({})", kind.name(), end.iface), log)?;
        d.leftover = Some(Path::new(UAPI_DIR).join(format!("{}.sock", end.iface)));
        daemons.push(d);
        let d = daemons.last_mut().expect("just pushed");
        // Wait for the TUN device (and, for the wg(8)-configured ones, the UAPI socket).
        let end_by = Instant::now() + START_TIMEOUT;
        loop {
            interrupted()?;
            if let Some(why) = d.died() {
                return Ok(Err(why));
            }
            let link = end.ns.ip(&["link", "show", "dev", &end.iface]).is_ok();
            let sock = kind == Kind::Vpn
                || Path::new(UAPI_DIR)
                    .join(format!("{}.sock", end.iface))
                    .exists();
            if link && sock {
                break;
            }
            if Instant::now() > end_by {
                return Ok(Err(format!(
                    "{} did not create {} within {}s: {}",
                    kind.name(),
                    end.iface,
                    START_TIMEOUT.as_secs(),
                    d.log_tail()
                )));
            }
            nap(Duration::from_millis(50))?;
        }
        if kind != Kind::Vpn {
            let mut c = end.ns.cmd("wg");
            c.arg("setconf").arg(&end.iface).arg(&conf);
            if let Err(e) = run_quiet(&mut c) {
                return Ok(Err(format!("wg setconf: {e:#}")));
            }
        }
        let addr = format!("{}/24", TUNNEL[i]);
        end.ns.ip(&["addr", "replace", &addr, "dev", &end.iface])?;
        end.ns.ip(&[
            "link",
            "set",
            "dev",
            &end.iface,
            "mtu",
            &TUNNEL_MTU.to_string(),
            "up",
        ])?;
    }
    Ok(Ok(()))
}

/// Pings until the first reply (the first one also triggers the handshake).
fn wait_reachable(ns: &Netns, target: &str, daemons: &mut [Proc]) -> Result<()> {
    let end = Instant::now() + START_TIMEOUT;
    loop {
        let ok = run_bounded(
            ns.cmd("ping").args(["-c", "1", "-W", "1", "-q", target]),
            Duration::from_secs(5),
        )?
        .status
        .success();
        if ok {
            return Ok(());
        }
        if let Some(why) = daemons.iter_mut().find_map(Proc::died) {
            bail!("{why}");
        }
        if Instant::now() > end {
            bail!(
                "no ping reply from {target} within {}s",
                START_TIMEOUT.as_secs()
            );
        }
        nap(Duration::from_millis(100))?;
    }
}

fn wait_listening(ns: &Netns, port: u16) -> Result<()> {
    let end = Instant::now() + START_TIMEOUT;
    loop {
        let out = run_bounded(
            ns.cmd("ss").args(["-Hltn", &format!("sport = :{port}")]),
            Duration::from_secs(5),
        )?;
        if !out.stdout.trim().is_empty() {
            return Ok(());
        }
        if Instant::now() > end {
            bail!("iperf3 server not listening on {port}");
        }
        nap(Duration::from_millis(50))?;
    }
}

fn iperf_json(ns: &Netns, target: &str, secs: u32, extra: &[&str]) -> Result<Value> {
    let mut c = ns.cmd("iperf3");
    c.args(["-c", target, "-p", &IPERF_PORT.to_string()])
        .args(["-t", &secs.to_string(), "-J", "--connect-timeout", "5000"])
        .args(extra);
    let out = run_bounded(&mut c, Duration::from_secs(u64::from(secs) + 20))?;
    let v: Value = serde_json::from_str(&out.stdout)
        .with_context(|| format!("iperf3 output is not JSON: {}", tail(&out.stderr)))?;
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        bail!("iperf3: {e}");
    }
    if !out.status.success() {
        bail!("iperf3 failed ({})", out.status);
    }
    Ok(v)
}

fn iperf_tcp(ns: &Netns, target: &str, secs: u32, streams: u32) -> Result<(f64, u64)> {
    let v = iperf_json(ns, target, secs, &["-P", &streams.to_string()])?;
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3: no end.sum_received.bits_per_second")?;
    let retr = v["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0);
    Ok((bps / 1e9, retr))
}

/// Returns (loss %, received Gbit/s) as seen by the receiver.
fn iperf_udp(ns: &Netns, target: &str, secs: u32, rate: &str, len: u32) -> Result<(f64, f64)> {
    let v = iperf_json(
        ns,
        target,
        secs,
        &["-u", "-b", rate, "-l", &len.to_string()],
    )?;
    let end = &v["end"];
    // iperf3 >= 3.13 reports the receiver side in sum_received; 3.12 in sum.
    let sum = if end["sum_received"].is_object() {
        &end["sum_received"]
    } else {
        &end["sum"]
    };
    let packets = sum["packets"]
        .as_f64()
        .context("iperf3: no UDP packet count")?;
    let lost = sum["lost_packets"]
        .as_f64()
        .context("iperf3: no lost_packets")?;
    let seconds = sum["seconds"]
        .as_f64()
        .filter(|s| *s > 0.0)
        .unwrap_or(f64::from(secs));
    if packets <= 0.0 {
        bail!("iperf3: no UDP packets sent");
    }
    let received = match sum["bits_per_second"].as_f64() {
        Some(bps) if end["sum_received"].is_object() => bps / 1e9,
        _ => (packets - lost).max(0.0) * f64::from(len) * 8.0 / seconds / 1e9,
    };
    Ok((100.0 * lost / packets, received))
}

fn ping(ns: &Netns, target: &str, count: u32) -> Result<f64> {
    let mut c = ns.cmd("ping");
    c.args([
        "-q",
        "-c",
        &count.to_string(),
        "-i",
        "0.01",
        "-W",
        "2",
        target,
    ]);
    let out = run_bounded(&mut c, Duration::from_secs(u64::from(count) / 50 + 15))?;
    // "rtt min/avg/max/mdev = 0.031/0.045/0.090/0.011 ms"
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("min/avg/max"))
        .with_context(|| format!("no RTT summary from ping: {}", tail(&out.stdout)))?;
    let avg = line
        .split('=')
        .nth(1)
        .and_then(|r| r.trim().split('/').nth(1))
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("cannot parse `{line}`"))?;
    Ok(avg)
}

// ---------------------------------------------------------------- report

/// The metrics, each with how to read it: larger is better for throughput.
struct Col {
    title: &'static str,
    unit: &'static str,
    higher_better: bool,
    get: fn(&Metrics) -> Option<f64>,
    key: &'static str,
}

const COLS: [Col; 4] = [
    Col {
        title: "TCP 1 stream",
        unit: "Gbit/s",
        higher_better: true,
        get: |m| m.tcp1_gbps,
        key: "tcp1_gbps",
    },
    Col {
        title: "TCP 4 streams",
        unit: "Gbit/s",
        higher_better: true,
        get: |m| m.tcp4_gbps,
        key: "tcp4_gbps",
    },
    Col {
        title: "UDP loss",
        unit: "%",
        higher_better: false,
        get: |m| m.udp_loss_pct,
        key: "udp_loss_pct",
    },
    Col {
        title: "ping RTT",
        unit: "ms",
        higher_better: false,
        get: |m| m.rtt_ms,
        key: "rtt_ms",
    },
];

/// Per column: the best peer and its value.
fn best_peer(results: &[(Kind, Outcome)]) -> Vec<Option<(Kind, f64)>> {
    COLS.iter()
        .map(|c| {
            results
                .iter()
                .filter(|(k, _)| k.is_peer())
                .filter_map(|(k, o)| match o {
                    Outcome::Measured(m) => (c.get)(m).map(|v| (*k, v)),
                    Outcome::Unavailable(_) => None,
                })
                .reduce(|a, b| {
                    let better = if c.higher_better {
                        b.1 > a.1
                    } else {
                        b.1 < a.1
                    };
                    if better {
                        b
                    } else {
                        a
                    }
                })
        })
        .collect()
}

/// value / best; for loss and RTT lower is better, so < 1 beats the best.
fn ratio(v: f64, best: f64) -> Option<f64> {
    (best > 0.0).then(|| v / best)
}

fn fmt_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn table(args: &TunnelArgs, results: &[(Kind, Outcome)], best: &[Option<(Kind, f64)>]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\ntunnel benchmark on {} ({} cores, kernel {}): iperf3 {} s per run, UDP {} offered ({} B payloads), {} pings at 10 ms",
        cpu_model(),
        thread::available_parallelism().map_or(0, |n| n.get()),
        kernel(),
        args.seconds,
        args.udp_rate,
        args.udp_len,
        args.pings,
    );
    let _ = write!(s, "{:<14}", "");
    for c in &COLS {
        let _ = write!(s, "  {:>22}", c.title);
    }
    let _ = write!(s, "\n{:<14}", "");
    for c in &COLS {
        let _ = write!(s, "  {:>12} {:>9}", c.unit, "x best");
    }
    s.push('\n');
    for (kind, outcome) in results {
        let _ = write!(s, "{:<14}", kind.name());
        match outcome {
            Outcome::Unavailable(why) => {
                let _ = write!(s, "  not available: {why}");
            }
            Outcome::Measured(m) => {
                for (c, b) in COLS.iter().zip(best) {
                    match (c.get)(m) {
                        Some(v) => {
                            let r = b
                                .and_then(|(_, bv)| ratio(v, bv))
                                .map_or("-".into(), |r| format!("{r:.2}x"));
                            let _ = write!(s, "  {:>12} {:>9}", fmt_value(v), r);
                        }
                        None => {
                            let _ = write!(s, "  {:>12} {:>9}", "failed", "");
                        }
                    }
                }
            }
        }
        s.push('\n');
    }
    let _ = write!(s, "x best = value / best peer's value in this run (");
    let names: Vec<String> = COLS
        .iter()
        .zip(best)
        .map(|(c, b)| match b {
            Some((k, _)) => format!("{}: {}", c.title, k.name()),
            None => format!("{}: none", c.title),
        })
        .collect();
    let _ = writeln!(
        s,
        "{}); peers are wireguard-go, boringtun, gotatun. Above 1 is better for TCP, below 1 for loss and RTT.",
        names.join(", ")
    );
    for (kind, outcome) in results {
        if let Outcome::Measured(m) = outcome {
            let retr: Vec<String> = [("TCP 1", m.tcp1_retrans), ("TCP 4", m.tcp4_retrans)]
                .iter()
                .filter_map(|(n, r)| r.map(|r| format!("{n}: {r} retransmits")))
                .chain(
                    m.udp_recv_gbps
                        .map(|g| format!("UDP received {} Gbit/s", fmt_value(g))),
                )
                .collect();
            let _ = writeln!(s, "  {:<12} {}", kind.name(), retr.join(", "));
            for e in &m.errors {
                let _ = writeln!(s, "  {:<12} error: {e}", kind.name());
            }
        }
    }
    s
}

fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU".into(), |m| m.trim().to_owned())
}

fn kernel() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease").map_or("?".into(), |k| k.trim().to_owned())
}

fn to_json(args: &TunnelArgs, results: &[(Kind, Outcome)], best: &[Option<(Kind, f64)>]) -> Value {
    let rows: Vec<Value> = results
        .iter()
        .map(|(kind, outcome)| match outcome {
            Outcome::Unavailable(why) => json!({
                "name": kind.name(),
                "peer": kind.is_peer(),
                "available": false,
                "reason": why,
            }),
            Outcome::Measured(m) => {
                let mut o = json!({
                    "name": kind.name(),
                    "peer": kind.is_peer(),
                    "available": true,
                    "tcp1_gbps": m.tcp1_gbps,
                    "tcp1_retransmits": m.tcp1_retrans,
                    "tcp4_gbps": m.tcp4_gbps,
                    "tcp4_retransmits": m.tcp4_retrans,
                    "udp_loss_pct": m.udp_loss_pct,
                    "udp_received_gbps": m.udp_recv_gbps,
                    "rtt_ms": m.rtt_ms,
                    "errors": m.errors,
                });
                let ratios: serde_json::Map<String, Value> = COLS
                    .iter()
                    .zip(best)
                    .filter_map(|(c, b)| {
                        let r = ratio((c.get)(m)?, b.as_ref()?.1)?;
                        Some((c.key.to_owned(), json!(r)))
                    })
                    .collect();
                o["ratio_to_best_peer"] = Value::Object(ratios);
                o
            }
        })
        .collect();
    let best: serde_json::Map<String, Value> = COLS
        .iter()
        .zip(best)
        .filter_map(|(c, b)| {
            let (k, v) = (*b)?;
            Some((c.key.to_owned(), json!({"name": k.name(), "value": v})))
        })
        .collect();
    json!({
        "machine": {
            "cpu": cpu_model(),
            "cores": thread::available_parallelism().map_or(0, |n| n.get()),
            "kernel": kernel(),
        },
        "settings": {
            "seconds": args.seconds,
            "udp_rate": args.udp_rate,
            "udp_len": args.udp_len,
            "pings": args.pings,
            "ping_interval_ms": 10,
            "tunnel_mtu": TUNNEL_MTU,
        },
        "best_peer": best,
        "results": rows,
    })
}
