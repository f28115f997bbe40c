//! `cargo xtask setup`: everything a fresh Debian 12 machine needs, installed
//! only when missing, so a second run takes seconds and changes nothing.
//!
//! The eBPF route follows ../shared/TOOLCHAIN.md: Debian's rustc-web ships a
//! prebuilt `core` for bpfel-unknown-none, and bpf-linker 0.13 is built
//! against Debian's LLVM 22. Userspace builds with the default toolchain.
use std::{path::Path, process::Command, time::Instant};

use anyhow::{bail, Context, Result};

/// Debian packages: the eBPF toolchain, then the tools the tests drive.
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "rustc-web",
    "cargo-web",
    "libstd-rust-web-dev-bpf",
    "iproute2",
    "iperf3",
    "tcpdump",
    "wireguard-go",
    "wireguard-tools",
    "nftables",
    "procps",
    "iputils-ping",
    // The end-to-end tests script their clients and servers in Python.
    "python3",
    "nix-bin",
];

const BPF_LINKER_VERSION: &str = "0.13.0";
const BPF_LINKER: &str = "/usr/local/bin/bpf-linker";
const BORINGTUN: &str = "/usr/local/bin/boringtun-cli";

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn missing_packages() -> Vec<&'static str> {
    APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            let out = Command::new("dpkg-query").args(["-W", "-f=${Status}", p]).output();
            !matches!(out, Ok(o) if String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect()
}

fn version_of(bin: &str) -> Option<String> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn exec(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// Returns what it installed (empty when everything was already there).
pub fn run() -> Result<Vec<String>> {
    let t = Instant::now();
    let mut installed = Vec::new();
    let missing = missing_packages();
    let need_linker = !version_of(BPF_LINKER).is_some_and(|v| v.contains(BPF_LINKER_VERSION));
    let need_boringtun = version_of(BORINGTUN).is_none();
    let need_bpffs = !mounted("bpf");
    if (!missing.is_empty() || need_linker || need_boringtun || need_bpffs) && !is_root() {
        bail!(
            "setup must install {} and needs root: run `sudo -E cargo xtask setup` (or the same command as root)",
            describe(&missing, need_linker, need_boringtun, need_bpffs)
        );
    }
    if !missing.is_empty() {
        eprintln!("==> setup: apt-get install {}", missing.join(" "));
        exec(Command::new("apt-get").args(["update", "-q"]))?;
        exec(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
        installed.extend(missing.iter().map(|p| format!("apt: {p}")));
    }
    if need_linker {
        eprintln!(
            "==> setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about a minute)"
        );
        exec(
            Command::new("cargo")
                .args([
                    "install",
                    "--locked",
                    &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                ])
                .args([
                    "--no-default-features",
                    "--features",
                    "llvm-22",
                    "--root",
                    "/usr/local",
                ])
                .env("LLVM_PREFIX", "/usr/lib/llvm-22"),
        )?;
        installed.push(format!("crates.io: bpf-linker {BPF_LINKER_VERSION}"));
    }
    if need_boringtun {
        eprintln!(
            "==> setup: building boringtun-cli (a real WireGuard peer for the interop tests)"
        );
        exec(Command::new("cargo").args([
            "install",
            "--locked",
            "boringtun-cli",
            "--root",
            "/usr/local",
        ]))?;
        installed.push("crates.io: boringtun-cli".into());
    }
    if need_bpffs {
        eprintln!("==> setup: mounting bpffs at /sys/fs/bpf");
        std::fs::create_dir_all("/sys/fs/bpf")?;
        exec(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))?;
        installed.push("mount: bpffs at /sys/fs/bpf".into());
    }
    if !Path::new("/usr/lib/rustlib/bpfel-unknown-none").exists() {
        bail!("libstd-rust-web-dev-bpf is installed but /usr/lib/rustlib/bpfel-unknown-none is missing; reinstall it");
    }
    if installed.is_empty() {
        eprintln!(
            "==> setup: everything present ({:.1}s)",
            t.elapsed().as_secs_f64()
        );
    } else {
        eprintln!("==> setup: installed in {:.1}s:", t.elapsed().as_secs_f64());
        for i in &installed {
            eprintln!("      {i}");
        }
    }
    Ok(installed)
}

fn mounted(fstype: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            l.split(" - ")
                .nth(1)
                .and_then(|p| p.split_whitespace().next())
                == Some(fstype)
        })
}

fn describe(missing: &[&str], linker: bool, boringtun: bool, bpffs: bool) -> String {
    let mut parts: Vec<String> = missing.iter().map(|p| (*p).to_owned()).collect();
    if linker {
        parts.push(format!("bpf-linker {BPF_LINKER_VERSION}"));
    }
    if boringtun {
        parts.push("boringtun-cli".into());
    }
    if bpffs {
        parts.push("a bpffs mount".into());
    }
    parts.join(", ")
}
