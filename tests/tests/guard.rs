//! The uplink guard, end to end in namespaces, through vpn-ctl's library API
//! (the same loaded object carries cgroup/sock_create and the guard, so the
//! maps are shared, as in `steer.rs`'s single load).
//!
//! ```text
//!                 client namespace                          wan namespace
//!  ┌─────────────────────────────────────────────┐   ┌──────────────────────────┐
//!  │ cgroup steered/ ── sock_create marks M      │   │ 198.18.9.9, fd09:9::9│
//!  │ cgroup plain/                               │   │ on lo                    │
//!  │ no tunnel, no fwmark rule: everything is    │   │                          │
//!  │ routed by eth0 ("tunnel cut")               │   │                          │
//!  │ eth0 198.18.71.1/24 fd77:1::1/64 ─[tc guard]──┼───┼─ eth0 198.18.71.2 fd77:1::2│
//!  └─────────────────────────────────────────────┘   └──────────────────────────┘
//! ```
//! Steered processes must put zero plaintext packets on the wire (IPv4 and
//! IPv6, UDP and TCP) while unsteered ones flow; the drops come back as
//! events naming the pid, command, cgroup and destination; the guard holds
//! after the loading process has let go of everything but the pins.
use std::{
    fs::{self, File},
    path::Path,
    time::Duration,
};

use aya::{
    maps::{Array, HashMap, MapData},
    programs::{CgroupAttachMode, CgroupSock},
    Ebpf, EbpfLoader,
};
use netns_harness::{self as h, packet, Capture, Cgroup, Netns, Pair, PinRoot};
use vpn_common::{names, Config, SteerAction, SteerRule};
use vpn_ctl::steer::{
    events::{self, Events, Leak},
    guard::{self, Hook, Maps},
};

const MARK: u32 = 0x1000_0000;

struct World {
    client: Netns,
    wan: Netns,
    root: Cgroup,
    steered: Cgroup,
    plain: Cgroup,
    pins: PinRoot,
}

fn world() -> World {
    h::require_root();
    let Pair { a: client, b: wan } = Pair::new(
        ("eth0", &["198.18.71.1/24", "fd77:1::1/64"]),
        ("eth0", &["198.18.71.2/24", "fd77:1::2/64"]),
    )
    .unwrap();
    wan.ip(&["addr", "add", "198.18.9.9/32", "dev", "lo"])
        .unwrap();
    wan.ip(&["-6", "addr", "add", "fd09:9::9/128", "dev", "lo"])
        .unwrap();
    client
        .ip(&["route", "add", "198.18.9.0/24", "via", "198.18.71.2"])
        .unwrap();
    client
        .ip(&["-6", "route", "add", "fd09:9::/64", "via", "fd77:1::2"])
        .unwrap();
    let root = Cgroup::new().unwrap();
    let steered = root.child("steered").unwrap();
    let plain = root.child("plain").unwrap();
    let pins = PinRoot::new().unwrap();
    fs::create_dir_all(pins.path()).unwrap();
    World {
        client,
        wan,
        root,
        steered,
        plain,
        pins,
    }
}

/// The object loaded as the controller would: config written, `steered`
/// (if any) in `STEER_CGROUPS`, sock_create attached to the test's cgroup
/// tree `root` (owned link: gone when the `Ebpf` is dropped), guard maps
/// pinned under `pins`.
fn load(root: &Cgroup, steered: Option<&Cgroup>, pins: &Path) -> (Ebpf, Maps, Events) {
    let mut bpf = EbpfLoader::new()
        .load(vpn_ctl::steer::object::OBJECT)
        .unwrap();
    let mut config: Array<MapData, Config> =
        Array::try_from(bpf.take_map(names::CONFIG).unwrap()).unwrap();
    config
        .set(
            0,
            Config {
                mark: MARK,
                mark_mask: MARK,
                ..Config::default()
            },
            0,
        )
        .unwrap();
    let cgroups = bpf.take_map(names::STEER_CGROUPS).unwrap();
    cgroups.pin(pins.join(names::STEER_CGROUPS)).unwrap();
    let mut cgroups: HashMap<MapData, u64, SteerRule> = HashMap::try_from(cgroups).unwrap();
    if let Some(cg) = steered {
        let rule = SteerRule {
            action: SteerAction::Include as u32,
            tunnel: 0,
        };
        cgroups.insert(cg.id().unwrap(), rule, 0).unwrap();
    }
    let maps = Maps::take(&mut bpf, Some(pins)).unwrap();
    let events = Events::take(&mut bpf, Some(pins)).unwrap();
    guard::load_programs(&mut bpf).unwrap();
    guard::pin_programs(&mut bpf, pins).unwrap();
    let sc: &mut CgroupSock = bpf
        .program_mut(names::PROG_SOCK_CREATE)
        .unwrap()
        .try_into()
        .unwrap();
    vpn_ctl::steer::object::load_retrying(|| sc.load()).unwrap();
    sc.attach(File::open(root.path()).unwrap(), CgroupAttachMode::Single)
        .unwrap();
    (bpf, maps, events)
}

