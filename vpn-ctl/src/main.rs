//! `vpn-ctl`: the command-line front end. Parsing and printing live here;
//! the work is done by the library's modules.
use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use vpn_common::SteerAction;
use vpn_ctl::{
    cgroup,
    steer::{Options, Steering, DEFAULT_MARK},
};

#[derive(Parser)]
#[command(
    name = "vpn-ctl",
    version,
    about = "Per-source VPN steering with eBPF and a WireGuard-compatible tunnel"
)]
struct Cli {
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
}

#[derive(Subcommand)]
enum SteerCmd {
    /// Add a steering rule.
    Add {
        #[command(subcommand)]
        selector: Selector,
        /// Leave this source direct (full-tunnel exclude mode).
        #[arg(long, global = true)]
        exclude: bool,
    },
    /// Remove a steering rule.
    Del {
        #[command(subcommand)]
        selector: Selector,
    },
    /// List steering rules and counters.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove all steering of the tunnel: detach the programs, drop the pins.
    Clear,
}

#[derive(Subcommand, Clone)]
enum Selector {
    /// A cgroup v2 path (absolute, or relative to the cgroup v2 mount); its
    /// descendants are covered too.
    Cgroup { path: PathBuf },
}

fn parse_u32(s: &str) -> Result<u32, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("{s:?} is not a 32-bit number (decimal or 0x hex): {e}"))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let cli = Cli::parse();
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
    if cli.mark.count_ones() != 1 {
        anyhow::bail!(
            "--mark {:#x} must be a single bit (vpn owns only that bit of the fwmark)",
            cli.mark
        );
    }
    Ok(Options {
        tunnel: cli.tunnel.clone(),
        pin_root,
        attach_cgroup,
        mark: cli.mark,
        mark_mask: cli.mark,
    })
}

fn run(cli: Cli) -> Result<()> {
    let opts = options(&cli)?;
    match cli.cmd {
        Cmd::Steer { cmd } => steer(&opts, cmd),
        Cmd::Watch => watch(&opts),
    }
}

fn cgroup_selector(path: &std::path::Path) -> Result<(PathBuf, u64)> {
    let mount = cgroup::cgroup2_mount()?;
    let dir = cgroup::resolve(&mount, path)?;
    let id = cgroup::cgroup_id(&dir)?;
    Ok((dir, id))
}

fn steer(opts: &Options, cmd: SteerCmd) -> Result<()> {
    match cmd {
        SteerCmd::Add {
            selector: Selector::Cgroup { path },
            exclude,
        } => {
            let (dir, id) = cgroup_selector(&path)?;
            let (mut s, loaded) = Steering::open_or_load(opts)?;
            let action = if exclude {
                SteerAction::Exclude
            } else {
                SteerAction::Include
            };
            if let Err(e) = s.add_cgroup(id, action) {
                if loaded {
                    // Leave nothing half-configured behind a failed first add.
                    let _ = Steering::unload(opts);
                }
                return Err(e.into());
            }
            let verb = if exclude { "excluded" } else { "steered" };
            println!(
                "{verb}: cgroup {} (id {id}) on tunnel {}",
                dir.display(),
                opts.tunnel
            );
        }
        SteerCmd::Del {
            selector: Selector::Cgroup { path },
        } => {
            let (dir, id) = cgroup_selector(&path)?;
            let mut s = Steering::open(opts)?;
            if !s.del_cgroup(id)? {
                anyhow::bail!(
                    "cgroup {} (id {id}) is not steered on tunnel {}",
                    dir.display(),
                    opts.tunnel
                );
            }
            println!("removed: cgroup {} (id {id})", dir.display());
        }
        SteerCmd::List { json } => {
            if !Steering::is_loaded(opts) {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({ "tunnel": opts.tunnel, "loaded": false, "cgroups": [] })
                    );
                } else {
                    println!("tunnel {}: no steering loaded", opts.tunnel);
                }
                return Ok(());
            }
            let s = Steering::open(opts)?;
            let rules = s.cgroups()?;
            let stats = s.stats()?;
            if json {
                let stats: serde_json::Map<String, serde_json::Value> = stats
                    .iter()
                    .map(|(k, v)| (k.name().to_owned(), (*v).into()))
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({ "tunnel": opts.tunnel, "loaded": true, "pin_dir": s.pin_dir(),
                        "mark": format!("{:#x}", s.config()?.mark), "cgroups": rules, "stats": stats })
                );
            } else {
                println!(
                    "tunnel {}: mark {:#x}, pinned at {}",
                    opts.tunnel,
                    s.config()?.mark,
                    s.pin_dir().display()
                );
                for r in &rules {
                    println!("  cgroup id {:<10} {}", r.cgroup_id, r.action);
                }
                for (k, v) in stats {
                    println!("  {:<18} {v}", k.name());
                }
            }
        }
        SteerCmd::Clear => {
            if Steering::unload(opts)? {
                println!("tunnel {}: steering removed", opts.tunnel);
            } else {
                println!("tunnel {}: nothing to remove", opts.tunnel);
            }
        }
    }
    Ok(())
}

fn watch(opts: &Options) -> Result<()> {
    let mut s = Steering::open(opts)?;
    let prog_id = s.program_id()?;
    let logger = aya_log::EbpfLogger::init_from_id(prog_id)
        .context("attaching to the programs' log ring buffer")?;
    s.set_log_decisions(true)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(async move {
        // SAFETY: the logger owns its ring buffer fd, which stays open and
        // unchanged for as long as the AsyncFd owns the logger.
        let mut fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)?
        };
        log::info!("watching tunnel {} (Ctrl-C to stop)", opts.tunnel);
        loop {
            tokio::select! {
                guard = fd.readable_mut() => {
                    let mut guard = guard?;
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
                _ = tokio::signal::ctrl_c() => break,
                _ = sigterm() => break,
            }
        }
        Ok::<_, anyhow::Error>(())
    });
    s.set_log_decisions(false)?;
    result
}

async fn sigterm() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}
