//! cgroup/sock_create steering, end to end in namespaces.
//!
//! ```text
//!            client namespace                         direct namespace
//!  ┌──────────────────────────────────────┐   ┌────────────────────────────┐
//!  │ steered cgroup ─ socket mark M       │   │ 198.18.9.9 on lo           │
//!  │ vpn-ctl: fwmark M/M lookup 30318     │   └────────────────────────────┘
//!  │ main:  198.18.9.0/24 via eth0 ───────┼── eth0 198.18.1.1 ── 198.18.1.2
//!  │ 30318: 198.18.9.0/24 via eth1 ───────┼── eth1 198.18.2.1 ── 198.18.2.2
//!  └──────────────────────────────────────┘   ┌────────────────────────────┐
//!                                             │ tunnel-side namespace      │
//!                                             └────────────────────────────┘
//! ```
//! A datagram from a process in the steered cgroup (or a child of it) must
//! leave by eth1, one from any other process by eth0; the program's aya-log
//! line must reach `vpn-ctl watch`.
use std::{process::Command, time::Duration};

use netns_harness::{self as h, Capture, Cgroup, Daemon, Netns, PinRoot};

const MARK: &str = "0x10000000";
const DIRECT: &str = "0x80000000";
const TABLE: &str = "30318";

struct World {
    client: Netns,
    _direct: Netns,
    _side: Netns,
    root: Cgroup,
    pins: PinRoot,
}

fn world() -> World {
    h::require_root();
    let h::Pair {
        a: client,
        b: direct,
    } = h::Pair::new(("eth0", &["198.18.1.1/24"]), ("eth0", &["198.18.1.2/24"])).unwrap();
    let side = Netns::new().unwrap();
    h::veth(
        &client,
        ("eth1", &["198.18.2.1/24"]),
        &side,
        ("eth0", &["198.18.2.2/24"]),
    )
    .unwrap();
    for ns in [&direct, &side] {
        ns.ip(&["addr", "add", "198.18.9.9/32", "dev", "lo"])
            .unwrap();
    }
    client
        .ip(&["route", "add", "198.18.9.0/24", "via", "198.18.1.2"])
        .unwrap();
    client
        .ip(&[
            "route",
            "add",
            "198.18.9.0/24",
            "via",
            "198.18.2.2",
            "table",
            TABLE,
        ])
        .unwrap();
    World {
        client,
        _direct: direct,
        _side: side,
        root: Cgroup::new().unwrap(),
        pins: PinRoot::new().unwrap(),
    }
}

/// vpn-ctl inside the client namespace: its policy routing lands there.
fn vpn_ctl(w: &World) -> Command {
    let mut c = w.client.command(h::vpn_ctl_bin());
    c.env("VPN_TUNNEL", "t0")
        .arg("--pin-root")
        .arg(w.pins.path())
        .arg("--attach-cgroup")
        .arg(w.root.path());
    c
}

/// Sends one UDP datagram from inside `cg` and prints the socket's SO_MARK.
const SEND: &str = r#"python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
print(hex(s.getsockopt(socket.SOL_SOCKET, 36) & 0xffffffff))
s.sendto(b"vpn-probe", ("198.18.9.9", 9000))
'"#;

const SEND_ONLY: &str = "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('198.18.9.9', 9000))";

/// Which uplink a datagram from `cg` leaves by, and the socket's mark.
fn probe(w: &World, cg: &Cgroup) -> (String, usize, usize) {
    let c0 = Capture::start(&w.client, "eth0", "udp port 9000").unwrap();
    let c1 = Capture::start(&w.client, "eth1", "udp port 9000").unwrap();
    let mark = w.client.sh_in(cg, SEND).unwrap().trim().to_owned();
    let (p0, p1) = (c0.finish().unwrap(), c1.finish().unwrap());
    eprintln!(
        "probe {}: mark {mark}, eth0 {p0:?}, eth1 {p1:?}",
        cg.path().display()
    );
    (mark, p0.len(), p1.len())
}

