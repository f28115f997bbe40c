//! `vpn-wg`, the wireguard-go drop-in, end to end: started and driven only
//! the way wireguard-go is (`vpn-wg IFACE`, then `wg` and `ip`, or
//! `wg-quick` with `WG_QUICK_USERSPACE_IMPLEMENTATION`), against
//! wireguard-go, boringtun and itself, in namespaces.
//!
//! ```text
//!        ns a                                   ns b
//!  ┌────────────────────────────┐        ┌────────────────────────────┐
//!  │ vpn-wg                     │        │ vpn-wg | wireguard-go |    │
//!  │ vt…w  100.64.0.1/24        │        │ boringtun  100.64.0.2/24   │
//!  │       fd00::1/64           │        │            fd00::2/64      │
//!  │ eth0  198.18.0.1/24 :51820 ┼────────┼ eth0 198.18.0.2/24 :51820  │
//!  └────────────────────────────┘        └────────────────────────────┘
//! ```
//! No vpn-ctl anywhere: keys, peers, addresses, MTU and routes come from
//! `wg` / `ip` / `wg-quick` only. Interface names are `vt<pid><tag><n>`
//! (tags `w` vpn-wg, `x` third-party peers, `q` wg-quick), unique across
//! the suite because the UAPI sockets (/var/run/wireguard) and /run/vpn are
//! shared by every namespace; every daemon, link and file is removed on
//! drop.
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    fs::{self, File},
    net::{Ipv4Addr, Ipv6Addr},
    os::unix::fs::MetadataExt,
    path::PathBuf,
    process::{Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use netns_harness::{self as h, Capture, Daemon, Netns};

const PORT: u16 = 51820;
/// The longest a vpn-wg may take to notice its link is gone and exit.
const EXIT_BOUND: Duration = Duration::from_secs(5);

/// One side's addresses: underlay, tunnel IPv4, tunnel IPv6.
#[derive(Clone, Copy, Debug)]
struct Addrs {
    under: &'static str,
    tun4: &'static str,
    tun6: &'static str,
}

const A: Addrs = Addrs {
    under: "198.18.0.1",
    tun4: "100.64.0.1",
    tun6: "fd00::1",
};
const B: Addrs = Addrs {
    under: "198.18.0.2",
    tun4: "100.64.0.2",
    tun6: "fd00::2",
};

fn sock_path(iface: &str) -> PathBuf {
    PathBuf::from(format!("/var/run/wireguard/{iface}.sock"))
}

fn run_path(iface: &str, ext: &str) -> PathBuf {
    PathBuf::from(format!("/run/vpn/{iface}.{ext}"))
}

/// What vpn-wg (or a third party) may leave for `iface`.
fn remove_files(iface: &str) {
    let _ = fs::remove_file(sock_path(iface));
    for ext in ["pid", "ctl", "log"] {
        let _ = fs::remove_file(run_path(iface, ext));
    }
}

// ---------------------------------------------------------------------------
// Processes, bounded.

/// A finished command.
struct Out {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl fmt::Display for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}\n--- stdout\n{}--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs a command to completion, for at most `timeout` (then it is killed
/// and the test fails). Output goes to files, not pipes, so a daemon the
/// command leaves behind cannot keep us waiting.
fn run_bounded(cmd: &mut Command, timeout: Duration) -> Out {
    let base = std::env::temp_dir().join(h::unique());
    let (o, e) = (base.with_extension("out"), base.with_extension("err"));
    let spawned = cmd
        .stdin(Stdio::null())
        .stdout(File::create(&o).unwrap())
        .stderr(File::create(&e).unwrap())
        .spawn();
    let read = || {
        let r = (
            fs::read_to_string(&o).unwrap_or_default(),
            fs::read_to_string(&e).unwrap_or_default(),
        );
        let _ = fs::remove_file(&o);
        let _ = fs::remove_file(&e);
        r
    };
    let mut child = match spawned {
        Ok(c) => c,
        Err(err) => {
            read();
            panic!("spawning {cmd:?}: {err}");
        }
    };
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            let (out, err) = read();
            panic!("{cmd:?} did not finish within {timeout:?}:\n{out}{err}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let (stdout, stderr) = read();
    Out {
        status,
        stdout,
        stderr,
    }
}

/// Runs a command that must succeed within 30 s; its stdout.
fn ok(cmd: &mut Command) -> String {
    let desc = format!("{cmd:?}");
    let out = run_bounded(cmd, Duration::from_secs(30));
    assert!(out.status.success(), "{desc} failed: {out}");
    out.stdout
}

fn wg(ns: &Netns, args: &[&str]) -> String {
    ok(ns.command("wg").args(args))
}

fn is_vpn_wg(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "vpn-wg")
}

fn pidfile(iface: &str) -> Option<u32> {
    fs::read_to_string(run_path(iface, "pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Stops a vpn-wg daemon we started (by its id): SIGTERM, up to 5 s, then
/// SIGKILL.
fn terminate(pid: u32) {
    if pid == 0 || !h::alive(pid) || !is_vpn_wg(pid) {
        return;
    }
    // SAFETY: plain signal to a daemon this test started.
    unsafe { libc::kill(pid.cast_signed(), libc::SIGTERM) };
    let start = Instant::now();
    while h::alive(pid) && start.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(10));
    }
    if h::alive(pid) && is_vpn_wg(pid) {
        // SAFETY: as above.
        unsafe { libc::kill(pid.cast_signed(), libc::SIGKILL) };
    }
}

/// The inode of a process's network namespace.
fn netns_ino_of(pid: u32) -> u64 {
    fs::metadata(format!("/proc/{pid}/ns/net")).unwrap().ino()
}

// ---------------------------------------------------------------------------
// WireGuard ends configured with `wg` and `ip` only.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `vpn-wg IFACE`: returns once ready, the daemon in the background.
    VpnWg,
    /// `LOG_LEVEL=verbose vpn-wg -f IFACE`.
    VpnWgFlag,
    /// `WG_PROCESS_FOREGROUND=1 vpn-wg IFACE`.
    VpnWgEnv,
    WireguardGo,
    Boringtun,
}

impl Kind {
    fn is_vpn_wg(self) -> bool {
        matches!(self, Self::VpnWg | Self::VpnWgFlag | Self::VpnWgEnv)
    }
}

/// One WireGuard end: the program, its interface, its keys. On drop its
/// link is deleted, its process stopped and its files removed.
struct End<'a> {
    ns: &'a Netns,
    kind: Kind,
    iface: String,
    keys: (String, String),
    /// Foreground processes (the `-f` / env vpn-wg, third parties).
    daemon: Option<Daemon>,
    /// The background vpn-wg's pid (from its pidfile).
    pid: u32,
}

impl Drop for End<'_> {
    fn drop(&mut self) {
        let pid = if self.pid == 0 {
            pidfile(&self.iface).unwrap_or(0)
        } else {
            self.pid
        };
        let _ = self
            .ns
            .command("ip")
            .args(["link", "del", &self.iface])
            .stderr(Stdio::null())
            .status();
        if let Some(mut d) = self.daemon.take() {
            let _ = d.wait(Duration::from_secs(2));
            d.stop();
        } else if self.kind.is_vpn_wg() {
            let start = Instant::now();
            while h::alive(pid) && start.elapsed() < Duration::from_secs(2) {
                thread::sleep(Duration::from_millis(10));
            }
            terminate(pid);
        }
        remove_files(&self.iface);
    }
}