/// Runs `f` on a short-lived thread inside `ns`.
fn in_ns<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> T {
    ns.enter(f).unwrap()
}

/// Attaches a classifier to `ifname` of `ns`, pinned under `pins`, from a
/// thread inside that namespace (TCX resolves the name in the caller's).
fn attach_in(ns: &Netns, bpf: &mut Ebpf, hook: Hook, ifname: &str, pins: &Path) {
    in_ns(ns, || guard::attach(bpf, hook, ifname, Some(pins)).unwrap());
}

/// Sends `count` UDP datagrams to `dst`:`port` (IPv4 or IPv6) and one TCP
/// connect attempt to port+2 from inside `cg`; prints its pid first.
fn send(w: &World, cg: &Cgroup, dst: &str, port: u16, count: u32) -> u32 {
    let family = if dst.contains(':') {
        "AF_INET6"
    } else {
        "AF_INET"
    };
    let script = format!(
        r#"python3 -c '
import os, socket
print(os.getpid(), flush=True)
s = socket.socket(socket.{family}, socket.SOCK_DGRAM)
for _ in range({count}):
    s.sendto(b"vpn-guard-probe", ("{dst}", {port}))
t = socket.socket(socket.{family}, socket.SOCK_STREAM)
t.settimeout(0.5)
try:
    t.connect(("{dst}", {tcp}))
except OSError:
    pass
'"#,
        tcp = port + 2
    );
    let out = w.client.sh_in(cg, &script).unwrap();
    out.trim().parse().unwrap()
}

fn ifindex_in(ns: &Netns, ifname: &str) -> u32 {
    let out = ns.ip(&["-o", "link", "show", ifname]).unwrap();
    out.split(':').next().unwrap().trim().parse().unwrap()
}

/// Packets to each of the given destination ports seen on the wan side.
fn seen(lines: &[String], port: u16) -> usize {
    let v4 = format!(".{port}:");
    let v6 = format!(".{port} ");
    lines
        .iter()
        .filter(|l| l.contains(&v4) || l.contains(&v6))
        .count()
}