#[test]
fn steered_cgroup_marks_sockets_and_follows_the_rule() {
    let w = world();
    let steered = w.root.child("steered").unwrap();
    let nested = steered.child("nested").unwrap();
    let plain = w.root.child("plain").unwrap();

    let out = h::run(
        vpn_ctl(&w)
            .args(["steer", "add", "cgroup"])
            .arg(steered.path()),
    )
    .unwrap();
    assert!(out.contains("steered"), "{out}");

    let mut watch = Daemon::spawn(vpn_ctl(&w).arg("watch").env("RUST_LOG", "info")).unwrap();
    watch
        .wait_for("watching tunnel t0", Duration::from_secs(10))
        .unwrap();

    assert_eq!(
        probe(&w, &steered),
        (MARK.to_owned(), 0, 1),
        "steered cgroup: marked, via eth1"
    );
    assert_eq!(
        probe(&w, &nested),
        (MARK.to_owned(), 0, 1),
        "child of a steered cgroup: marked, via eth1"
    );
    assert_eq!(
        probe(&w, &plain),
        ("0x0".to_owned(), 1, 0),
        "unsteered cgroup: no mark, via eth0"
    );

    let line = format!("socket in cgroup {} marked", steered.id().unwrap());
    watch.wait_for(&line, Duration::from_secs(5)).unwrap();
    watch.stop();

    let list = h::run(vpn_ctl(&w).args(["steer", "list", "--json"])).unwrap();
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(v["cgroups"][0]["cgroup_id"], steered.id().unwrap());
    assert!(
        v["stats"]["sockets_marked"].as_u64().unwrap() >= 2,
        "{list}"
    );

    // Removing the rule stops the marking at once.
    h::run(
        vpn_ctl(&w)
            .args(["steer", "del", "cgroup"])
            .arg(steered.path()),
    )
    .unwrap();
    assert_eq!(probe(&w, &steered), ("0x0".to_owned(), 1, 0));

    h::run(vpn_ctl(&w).args(["steer", "clear"])).unwrap();
    assert!(!w.pins.path().join("t0").exists(), "clear removes the pins");
    assert!(
        !w.client.ip(&["rule", "show"]).unwrap().contains("30318"),
        "clear removes the rule"
    );
    assert!(!w
        .client
        .ip(&["route", "show", "table", TABLE])
        .unwrap()
        .contains("blackhole"));
}

#[test]
fn an_exclude_rule_inside_a_steered_tree_wins() {
    let w = world();
    let steered = w.root.child("steered").unwrap();
    let excluded = steered.child("excluded").unwrap();
    h::run(
        vpn_ctl(&w)
            .args(["steer", "add", "cgroup"])
            .arg(steered.path()),
    )
    .unwrap();
    h::run(
        vpn_ctl(&w)
            .args(["steer", "add", "--exclude", "cgroup"])
            .arg(excluded.path()),
    )
    .unwrap();
    assert_eq!(
        probe(&w, &excluded),
        (DIRECT.to_owned(), 1, 0),
        "excluded sockets carry the direct bit"
    );
    assert_eq!(probe(&w, &steered), (MARK.to_owned(), 0, 1));
    h::run(vpn_ctl(&w).args(["steer", "clear"])).unwrap();
}

#[test]
fn steering_survives_the_controller_and_is_adopted() {
    // No daemon runs between the commands: the pinned link keeps the program
    // attached, and each command adopts the pinned maps.
    let w = world();
    let steered = w.root.child("steered").unwrap();
    h::run(
        vpn_ctl(&w)
            .args(["steer", "add", "cgroup"])
            .arg(steered.path()),
    )
    .unwrap();
    assert_eq!(probe(&w, &steered).0, MARK);
    let again = h::run(
        vpn_ctl(&w)
            .args(["steer", "add", "cgroup"])
            .arg(steered.path()),
    )
    .unwrap();
    assert!(again.contains("steered"));
    let list = h::run(vpn_ctl(&w).args(["steer", "list"])).unwrap();
    assert_eq!(list.matches("include").count(), 1, "{list}");
    h::run(vpn_ctl(&w).args(["steer", "clear"])).unwrap();
    assert_eq!(
        probe(&w, &steered).0,
        "0x0",
        "after clear nothing is marked"
    );
}