impl<'a> End<'a> {
    /// Starts `kind` in `ns`, as wireguard-go would be started; returns
    /// once its UAPI socket exists.
    fn start(ns: &'a Netns, kind: Kind, s: &h::Scratch) -> Self {
        let iface = h::ifname(if kind.is_vpn_wg() { 'w' } else { 'x' });
        let mut end = End {
            ns,
            kind,
            iface,
            keys: h::key_pair().unwrap(),
            daemon: None,
            pid: 0,
        };
        let iface = end.iface.clone();
        let sock = sock_path(&iface);
        match kind {
            Kind::VpnWg => {
                let mut c = ns.command(h::vpn_wg_bin());
                c.arg(&iface)
                    .env_remove("WG_PROCESS_FOREGROUND")
                    .env_remove("LOG_LEVEL");
                let out = run_bounded(&mut c, Duration::from_secs(15));
                assert!(out.status.success(), "vpn-wg {iface}: {out}");
                // Ready when the command returns: wg-quick runs `wg setconf`
                // right after it.
                assert!(sock.exists(), "no UAPI socket once vpn-wg returned");
                end.pid = pidfile(&iface).expect("no pidfile once vpn-wg returned");
                assert!(h::alive(end.pid) && is_vpn_wg(end.pid), "pid {}", end.pid);
                assert_eq!(
                    netns_ino_of(end.pid),
                    fs::metadata(ns.path()).unwrap().ino(),
                    "the daemon runs in another namespace than the command"
                );
            }
            Kind::VpnWgFlag | Kind::VpnWgEnv => {
                let mut c = ns.command(h::vpn_wg_bin());
                if kind == Kind::VpnWgFlag {
                    c.args(["-f", &iface])
                        .env("LOG_LEVEL", "verbose")
                        .env_remove("WG_PROCESS_FOREGROUND");
                } else {
                    c.arg(&iface)
                        .env("WG_PROCESS_FOREGROUND", "1")
                        .env_remove("LOG_LEVEL");
                }
                end.daemon = Some(ns.spawn(&mut c).unwrap());
                let d = end.daemon.as_mut().unwrap();
                h::wait_until("vpn-wg's UAPI socket", Duration::from_secs(10), || {
                    sock.exists() || d.wait(Duration::ZERO).unwrap().is_some()
                });
                assert!(
                    d.wait(Duration::ZERO).unwrap().is_none(),
                    "vpn-wg in the foreground exited:\n{}{}",
                    d.stdout(),
                    d.stderr()
                );
                // Still the process we started: it did not fork away.
                h::wait_until("vpn-wg's pidfile", Duration::from_secs(5), || {
                    pidfile(&iface).is_some()
                });
                assert_eq!(pidfile(&iface), Some(d.pid()), "not in the foreground");
                end.pid = d.pid();
                if kind == Kind::VpnWgFlag {
                    // LOG_LEVEL=verbose: the logs come on stderr.
                    d.wait_for("listening on UDP port", Duration::from_secs(5))
                        .unwrap();
                }
            }
            Kind::WireguardGo => {
                let mut c = ns.command("wireguard-go");
                c.arg("-f").arg(&iface).env("WG_PROCESS_FOREGROUND", "1");
                end.daemon = Some(ns.spawn(&mut c).unwrap());
                h::wait_until(
                    "wireguard-go's UAPI socket",
                    Duration::from_secs(10),
                    || sock.exists(),
                );
            }
            Kind::Boringtun => {
                let log = s.path().join(format!("{iface}.boringtun.log"));
                let mut c = ns.command("boringtun-cli");
                c.args(["-f", "--disable-drop-privileges"])
                    .arg("-l")
                    .arg(log)
                    .arg(&iface)
                    .env("WG_SUDO", "1");
                end.daemon = Some(ns.spawn(&mut c).unwrap());
                h::wait_until("boringtun's UAPI socket", Duration::from_secs(10), || {
                    sock.exists()
                });
            }
        }
        let link = ns.ip(&["-d", "link", "show", &iface]).unwrap();
        // A TUN: a userspace implementation, never a kernel module.
        assert!(link.contains("tun type tun"), "{link}");
        if kind.is_vpn_wg() {
            // As wireguard-go: MTU 1420, down, no addresses.
            assert!(
                link.contains("mtu 1420") && link.contains("state DOWN"),
                "{link}"
            );
            let addrs = ns.ip(&["-o", "addr", "show", "dev", &iface]).unwrap();
            assert_eq!(addrs.trim(), "", "addresses on a fresh vpn-wg link");
        }
        end
    }

    /// `wg set IFACE private-key … listen-port PORT peer PUB allowed-ips …
    /// [endpoint …]`, in the end's own namespace.
    fn set_peer(&self, s: &h::Scratch, peer: &str, allowed: &str, endpoint: Option<&str>) {
        let key = s.write(&format!("{}.key", self.iface), &self.keys.0);
        let port = PORT.to_string();
        let mut args = vec![
            "set",
            &self.iface,
            "private-key",
            key.to_str().unwrap(),
            "listen-port",
            &port,
            "peer",
            peer,
            "allowed-ips",
            allowed,
        ];
        if let Some(e) = endpoint {
            args.extend(["endpoint", e]);
        }
        wg(self.ns, &args);
    }

    /// `wg show IFACE dump`'s line for `peer`: psk, endpoint, allowed-ips,
    /// handshake, rx, tx, keepalive.
    fn dump_peer(&self, peer: &str) -> Vec<String> {
        let dump = wg(self.ns, &["show", &self.iface, "dump"]);
        dump.lines()
            .skip(1)
            .map(|l| l.split('\t').map(str::to_owned).collect::<Vec<_>>())
            .find(|f| f[0] == peer)
            .unwrap_or_else(|| panic!("no peer {peer} in:\n{dump}"))
    }
}

/// Addresses, MTU and up, with `ip`, in `ns` (where the link lives).
fn tun_addrs(ns: &Netns, iface: &str, a: Addrs, mtu: u32) {
    ns.ip(&["addr", "add", &format!("{}/24", a.tun4), "dev", iface])
        .unwrap();
    ns.ip(&["addr", "add", &format!("{}/64", a.tun6), "dev", iface])
        .unwrap();
    ns.ip(&["link", "set", iface, "mtu", &mtu.to_string(), "up"])
        .unwrap();
}

fn allowed_of(x: Addrs) -> String {
    format!("{}/32,{}/128", x.tun4, x.tun6)
}

/// Keys and peers with `wg`, addresses with `ip`: `i` (at `ia`) knows the
/// endpoint of `r` (at `ra`), so `i` initiates.
fn connect(i: &End, ia: Addrs, r: &End, ra: Addrs, s: &h::Scratch) {
    i.set_peer(
        s,
        &r.keys.1,
        &allowed_of(ra),
        Some(&format!("{}:{PORT}", ra.under)),
    );
    r.set_peer(s, &i.keys.1, &allowed_of(ia), None);
    tun_addrs(i.ns, &i.iface, ia, 1420);
    tun_addrs(r.ns, &r.iface, ra, 1420);
}