#[test]
fn guard_blocks_steered_plaintext_and_reports_it() {
    let w = world();
    let (mut bpf, maps, mut events) = load(&w.root, Some(&w.steered), w.pins.path());
    attach_in(&w.client, &mut bpf, Hook::Guard, "eth0", w.pins.path());
    assert_eq!(guard::attached(w.pins.path(), Hook::Guard), ["eth0"]);
    let eth0 = ifindex_in(&w.client, "eth0");

    let filter = "udp portrange 9000-9011 or tcp portrange 9000-9011";
    let cap = Capture::start(&w.client, "eth0", filter).unwrap();
    let pid = send(&w, &w.steered, "198.18.9.9", 9000, 3);
    let pid6 = send(&w, &w.steered, "fd09:9::9", 9004, 2);
    send(&w, &w.plain, "198.18.9.9", 9001, 3);
    send(&w, &w.plain, "fd09:9::9", 9005, 2);
    let lines = cap.finish().unwrap();
    eprintln!("on the uplink:\n{}", lines.join("\n"));
    for port in [9000, 9002, 9004, 9006] {
        assert_eq!(
            seen(&lines, port),
            0,
            "steered traffic to port {port} leaked"
        );
    }
    assert_eq!(seen(&lines, 9001), 3, "unsteered IPv4 UDP flows");
    assert_eq!(seen(&lines, 9005), 2, "unsteered IPv6 UDP flows");
    assert!(seen(&lines, 9003) >= 1, "unsteered TCP SYN leaves");

    // Events: pid, command, cgroup, destination, uplink.
    let evs = events.collect(Duration::from_secs(2), 64).unwrap();
    for e in &evs {
        eprintln!("{}", Leak(e).via("eth0"));
    }
    let steered_id = w.steered.id().unwrap();
    let udp = evs
        .iter()
        .find(|e| e.dport == 9000)
        .expect("an event for the steered IPv4 datagram");
    assert_eq!(udp.pid, pid);
    assert_eq!(events::comm(udp), "python3");
    assert_eq!(udp.cgroup_id, steered_id);
    assert_eq!(udp.ifindex, eth0);
    assert_eq!(Leak(udp).destination().to_string(), "198.18.9.9");
    assert_eq!(
        Leak(udp).via("eth0").to_string(),
        format!(
            "blocked: pid {pid} (python3) in cgroup {steered_id} → 198.18.9.9:9000 via eth0 \
             (udp, steered by mark)"
        )
    );
    assert!(
        evs.iter().any(|e| e.dport == 9002 && e.proto == 6),
        "TCP SYN"
    );
    let v6 = evs.iter().find(|e| e.dport == 9004).expect("IPv6 event");
    assert_eq!(v6.pid, pid6);
    assert_eq!(Leak(v6).destination().to_string(), "fd09:9::9");

    let sources = maps.sources().unwrap();
    let s = sources
        .iter()
        .find(|s| s.source == format!("cgroup {steered_id}"))
        .unwrap();
    assert!(s.blocked_packets >= 7, "{sources:?}");

    // The loader lets go: sock_create (an owned link) detaches, the maps
    // and the guard stay through their pins. The guard still recognises the
    // steered cgroup by the socket's cgroup, with no mark at all.
    drop(bpf);
    let mut maps_again = Maps::open(w.pins.path()).unwrap();
    let cap = Capture::start(&w.client, "eth0", filter).unwrap();
    send(&w, &w.steered, "198.18.9.9", 9000, 2);
    send(&w, &w.plain, "198.18.9.9", 9001, 2);
    let lines = cap.finish().unwrap();
    assert_eq!(seen(&lines, 9000), 0, "the guard holds without its loader");
    assert_eq!(seen(&lines, 9001), 2);
    let late = events.collect(Duration::from_secs(1), 8).unwrap();
    assert!(
        late.iter().any(|e| e.dport == 9000 && e.mark & MARK == 0),
        "dropped by cgroup, unmarked: {late:?}"
    );

    // A forwarded-style source steered by prefix: the client's own address.
    maps_again
        .add_prefix("fd77:1::1".parse().unwrap(), 128, SteerAction::Include)
        .unwrap();
    let cap = Capture::start(&w.client, "eth0", filter).unwrap();
    send(&w, &w.plain, "fd09:9::9", 9005, 2);
    let lines = cap.finish().unwrap();
    assert_eq!(seen(&lines, 9005), 0, "source prefix steered");

    // Removing the link pin detaches the guard: traffic flows again.
    assert!(guard::detach(w.pins.path(), Hook::Guard, "eth0").unwrap());
    let cap = Capture::start(&w.client, "eth0", filter).unwrap();
    send(&w, &w.steered, "198.18.9.9", 9000, 2);
    let lines = cap.finish().unwrap();
    assert_eq!(seen(&lines, 9000), 2, "detached");
    assert!(guard::attached(w.pins.path(), Hook::Guard).is_empty());

    // A later process attaches the program pinned at first load: it shares
    // that load's maps, so the steered cgroup is blocked again at once.
    in_ns(&w.client, || {
        guard::attach_pinned(w.pins.path(), Hook::Guard, "eth0").unwrap()
    });
    let cap = Capture::start(&w.client, "eth0", filter).unwrap();
    send(&w, &w.steered, "198.18.9.9", 9000, 2);
    send(&w, &w.plain, "198.18.9.9", 9001, 2);
    let lines = cap.finish().unwrap();
    assert_eq!(
        (seen(&lines, 9000), seen(&lines, 9001)),
        (0, 2),
        "re-attached from the pin"
    );
    assert!(guard::detach(w.pins.path(), Hook::Guard, "eth0").unwrap());
    drop((maps, maps_again, events));
}

/// A container behind a veth, forwarded by the client namespace:
///
/// ```text
///  container ── eth0 198.18.78.2 ─── ve0 198.18.78.1 ─ client ─ eth0 ── wan  (main table)
///                                  [tc ingress]         └─ eth1 ── side (table 30318,
///                                                          [guard on eth0]  fwmark M)
/// ```
/// Forwarding is switched on inside the client namespace only.
struct Forward {
    container: Netns,
    client: Netns,
    wan: Netns,
    side: Netns,
    root: Cgroup,
    pins: PinRoot,
}

const RULE: [&str; 7] = [
    "rule",
    "add",
    "fwmark",
    "0x10000000/0x10000000",
    "lookup",
    "30318",
    "priority",
];

