//! Builds `vpn-ebpf` for `bpfel-unknown-none` and hands the object to the
//! controller, which embeds it (`include_bytes!`).
//!
//! Rust eBPF on these machines needs Debian's rustc-web (prebuilt `core` for
//! bpfel) and bpf-linker against LLVM 22; `cargo xtask setup` installs both.
//! The controller itself builds with the default (rustup) toolchain.
//!
//! Overrides: `VPN_EBPF_OBJ` (use this prebuilt object), `VPN_BPF_CARGO`,
//! `VPN_BPF_RUSTC` (default /usr/bin/cargo, /usr/bin/rustc) and
//! `VPN_BPF_LINKER_DIR` (directory holding `bpf-linker`).
use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

fn main() -> Result<()> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let dest = out_dir.join("vpn-ebpf.o");
    for var in [
        "VPN_EBPF_OBJ",
        "VPN_BPF_CARGO",
        "VPN_BPF_RUSTC",
        "VPN_BPF_LINKER_DIR",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if let Ok(obj) = env::var("VPN_EBPF_OBJ") {
        println!("cargo:rerun-if-changed={obj}");
        std::fs::copy(&obj, &dest).with_context(|| format!("copying VPN_EBPF_OBJ={obj}"))?;
        return Ok(());
    }
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let workspace = manifest_dir
        .parent()
        .context("vpn-ctl has no parent directory")?;
    let ebpf = workspace.join("vpn-ebpf");
    for p in [
        "vpn-ebpf/src",
        "vpn-ebpf/Cargo.toml",
        "vpn-ebpf/Cargo.lock",
        "vpn-common/src",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(p).display());
    }
    let target_dir = workspace.join("target").join("ebpf");
    build_ebpf(&ebpf, &target_dir)?;
    let obj = target_dir.join("bpfel-unknown-none/release/vpn-ebpf");
    std::fs::copy(&obj, &dest).with_context(|| format!("copying {}", obj.display()))?;
    Ok(())
}

fn build_ebpf(crate_dir: &Path, target_dir: &Path) -> Result<()> {
    let cargo = env::var("VPN_BPF_CARGO").unwrap_or_else(|_| "/usr/bin/cargo".into());
    let rustc = env::var("VPN_BPF_RUSTC").unwrap_or_else(|_| "/usr/bin/rustc".into());
    let linker_dir = env::var("VPN_BPF_LINKER_DIR").unwrap_or_else(|_| "/usr/local/bin".into());
    let hint = "run `cargo xtask setup` (as root) to install the eBPF toolchain";
    if !Path::new(&rustc).exists() {
        bail!("{rustc} not found: the eBPF build needs Debian's rustc-web; {hint}");
    }
    if !Path::new(&linker_dir).join("bpf-linker").exists() {
        bail!("bpf-linker not found in {linker_dir}; {hint}");
    }
    let path = format!("{linker_dir}:{}", env::var("PATH").unwrap_or_default());
    let mut cmd = Command::new(&cargo);
    // The outer cargo's variables describe the host build; none of them may
    // leak into the nested bpf build.
    for (key, _) in env::vars() {
        if (key.starts_with("CARGO_") && key != "CARGO_HOME")
            || key.starts_with("RUSTC")
            || key.starts_with("RUSTDOC")
            || key.ends_with("RUSTFLAGS")
        {
            cmd.env_remove(&key);
        }
    }
    let status = cmd
        .current_dir(crate_dir)
        .args([
            "build",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "--target-dir",
        ])
        .arg(target_dir)
        .env("RUSTC", &rustc)
        // aya-ebpf uses feature(asm_experimental_arch); allow it for that crate only.
        .env("RUSTC_BOOTSTRAP", "aya_ebpf")
        .env("PATH", path)
        .status()
        .with_context(|| format!("running {cargo}; {hint}"))?;
    if !status.success() {
        bail!("building vpn-ebpf failed ({status}); if the toolchain is missing, {hint}");
    }
    Ok(())
}