#[test]
fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let w = world();
    let out = vpn_ctl(&w)
        .args(["steer", "add", "cgroup", "no-such-cgroup-xyz"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not exist"), "{err}");
    assert!(
        !w.pins.path().join("t0").exists(),
        "a failed add loads nothing"
    );

    let out = vpn_ctl(&w)
        .args(["steer", "del", "cgroup"])
        .arg(w.root.path())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not loaded"),
        "{out:?}"
    );

    let out = vpn_ctl(&w)
        .args(["--mark", "0x3", "steer", "list"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("single bit"),
        "{out:?}"
    );

    let out = vpn_ctl(&w)
        .args(["--tunnel", "../x", "steer", "add", "cgroup"])
        .arg(w.root.path())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid"),
        "{out:?}"
    );
}

#[test]
fn steered_traffic_fails_closed_when_the_tunnel_route_is_gone() {
    let w = world();
    let steered = w.root.child("steered").unwrap();
    h::run(
        vpn_ctl(&w)
            .args(["steer", "add", "cgroup"])
            .arg(steered.path()),
    )
    .unwrap();
    // The tunnel's route disappears (the daemon died, the TUN is gone): the
    // blackhole in vpn's table keeps steered traffic off the direct uplink.
    w.client
        .ip(&["route", "del", "198.18.9.0/24", "table", TABLE])
        .unwrap();
    let c0 = Capture::start(&w.client, "eth0", "udp port 9000").unwrap();
    let out = w
        .client
        .command_in("python3", Some(&steered))
        .unwrap()
        .args(["-c", SEND_ONLY])
        .output()
        .unwrap();
    assert!(!out.status.success(), "sendto must fail on the blackhole");
    assert_eq!(
        c0.finish().unwrap(),
        Vec::<String>::new(),
        "nothing leaves by the direct uplink"
    );
    h::run(vpn_ctl(&w).args(["steer", "clear"])).unwrap();
}

#[test]
fn a_taken_rule_priority_is_refused_and_nothing_is_loaded() {
    let w = world();
    w.client
        .ip(&["rule", "add", "priority", "10318", "lookup", "100"])
        .unwrap();
    let out = vpn_ctl(&w)
        .args(["steer", "add", "cgroup"])
        .arg(w.root.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("priority 10318 is taken") && err.contains("--priority"),
        "{err}"
    );
    assert!(!w.pins.path().join("t0").exists());
    // With another priority it works.
    h::run(
        vpn_ctl(&w)
            .args(["--priority", "10400", "steer", "add", "cgroup"])
            .arg(w.root.path()),
    )
    .unwrap();
    assert!(w.client.ip(&["rule", "show"]).unwrap().contains("10400:"));
    h::run(vpn_ctl(&w).args(["--priority", "10400", "steer", "clear"])).unwrap();
}

/// A process that holds a socket from before it is steered, then sends one
/// datagram from a new socket once `go` exists, printing that socket's mark.
const LATE_SENDER: &str = r#"
import os, socket, sys, time
old = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
old.bind(("127.0.0.1", 0))
print("ready", flush=True)
deadline = time.time() + 20
while not os.path.exists(sys.argv[1]) and time.time() < deadline:
    time.sleep(0.05)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
print(hex(s.getsockopt(socket.SOL_SOCKET, 36) & 0xffffffff), flush=True)
s.sendto(b"vpn-probe", ("198.18.9.9", 9000))
print("sent", flush=True)
"#;

