//! `cargo xtask bench steer`: ns per packet of vpn's steering classifiers
//! with 1, 100 and 10 000 steered sources (BPF_PROG_TEST_RUN with `repeat`),
//! beside an nftables ruleset that marks the same sources the way existing
//! tools do (a set lookup and a linear rule list), measured end to end
//! through a veth pair in namespaces.
//!
//! The measuring program is `vpn-ctl/examples/bench_steer.rs`: it needs aya
//! and the embedded eBPF object, which xtask (built before the eBPF
//! toolchain is set up) must not depend on. This builds and runs it.
use anyhow::Result;

use crate::{cargo, run_checked, setup};

/// Builds the example and runs it (the caller, `bench::run`, has run setup); `args` are passed through (`--packets N`,
/// `--rounds N`, `--repeat N`). Prints the table on stdout.
pub fn run(args: &[String]) -> Result<()> {
    if !setup::is_root() {
        anyhow::bail!(
            "the steering benchmark loads eBPF programs and creates namespaces: run it as root"
        );
    }
    eprintln!("==> building vpn-ctl/examples/bench_steer.rs (release)");
    run_checked(cargo().args([
        "build",
        "--release",
        "-p",
        "vpn-ctl",
        "--example",
        "bench_steer",
    ]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || crate::workspace().join("target"),
        std::path::PathBuf::from,
    );
    run_checked(std::process::Command::new(target.join("release/examples/bench_steer")).args(args))
}
