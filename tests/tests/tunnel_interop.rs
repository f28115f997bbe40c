//! The tunnel end to end: `vpn-ctl up` against real WireGuard peers
//! (Debian's wireguard-go, boringtun-cli) in namespaces.
//!
//! ```text
//!        vpn namespace                          peer namespace
//!  ┌────────────────────────────┐        ┌────────────────────────────┐
//!  │ vpn-ctl daemon             │        │ wireguard-go | boringtun   │
//!  │ vt…v  100.64.0.1/24        │        │ vt…p  100.64.0.2/24        │
//!  │       fd00::1/64           │        │       fd00::2/64           │
//!  │ eth0  198.18.0.1/24 :51820 ┼────────┼ eth0 198.18.0.2/24 :51820  │
//!  └────────────────────────────┘        └────────────────────────────┘
//! ```
//! Roles are strict: the initiator is the only side that knows the other's
//! endpoint. Names are `vt<pid><tag><n>` (UAPI sockets and /run/vpn are
//! shared by every namespace); every daemon and file is removed on drop.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use netns_harness::{self as h, Daemon, Netns};

const VPN_UNDERLAY: &str = "198.18.0.1";
const PEER_UNDERLAY: &str = "198.18.0.2";
const PORT: u16 = 51820;
const VPN_TUN4: &str = "100.64.0.1";
const PEER_TUN4: &str = "100.64.0.2";
const VPN_TUN6: &str = "fd00::1";
const PEER_TUN6: &str = "fd00::2";

static N: AtomicU32 = AtomicU32::new(0);

/// A unique interface name of at most 15 bytes.
fn ifname(tag: char) -> String {
    format!(
        "vt{}{tag}{}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn vpn_ctl(ns: &Netns, args: &[&str]) -> anyhow::Result<String> {
    h::run(ns.command(h::vpn_ctl_bin()).args(args))
}

fn key_pair() -> (String, String) {
    let sk = h::run(Command::new(h::vpn_ctl_bin()).arg("genkey"))
        .unwrap()
        .trim()
        .to_owned();
    let mut child = Command::new(h::vpn_ctl_bin())
        .arg("pubkey")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(sk.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    (sk, String::from_utf8(out.stdout).unwrap().trim().to_owned())
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let p = std::env::temp_dir().join(h::unique());
        fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PeerKind {
    WireguardGo,
    Boringtun,
}

/// A third-party WireGuard peer in its namespace.
struct Peer {
    _daemon: Daemon,
    iface: String,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = fs::remove_file(format!("/var/run/wireguard/{}.sock", self.iface));
    }
}

struct World {
    vpn_ns: Netns,
    peer_ns: Netns,
    scratch: Scratch,
    vpn_keys: (String, String),
    peer_keys: (String, String),
    psk: Option<String>,
}

fn world(psk: bool) -> World {
    h::require_root();
    let vpn_ns = Netns::new().unwrap();
    let peer_ns = Netns::new().unwrap();
    h::veth(
        &vpn_ns,
        "eth0",
        &[&format!("{VPN_UNDERLAY}/24")],
        &peer_ns,
        "eth0",
        &[&format!("{PEER_UNDERLAY}/24")],
    )
    .unwrap();
    let psk = psk.then(|| {
        h::run(Command::new(h::vpn_ctl_bin()).arg("genpsk"))
            .unwrap()
            .trim()
            .to_owned()
    });
    World {
        vpn_ns,
        peer_ns,
        scratch: Scratch::new(),
        vpn_keys: key_pair(),
        peer_keys: key_pair(),
        psk,
    }
}

/// The vpn side: `vpn-ctl up FILE` (daemon), `down` on drop.
struct Vpn<'a> {
    ns: &'a Netns,
    iface: String,
    conf: PathBuf,
}

impl Drop for Vpn<'_> {
    fn drop(&mut self) {
        let _ = vpn_ctl(self.ns, &["down", &self.iface]);
        let _ = fs::remove_file(format!("/run/vpn/{}.log", self.iface));
    }
}