#[test]
fn a_running_process_is_moved_in_and_back_out() {
    let w = world();
    let plain = w.root.child("plain").unwrap();
    let go = std::env::temp_dir().join(format!("{}-go", h::unique()));
    let mut cmd = w.client.command_in("python3", Some(&plain)).unwrap();
    cmd.args(["-c", LATE_SENDER]).arg(&go);
    let mut p = Daemon::spawn(&mut cmd).unwrap();
    p.wait_for("ready", Duration::from_secs(10)).unwrap();
    let pid = p.pid().to_string();

    let out = h::run(vpn_ctl(&w).args(["steer", "add", "pid", &pid])).unwrap();
    assert!(out.contains(&format!("pid {pid} moved into")), "{out}");
    assert!(
        out.contains("1 socket(s) opened before") && out.contains("udp 127.0.0.1:"),
        "{out}"
    );
    let managed = w.root.path().join("vpn-t0");
    assert!(std::fs::read_to_string(managed.join("cgroup.procs"))
        .unwrap()
        .contains(&pid));

    // del moves it back where it came from.
    h::run(vpn_ctl(&w).args(["steer", "del", "pid", &pid])).unwrap();
    assert!(std::fs::read_to_string(plain.path().join("cgroup.procs"))
        .unwrap()
        .contains(&pid));
    h::run(vpn_ctl(&w).args(["steer", "add", "pid", &pid])).unwrap();

    let c0 = Capture::start(&w.client, "eth0", "udp port 9000").unwrap();
    let c1 = Capture::start(&w.client, "eth1", "udp port 9000").unwrap();
    std::fs::write(&go, "").unwrap();
    p.wait_for("sent", Duration::from_secs(10)).unwrap();
    let (p0, p1) = (c0.finish().unwrap(), c1.finish().unwrap());
    let _ = std::fs::remove_file(&go);
    assert!(p.stdout().contains(MARK), "{}", p.stdout());
    assert_eq!(
        (p0.len(), p1.len()),
        (0, 1),
        "new socket of the moved process goes by the tunnel side"
    );

    h::run(vpn_ctl(&w).args(["steer", "clear"])).unwrap();
    assert!(!managed.exists(), "clear removes vpn's cgroup");
}