fn forward_world() -> Forward {
    h::require_root();
    let Pair {
        a: container,
        b: client,
    } = Pair::new(("eth0", &["198.18.78.2/24"]), ("ve0", &["198.18.78.1/24"])).unwrap();
    let wan = Netns::new().unwrap();
    let side = Netns::new().unwrap();
    h::veth(
        &client,
        ("eth0", &["198.18.71.1/24"]),
        &wan,
        ("eth0", &["198.18.71.2/24"]),
    )
    .unwrap();
    h::veth(
        &client,
        ("eth1", &["198.18.72.1/24"]),
        &side,
        ("eth0", &["198.18.72.2/24"]),
    )
    .unwrap();
    container
        .ip(&["route", "add", "default", "via", "198.18.78.1"])
        .unwrap();
    client
        .ip(&["route", "add", "198.18.9.0/24", "via", "198.18.71.2"])
        .unwrap();
    client
        .ip(&[
            "route",
            "add",
            "198.18.9.0/24",
            "via",
            "198.18.72.2",
            "table",
            "30318",
        ])
        .unwrap();
    let mut rule = RULE.to_vec();
    rule.push("10318");
    client.ip(&rule).unwrap();
    client
        .sh("sysctl -qw net.ipv4.conf.all.forwarding=1")
        .unwrap();
    for (ns, gw) in [(&wan, "198.18.71.1"), (&side, "198.18.72.1")] {
        ns.ip(&["addr", "add", "198.18.9.9/32", "dev", "lo"])
            .unwrap();
        ns.ip(&["route", "add", "198.18.78.0/24", "via", gw])
            .unwrap();
    }
    let pins = PinRoot::new().unwrap();
    fs::create_dir_all(pins.path()).unwrap();
    Forward {
        container,
        client,
        wan,
        side,
        root: Cgroup::new().unwrap(),
        pins,
    }
}

/// Which way two datagrams from the container to 198.18.9.9:`port` left
/// the client: (packets at wan, packets at side).
fn forwarded(f: &Forward, port: u16) -> (usize, usize) {
    let filter = format!("udp port {port}");
    let wan = Capture::start(&f.wan, "eth0", &filter).unwrap();
    let side = Capture::start(&f.side, "eth0", &filter).unwrap();
    f.container
        .sh(&format!(
            r#"python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(2):
    s.sendto(b"vpn-forward-probe", ("198.18.9.9", {port}))
'"#
        ))
        .unwrap();
    let (wan, side) = (wan.finish().unwrap(), side.finish().unwrap());
    (wan.len(), side.len())
}

#[test]
fn forwarded_sources_are_marked_by_interface_and_prefix_and_guarded() {
    let f = forward_world();
    let host_forwarding = fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let (mut bpf, mut maps, mut events) = load(&f.root, None, f.pins.path());
    attach_in(&f.client, &mut bpf, Hook::Ingress, "ve0", f.pins.path());
    attach_in(&f.client, &mut bpf, Hook::Guard, "eth0", f.pins.path());
    let ve0 = ifindex_in(&f.client, "ve0");

    assert_eq!(forwarded(&f, 9100), (2, 0), "unsteered: main table, wan");

    maps.add_iface(ve0, SteerAction::Include).unwrap();
    assert_eq!(forwarded(&f, 9101), (0, 2), "steered by interface: side");
    maps.del_iface(ve0).unwrap();
    assert_eq!(forwarded(&f, 9102), (2, 0));

    maps.add_prefix("198.18.78.0".parse().unwrap(), 24, SteerAction::Include)
        .unwrap();
    assert_eq!(
        forwarded(&f, 9103),
        (0, 2),
        "steered by source prefix: side"
    );
    let sources = maps.sources().unwrap();
    let s = sources.iter().find(|s| s.source == "198.18.78.2").unwrap();
    assert!(s.steered_packets >= 4, "{sources:?}");

    // Tunnel cut: without the fwmark rule the marked packets would take the
    // main table to the wan; the guard on eth0 drops them.
    let mut del = RULE.to_vec();
    del[1] = "del";
    del.push("10318");
    f.client.ip(&del).unwrap();
    assert_eq!(forwarded(&f, 9104), (0, 0), "fail closed");
    let evs = events.collect(Duration::from_secs(2), 8).unwrap();
    let e = evs.iter().find(|e| e.dport == 9104).expect("leak event");
    assert_eq!((e.pid, e.cgroup_id), (0, 0), "forwarded: no local process");
    assert_eq!(Leak(e).source().to_string(), "198.18.78.2");
    assert_eq!(
        Leak(e).via("eth0").to_string(),
        "blocked: 198.18.78.2 → 198.18.9.9:9104 via eth0 (udp, steered by mark)"
    );

    // An exclude rule for the host wins over the interface: direct again.
    maps.add_iface(ve0, SteerAction::Include).unwrap();
    maps.add_prefix("198.18.78.2".parse().unwrap(), 32, SteerAction::Exclude)
        .unwrap();
    assert_eq!(forwarded(&f, 9105), (2, 0), "excluded: direct, not blocked");

    assert_eq!(
        fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        host_forwarding,
        "the host's ip_forward is untouched"
    );
    for (hook, ifname) in [(Hook::Ingress, "ve0"), (Hook::Guard, "eth0")] {
        assert!(guard::detach(f.pins.path(), hook, ifname).unwrap());
    }
    drop(bpf);
}

