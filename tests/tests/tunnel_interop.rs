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

fn vpn_ctl(ns: &Netns, args: &[&str]) -> anyhow::Result<String> {
    h::run(ns.command(h::vpn_ctl_bin()).args(args))
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
    scratch: h::Scratch,
    vpn_keys: (String, String),
    peer_keys: (String, String),
    psk: Option<String>,
}

fn world(psk: bool) -> World {
    h::require_root();
    let h::Pair {
        a: vpn_ns,
        b: peer_ns,
    } = h::Pair::new(
        ("eth0", &[&format!("{VPN_UNDERLAY}/24")]),
        ("eth0", &[&format!("{PEER_UNDERLAY}/24")]),
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
        scratch: h::Scratch::new().unwrap(),
        vpn_keys: h::key_pair().unwrap(),
        peer_keys: h::key_pair().unwrap(),
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
        let iface = h::ifname('v');
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
        self.peer_with(kind, vpn_endpoint, &[])
    }

    fn peer_with(&self, kind: PeerKind, vpn_endpoint: bool, flags: &[&str]) -> Peer {
        let iface = h::ifname('p');
        let ns = &self.peer_ns;
        let daemon = match kind {
            PeerKind::WireguardGo => {
                let mut c = ns.command("wireguard-go");
                c.arg("-f").arg(&iface).env("WG_PROCESS_FOREGROUND", "1");
                ns.spawn(&mut c).unwrap()
            }
            PeerKind::Boringtun => {
                let log = self.scratch.path().join(format!("{iface}.boringtun.log"));
                let mut c = ns.command("boringtun-cli");
                c.args(["-f", "--disable-drop-privileges"])
                    .args(flags)
                    .arg("-l")
                    .arg(log)
                    .arg(&iface)
                    .env("WG_SUDO", "1");
                ns.spawn(&mut c).unwrap()
            }
        };
        let sock = PathBuf::from(format!("/var/run/wireguard/{iface}.sock"));
        h::wait_until("the peer's UAPI socket", Duration::from_secs(10), || {
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
    h::wait_until("the daemon to exit", Duration::from_secs(5), || {
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

    let iface = h::ifname('b');
    let bad = w.scratch.write(
        &format!("{iface}.conf"),
        &format!(
            "[Interface]\nPrivateKey = {}\nAddress = 100.64.0.1/24\nPostUp = rm -rf /\n",
            w.vpn_keys.0
        ),
    );
    let e = vpn_ctl(&w.vpn_ns, &["up", bad.to_str().unwrap()]).unwrap_err();
    assert!(e.to_string().contains(":4"), "no line number: {e}");

    let iface = h::ifname('e');
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
    let iface = h::ifname('u');
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

/// `wg show dump`, `wg set` and `wg showconf` against vpn-ctl's UAPI, and
/// `vpn-ctl show` against wireguard-go's.
#[test]
fn wg_tool_against_vpn_ctl() {
    let w = world(true);
    let peer = w.peer(PeerKind::WireguardGo, false);
    let vpn = w.vpn_up(true);
    ping(&w.vpn_ns, PEER_TUN4);
    let wg = |args: &[&str]| h::run(w.vpn_ns.command("wg").args(args)).unwrap();

    let dump = wg(&["show", &vpn.iface, "dump"]);
    let lines: Vec<Vec<&str>> = dump.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines.len(), 2, "{dump}");
    assert_eq!(lines[0][0], w.vpn_keys.0, "{dump}");
    assert_eq!(lines[0][1], w.vpn_keys.1, "{dump}");
    assert_eq!(lines[0][2], PORT.to_string(), "{dump}");
    let p = &lines[1];
    assert_eq!(p[0], w.peer_keys.1);
    assert_eq!(p[1], w.psk.as_deref().unwrap());
    assert_eq!(p[2], format!("{PEER_UNDERLAY}:{PORT}"));
    assert_eq!(p[3], format!("{PEER_TUN4}/32,{PEER_TUN6}/128"));
    assert!(p[4].parse::<u64>().unwrap() > 0, "no handshake: {dump}");
    assert!(p[5].parse::<u64>().unwrap() > 0 && p[6].parse::<u64>().unwrap() > 0);

    // Add, change and remove a peer with wg set.
    let (_, extra) = h::key_pair().unwrap();
    wg(&[
        "set",
        &vpn.iface,
        "peer",
        &extra,
        "allowed-ips",
        "100.64.0.9/32",
        "persistent-keepalive",
        "25",
        "endpoint",
        "198.18.0.9:1234",
    ]);
    let dump = wg(&["show", &vpn.iface, "dump"]);
    let line = dump.lines().find(|l| l.starts_with(&extra)).unwrap();
    assert!(
        line.contains("100.64.0.9/32") && line.ends_with("\t25"),
        "{line}"
    );
    let human = vpn_ctl(&w.vpn_ns, &["show", &vpn.iface]).unwrap();
    assert!(
        human.contains("persistent keepalive: every 25 seconds"),
        "{human}"
    );
    assert!(
        human.contains("latest handshake:") && human.contains("transfer:"),
        "{human}"
    );
    wg(&["set", &vpn.iface, "peer", &extra, "remove"]);
    assert!(!wg(&["show", &vpn.iface, "dump"]).contains(&extra));

    // A new listen port: the peer follows (it learns the endpoint from
    // authenticated packets), the tunnel keeps working.
    wg(&["set", &vpn.iface, "listen-port", "51999"]);
    assert_eq!(wg(&["show", &vpn.iface, "listen-port"]).trim(), "51999");
    ping(&w.vpn_ns, PEER_TUN4);
    let conf = wg(&["showconf", &vpn.iface]);
    assert!(conf.contains("ListenPort = 51999"), "{conf}");

    // vpn-ctl show reads any userspace WireGuard's UAPI.
    let j = show_json(&w.peer_ns, &peer.iface);
    assert_eq!(j["peers"][0]["public_key"], w.vpn_keys.1, "{j}");
    assert!(j["vpn"].is_null(), "{j}");
}

fn drops(ns: &Netns, iface: &str) -> serde_json::Value {
    show_json(ns, iface)["vpn"]["drops"].clone()
}

/// Garbage, truncated, bad-mac and replayed datagrams to vpn's port are
/// dropped and counted; the endpoint does not move to their source; the
/// tunnel keeps working.
#[test]
fn garbage_and_replays_are_dropped_and_counted() {
    let w = world(false);
    let _peer = w.peer(PeerKind::WireguardGo, false);
    let vpn = w.vpn_up(true);
    ping(&w.vpn_ns, PEER_TUN4);

    // Capture three data datagrams the peer sends to vpn.
    let pcap = w.scratch.path().join("data.pcap");
    let mut tcpdump = w
        .peer_ns
        .spawn(w.peer_ns.command("tcpdump").args([
            "-i",
            "eth0",
            "-U",
            "-c",
            "3",
            "-w",
            pcap.to_str().unwrap(),
            &format!("udp and src host {PEER_UNDERLAY} and greater 100"),
        ]))
        .unwrap();
    tcpdump
        .wait_for("listening on", Duration::from_secs(10))
        .unwrap();
    ping(&w.vpn_ns, PEER_TUN4);
    assert!(
        tcpdump.wait(Duration::from_secs(10)).unwrap().is_some(),
        "tcpdump did not see 3 datagrams"
    );
    let before = drops(&w.vpn_ns, &vpn.iface);

    let script = format!(
        r#"
import os, random, socket, struct
raw = open("{pcap}", "rb").read()
linktype = struct.unpack("<I", raw[20:24])[0]
off, data = 24, []
while off + 16 <= len(raw):
    incl = struct.unpack("<I", raw[off+8:off+12])[0]
    pkt = raw[off+16:off+16+incl]
    off += 16 + incl
    l2 = 14 if linktype == 1 else 16
    ihl = (pkt[l2] & 15) * 4
    data.append(pkt[l2+ihl+8:])
assert len(data) == 3, len(data)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
dst = ("{VPN_UNDERLAY}", {PORT})
random.seed(7)
for i in range(50):  # garbage: random type and length
    s.sendto(bytes([random.randrange(256)]) + os.urandom(random.randrange(0, 200)), dst)
for d in data:       # truncated data messages
    s.sendto(d[:20], dst)
s.sendto(bytes([1, 0, 0, 0]) + os.urandom(144), dst)  # initiation, bad mac1
for _ in range(3):   # replays
    for d in data:
        s.sendto(d, dst)
print("sent")
"#,
        pcap = pcap.display()
    );
    let out = h::run(w.peer_ns.command("python3").args(["-c", &script])).unwrap();
    assert!(out.contains("sent"));
    let get = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or(0);
    let mut after = drops(&w.vpn_ns, &vpn.iface);
    let start = Instant::now();
    while get(&after, "replay") < get(&before, "replay") + 9
        && start.elapsed() < Duration::from_secs(3)
    {
        thread::sleep(Duration::from_millis(50));
        after = drops(&w.vpn_ns, &vpn.iface);
    }
    assert!(
        get(&after, "malformed") >= get(&before, "malformed") + 40,
        "{before} → {after}"
    );
    assert!(
        get(&after, "invalid_mac") > get(&before, "invalid_mac"),
        "{before} → {after}"
    );
    assert_eq!(
        get(&after, "replay"),
        get(&before, "replay") + 9,
        "{before} → {after}"
    );
    let j = show_json(&w.vpn_ns, &vpn.iface);
    assert_eq!(
        j["peers"][0]["endpoint"],
        format!("{PEER_UNDERLAY}:{PORT}"),
        "{j}"
    );
    ping(&w.vpn_ns, PEER_TUN4);
    ping(&w.vpn_ns, PEER_TUN6);
}

/// The peer's underlay address changes in the middle of a flow it sends:
/// vpn follows the new source of authenticated packets and the flow goes
/// on.
/// (boringtun with unconnected UDP: Debian's wireguard-go keeps sending
/// from its sticky source address and stalls once that address is gone.)
#[test]
fn roaming_keeps_the_flow() {
    let w = world(false);
    let peer = w.peer_with(PeerKind::Boringtun, false, &["--disable-connected-udp"]);
    let vpn = w.vpn_up(true);
    ping(&w.vpn_ns, PEER_TUN4);
    w.vpn_ns
        .ip(&["addr", "add", "198.19.0.1/24", "dev", "eth0"])
        .unwrap();
    w.peer_ns
        .ip(&["addr", "add", "198.19.0.2/24", "dev", "eth0"])
        .unwrap();
    // The roaming side talks: 100 pings from the peer over ~4 s; the
    // move happens after ~1.5 s.
    let mut flow = w
        .peer_ns
        .spawn(
            w.peer_ns
                .command("ping")
                .args(["-c", "100", "-i", "0.04", "-W", "1", VPN_TUN4]),
        )
        .unwrap();
    thread::sleep(Duration::from_millis(1500));
    // The peer now reaches vpn from 198.19.0.2 only.
    w.peer_ns
        .ip(&[
            "route",
            "add",
            "198.18.0.1/32",
            "dev",
            "eth0",
            "src",
            "198.19.0.2",
        ])
        .unwrap();
    w.peer_ns
        .ip(&["addr", "del", "198.18.0.2/24", "dev", "eth0"])
        .unwrap();
    let status = flow.wait(Duration::from_secs(20)).unwrap();
    let out = flow.stdout();
    assert!(status.is_some(), "ping did not finish: {out}");
    let received: u32 = out
        .split(", ")
        .find_map(|p| p.strip_suffix(" received"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary: {out}"));
    let j = show_json(&w.vpn_ns, &vpn.iface);
    assert_eq!(
        j["peers"][0]["endpoint"],
        format!("198.19.0.2:{PORT}"),
        "{j}"
    );
    assert!(
        received >= 80,
        "only {received}/100 replies across the move:\n{out}\n{j}\n{}",
        show_json(&w.peer_ns, &peer.iface)
    );
    ping(&w.vpn_ns, PEER_TUN6);
}