#[test]
fn exec_runs_a_command_steered() {
    let w = world();
    let c0 = Capture::start(&w.client, "eth0", "udp port 9000").unwrap();
    let c1 = Capture::start(&w.client, "eth1", "udp port 9000").unwrap();
    let out = h::run(
        vpn_ctl(&w).args(["exec", "--", "python3", "-c"]).arg(
            SEND.trim_start_matches("python3 -c '")
                .trim_end_matches('\''),
        ),
    )
    .unwrap();
    let (p0, p1) = (c0.finish().unwrap(), c1.finish().unwrap());
    assert_eq!(out.trim(), MARK);
    assert_eq!((p0.len(), p1.len()), (0, 1));
    let out = vpn_ctl(&w)
        .args(["exec", "--", "/no/such/program"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("running /no/such/program"),
        "{out:?}"
    );
    h::run(vpn_ctl(&w).args(["steer", "clear"])).unwrap();
    assert!(!w.root.path().join("vpn-t0").exists());
}

#[test]
fn steering_a_missing_pid_is_a_clear_error() {
    let w = world();
    let out = vpn_ctl(&w)
        .args(["steer", "add", "pid", "999999999"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("process 999999999 does not exist"),
        "{out:?}"
    );
    assert!(!w.pins.path().join("t0").exists(), "nothing loaded");
    assert!(
        !w.client.ip(&["rule", "show"]).unwrap().contains("30318"),
        "no rule left"
    );
}

#[test]
fn uid_steering_marks_every_socket_of_that_user() {
    let w = world();
    let other = w.root.child("other").unwrap();
    h::run(vpn_ctl(&w).args(["steer", "add", "uid", "4242"])).unwrap();
    let send_as = |uid: u32| {
        let c0 = Capture::start(&w.client, "eth0", "udp port 9000").unwrap();
        let c1 = Capture::start(&w.client, "eth1", "udp port 9000").unwrap();
        let mut cmd = w
            .client
            .command_as("/usr/bin/python3", Some(&other), Some(uid))
            .unwrap();
        let mark = h::run(
            cmd.args([
                "-c",
                SEND.trim_start_matches("python3 -c '")
                    .trim_end_matches('\''),
            ]),
        )
        .unwrap();
        (
            mark.trim().to_owned(),
            c0.finish().unwrap().len(),
            c1.finish().unwrap().len(),
        )
    };
    assert_eq!(
        send_as(4242),
        (MARK.to_owned(), 0, 1),
        "uid 4242 is steered"
    );
    assert_eq!(
        send_as(4343),
        ("0x0".to_owned(), 1, 0),
        "another uid is not"
    );
    let list = h::run(vpn_ctl(&w).args(["steer", "list", "--json"])).unwrap();
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(v["uids"][0]["uid"], 4242, "{list}");
    assert!(
        v["stats"]["sockets_marked_by_uid"].as_u64().unwrap() >= 1,
        "{list}"
    );
    h::run(vpn_ctl(&w).args(["steer", "del", "uid", "4242"])).unwrap();
    assert_eq!(send_as(4242).0, "0x0");
    h::run(vpn_ctl(&w).args(["steer", "clear"])).unwrap();
}

/// Answers every DNS-port query (UDP and TCP) with its own name.
const RESOLVER: &str = r#"
import socket, sys, threading
addr, name = sys.argv[1], sys.argv[2].encode()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((addr, 53))
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); t.bind((addr, 53)); t.listen(8)
def tcp():
    while True:
        c, _ = t.accept(); c.recv(512); c.sendall(name); c.close()
threading.Thread(target=tcp, daemon=True).start()
print("listening", flush=True)
while True:
    _, peer = u.recvfrom(512); u.sendto(name, peer)
"#;

/// Asks 127.0.0.53:53 over UDP and over TCP; prints both answers.
const ASK_STUB: &str = r#"
import socket
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(3)
u.connect(("127.0.0.53", 53)); u.send(b"q"); a = u.recv(512).decode()
t = socket.create_connection(("127.0.0.53", 53), timeout=3); t.send(b"q"); b = t.recv(512).decode()
print(a, b)
"#;

#[test]
fn steered_dns_goes_to_the_tunnel_resolver_not_the_local_stub() {
    let w = world();
    w._side
        .ip(&["addr", "add", "198.18.9.53/32", "dev", "lo"])
        .unwrap();
    let mut local =
        Daemon::spawn(
            w.client
                .command("python3")
                .args(["-c", RESOLVER, "127.0.0.53", "local"]),
        )
        .unwrap();
    let mut remote =
        Daemon::spawn(
            w._side
                .command("python3")
                .args(["-c", RESOLVER, "198.18.9.53", "tunnel"]),
        )
        .unwrap();
    local
        .wait_for("listening", Duration::from_secs(10))
        .unwrap();
    remote
        .wait_for("listening", Duration::from_secs(10))
        .unwrap();
    let steered = w.root.child("steered").unwrap();
    let plain = w.root.child("plain").unwrap();
    h::run(
        vpn_ctl(&w)
            .args(["steer", "add", "cgroup"])
            .arg(steered.path()),
    )
    .unwrap();
    let out = h::run(vpn_ctl(&w).args(["steer", "dns", "198.18.9.53"])).unwrap();
    assert!(out.contains("dns 198.18.9.53"), "{out}");

    let ask = |cg: &Cgroup| {
        h::run(
            w.client
                .command_in("python3", Some(cg))
                .unwrap()
                .args(["-c", ASK_STUB]),
        )
        .unwrap()
    };
    assert_eq!(
        ask(&steered).trim(),
        "tunnel tunnel",
        "steered: UDP and TCP DNS answered by the tunnel's resolver"
    );
    assert_eq!(
        ask(&plain).trim(),
        "local local",
        "unsteered: the local stub"
    );

    let list = h::run(vpn_ctl(&w).args(["steer", "list", "--json"])).unwrap();
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(v["stats"]["dns_redirected"], 2, "{list}");
    assert_eq!(v["dns4"], "198.18.9.53");
    h::run(vpn_ctl(&w).args(["steer", "clear"])).unwrap();
}

/// Tries a TCP connect to an IPv6 address; prints the errno name.
const CONNECT6: &str = r#"
import errno, socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM); s.settimeout(3)
try:
    s.connect((sys.argv[1], 80)); print("connected")
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno))
"#;

