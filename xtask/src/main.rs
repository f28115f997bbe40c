//! `cargo xtask`: the one entry point for setting up, building, testing and
//! demonstrating vpn on a fresh Linux machine.
mod bench;
mod bench_steer;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Set up, build, test and demo vpn")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the eBPF toolchain and the tools the tests use (idempotent, root).
    Setup,
    /// Build the eBPF object and the userspace binaries (release).
    Build,
    /// Set up, build, and run the whole suite: unit, eBPF and end-to-end tests.
    Test {
        /// Extra arguments for `cargo test` (a test name filter, --nocapture...).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build, and run the self-contained demo in network namespaces.
    Run,
    /// Benchmarks, printed side by side as ratios (see DESIGN.md, Benchmarks).
    Bench {
        #[command(subcommand)]
        what: bench::What,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Setup => setup::run().map(|_| ()),
        Cmd::Build => {
            setup::run()?;
            build()
        }
        Cmd::Test { args } => {
            setup::run()?;
            preflight()?;
            build()?;
            test(&args)
        }
        Cmd::Run => {
            setup::run()?;
            preflight()?;
            build()?;
            demo()
        }
        Cmd::Bench { what } => bench::run(what),
    }
}

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

/// The cargo that runs xtask (rustup's stable) builds userspace.
fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(workspace());
    c
}

fn run_checked(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

fn build() -> Result<()> {
    let t = Instant::now();
    eprintln!("==> building vpn-ebpf (bpfel) and vpn-ctl (release)");
    run_checked(cargo().args(["build", "--release", "-p", "vpn-ctl", "--bins"]))?;
    eprintln!("==> built in {:.1}s", t.elapsed().as_secs_f64());
    Ok(())
}

pub fn vpn_ctl_bin() -> PathBuf {
    workspace().join("target/release/vpn-ctl")
}

/// What the suite needs from the kernel and the user, checked before it
/// starts so that it fails at once with a reason instead of skipping.
fn preflight() -> Result<()> {
    let mut missing = Vec::new();
    if !setup::is_root() {
        missing.push(
            "root: the suite creates network namespaces and loads eBPF programs; run it as root"
                .to_owned(),
        );
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if !mountinfo.lines().any(|l| {
        l.split(" - ")
            .nth(1)
            .is_some_and(|p| p.starts_with("cgroup2 "))
    }) {
        missing.push("a cgroup v2 mount (mount -t cgroup2 none /sys/fs/cgroup)".to_owned());
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        missing.push("kernel BTF (/sys/kernel/btf/vmlinux; CONFIG_DEBUG_INFO_BTF=y)".to_owned());
    }
    if !Path::new("/dev/net/tun").exists() {
        missing.push("/dev/net/tun (CONFIG_TUN; `modprobe tun`)".to_owned());
    }
    let config = std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled");
    if config.is_err() {
        missing.push("the bpf() syscall (CONFIG_BPF_SYSCALL)".to_owned());
    }
    if !missing.is_empty() {
        bail!(
            "the suite cannot run here; missing:\n  - {}",
            missing.join("\n  - ")
        );
    }
    Ok(())
}

fn test(args: &[String]) -> Result<()> {
    let t = Instant::now();
    eprintln!("==> running the suite");
    let mut cmd = cargo();
    cmd.args(["test", "--workspace", "--release"])
        .env("VPN_CTL_BIN", vpn_ctl_bin())
        .args(args);
    let result = run_checked(&mut cmd);
    let left = leftovers();
    eprintln!("==> suite took {:.1}s", t.elapsed().as_secs_f64());
    result?;
    if !left.is_empty() {
        bail!("the suite left things behind:\n  - {}", left.join("\n  - "));
    }
    eprintln!("==> nothing left behind (namespaces, cgroups, pins, temporary files)");
    Ok(())
}

/// Anything the suite's harness creates carries the `vpnt` prefix.
fn leftovers() -> Vec<String> {
    let mut left = Vec::new();
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            if l.starts_with("vpnt") {
                left.push(format!("network namespace {l}"));
            }
        }
    }
    let tmp = std::env::temp_dir();
    let roots = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup", "/sys/fs/bpf"];
    for root in roots
        .iter()
        .map(std::path::Path::new)
        .chain([tmp.as_path()])
    {
        if let Ok(rd) = std::fs::read_dir(root) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with("vpnt") {
                    left.push(e.path().display().to_string());
                }
            }
        }
    }
    left
}

fn demo() -> Result<()> {
    run_checked(
        cargo()
            .args([
                "run",
                "--quiet",
                "--release",
                "-p",
                "vpn-tests",
                "--bin",
                "vpn-demo",
            ])
            .env("VPN_CTL_BIN", vpn_ctl_bin()),
    )
}