impl World {
    /// The vpn config; `peer_endpoint` makes vpn the initiator.
    fn vpn_conf(&self, iface: &str, peer_endpoint: bool, extra_interface: &str) -> PathBuf {
        let mut text = format!(
            "[Interface]\nPrivateKey = {}\nAddress = {VPN_TUN4}/24, {VPN_TUN6}/64\nListenPort = {PORT}\nDNS = 100.64.0.53\n{extra_interface}\n\
             [Peer]\nPublicKey = {}\nAllowedIPs = {PEER_TUN4}/32, {PEER_TUN6}/128\n",
            self.vpn_keys.0, self.peer_keys.1
        );
        if let Some(psk) = &self.psk {
            text += &format!("PresharedKey = {psk}\n");
        }
        if peer_endpoint {
            text += &format!("Endpoint = {PEER_UNDERLAY}:{PORT}\n");
        }
        self.scratch.write(&format!("{iface}.conf"), &text)
    }

    fn vpn_up(&self, peer_endpoint: bool) -> Vpn<'_> {
        self.vpn_up_with(peer_endpoint, "")
    }

    fn vpn_up_with(&self, peer_endpoint: bool, extra: &str) -> Vpn<'_> {
        let iface = ifname('v');
        let conf = self.vpn_conf(&iface, peer_endpoint, extra);
        let vpn = Vpn {
            ns: &self.vpn_ns,
            iface,
            conf,
        };
        vpn_ctl(&self.vpn_ns, &["up", vpn.conf.to_str().unwrap()]).unwrap();
        vpn
    }

    /// Starts `kind` in the peer namespace; `vpn_endpoint` makes it the
    /// initiator.
    fn peer(&self, kind: PeerKind, vpn_endpoint: bool) -> Peer {
        let iface = ifname('p');
        let ns = &self.peer_ns;
        let daemon = match kind {
            PeerKind::WireguardGo => {
                let mut c = ns.command("wireguard-go");
                c.arg("-f").arg(&iface).env("WG_PROCESS_FOREGROUND", "1");
                ns.spawn(&mut c).unwrap()
            }
            PeerKind::Boringtun => {
                let log = self.scratch.0.join(format!("{iface}.boringtun.log"));
                let mut c = ns.command("boringtun-cli");
                c.args(["-f", "--disable-drop-privileges", "-l"])
                    .arg(log)
                    .arg(&iface)
                    .env("WG_SUDO", "1");
                ns.spawn(&mut c).unwrap()
            }
        };
        let sock = PathBuf::from(format!("/var/run/wireguard/{iface}.sock"));
        wait_until("the peer's UAPI socket", Duration::from_secs(10), || {
            sock.exists()
        });
        let peer = Peer {
            _daemon: daemon,
            iface,
        };
        let key = self
            .scratch
            .write(&format!("{}.key", peer.iface), &self.peer_keys.0);
        let mut args: Vec<String> = vec![
            "set".into(),
            peer.iface.clone(),
            "private-key".into(),
            key.display().to_string(),
            "listen-port".into(),
            PORT.to_string(),
            "peer".into(),
            self.vpn_keys.1.clone(),
            "allowed-ips".into(),
            format!("{VPN_TUN4}/32,{VPN_TUN6}/128"),
        ];
        if let Some(psk) = &self.psk {
            let f = self.scratch.write(&format!("{}.psk", peer.iface), psk);
            args.extend(["preshared-key".into(), f.display().to_string()]);
        }
        if vpn_endpoint {
            args.extend(["endpoint".into(), format!("{VPN_UNDERLAY}:{PORT}")]);
        }
        h::run(ns.command("wg").args(&args)).unwrap();
        for a in [format!("{PEER_TUN4}/24"), format!("{PEER_TUN6}/64")] {
            ns.ip(&["addr", "add", &a, "dev", &peer.iface]).unwrap();
        }
        ns.ip(&["link", "set", &peer.iface, "mtu", "1420", "up"])
            .unwrap();
        peer
    }
}

fn ping(ns: &Netns, dst: &str) {
    // Succeeds if any reply comes back within the deadline.
    h::run(
        ns.command("ping")
            .args(["-c", "3", "-i", "0.2", "-w", "5", dst]),
    )
    .unwrap_or_else(|e| panic!("ping {dst}: {e}"));
}