#[test]
fn steered_ipv6_is_refused_at_once_when_the_tunnel_has_none() {
    let w = world();
    // The client has IPv6 on its direct uplink: the leak the hook prevents.
    w.client
        .ip(&["-6", "addr", "add", "fd00:18::1/64", "dev", "eth0", "nodad"])
        .unwrap();
    w._direct
        .ip(&["-6", "addr", "add", "fd00:18::2/64", "dev", "eth0", "nodad"])
        .unwrap();
    let steered = w.root.child("steered").unwrap();
    let plain = w.root.child("plain").unwrap();
    h::run(
        vpn_ctl(&w)
            .args(["steer", "add", "cgroup"])
            .arg(steered.path()),
    )
    .unwrap();
    let c0 = Capture::start(&w.client, "eth0", "ip6 and tcp").unwrap();
    let try6 = |cg: &Cgroup| {
        h::run(w.client.command_in("python3", Some(cg)).unwrap().args([
            "-c",
            CONNECT6,
            "fd00:18::2",
        ]))
        .unwrap()
    };
    assert_eq!(try6(&steered).trim(), "EPERM", "refused at connect");
    assert_eq!(
        c0.finish().unwrap(),
        Vec::<String>::new(),
        "no IPv6 left by the uplink"
    );
    assert_eq!(
        try6(&plain).trim(),
        "ECONNREFUSED",
        "unsteered IPv6 reaches the direct host"
    );
    // Once the tunnel carries IPv6, steered IPv6 follows vpn's table (here
    // the blackhole, as no IPv6 tunnel route exists): never the uplink.
    h::run(vpn_ctl(&w).args(["steer", "ipv6", "on"])).unwrap();
    assert_ne!(try6(&steered).trim(), "connected");
    let list = h::run(vpn_ctl(&w).args(["steer", "list", "--json"])).unwrap();
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(v["stats"]["ipv6_refused"], 1, "{list}");
    h::run(vpn_ctl(&w).args(["steer", "clear"])).unwrap();
}

#[test]
fn full_tunnel_mode_sends_all_but_excluded_sources_to_the_tunnel() {
    let w = world();
    // Default routes on both sides, as a real full tunnel has them.
    w.client.ip(&["route", "del", "198.18.9.0/24"]).unwrap();
    w.client
        .ip(&["route", "add", "default", "via", "198.18.1.2"])
        .unwrap();
    w.client
        .ip(&[
            "route",
            "add",
            "default",
            "via",
            "198.18.2.2",
            "table",
            TABLE,
        ])
        .unwrap();
    let plain = w.root.child("plain").unwrap();
    let excluded = w.root.child("excluded").unwrap();
    h::run(
        vpn_ctl(&w)
            .args(["steer", "add", "--exclude", "cgroup"])
            .arg(excluded.path()),
    )
    .unwrap();
    assert_eq!(
        probe(&w, &plain),
        ("0x0".to_owned(), 1, 0),
        "split mode: unsteered goes direct"
    );
    let out = h::run(vpn_ctl(&w).args(["steer", "mode", "full"])).unwrap();
    assert!(out.contains("full tunnel"), "{out}");
    assert_eq!(
        probe(&w, &plain),
        ("0x0".to_owned(), 0, 1),
        "full mode: everything enters the tunnel"
    );
    assert_eq!(
        probe(&w, &excluded),
        (DIRECT.to_owned(), 1, 0),
        "but the excluded source"
    );
    // LAN routes keep working in full mode (suppress_prefixlength 0).
    w.client.sh_in(&plain, "ping -c 1 -W 2 198.18.1.2").unwrap();
    h::run(vpn_ctl(&w).args(["steer", "mode", "split"])).unwrap();
    assert_eq!(probe(&w, &plain), ("0x0".to_owned(), 1, 0), "back to split");
    h::run(vpn_ctl(&w).args(["steer", "clear"])).unwrap();
    let rules = w.client.ip(&["rule", "show"]).unwrap();
    assert!(
        !rules.contains("30318") && !rules.contains("suppress"),
        "{rules}"
    );
}

