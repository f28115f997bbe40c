//! `vpn-ctl steer ...` and `vpn-ctl watch`.
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use vpn_common::SteerAction;
use vpn_ctl::{
    cgroup,
    netlink::Netlink,
    process,
    steer::{Options, Steering},
};

#[derive(Subcommand)]
pub enum SteerCmd {
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
pub enum Selector {
    /// A cgroup v2 path (absolute, or relative to the cgroup v2 mount); its
    /// descendants are covered too.
    Cgroup { path: PathBuf },
    /// A running process: moved into vpn's cgroup for the tunnel, so its new
    /// sockets (and its future children) are steered; `del` moves it back.
    Pid { pid: u32 },
}

fn cgroup_selector(path: &std::path::Path) -> Result<(PathBuf, u64)> {
    let mount = cgroup::cgroup2_mount()?;
    let dir = cgroup::resolve(&mount, path)?;
    let id = cgroup::cgroup_id(&dir)?;
    Ok((dir, id))
}

/// Runs one netlink job on a throwaway current-thread runtime.
fn with_netlink<T>(f: impl AsyncFnOnce(&Netlink) -> Result<T>) -> Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let nl = Netlink::new()?;
        f(&nl).await
    })
}

/// Loads steering if needed and makes sure its policy routing is in place.
/// A first load that fails half-way is rolled back completely.
fn ensure_loaded(opts: &Options) -> Result<Steering> {
    let policy = opts.policy();
    let fresh = !Steering::is_loaded(opts);
    if fresh {
        with_netlink(async |nl| Ok(policy.check_conflicts(nl).await?))?;
    }
    let (s, _) = Steering::open_or_load(opts)?;
    match with_netlink(async |nl| Ok(policy.install(nl).await?)) {
        Ok(added) => {
            for a in added {
                log::info!("added {a}");
            }
            Ok(s)
        }
        Err(e) => {
            if fresh {
                let _ = Steering::unload(opts);
            }
            Err(e)
        }
    }
}

pub fn steer(opts: &Options, cmd: SteerCmd) -> Result<()> {
    match cmd {
        SteerCmd::Add {
            selector: Selector::Pid { pid },
            exclude,
        } => {
            let fresh = !Steering::is_loaded(opts);
            let mut s = ensure_loaded(opts)?;
            let action = if exclude {
                SteerAction::Exclude
            } else {
                SteerAction::Include
            };
            let old = match process::steer_pid(opts, &mut s, pid, action) {
                Ok(old) => old,
                Err(e) => {
                    if fresh {
                        let _ = clear(opts);
                    }
                    return Err(e.into());
                }
            };
            let verb = if exclude { "excluded" } else { "steered" };
            println!(
                "{verb}: pid {pid} moved into {} on tunnel {}",
                process::managed_cgroup(opts, action).display(),
                opts.tunnel
            );
            if !old.is_empty() {
                println!("  {} socket(s) opened before keep their old route (restart those connections):", old.len());
                for so in old {
                    println!("    {} {} -> {}", so.proto, so.local, so.remote);
                }
            }
        }
        SteerCmd::Del {
            selector: Selector::Pid { pid },
        } => {
            let back = process::unsteer_pid(opts, pid)?;
            println!("removed: pid {pid}, back in {}", back.display());
        }
        SteerCmd::Add {
            selector: Selector::Cgroup { path },
            exclude,
        } => {
            let (dir, id) = cgroup_selector(&path)?;
            let fresh = !Steering::is_loaded(opts);
            let mut s = ensure_loaded(opts)?;
            let action = if exclude {
                SteerAction::Exclude
            } else {
                SteerAction::Include
            };
            if let Err(e) = s.add_cgroup(id, action) {
                if fresh {
                    // Leave nothing half-configured behind a failed first add.
                    let _ = clear(opts);
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
            if clear(opts)? {
                println!("tunnel {}: steering removed", opts.tunnel);
            } else {
                println!("tunnel {}: nothing to remove", opts.tunnel);
            }
        }
    }
    Ok(())
}

/// Removes the tunnel's steering and its policy routing.
fn clear(opts: &Options) -> Result<bool> {
    process::remove_managed(opts)?;
    let policy = opts.policy();
    with_netlink(async |nl| Ok(policy.remove(nl).await?))?;
    Ok(Steering::unload(opts)?)
}

pub fn watch(opts: &Options) -> Result<()> {
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

/// `vpn-ctl exec -- CMD ARGS...`: runs a command steered. It joins vpn's
/// cgroup for the tunnel and then becomes the command, so the command and
/// everything it starts is steered from its first socket on.
pub fn exec(opts: &Options, argv: &[std::ffi::OsString]) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let (program, args) = argv
        .split_first()
        .context("exec needs a command: vpn-ctl exec -- CMD ARGS...")?;
    let mut s = ensure_loaded(opts)?;
    let dir = process::ensure_managed(opts, &mut s, SteerAction::Include)?;
    drop(s);
    cgroup::move_pid(&dir, std::process::id())?;
    let err = std::process::Command::new(program).args(args).exec();
    Err(anyhow::Error::new(err).context(format!("running {}", program.to_string_lossy())))
}