/// Both ends report a handshake with each other, traffic both ways, and
/// the other's underlay address as endpoint.
fn assert_handshake(x: &End, xa: Addrs, y: &End, ya: Addrs) {
    for (me, other, oa) in [(x, y, ya), (y, x, xa)] {
        let p = me.dump_peer(&other.keys.1);
        assert_eq!(p[2], format!("{}:{PORT}", oa.under), "{:?}: {p:?}", me.kind);
        // boringtun reports the seconds since the handshake rather than
        // its time, so 0 right after one.
        if me.kind != Kind::Boringtun {
            assert!(p[4].parse::<u64>().unwrap() > 0, "no handshake: {p:?}");
        }
        assert!(
            p[5].parse::<u64>().unwrap() > 0 && p[6].parse::<u64>().unwrap() > 0,
            "no transfer: {p:?}"
        );
    }
}

/// Two namespaces joined by a veth `eth0` (198.18.0.1/24 — 198.18.0.2/24).
fn underlay() -> (Netns, Netns) {
    h::require_root();
    let h::Pair { a, b } = h::Pair::new(
        ("eth0", &[&format!("{}/24", A.under)]),
        ("eth0", &[&format!("{}/24", B.under)]),
    )
    .unwrap();
    (a, b)
}

// ---------------------------------------------------------------------------
// Traffic.

fn ping_with(ns: &Netns, dst: &str, extra: &[&str]) {
    let desc = format!("ping {extra:?} {dst}");
    let out = run_bounded(
        ns.command("ping")
            .args(extra)
            .args(["-c", "3", "-i", "0.2", "-w", "6", dst]),
        Duration::from_secs(15),
    );
    assert!(out.status.success(), "{desc}: {out}");
}

/// Three replies within the deadline.
fn ping(ns: &Netns, dst: &str) {
    ping_with(ns, dst, &[]);
}

/// A ping of `size` payload bytes that must not be fragmented on the way.
fn ping_big(ns: &Netns, dst: &str, size: u32) {
    ping_with(ns, dst, &["-M", "do", "-s", &size.to_string()]);
}

/// iperf3 for 2 s from `client` to `server` at `addr` (`reverse`: the
/// server sends); the receiver's Mbit/s.
fn iperf(server: &Netns, addr: &str, client: &Netns, reverse: bool) -> f64 {
    let mut srv = server
        .spawn(
            server
                .command("iperf3")
                .args(["-s", "-1", "--forceflush", "-B", addr]),
        )
        .unwrap();
    srv.wait_for("Server listening", Duration::from_secs(10))
        .unwrap();
    let mut c = client.command("iperf3");
    c.args(["-c", addr, "-t", "2", "-J", "--connect-timeout", "5000"]);
    if reverse {
        c.arg("-R");
    }
    let out = run_bounded(&mut c, Duration::from_secs(40));
    assert!(out.status.success(), "iperf3 -c {addr}: {out}");
    let j: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let bytes = j["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
    let bps = j["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0);
    assert!(
        bytes > 1_000_000 && bps > 10e6,
        "iperf3 to {addr} moved only {bytes} bytes ({bps} bit/s)"
    );
    let _ = srv.wait(Duration::from_secs(5));
    bps / 1e6
}

const RECEIVER: &str = r#"
import hashlib, socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 7001))
s.listen(1)
s.settimeout(30)
print("listening", flush=True)
c, _ = s.accept()
c.settimeout(30)
h, n = hashlib.sha256(), 0
while True:
    b = c.recv(1 << 20)
    if not b:
        break
    h.update(b)
    n += len(b)
print("got", n, h.hexdigest(), flush=True)
"#;

const SENDER: &str = r#"
import hashlib, os, socket, sys
data = os.urandom(int(sys.argv[2]))
c = socket.create_connection((sys.argv[1], 7001), timeout=30)
c.sendall(data)
c.shutdown(socket.SHUT_WR)
c.recv(1)
print("got", len(data), hashlib.sha256(data).hexdigest(), flush=True)
"#;

/// `size` random bytes over TCP from `client` to `server` at `addr`; what
/// arrives is what was sent (sha256).
fn transfer(server: &Netns, addr: &str, client: &Netns, size: usize) {
    let mut rx = server
        .spawn(server.command("python3").args(["-c", RECEIVER, addr]))
        .unwrap();
    rx.wait_for("listening", Duration::from_secs(10)).unwrap();
    let sent = ok(client
        .command("python3")
        .args(["-c", SENDER, addr, &size.to_string()]));
    assert!(
        rx.wait(Duration::from_secs(30)).unwrap().is_some(),
        "receiver did not finish"
    );
    let got = rx.stdout();
    assert_eq!(
        got.lines().find(|l| l.starts_with("got")),
        sent.lines().find(|l| l.starts_with("got")),
        "the data arrived changed: sent {sent}, received {got}{}",
        rx.stderr()
    );
}

/// Pings both ways over both families, then bulk TCP both ways: iperf3
/// (throughput printed) and a checksummed transfer.
fn traffic(na: &Netns, nb: &Netns, label: &str) {
    ping(na, B.tun4);
    ping(na, B.tun6);
    ping(nb, A.tun4);
    ping(nb, A.tun6);
    let ab = iperf(nb, B.tun4, na, false);
    let ba = iperf(nb, B.tun4, na, true);
    eprintln!("{label}: iperf3 vpn-wg → peer {ab:.0} Mbit/s, peer → vpn-wg {ba:.0} Mbit/s");
    transfer(nb, B.tun4, na, 16 << 20);
    transfer(na, A.tun6, nb, 16 << 20);
}

// ---------------------------------------------------------------------------
// Interoperability.

/// vpn-wg in `a` against `kind` in `b`, both set up with wg/ip only.
fn interop(kind: Kind, vpn_wg_initiates: bool, label: &str) {
    let (na, nb) = underlay();
    let s = h::Scratch::new().unwrap();
    let a = End::start(&na, Kind::VpnWg, &s);
    let b = End::start(&nb, kind, &s);
    if vpn_wg_initiates {
        connect(&a, A, &b, B, &s);
        ping(&na, B.tun4);
    } else {
        connect(&b, B, &a, A, &s);
        ping(&nb, A.tun4);
    }
    assert_handshake(&a, A, &b, B);
    traffic(&na, &nb, label);
    // `wg show` (human) reads vpn-wg's UAPI as wireguard-go's.
    let human = wg(&na, &["show", &a.iface]);
    assert!(
        human.contains(&format!("peer: {}", b.keys.1))
            && human.contains("latest handshake:")
            && human.contains("transfer:"),
        "{human}"
    );
}

#[test]
fn with_wireguard_go_vpn_wg_initiates() {
    interop(Kind::WireguardGo, true, "vpn-wg ⇄ wireguard-go");
}

#[test]
fn with_wireguard_go_vpn_wg_responds() {
    interop(
        Kind::WireguardGo,
        false,
        "vpn-wg ⇄ wireguard-go (responder)",
    );
}

#[test]
fn with_boringtun_vpn_wg_initiates() {
    interop(Kind::Boringtun, true, "vpn-wg ⇄ boringtun");
}

#[test]
fn with_boringtun_vpn_wg_responds() {
    interop(Kind::Boringtun, false, "vpn-wg ⇄ boringtun (responder)");
}

/// Both ends vpn-wg, one in the background, one `-f` with verbose logs.
#[test]
fn with_itself() {
    interop(Kind::VpnWgFlag, true, "vpn-wg ⇄ vpn-wg");
}

// ---------------------------------------------------------------------------
// The link moved to another namespace.

