//! The command-line front end: the root parser and dispatch. Each command
//! family lives in its own module; the work is done by the library.
pub mod doctor;
pub mod steer;
pub mod tunnel;

use std::{path::PathBuf, process::ExitCode};

use anyhow::Result;
use clap::{Parser, Subcommand};
use vpn_ctl::steer::{cgroup, policy as routing, Options, DEFAULT_DIRECT_MARK, DEFAULT_MARK};

use self::steer::SteerCmd;

#[derive(Parser)]
#[command(
    name = "vpn-ctl",
    version,
    about = "Per-source VPN steering with eBPF and a WireGuard-compatible tunnel"
)]
pub struct Cli {
    /// Tunnel whose state to act on (names the pin directory).
    #[arg(long, global = true, default_value = "vpn0", env = "VPN_TUNNEL")]
    tunnel: String,
    /// Directory for pinned programs and maps [default: <bpffs>/vpn].
    #[arg(long, global = true, env = "VPN_PIN_ROOT")]
    pin_root: Option<PathBuf>,
    /// cgroup the steering programs attach to [default: the cgroup v2 root].
    #[arg(long, global = true, env = "VPN_ATTACH_CGROUP")]
    attach_cgroup: Option<PathBuf>,
    /// fwmark bit given to steered traffic (also used as its mask).
    #[arg(long, global = true, value_parser = parse_u32, default_value_t = DEFAULT_MARK)]
    mark: u32,
    /// vpn's routing table for steered traffic.
    #[arg(long, global = true, default_value_t = routing::DEFAULT_TABLE)]
    table: u32,
    /// Priority of vpn's fwmark rule.
    #[arg(long, global = true, default_value_t = routing::DEFAULT_PRIORITY)]
    priority: u32,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Steer sources into the tunnel, or list and remove steering rules.
    Steer {
        #[command(subcommand)]
        cmd: SteerCmd,
    },
    /// Stream what the kernel programs do (aya-log lines) until Ctrl-C.
    Watch,
    /// Guard an uplink: steered plaintext leaving by it is dropped, counted
    /// and reported (`watch`), even while the tunnel or the daemon is down.
    Attach { uplink: String },
    /// Remove the guard from an uplink.
    Detach { uplink: String },
    /// Serve Prometheus metrics (per peer, per steered source) on a
    /// loopback address until stopped.
    Metrics {
        #[arg(long, default_value = "127.0.0.1:9586")]
        listen: std::net::SocketAddr,
    },
    /// Run a command steered into the tunnel: `vpn-ctl exec -- curl ...`.
    Exec {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<std::ffi::OsString>,
    },
    #[command(flatten)]
    Tunnel(tunnel::TunnelCmd),
    /// Check the kernel, mounts, privileges and other tools' rules, and
    /// explain what to do; exits non-zero if a check fails.
    Doctor {
        #[arg(long)]
        json: bool,
    },
}

fn parse_u32(s: &str) -> Result<u32, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("{s:?} is not a 32-bit number (decimal or 0x hex): {e}"))
}

pub fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let cli = Cli::parse();
    // Doctor needs no bpffs or cgroup (it reports on them), and has its own exit code.
    if let Cmd::Doctor { json } = cli.cmd {
        return doctor::run(json, cli.table, cli.priority, cli.mark, cli.pin_root);
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vpn-ctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn options(cli: &Cli) -> Result<Options> {
    // Mounts bpffs when the system has none, wherever the pins go.
    let bpffs = cgroup::bpffs_mount()?;
    let pin_root = cli.pin_root.clone().unwrap_or_else(|| bpffs.join("vpn"));
    let attach_cgroup = match &cli.attach_cgroup {
        Some(p) => {
            let mount = cgroup::cgroup2_mount()?;
            cgroup::resolve(&mount, p)?
        }
        None => cgroup::cgroup2_mount()?,
    };
    if cli.mark.count_ones() != 1 || cli.mark == DEFAULT_DIRECT_MARK {
        anyhow::bail!(
            "--mark {:#x} must be a single bit other than the direct bit {DEFAULT_DIRECT_MARK:#x} (vpn owns only those bits of the fwmark)",
            cli.mark
        );
    }
    Ok(Options {
        tunnel: cli.tunnel.clone(),
        pin_root,
        attach_cgroup,
        mark: cli.mark,
        mark_mask: cli.mark,
        direct_mark: DEFAULT_DIRECT_MARK,
        table: cli.table,
        priority: cli.priority,
    })
}

fn run(cli: Cli) -> Result<()> {
    // Tunnel commands need no bpffs or cgroup (genkey needs no root).
    if let Cmd::Tunnel(t) = &cli.cmd {
        let result = tunnel::run(t);
        // Down means clean: the tunnel's steering goes too, unless --lockdown.
        if let tunnel::TunnelCmd::Down {
            target,
            lockdown: false,
        } = t
        {
            let iface = vpn_ctl::tunnel::daemon::target_interface(target)?;
            let mut opts = options(&cli)?;
            opts.tunnel = iface;
            if vpn_ctl::steer::Steering::is_loaded(&opts) {
                if steer::clear(&opts)? {
                    println!("{}: steering, guard and rules removed", opts.tunnel);
                }
            } else {
                // Forwarding state of steering pinned elsewhere (another
                // --pin-root) still belongs to this tunnel's namespace.
                vpn_ctl::steer::forward::remove(&opts.tunnel)?;
            }
        }
        return result;
    }
    let opts = options(&cli)?;
    match cli.cmd {
        Cmd::Steer { cmd } => steer::steer(&opts, cmd),
        Cmd::Watch => steer::watch(&opts),
        Cmd::Tunnel(t) => tunnel::run(&t),
        Cmd::Exec { command } => steer::exec(&opts, &command),
        Cmd::Attach { uplink } => steer::attach(&opts, &uplink),
        Cmd::Detach { uplink } => steer::detach(&opts, &uplink),
        Cmd::Metrics { listen } => steer::metrics(&opts, listen),
        Cmd::Doctor { .. } => unreachable!("dispatched in main"),
    }
}