fn show_json(ns: &Netns, iface: &str) -> serde_json::Value {
    serde_json::from_str(&vpn_ctl(ns, &["show", iface, "--json"]).unwrap()).unwrap()
}

/// vpn initiates (only it knows the endpoint) or responds; ping both ways
/// over IPv4 and IPv6; the handshake shows up in `show --json`.
fn interop(kind: PeerKind, vpn_initiates: bool, psk: bool) {
    let w = world(psk);
    let peer = w.peer(kind, !vpn_initiates);
    let vpn = w.vpn_up(vpn_initiates);
    if vpn_initiates {
        ping(&w.vpn_ns, PEER_TUN4);
        ping(&w.vpn_ns, PEER_TUN6);
        ping(&w.peer_ns, VPN_TUN4);
    } else {
        ping(&w.peer_ns, VPN_TUN4);
        ping(&w.peer_ns, VPN_TUN6);
        ping(&w.vpn_ns, PEER_TUN6);
    }
    let j = show_json(&w.vpn_ns, &vpn.iface);
    let p = &j["peers"][0];
    assert_eq!(p["public_key"], w.peer_keys.1, "{j}");
    assert_eq!(p["preshared_key"], psk, "{j}");
    assert!(p["latest_handshake"].as_u64().unwrap_or(0) > 0, "{j}");
    assert!(p["rx_bytes"].as_u64().unwrap() > 0, "{j}");
    assert_eq!(p["endpoint"], format!("{PEER_UNDERLAY}:{PORT}"), "{j}");
    assert_eq!(j["vpn"]["dns"][0], "100.64.0.53", "{j}");
    drop(vpn);
    drop(peer);
}

#[test]
fn wireguard_go_vpn_initiates() {
    interop(PeerKind::WireguardGo, true, false);
}

#[test]
fn wireguard_go_vpn_initiates_psk() {
    interop(PeerKind::WireguardGo, true, true);
}

#[test]
fn wireguard_go_vpn_responds() {
    interop(PeerKind::WireguardGo, false, false);
}

#[test]
fn wireguard_go_vpn_responds_psk() {
    interop(PeerKind::WireguardGo, false, true);
}

#[test]
fn boringtun_vpn_initiates() {
    interop(PeerKind::Boringtun, true, false);
}

#[test]
fn boringtun_vpn_initiates_psk() {
    interop(PeerKind::Boringtun, true, true);
}

#[test]
fn boringtun_vpn_responds() {
    interop(PeerKind::Boringtun, false, false);
}

#[test]
fn boringtun_vpn_responds_psk() {
    interop(PeerKind::Boringtun, false, true);
}

fn routes(ns: &Netns, family: &str, table: &str) -> String {
    ns.ip(&[family, "route", "show", "table", table])
        .unwrap_or_default()
}

/// `up` creates link, sockets, pidfile and routes in table 30318 (never
/// main); `down` by file name removes all of it.
#[test]
fn up_down_leaves_nothing_behind() {
    let w = world(false);
    let vpn = w.vpn_up(true);
    let iface = vpn.iface.clone();
    let pidfile = PathBuf::from(format!("/run/vpn/{iface}.pid"));
    let uapi = PathBuf::from(format!("/var/run/wireguard/{iface}.sock"));
    assert!(pidfile.exists() && uapi.exists());
    let link = w.vpn_ns.ip(&["-d", "link", "show", &iface]).unwrap();
    assert!(link.contains("mtu 1420") && link.contains("tun"), "{link}");
    let addrs = w.vpn_ns.ip(&["addr", "show", &iface]).unwrap();
    assert!(
        addrs.contains("100.64.0.1/24") && addrs.contains("fd00::1/64"),
        "{addrs}"
    );
    assert!(routes(&w.vpn_ns, "-4", "30318").contains(&format!("100.64.0.2 dev {iface}")));
    assert!(routes(&w.vpn_ns, "-6", "30318").contains(&format!("fd00::2 dev {iface}")));
    let main = routes(&w.vpn_ns, "-4", "main");
    assert!(!main.contains("100.64.0.2"), "{main}");
    // A second `up` of the same file fails clearly and changes nothing.
    let e = vpn_ctl(&w.vpn_ns, &["up", vpn.conf.to_str().unwrap()]).unwrap_err();
    assert!(e.to_string().contains("already up"), "{e}");

    let out = vpn_ctl(&w.vpn_ns, &["down", vpn.conf.to_str().unwrap()]).unwrap();
    assert!(out.contains("is down"), "{out}");
    assert!(!pidfile.exists(), "pidfile left");
    assert!(!uapi.exists(), "UAPI socket left");
    assert!(!PathBuf::from(format!("/run/vpn/{iface}.ctl")).exists());
    assert!(w.vpn_ns.ip(&["link", "show", &iface]).is_err(), "link left");
    assert_eq!(routes(&w.vpn_ns, "-4", "30318").trim(), "");
    assert_eq!(routes(&w.vpn_ns, "-6", "30318").trim(), "");
    // Not up any more: a clear error.
    let e = vpn_ctl(&w.vpn_ns, &["down", &iface]).unwrap_err();
    assert!(e.to_string().contains("is not up"), "{e}");
}