/// vpn-wg starts in `a`; its link is moved to `c` (no underlay there) and
/// configured there; the UDP socket stays in `a`; traffic flows. When `c`
/// goes away (a container exiting), so does the link, and vpn-wg exits.
#[test]
fn link_moved_to_another_namespace() {
    let (na, nb) = underlay();
    let nc = Netns::new().unwrap();
    let s = h::Scratch::new().unwrap();
    let a = End::start(&na, Kind::VpnWg, &s);
    let b = End::start(&nb, Kind::WireguardGo, &s);

    na.ip(&["link", "set", &a.iface, "netns", nc.name()])
        .unwrap();
    assert!(na.ip(&["link", "show", &a.iface]).is_err(), "still in a");
    let link = nc.ip(&["-d", "link", "show", &a.iface]).unwrap();
    assert!(link.contains("tun type tun"), "{link}");

    // Keys and peers over the UAPI (from inside c, as a container would),
    // addresses, MTU, up and routes inside c.
    let key = s.write("a.key", &a.keys.0);
    wg(
        &nc,
        &[
            "set",
            &a.iface,
            "private-key",
            key.to_str().unwrap(),
            "listen-port",
            &PORT.to_string(),
            "peer",
            &b.keys.1,
            "allowed-ips",
            &format!("{},100.64.9.0/24", allowed_of(B)),
            "endpoint",
            &format!("{}:{PORT}", B.under),
        ],
    );
    tun_addrs(&nc, &a.iface, A, 1420);
    nc.ip(&["route", "add", "100.64.9.0/24", "dev", &a.iface])
        .unwrap();
    // Behind the peer: an address only the tunnel route reaches.
    nb.ip(&["addr", "add", "100.64.9.1/32", "dev", "lo"])
        .unwrap();
    b.set_peer(&s, &a.keys.1, &allowed_of(A), None);
    tun_addrs(&nb, &b.iface, B, 1420);

    ping(&nc, B.tun4);
    ping(&nc, B.tun6);
    ping(&nc, "100.64.9.1");
    ping(&nb, A.tun4);
    let ab = iperf(&nb, B.tun4, &nc, false);
    let ba = iperf(&nb, B.tun4, &nc, true);
    eprintln!("moved link: iperf3 c → peer {ab:.0} Mbit/s, peer → c {ba:.0} Mbit/s");
    transfer(&nb, B.tun4, &nc, 8 << 20);

    // The UDP socket is where vpn-wg started: bound in a, none in c.
    let udp_a = ok(na.command("ss").args(["-Hulnp"]));
    assert!(
        udp_a
            .lines()
            .any(|l| l.contains(&format!(":{PORT} ")) && l.contains("\"vpn-wg\"")),
        "port {PORT} not bound by vpn-wg in a:\n{udp_a}"
    );
    let udp_c = ok(nc.command("ss").args(["-Huan"]));
    assert_eq!(udp_c.trim(), "", "UDP sockets in c");
    // The peer sees a's underlay address.
    let p = b.dump_peer(&a.keys.1);
    assert_eq!(p[2], format!("{}:{PORT}", A.under), "{p:?}");
    assert!(p[4].parse::<u64>().unwrap() > 0, "{p:?}");
    assert!(h::alive(a.pid));

    // The container goes: its namespace and the link with it; vpn-wg
    // notices through the TUN itself and cleans up.
    let pid = a.pid;
    drop(nc);
    let took = h::wait_until(
        "vpn-wg to exit after its namespace went",
        Duration::from_secs(10),
        || !h::alive(pid),
    );
    eprintln!("moved link: vpn-wg exited {took:?} after the namespace was deleted");
    assert!(!sock_path(&a.iface).exists(), "UAPI socket left");
    assert!(!run_path(&a.iface, "pid").exists(), "pidfile left");
    assert!(!run_path(&a.iface, "ctl").exists(), "status socket left");
}

// ---------------------------------------------------------------------------
// Large MTU.

fn set_mtu(ns: &Netns, iface: &str, mtu: u32) {
    ns.ip(&["link", "set", iface, "mtu", &mtu.to_string()])
        .unwrap();
    let link = ns.ip(&["link", "show", iface]).unwrap();
    assert!(link.contains(&format!("mtu {mtu} ")), "{link}");
}

/// The MTU raised after start (as `ip link set mtu` / wg-quick's MTU= do)
/// on two vpn-wg ends: full-size unfragmentable pings at 9000 and a bulk
/// transfer, then 60000-byte pings at 65535. The underlay stays at 1500,
/// so the sealed datagrams are fragmented there.
#[test]
fn large_mtu() {
    let (na, nb) = underlay();
    let s = h::Scratch::new().unwrap();
    let a = End::start(&na, Kind::VpnWg, &s);
    let b = End::start(&nb, Kind::VpnWgEnv, &s);
    connect(&a, A, &b, B, &s);
    ping(&na, B.tun4);
    ping_big(&na, B.tun4, 1420 - 28);

    for (ns, iface) in [(&na, &a.iface), (&nb, &b.iface)] {
        set_mtu(ns, iface, 9000);
    }
    ping_big(&na, B.tun4, 9000 - 28);
    ping_big(&nb, A.tun4, 9000 - 28);
    ping_big(&na, B.tun6, 9000 - 48);
    ping_big(&nb, A.tun6, 9000 - 48);
    transfer(&nb, B.tun4, &na, 8 << 20);
    transfer(&na, A.tun4, &nb, 8 << 20);

    for (ns, iface) in [(&na, &a.iface), (&nb, &b.iface)] {
        set_mtu(ns, iface, 65535);
    }
    ping_big(&na, B.tun4, 60000);
    ping_big(&nb, A.tun4, 60000);
    ping_big(&na, B.tun6, 60000);
    ping_big(&nb, A.tun6, 60000);
    // Back down: small packets still flow.
    for (ns, iface) in [(&na, &a.iface), (&nb, &b.iface)] {
        set_mtu(ns, iface, 1420);
    }
    ping_big(&na, B.tun4, 1420 - 28);
    assert!(h::alive(a.pid) && h::alive(b.pid));
}

// ---------------------------------------------------------------------------
// The link deleted under load.

