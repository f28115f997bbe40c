//! `cargo xtask run`: the self-contained demo, in network namespaces only.
//!
//! Today it shows the steering half of vpn: a process in a steered cgroup
//! leaves by the tunnel side, any other process by the direct uplink, each
//! judged by tcpdump on the client's two interfaces. Everything is torn down
//! on every exit path (the harness guards), Ctrl-C included.
use std::{
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{bail, Result};
use netns_harness::{self as h, Capture, Cgroup, Netns, PinRoot};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn step(n: u32, text: &str) -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    println!("[{n}] {text}");
    Ok(())
}

fn main() -> ExitCode {
    // SAFETY: installs an async-signal-safe handler that only sets a flag;
    // the guards then unwind normally and tear the world down.
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };
    match demo() {
        Ok(true) => {
            println!("demo: every outcome as expected; everything torn down");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!("demo: some outcome was NOT as expected (see above); everything torn down");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("demo failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn demo() -> Result<bool> {
    h::require_root();
    step(
        1,
        "building the world: client (eth0 = direct uplink, eth1 = tunnel side), two far ends",
    )?;
    let client = Netns::new()?;
    let direct = Netns::new()?;
    let side = Netns::new()?;
    h::veth(
        &client,
        "eth0",
        &["198.18.1.1/24"],
        &direct,
        "eth0",
        &["198.18.1.2/24"],
    )?;
    h::veth(
        &client,
        "eth1",
        &["198.18.2.1/24"],
        &side,
        "eth0",
        &["198.18.2.2/24"],
    )?;
    for ns in [&direct, &side] {
        ns.ip(&["addr", "add", "198.18.9.9/32", "dev", "lo"])?;
    }
    client.ip(&["route", "add", "198.18.9.0/24", "via", "198.18.1.2"])?;
    client.ip(&[
        "route",
        "add",
        "198.18.9.0/24",
        "via",
        "198.18.2.2",
        "table",
        "30318",
    ])?;
    let root = Cgroup::new()?;
    let app = root.child("app")?;
    let other = root.child("other")?;
    let pins = PinRoot::new()?;

    step(
        2,
        &format!("vpn-ctl steer add cgroup {}", app.path().display()),
    )?;
    let out = h::run(
        client
            .command(h::vpn_ctl_bin())
            .env("VPN_TUNNEL", "demo0")
            .arg("--pin-root")
            .arg(pins.path())
            .arg("--attach-cgroup")
            .arg(root.path())
            .args(["steer", "add", "cgroup"])
            .arg(app.path()),
    )?;
    print!("    {out}");

    let mut ok = true;
    for (n, cg, name, want_tunnel) in [
        (3, &app, "steered app", true),
        (4, &other, "unsteered app", false),
    ] {
        step(
            n,
            &format!("{name}: sending one datagram to 198.18.9.9:9000"),
        )?;
        let c0 = Capture::start(&client, "eth0", "udp port 9000")?;
        let c1 = Capture::start(&client, "eth1", "udp port 9000")?;
        client.sh_in(cg, "exec bash -c 'echo probe > /dev/udp/198.18.9.9/9000'")?;
        let (p0, p1) = (c0.finish()?.len(), c1.finish()?.len());
        let went = match (p0, p1) {
            (0, 1) => "the tunnel side (eth1)",
            (1, 0) => "the direct uplink (eth0)",
            _ => "an unexpected way",
        };
        let good = if want_tunnel {
            (p0, p1) == (0, 1)
        } else {
            (p0, p1) == (1, 0)
        };
        ok &= good;
        println!(
            "    {name} left by {went}: {}",
            if good { "as expected" } else { "WRONG" }
        );
    }

    step(5, "vpn-ctl steer clear; tearing the world down")?;
    h::run(
        client
            .command(h::vpn_ctl_bin())
            .env("VPN_TUNNEL", "demo0")
            .arg("--pin-root")
            .arg(pins.path())
            .args(["steer", "clear"]),
    )?;
    Ok(ok)
}