/// The daemon exits (and cleans up) when its interface is deleted, and
/// `Table = off` adds no routes.
#[test]
fn interface_deleted_stops_the_daemon() {
    let w = world(false);
    let vpn = w.vpn_up_with(true, "Table = off");
    assert_eq!(routes(&w.vpn_ns, "-4", "30318").trim(), "");
    let pidfile = PathBuf::from(format!("/run/vpn/{}.pid", vpn.iface));
    w.vpn_ns.ip(&["link", "del", &vpn.iface]).unwrap();
    wait_until("the daemon to exit", Duration::from_secs(5), || {
        !pidfile.exists()
    });
    assert!(!Path::new(&format!("/var/run/wireguard/{}.sock", vpn.iface)).exists());
}

/// Missing file, a bad line, an interface that already exists: clear
/// errors, nothing left behind.
#[test]
fn bad_input_is_refused_clearly() {
    let w = world(false);
    let e = vpn_ctl(&w.vpn_ns, &["up", "/nonexistent/vt-missing.conf"]).unwrap_err();
    assert!(
        e.to_string().contains("/nonexistent/vt-missing.conf"),
        "{e}"
    );

    let iface = ifname('b');
    let bad = w.scratch.write(
        &format!("{iface}.conf"),
        &format!(
            "[Interface]\nPrivateKey = {}\nAddress = 100.64.0.1/24\nPostUp = rm -rf /\n",
            w.vpn_keys.0
        ),
    );
    let e = vpn_ctl(&w.vpn_ns, &["up", bad.to_str().unwrap()]).unwrap_err();
    assert!(e.to_string().contains(":4"), "no line number: {e}");

    let iface = ifname('e');
    w.vpn_ns
        .ip(&[
            "link",
            "add",
            &iface,
            "type",
            "veth",
            "peer",
            "name",
            &format!("{iface}x"),
        ])
        .unwrap();
    let conf = w.vpn_conf(&iface, false, "");
    let e = vpn_ctl(&w.vpn_ns, &["up", conf.to_str().unwrap()]).unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    assert!(!Path::new(&format!("/run/vpn/{iface}.pid")).exists());

    // Port in use: the bring-up fails after the TUN exists, and undoes it.
    let iface = ifname('u');
    let conf = w.vpn_conf(&iface, false, "");
    let _busy = w
        .vpn_ns
        .spawn(
            w.vpn_ns
                .command("python3")
                .args(["-c", &format!("import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',{PORT}))\nprint('bound',flush=True)\ntime.sleep(30)")]),
        )
        .and_then(|mut d| d.wait_for("bound", Duration::from_secs(5)).map(|()| d))
        .unwrap();
    let e = vpn_ctl(&w.vpn_ns, &["up", conf.to_str().unwrap()]).unwrap_err();
    assert!(e.to_string().contains("in use"), "{e}");
    assert!(w.vpn_ns.ip(&["link", "show", &iface]).is_err(), "TUN left");
    assert!(!Path::new(&format!("/var/run/wireguard/{iface}.sock")).exists());
    assert!(!Path::new(&format!("/run/vpn/{iface}.pid")).exists());
    assert_eq!(routes(&w.vpn_ns, "-4", "30318").trim(), "");
    let _ = fs::remove_file(format!("/run/vpn/{iface}.log"));
}