/// `ip link del` while bulk TCP and a fast ping run through it: each
/// vpn-wg exits within [`EXIT_BOUND`] and removes its UAPI socket, pidfile
/// and status socket. First the receiving side (foreground, exit code 0),
/// then the sending side (background) while its TCP still retransmits.
#[test]
fn link_deleted_while_traffic_flows() {
    let (na, nb) = underlay();
    let s = h::Scratch::new().unwrap();
    let mut a = End::start(&na, Kind::VpnWg, &s);
    let mut b = End::start(&nb, Kind::VpnWgFlag, &s);
    connect(&a, A, &b, B, &s);
    ping(&na, B.tun4);

    let mut srv = nb
        .spawn(
            nb.command("iperf3")
                .args(["-s", "-1", "--forceflush", "-B", B.tun4]),
        )
        .unwrap();
    srv.wait_for("Server listening", Duration::from_secs(10))
        .unwrap();
    let _bulk = na
        .spawn(na.command("iperf3").args(["-c", B.tun4, "-t", "60"]))
        .unwrap();
    let _ping_ab = na
        .spawn(na.command("ping").args(["-i", "0.01", "-W", "1", B.tun4]))
        .unwrap();
    let _ping_ba = nb
        .spawn(nb.command("ping").args(["-i", "0.01", "-W", "1", A.tun4]))
        .unwrap();
    // Traffic is really flowing.
    let rx = |e: &End, peer: &str| e.dump_peer(peer)[5].parse::<u64>().unwrap();
    let before = rx(&b, &a.keys.1);
    thread::sleep(Duration::from_millis(1500));
    let after = rx(&b, &a.keys.1);
    assert!(
        after > before + 1_000_000,
        "no bulk traffic: {before} → {after}"
    );

    // The receiver goes.
    nb.ip(&["link", "del", &b.iface]).unwrap();
    let t = Instant::now();
    let d = b.daemon.as_mut().unwrap();
    let status = d.wait(EXIT_BOUND).unwrap();
    let took_b = t.elapsed();
    let status = status.unwrap_or_else(|| {
        panic!(
            "vpn-wg -f did not exit within {EXIT_BOUND:?} of its link's deletion:\n{}",
            d.stderr()
        )
    });
    assert!(status.success(), "{status}:\n{}", d.stderr());
    assert!(!sock_path(&b.iface).exists(), "UAPI socket left");
    assert!(!run_path(&b.iface, "pid").exists(), "pidfile left");
    assert!(!run_path(&b.iface, "ctl").exists(), "status socket left");

    // The sender goes, while its TCP keeps retransmitting into it.
    thread::sleep(Duration::from_millis(500));
    let pid = a.pid;
    na.ip(&["link", "del", &a.iface]).unwrap();
    let took_a = h::wait_until(
        "the background vpn-wg to exit after its link's deletion",
        EXIT_BOUND,
        || !h::alive(pid),
    );
    assert!(!sock_path(&a.iface).exists(), "UAPI socket left");
    assert!(!run_path(&a.iface, "pid").exists(), "pidfile left");
    assert!(!run_path(&a.iface, "ctl").exists(), "status socket left");
    eprintln!("link deleted under load: receiver exited in {took_b:?}, sender in {took_a:?}");
    a.pid = 0;
    drop(srv);
}

// ---------------------------------------------------------------------------
// wg-quick.

/// `wg-quick up FILE` in a namespace, with vpn-wg as the userspace
/// implementation; on drop `wg-quick down`, then whatever is left.
struct Quick<'a> {
    ns: &'a Netns,
    iface: String,
    conf: PathBuf,
}

impl Quick<'_> {
    fn run(&self, verb: &str) -> Out {
        let bin = fs::canonicalize(h::vpn_wg_bin()).unwrap();
        run_bounded(
            self.ns
                .command("wg-quick")
                .args([verb, self.conf.to_str().unwrap()])
                .env("WG_QUICK_USERSPACE_IMPLEMENTATION", bin)
                .env_remove("WG_PROCESS_FOREGROUND")
                .env_remove("LOG_LEVEL"),
            Duration::from_secs(60),
        )
    }
}

impl Drop for Quick<'_> {
    fn drop(&mut self) {
        let pid = pidfile(&self.iface).unwrap_or(0);
        if self.ns.ip(&["link", "show", &self.iface]).is_ok() {
            let _ = self.run("down");
            let _ = self
                .ns
                .command("ip")
                .args(["link", "del", &self.iface])
                .stderr(Stdio::null())
                .status();
        }
        let start = Instant::now();
        while h::alive(pid) && start.elapsed() < Duration::from_secs(3) {
            thread::sleep(Duration::from_millis(10));
        }
        terminate(pid);
        remove_files(&self.iface);
    }
}

/// The wg-quick world: `v` (wg-quick, default route via the peer's
/// underlay), `p` (a wireguard-go peer reached at 198.19.1.1, its loopback,
/// so only the default route leads there; it forwards to `w`), `w` (the
/// "world", 198.19.3.2 / fd00:3::2, behind the peer).
struct QuickWorld {
    v: Netns,
    p: Netns,
    w: Netns,
    s: h::Scratch,
    keys: (String, String),
}

const PEER_ENDPOINT: &str = "198.19.1.1";
const WORLD4: &str = "198.19.3.2";
const WORLD6: &str = "fd00:3::2";

fn quick_world() -> QuickWorld {
    let (v, p) = underlay();
    let w = Netns::new().unwrap();
    v.ip(&["route", "add", "default", "via", B.under]).unwrap();
    p.ip(&["addr", "add", &format!("{PEER_ENDPOINT}/32"), "dev", "lo"])
        .unwrap();
    h::veth(
        &p,
        ("w0", &["198.19.3.1/24"]),
        &w,
        ("eth0", &[&format!("{WORLD4}/24")]),
    )
    .unwrap();
    p.ip(&["-6", "addr", "add", "fd00:3::1/64", "dev", "w0", "nodad"])
        .unwrap();
    w.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{WORLD6}/64"),
        "dev",
        "eth0",
        "nodad",
    ])
    .unwrap();
    w.ip(&["route", "add", "default", "via", "198.19.3.1"])
        .unwrap();
    w.ip(&["-6", "route", "add", "default", "via", "fd00:3::1"])
        .unwrap();
    p.sh("sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1")
        .unwrap();
    QuickWorld {
        v,
        p,
        w,
        s: h::Scratch::new().unwrap(),
        keys: h::key_pair().unwrap(),
    }
}

impl QuickWorld {
    /// The wireguard-go peer: responder, tunnel 100.64.0.2/24, fd00::2/64.
    fn peer(&self) -> End<'_> {
        let peer = End::start(&self.p, Kind::WireguardGo, &self.s);
        peer.set_peer(&self.s, &self.keys.1, &allowed_of(A), None);
        tun_addrs(&self.p, &peer.iface, B, 1420);
        peer
    }

    fn quick(&self, text: &str) -> Quick<'_> {
        let iface = h::ifname('q');
        let conf = self.s.write(&format!("{iface}.conf"), text);
        Quick {
            ns: &self.v,
            iface,
            conf,
        }
    }
}

fn rules(ns: &Netns) -> (String, String) {
    (
        ns.ip(&["-4", "rule", "show"]).unwrap(),
        ns.ip(&["-6", "rule", "show"]).unwrap(),
    )
}

/// After `wg-quick down`: vpn-wg gone with its socket and pidfile, the
/// link gone.
fn assert_quick_down(q: &Quick, pid: u32) {
    let took = h::wait_until("vpn-wg to exit after wg-quick down", EXIT_BOUND, || {
        !h::alive(pid)
    });
    eprintln!("wg-quick down: vpn-wg exited after {took:?}");
    assert!(!sock_path(&q.iface).exists(), "UAPI socket left");
    assert!(!run_path(&q.iface, "pid").exists(), "pidfile left");
    assert!(q.ns.ip(&["link", "show", &q.iface]).is_err(), "link left");
}

/// The vpn-wg wg-quick started: running, in the namespace wg-quick ran in.
fn quick_daemon(q: &Quick, up: &Out) -> u32 {
    let pid = pidfile(&q.iface).unwrap_or_else(|| panic!("no pidfile after wg-quick up: {up}"));
    assert!(h::alive(pid) && is_vpn_wg(pid), "pid {pid}");
    assert_eq!(
        netns_ino_of(pid),
        fs::metadata(q.ns.path()).unwrap().ino(),
        "vpn-wg runs outside wg-quick's namespace"
    );
    assert!(sock_path(&q.iface).exists());
    pid
}

