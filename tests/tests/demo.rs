//! The demo `cargo xtask run` shows is part of the suite: its outcomes are
//! checked here, so the README's first command cannot rot.
use std::process::Command;

#[test]
fn demo_shows_every_outcome_and_cleans_up() {
    netns_harness::require_root();
    let out = Command::new(env!("CARGO_BIN_EXE_vpn-demo"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "steered app asks 127.0.0.53: answered by tunnel-resolver: as expected",
        "unsteered app asks 127.0.0.53: answered by local-stub: as expected",
        "internet host saw 100.64.0.2: as expected",
        "internet host saw 198.18.1.2: as expected",
        "container: connected; internet host saw 100.64.0.2: as expected",
        "the client's ip_forward stays 0",
        "internet host saw nothing; leaks blocked by the guard: ",
        "internet host saw nothing; plaintext packets on the uplink: 0: as expected",
        "seen as 198.18.1.2: as expected",
        "steered app going around the dead tunnel: failed",
        "demo: every outcome as expected",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    assert!(!text.contains("WRONG"), "{text}");
}