/// A steered process that takes vpn's mark off its socket (root can) and so
/// would leave by the direct uplink: the guard must catch it.
const UNMARK_AND_SEND: &str = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 36, 0)
s.sendto(b"leak", ("198.18.9.9", 9000))
print("sent")
"#;

#[test]
fn the_uplink_guard_drops_steered_plaintext_and_reports_it() {
    let w = world();
    let steered = w.root.child("steered").unwrap();
    let plain = w.root.child("plain").unwrap();
    h::run(
        vpn_ctl(&w)
            .args(["steer", "add", "cgroup"])
            .arg(steered.path()),
    )
    .unwrap();
    let out = h::run(vpn_ctl(&w).args(["attach", "eth0"])).unwrap();
    assert!(out.contains("guarding eth0"), "{out}");
    assert!(h::run(vpn_ctl(&w).args(["attach", "eth0"]))
        .unwrap()
        .contains("already guarded"));
    let mut watch = Daemon::spawn(vpn_ctl(&w).arg("watch")).unwrap();
    watch
        .wait_for("watching tunnel t0", Duration::from_secs(10))
        .unwrap();

    let c0 = Capture::start(&w.client, "eth0", "udp port 9000").unwrap();
    let send = |cg: &Cgroup| {
        h::run(
            w.client
                .command_in("python3", Some(cg))
                .unwrap()
                .args(["-c", UNMARK_AND_SEND]),
        )
        .unwrap()
    };
    send(&steered);
    let leaked = c0.finish().unwrap();
    assert_eq!(
        leaked,
        Vec::<String>::new(),
        "no steered plaintext crosses the uplink"
    );
    let c0 = Capture::start(&w.client, "eth0", "udp port 9000").unwrap();
    send(&plain);
    assert_eq!(
        c0.finish().unwrap().len(),
        1,
        "unsteered traffic still flows"
    );

    watch
        .wait_for("blocked: pid", Duration::from_secs(5))
        .unwrap();
    assert!(
        watch.stdout().contains("(python3)") && watch.stdout().contains("198.18.9.9:9000 via eth0"),
        "{}",
        watch.stdout()
    );
    watch.stop();
    let list = h::run(vpn_ctl(&w).args(["steer", "list", "--json"])).unwrap();
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(v["stats"]["guard_dropped"], 1, "{list}");
    assert_eq!(v["guarded_uplinks"][0], "eth0");
    let src = format!("cgroup {}", steered.id().unwrap());
    let row = v["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["source"] == src.as_str())
        .expect("per-source row");
    assert_eq!(row["blocked_packets"], 1, "{list}");

    // The guard holds with no vpn-ctl process at all (pinned), until clear.
    h::run(vpn_ctl(&w).args(["detach", "eth0"])).unwrap();
    let err = vpn_ctl(&w).args(["attach", "nosuch0"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&err.stderr).contains("no interface nosuch0"),
        "{err:?}"
    );
    h::run(vpn_ctl(&w).args(["steer", "clear"])).unwrap();
}