/// wg-quick's full tunnel (AllowedIPs 0.0.0.0/0, ::/0): its fwmark on
/// vpn-wg's socket, its rules, MTU= and Address=; the peer's tunnel
/// address and the world behind the peer are reached through the tunnel,
/// and the encrypted UDP leaves on the underlay (the default route is the
/// tunnel for everything unmarked, so without SO_MARK it would loop).
/// `down` removes interface, rules, socket and process.
#[test]
fn wg_quick_full_tunnel() {
    let q = quick_world();
    let peer = q.peer();
    let rules_before = rules(&q.v);
    let quick = q.quick(&format!(
        "[Interface]\nPrivateKey = {}\nAddress = {}/24, {}/64\nMTU = 1380\nListenPort = {PORT}\n\n\
         [Peer]\nPublicKey = {}\nAllowedIPs = 0.0.0.0/0, ::/0\nEndpoint = {PEER_ENDPOINT}:{PORT}\n",
        q.keys.0, A.tun4, A.tun6, peer.keys.1
    ));
    let iface = quick.iface.clone();
    let up = quick.run("up");
    assert!(up.status.success(), "wg-quick up: {up}");
    assert!(
        up.stderr
            .contains("Falling back to slow userspace implementation")
            && up.stderr.contains(&format!("vpn-wg {iface}")),
        "wg-quick did not run vpn-wg: {up}"
    );
    assert!(!up.stderr.contains("Warning"), "{up}");
    let pid = quick_daemon(&quick, &up);

    let link = q.v.ip(&["-d", "link", "show", &iface]).unwrap();
    assert!(
        link.contains("tun type tun") && link.contains("mtu 1380") && link.contains(",UP"),
        "{link}"
    );
    assert_eq!(wg(&q.v, &["show", &iface, "fwmark"]).trim(), "0xca6c");
    let (r4, r6) = rules(&q.v);
    for r in [&r4, &r6] {
        assert!(
            r.contains("not from all fwmark 0xca6c lookup 51820")
                && r.contains("from all lookup main suppress_prefixlength 0"),
            "{r}"
        );
    }
    for fam in ["-4", "-6"] {
        let t = q.v.ip(&[fam, "route", "show", "table", "51820"]).unwrap();
        assert!(t.contains(&format!("default dev {iface}")), "{t}");
    }
    let nft = ok(q.v.command("nft").args(["list", "tables"]));
    assert!(nft.contains(&format!("wg-quick-{iface}")), "{nft}");

    let under = Capture::start(&q.v, "eth0", &format!("udp and host {PEER_ENDPOINT}")).unwrap();
    let leak = Capture::start(
        &q.v,
        "eth0",
        &format!(
            "host {WORLD4} or host {WORLD6} or host {} or host {}",
            B.tun4, B.tun6
        ),
    )
    .unwrap();
    let inner = Capture::start(&q.v, &iface, &format!("icmp and host {WORLD4}")).unwrap();
    ping(&q.v, B.tun4);
    ping(&q.v, B.tun6);
    ping(&q.v, WORLD4);
    ping(&q.v, WORLD6);
    transfer(&q.w, WORLD4, &q.v, 4 << 20);
    let (under, leak, inner) = (
        under.finish().unwrap(),
        leak.finish().unwrap(),
        inner.finish().unwrap(),
    );
    let out = format!("IP {}.{PORT} > {PEER_ENDPOINT}.{PORT}: UDP", A.under);
    let back = format!("IP {PEER_ENDPOINT}.{PORT} > {}.{PORT}: UDP", A.under);
    assert!(
        under.iter().any(|l| l.contains(&out)) && under.iter().any(|l| l.contains(&back)),
        "no encrypted UDP on the underlay: {under:#?}"
    );
    assert!(leak.is_empty(), "plaintext on the underlay: {leak:#?}");
    assert!(
        inner.len() >= 6,
        "world pings not in the tunnel: {inner:#?}"
    );
    let p = peer.dump_peer(&q.keys.1);
    assert_eq!(p[2], format!("{}:{PORT}", A.under), "{p:?}");
    let dump = wg(&q.v, &["show", &iface, "dump"]);
    assert!(
        dump.contains(&format!("{PEER_ENDPOINT}:{PORT}\t0.0.0.0/0,::/0\t")),
        "{dump}"
    );

    // The control: without the mark on its socket the sealed packets
    // would route into the tunnel again; with it back, traffic flows.
    wg(&q.v, &["set", &iface, "fwmark", "0"]);
    let looped = run_bounded(
        q.v.command("ping")
            .args(["-c", "2", "-i", "0.2", "-W", "1", "-w", "3", WORLD4]),
        Duration::from_secs(10),
    );
    assert!(
        !looped.status.success(),
        "traffic flowed without the fwmark: {looped}"
    );
    wg(&q.v, &["set", &iface, "fwmark", "51820"]);
    ping(&q.v, WORLD4);
    ping(&q.v, B.tun6);
    assert!(h::alive(pid));

    let down = quick.run("down");
    assert!(down.status.success(), "wg-quick down: {down}");
    assert_quick_down(&quick, pid);
    assert_eq!(rules(&q.v), rules_before, "rules left");
    for fam in ["-4", "-6"] {
        let t = q.v.ip(&[fam, "route", "show", "table", "51820"]).unwrap();
        assert_eq!(t.trim(), "", "routes left in table 51820");
    }
    let nft = ok(q.v.command("nft").args(["list", "tables"]));
    assert!(!nft.contains("wg-quick-"), "{nft}");
}

/// `Table = off`: wg-quick adds no routes, rules or fwmark; a host route
/// the test adds carries traffic to the peer and the world. MTU comes from
/// wg-quick's own computation (underlay 1500 − 80).
#[test]
fn wg_quick_table_off() {
    let q = quick_world();
    let peer = q.peer();
    let rules_before = rules(&q.v);
    let quick = q.quick(&format!(
        "[Interface]\nPrivateKey = {}\nAddress = {}/32, {}/128\nTable = off\n\n\
         [Peer]\nPublicKey = {}\nAllowedIPs = 0.0.0.0/0, ::/0\nEndpoint = {PEER_ENDPOINT}:{PORT}\n",
        q.keys.0, A.tun4, A.tun6, peer.keys.1
    ));
    let iface = quick.iface.clone();
    let up = quick.run("up");
    assert!(up.status.success(), "wg-quick up: {up}");
    let pid = quick_daemon(&quick, &up);
    let link = q.v.ip(&["-d", "link", "show", &iface]).unwrap();
    assert!(
        link.contains("tun type tun") && link.contains("mtu 1420") && link.contains(",UP"),
        "{link}"
    );
    assert_eq!(wg(&q.v, &["show", &iface, "fwmark"]).trim(), "off");
    assert_eq!(rules(&q.v), rules_before, "wg-quick added rules");
    for fam in ["-4", "-6"] {
        let routes =
            q.v.ip(&[fam, "route", "show", "table", "all", "dev", &iface])
                .unwrap();
        let added: Vec<&str> = routes
            .lines()
            .filter(|l| {
                !(l.starts_with("local ")
                    || l.starts_with("multicast ")
                    || l.contains("proto kernel"))
            })
            .collect();
        assert!(added.is_empty(), "routes added with Table = off: {added:?}");
    }
    // Nothing routed into the tunnel yet.
    let got = q.v.ip(&["route", "get", B.tun4]).unwrap();
    assert!(!got.contains(&format!("dev {iface}")), "{got}");
    for (fam, dst) in [("-4", B.tun4), ("-4", WORLD4), ("-6", B.tun6)] {
        q.v.ip(&[fam, "route", "add", dst, "dev", &iface]).unwrap();
    }
    let got = q.v.ip(&["route", "get", WORLD4]).unwrap();
    assert!(got.contains(&format!("dev {iface}")), "{got}");
    ping(&q.v, B.tun4);
    ping(&q.v, B.tun6);
    ping(&q.v, WORLD4);
    transfer(&q.w, WORLD4, &q.v, 4 << 20);
    let p = peer.dump_peer(&q.keys.1);
    // No ListenPort: the port vpn-wg picked.
    let port = wg(&q.v, &["show", &iface, "listen-port"]);
    assert_eq!(p[2], format!("{}:{}", A.under, port.trim()), "{p:?}");

    let down = quick.run("down");
    assert!(down.status.success(), "wg-quick down: {down}");
    assert_quick_down(&quick, pid);
    assert_eq!(rules(&q.v), rules_before, "rules changed");
}