/// The XDP filter on the client's uplink: of datagrams to the tunnel port,
/// only well-formed WireGuard messages reach the socket.
#[test]
fn xdp_filter_keeps_garbage_from_the_tunnel_socket() {
    let w = world();
    let (mut bpf, mut maps, _events) = load(&w.root, None, w.pins.path());
    maps.set_tunnel_port(51820).unwrap();
    in_ns(&w.client, || {
        guard::attach_xdp(&mut bpf, "eth0", Some(w.pins.path())).unwrap()
    });
    let mut rx = h::Daemon::spawn(w.client.command("python3").args([
        "-c",
        r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("198.18.71.1", 51820))
print("ready", flush=True)
s.settimeout(2)
n = 0
try:
    while True:
        d = s.recv(2048)
        print("got", d[0], len(d), flush=True)
except socket.timeout:
    pass
"#,
    ]))
    .unwrap();
    rx.wait_for("ready", Duration::from_secs(10)).unwrap();
    w.wan
        .sh(r#"python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for m in [b"\x04" + bytes(31), b"\x01" + bytes(147), b"GET / HTTP/1.1\r\n\r\n", b"\x04\x00\x00\x01" + bytes(28), b"\x01" + bytes(100)]:
    s.sendto(m, ("198.18.71.1", 51820))
'"#)
        .unwrap();
    rx.wait(Duration::from_secs(5)).unwrap();
    let got: Vec<String> = rx
        .stdout()
        .lines()
        .filter(|l| l.starts_with("got"))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        got,
        ["got 4 32", "got 1 148"],
        "only WireGuard-shaped datagrams"
    );
    assert_eq!(maps.stat(vpn_common::GuardStat::XdpDropped).unwrap(), 3);
    assert!(guard::detach_xdp(w.pins.path(), "eth0").unwrap());

    // A later process loads the object again reusing the pinned maps: its
    // filter knows the tunnel port and counts into the same counters.
    let mut later = guard::load_sharing_pins(w.pins.path()).unwrap();
    guard::load_programs(&mut later).unwrap();
    let link = in_ns(&w.client, || {
        guard::attach_xdp(&mut later, "eth0", None).unwrap()
    });
    w.wan
        .sh(r#"python3 -c '
import socket
socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"junk", ("198.18.71.1", 51820))
'"#)
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(maps.stat(vpn_common::GuardStat::XdpDropped).unwrap(), 4);
    drop(link);
}

/// Handles taken with a pin directory may be dropped before the programs
/// are loaded (as a loader that only keeps the pins does): the object keeps
/// its own map fds, so sock_create and the classifiers still load.
#[test]
fn pinned_handles_dropped_early_leave_the_object_loadable() {
    h::require_root();
    let pins = PinRoot::new().unwrap();
    fs::create_dir_all(pins.path()).unwrap();
    let mut bpf = EbpfLoader::new()
        .load(vpn_ctl::steer::object::OBJECT)
        .unwrap();
    drop(Maps::take(&mut bpf, Some(pins.path())).unwrap());
    drop(Events::take(&mut bpf, Some(pins.path())).unwrap());
    guard::load_programs(&mut bpf).unwrap();
    let sc: &mut CgroupSock = bpf
        .program_mut(names::PROG_SOCK_CREATE)
        .unwrap()
        .try_into()
        .unwrap();
    vpn_ctl::steer::object::load_retrying(|| sc.load()).unwrap();
    let mut maps = Maps::open(pins.path()).unwrap();
    maps.set_tunnel_port(51820).unwrap();
    let frame = packet::eth_frame(
        "198.18.70.2".parse().unwrap(),
        "198.18.70.1".parse().unwrap(),
        packet::UDP,
        1,
        51820,
    );
    let r = h::bpf::run_packet(guard::xdp_program(&bpf).unwrap(), &frame, 1).unwrap();
    assert_eq!(r.return_value, 1, "the reopened config reaches the program");
}
