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
    assert!(
        text.contains("steered app left by the tunnel side (eth1): as expected"),
        "{text}"
    );
    assert!(
        text.contains("unsteered app left by the direct uplink (eth0): as expected"),
        "{text}"
    );
    assert!(text.contains("everything torn down"), "{text}");
}