// ---------------------------------------------------------------------------
// Large configurations over the UAPI.

#[derive(Debug, Default, PartialEq, Eq)]
struct PeerConf {
    psk: Option<String>,
    endpoint: Option<String>,
    keepalive: Option<String>,
    allowed: BTreeSet<String>,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct DevConf {
    private_key: String,
    listen_port: String,
    fwmark: Option<String>,
    peers: BTreeMap<String, PeerConf>,
}

impl DevConf {
    /// As `wg setconf` reads it.
    fn render(&self) -> String {
        let mut t = format!(
            "[Interface]\nPrivateKey = {}\nListenPort = {}\n",
            self.private_key, self.listen_port
        );
        if let Some(m) = &self.fwmark {
            t += &format!("FwMark = {m}\n");
        }
        for (k, p) in &self.peers {
            t += &format!("\n[Peer]\nPublicKey = {k}\n");
            if let Some(psk) = &p.psk {
                t += &format!("PresharedKey = {psk}\n");
            }
            let v: Vec<&str> = p.allowed.iter().map(String::as_str).collect();
            t += &format!("AllowedIPs = {}\n", v.join(", "));
            if let Some(e) = &p.endpoint {
                t += &format!("Endpoint = {e}\n");
            }
            if let Some(k) = &p.keepalive {
                t += &format!("PersistentKeepalive = {k}\n");
            }
        }
        t
    }

    /// `wg showconf`'s output.
    fn parse(text: &str) -> Self {
        let mut d = Self::default();
        let mut peer: Option<String> = None;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if line == "[Interface]" || line == "[Peer]" {
                peer = None;
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .unwrap_or_else(|| panic!("bad showconf line {line:?}"));
            if k == "PublicKey" {
                d.peers.entry(v.to_owned()).or_default();
                peer = Some(v.to_owned());
                continue;
            }
            match (peer.as_ref().map(|p| d.peers.get_mut(p).unwrap()), k) {
                (None, "PrivateKey") => d.private_key = v.to_owned(),
                (None, "ListenPort") => d.listen_port = v.to_owned(),
                (None, "FwMark") => d.fwmark = Some(v.to_owned()),
                (Some(p), "PresharedKey") => p.psk = Some(v.to_owned()),
                (Some(p), "Endpoint") => p.endpoint = Some(v.to_owned()),
                (Some(p), "PersistentKeepalive") => p.keepalive = Some(v.to_owned()),
                (Some(p), "AllowedIPs") => {
                    p.allowed.extend(
                        v.split(',')
                            .map(|a| a.trim().to_owned())
                            .filter(|a| !a.is_empty()),
                    );
                }
                _ => panic!("unexpected showconf line {line:?}"),
            }
        }
        d
    }

