//! The harness checks itself: what it builds works, and nothing outlives it,
//! not even on a panic.
use std::time::Duration;

use netns_harness::{self as h, Capture, Cgroup, Netns, Pair};

#[test]
fn veth_pair_carries_traffic_and_capture_sees_it() {
    h::require_root();
    let Pair { a, b } =
        Pair::new(("eth0", &["198.18.0.1/30"]), ("eth0", &["198.18.0.2/30"])).unwrap();
    let cap = Capture::start(&b, "eth0", "icmp").unwrap();
    a.sh("ping -c 2 -i 0.2 -W 2 198.18.0.2").unwrap();
    let pkts = cap.finish().unwrap();
    assert_eq!(
        pkts.iter().filter(|l| l.contains("echo request")).count(),
        2,
        "{pkts:?}"
    );
}

#[test]
fn namespaces_are_isolated_from_the_host() {
    h::require_root();
    let a = Netns::new().unwrap();
    let links = a.ip(&["-o", "link"]).unwrap();
    assert_eq!(links.lines().count(), 1, "only lo: {links}");
    assert!(a.sh("ping -c 1 -W 1 198.18.0.2").is_err(), "no route out");
}

#[test]
fn cleanup_happens_on_panic_too() {
    h::require_root();
    let (ns_name, cg_path) = std::panic::catch_unwind(|| {
        let ns = Netns::new().unwrap();
        let cg = Cgroup::new().unwrap();
        let child = cg.child("inner").unwrap();
        let mut sleeper = ns.command_in("sleep", Some(&child)).unwrap();
        sleeper.arg("30");
        let d = h::Daemon::spawn(&mut sleeper).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let procs = std::fs::read_to_string(child.path().join("cgroup.procs")).unwrap();
        assert!(procs.contains(&d.pid().to_string()));
        let names = (ns.name().to_owned(), cg.path().to_owned());
        d.detach(); // the cgroup guard must kill it
        std::panic::panic_any(names)
    })
    .unwrap_err()
    .downcast::<(String, std::path::PathBuf)>()
    .map(|b| *b)
    .unwrap();
    let list = h::ip(&["netns", "list"]).unwrap();
    assert!(!list.contains(&ns_name), "{ns_name} left behind");
    assert!(!cg_path.exists(), "{} left behind", cg_path.display());
}

#[test]
fn names_are_unique() {
    let a = h::unique();
    let b = h::unique();
    assert_ne!(a, b);
    assert!(a.starts_with(&format!("vpnt-{}-", std::process::id())));
}