    fn allowed_count(&self) -> usize {
        self.peers.values().map(|p| p.allowed.len()).sum()
    }
}

/// Where two configurations differ, briefly.
fn diff(want: &DevConf, got: &DevConf) -> String {
    let mut out = Vec::new();
    for f in ["private_key", "listen_port", "fwmark"] {
        let (w, g) = match f {
            "private_key" => (Some(&want.private_key), Some(&got.private_key)),
            "listen_port" => (Some(&want.listen_port), Some(&got.listen_port)),
            _ => (want.fwmark.as_ref(), got.fwmark.as_ref()),
        };
        if w != g {
            out.push(format!("{f}: want {w:?}, got {g:?}"));
        }
    }
    for (k, w) in &want.peers {
        let Some(g) = got.peers.get(k) else {
            out.push(format!("peer {k} missing"));
            continue;
        };
        if (&w.psk, &w.endpoint, &w.keepalive) != (&g.psk, &g.endpoint, &g.keepalive) {
            out.push(format!(
                "peer {k}: want {:?}, got {:?}",
                (&w.psk, &w.endpoint, &w.keepalive),
                (&g.psk, &g.endpoint, &g.keepalive)
            ));
        }
        let missing: Vec<_> = w.allowed.difference(&g.allowed).take(5).collect();
        let extra: Vec<_> = g.allowed.difference(&w.allowed).take(5).collect();
        if !missing.is_empty() || !extra.is_empty() {
            out.push(format!(
                "peer {k}: {} allowed IPs, want {}; missing e.g. {missing:?}, extra e.g. {extra:?}",
                g.allowed.len(),
                w.allowed.len()
            ));
        }
    }
    for k in got.peers.keys().filter(|k| !want.peers.contains_key(*k)) {
        out.push(format!("unexpected peer {k}"));
    }
    out.join("\n")
}

/// Peer `i`'s share of the table: `v4` /32s from 100.64.0.0/10 starting at
/// `first`, ten IPv6 /128s and one /64 of fd00:i::/32.
fn allowed_block(i: u32, first: u32, v4: u32) -> BTreeSet<String> {
    let base = u32::from(Ipv4Addr::new(100, 64, 0, 0));
    let mut s: BTreeSet<String> = (0..v4)
        .map(|j| format!("{}/32", Ipv4Addr::from(base + first + j)))
        .collect();
    let hi = u16::try_from(i).unwrap();
    for j in 1..=10u16 {
        s.insert(format!(
            "{}/128",
            Ipv6Addr::new(0xfd00, hi, 0, 0, 0, 0, 0, j)
        ));
    }
    s.insert(format!(
        "{}/64",
        Ipv6Addr::new(0xfd00, hi, 0, 0x64, 0, 0, 0, 0)
    ));
    s
}

/// `wg setconf` of 40 peers with 20 000 IPv4 /32s and 440 IPv6 entries,
/// read back completely with `wg showconf`; then a setconf that replaces
/// half the peers and reshuffles the table, and a `wg set` that moves
/// addresses between peers. Each UAPI round within a time bound.
#[test]
fn large_configuration_over_uapi() {
    let (na, _nb) = underlay();
    let s = h::Scratch::new().unwrap();
    let a = End::start(&na, Kind::VpnWg, &s);
    // Somewhere for keepalives and handshakes to go (b drops them).
    na.ip(&["route", "add", "198.18.1.0/24", "via", B.under])
        .unwrap();
    let psk = wg(&na, &["genpsk"]).trim().to_owned();
    let keys: Vec<String> = (0..60).map(|_| h::key_pair().unwrap().1).collect();

    let make = |peers: &[(usize, u32)], per: u32| DevConf {
        private_key: a.keys.0.clone(),
        listen_port: PORT.to_string(),
        fwmark: Some("0x1234".to_owned()),
        peers: peers
            .iter()
            .map(|&(k, slot)| {
                let i = u32::try_from(k).unwrap();
                (
                    keys[k].clone(),
                    PeerConf {
                        psk: (k % 2 == 0).then(|| psk.clone()),
                        endpoint: Some(format!("198.18.1.{}:{}", 1 + k, 51000 + k)),
                        keepalive: (k % 3 == 0).then(|| "25".to_owned()),
                        allowed: allowed_block(i, slot * per, per),
                    },
                )
            })
            .collect(),
    };
    let round = |want: &DevConf, what: &str| {
        let file = s.write("big.conf", &want.render());
        let t = Instant::now();
        wg(&na, &["setconf", &a.iface, file.to_str().unwrap()]);
        let set = t.elapsed();
        let t = Instant::now();
        let text = wg(&na, &["showconf", &a.iface]);
        let get = t.elapsed();
        let got = DevConf::parse(&text);
        eprintln!(
            "{what}: setconf of {} peers / {} allowed IPs took {set:?}, showconf {get:?}",
            want.peers.len(),
            want.allowed_count()
        );
        assert!(
            got == *want,
            "{what}: showconf differs:\n{}",
            diff(want, &got)
        );
        assert!(
            set < Duration::from_secs(5) && get < Duration::from_secs(5),
            "{what}: too slow: setconf {set:?}, showconf {get:?}"
        );
        got
    };

    // 40 peers × 500 /32 = 20 000 IPv4, plus 11 IPv6 each.
    let first: Vec<(usize, u32)> = (0..40).map(|k| (k, u32::try_from(k).unwrap())).collect();
    let want = make(&first, 500);
    assert_eq!(want.allowed_count(), 20_440);
    round(&want, "initial");
    let per_peer = wg(&na, &["show", &a.iface, "allowed-ips"]);
    assert_eq!(per_peer.lines().count(), 40);
    let total: usize = per_peer
        .lines()
        .map(|l| l.split_once('\t').unwrap().1.split_whitespace().count())
        .sum();
    assert_eq!(total, 20_440, "wg show allowed-ips");

    // setconf replaces: 20 old peers with others' addresses, 20 new ones.
    let second: Vec<(usize, u32)> = (20..60)
        .map(|k| (k, u32::try_from(59 - k).unwrap()))
        .collect();
    let mut want = make(&second, 500);
    round(&want, "replaced");

    // `wg set … allowed-ips` replaces one peer's list; addresses it takes
    // leave the peer that had them.
    let (p0, p1) = (keys[20].clone(), keys[21].clone());
    let taken: Vec<String> = want.peers[&p1].allowed.iter().take(5).cloned().collect();
    let mut mine: Vec<String> = want.peers[&p0].allowed.iter().take(3).cloned().collect();
    mine.extend(taken.iter().cloned());
    wg(
        &na,
        &["set", &a.iface, "peer", &p0, "allowed-ips", &mine.join(",")],
    );
    want.peers.get_mut(&p0).unwrap().allowed = mine.into_iter().collect();
    for t in &taken {
        want.peers.get_mut(&p1).unwrap().allowed.remove(t);
    }
    let got = DevConf::parse(&wg(&na, &["showconf", &a.iface]));
    assert!(got == want, "after wg set:\n{}", diff(&want, &got));
    assert!(h::alive(a.pid));
}

// ---------------------------------------------------------------------------
// Bad input.

fn vpn_wg(ns: &Netns, args: &[&str]) -> Out {
    run_bounded(
        ns.command(h::vpn_wg_bin())
            .args(args)
            .env_remove("WG_PROCESS_FOREGROUND")
            .env_remove("LOG_LEVEL"),
        Duration::from_secs(15),
    )
}

/// Usage errors, bad and taken names: exit 1 with a clear message and
/// nothing created; `--version` and `--help` work.
#[test]
fn bad_input_is_refused_clearly() {
    h::require_root();
    let ns = Netns::new().unwrap();
    let links_before = ns.ip(&["-o", "link", "show"]).unwrap();

    for args in [
        &[][..],
        &["-x", "vtbad0"],
        &["--bogus"],
        &["-f"],
        &["a", "b", "c"],
    ] {
        let out = vpn_wg(&ns, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out}");
        assert!(out.stderr.contains("Usage: vpn-wg"), "{args:?}: {out}");
        assert!(out.stdout.is_empty(), "{args:?}: {out}");
    }

    let v = vpn_wg(&ns, &["--version"]);
    assert!(
        v.status.success() && v.stdout.starts_with("vpn-wg v"),
        "{v}"
    );
    let help = vpn_wg(&ns, &["--help"]);
    assert!(
        help.status.success() && help.stdout.contains("Usage: vpn-wg"),
        "{help}"
    );

    // Names the kernel (or a path) cannot take.
    let long = format!("{}toolongname", h::ifname('w'));
    for (name, bg) in [
        (long.as_str(), true),
        (long.as_str(), false),
        ("vt/w", true),
    ] {
        let args: Vec<&str> = if bg { vec![name] } else { vec!["-f", name] };
        let out = vpn_wg(&ns, &args);
        assert_eq!(out.status.code(), Some(1), "{name}: {out}");
        assert!(
            out.stderr.contains(&format!("\"{name}\" is not valid"))
                && out.stderr.contains("1 to 15 characters"),
            "{name}: {out}"
        );
        assert!(!sock_path(name).exists());
    }

    // A name already taken (a veth): refused, the link untouched.
    let taken = h::ifname('w');
    let guard = Files(taken.clone());
    ns.ip(&[
        "link",
        "add",
        &taken,
        "type",
        "veth",
        "peer",
        "name",
        &format!("{taken}p"),
    ])
    .unwrap();
    for fg in [false, true] {
        let args: Vec<&str> = if fg { vec!["-f", &taken] } else { vec![&taken] };
        let out = vpn_wg(&ns, &args);
        assert_eq!(out.status.code(), Some(1), "{out}");
        assert!(
            out.stderr
                .contains(&format!("interface {taken} already exists")),
            "{out}"
        );
        assert!(!sock_path(&taken).exists(), "UAPI socket for a taken name");
        assert!(
            !run_path(&taken, "pid").exists(),
            "pidfile for a taken name"
        );
    }
    let link = ns.ip(&["-d", "link", "show", &taken]).unwrap();
    assert!(link.contains("veth"), "{link}");
    ns.ip(&["link", "del", &taken]).unwrap();
    drop(guard);
    assert_eq!(ns.ip(&["-o", "link", "show"]).unwrap(), links_before);

    // The same name twice: the second is refused, the first keeps serving.
    let s = h::Scratch::new().unwrap();
    let first = End::start(&ns, Kind::VpnWg, &s);
    let out = vpn_wg(&ns, &[&first.iface]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert!(
        out.stderr.contains("already up") || out.stderr.contains("already exists"),
        "{out}"
    );
    assert!(h::alive(first.pid));
    assert!(sock_path(&first.iface).exists());
    assert_eq!(pidfile(&first.iface), Some(first.pid));
    let conf = wg(&ns, &["showconf", &first.iface]);
    assert!(conf.starts_with("[Interface]"), "{conf}");
}

/// Removes an interface's files on drop (for names no `End` owns).
struct Files(String);

impl Drop for Files {
    fn drop(&mut self) {
        remove_files(&self.0);
    }
}
