//! `vpn-ctl steer ...`, `watch`, `exec`, `attach`, `detach` and `metrics`:
//! argument parsing and output; the use cases are in [`vpn_ctl::steer`].
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use vpn_common::{SteerAction, TunnelInfo, TUNNEL_CARRIES_V6, TUNNEL_FULL};
use vpn_ctl::{
    metrics,
    steer::{
        self,
        guard::{self, Hook},
        Added, Options, Removed, Steering,
    },
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
    /// Redirect steered DNS (port 53, UDP and TCP, any address) to these
    /// resolvers (one IPv4, one IPv6); none: stop redirecting.
    Dns { servers: Vec<IpAddr> },
    /// Whether the tunnel carries IPv6; when off, steered IPv6 is refused at
    /// connect instead of leaking or timing out.
    Ipv6 { state: OnOff },
    /// split: only steered sources enter the tunnel (the default). full:
    /// everything does except `--exclude`d sources and the tunnel's own
    /// socket, as wg-quick's full tunnel (LAN routes keep working).
    Mode { mode: Mode },
    /// Remove all steering of the tunnel: detach the programs, drop the pins.
    Clear,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Split,
    Full,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Subcommand, Clone)]
pub enum Selector {
    /// A cgroup v2 path (absolute, or relative to the cgroup v2 mount); its
    /// descendants are covered too.
    Cgroup { path: PathBuf },
    /// A running process: moved into vpn's cgroup for the tunnel, so its new
    /// sockets (and its future children) are steered; `del` moves it back.
    Pid { pid: u32 },
    /// Every socket a user's processes create (a cgroup rule, being more
    /// specific, wins over a uid rule).
    Uid { uid: u32 },
    /// Everything forwarded in by an interface: a container's or VM's veth
    /// (or a bridge). Translated to the tunnel's address unless
    /// --keep-source; TCP MSS clamped; DNS to the tunnel's resolver.
    Iface {
        name: String,
        #[arg(long)]
        keep_source: bool,
    },
    /// Everything forwarded from a source prefix (IPv4 or IPv6), classified
    /// where it enters: the interface the prefix is routed by, or --on.
    Src {
        prefix: String,
        #[arg(long)]
        on: Option<String>,
        #[arg(long)]
        keep_source: bool,
    },
}

pub fn steer(opts: &Options, cmd: SteerCmd) -> Result<()> {
    match cmd {
        SteerCmd::Add { selector, exclude } => {
            let action = if exclude {
                SteerAction::Exclude
            } else {
                SteerAction::Include
            };
            add(opts, &selector, action)
        }
        SteerCmd::Del { selector } => del(opts, &selector),
        SteerCmd::List { json } => list(opts, json),
        SteerCmd::Dns { servers } => set_info(opts, |info| {
            info.dns4 = [0; 4];
            info.dns6 = [0; 16];
            for ip in &servers {
                match ip {
                    IpAddr::V4(a) => info.dns4 = a.octets(),
                    IpAddr::V6(a) => info.dns6 = a.octets(),
                }
            }
        }),
        SteerCmd::Mode { mode } => {
            steer::set_mode(opts, mode == Mode::Full, &mut adopted(opts), |info| {
                println!("tunnel {}: {}", opts.tunnel, describe_info(info));
            })
        }
        SteerCmd::Ipv6 { state } => set_info(opts, |info| {
            info.flags &= !TUNNEL_CARRIES_V6;
            if state == OnOff::On {
                info.flags |= TUNNEL_CARRIES_V6;
            }
        }),
        SteerCmd::Clear => {
            if steer::clear(opts)? {
                println!("tunnel {}: steering removed", opts.tunnel);
            } else {
                println!("tunnel {}: nothing to remove", opts.tunnel);
            }
            Ok(())
        }
    }
}

impl From<&Selector> for steer::Selector {
    fn from(s: &Selector) -> Self {
        match s.clone() {
            Selector::Cgroup { path } => Self::Cgroup(path),
            Selector::Pid { pid } => Self::Pid(pid),
            Selector::Uid { uid } => Self::Uid(uid),
            Selector::Iface { name, keep_source } => Self::Iface { name, keep_source },
            Selector::Src {
                prefix,
                on,
                keep_source,
            } => Self::Src {
                prefix,
                on,
                keep_source,
            },
        }
    }
}

/// Prints what a first load learnt from the running tunnel of that name.
fn adopted(opts: &Options) -> impl FnMut(&TunnelInfo) + '_ {
    |info| println!("tunnel {} is up: {}", opts.tunnel, describe_info(info))
}

fn add(opts: &Options, selector: &Selector, action: SteerAction) -> Result<()> {
    let verb = if action == SteerAction::Exclude {
        "excluded"
    } else {
        "steered"
    };
    let t = &opts.tunnel;
    match steer::add(opts, &selector.into(), action, &mut adopted(opts))? {
        Added::Cgroup { dir, id } => {
            println!("{verb}: cgroup {} (id {id}) on tunnel {t}", dir.display());
        }
        Added::Uid(uid) => println!("{verb}: uid {uid} on tunnel {t}"),
        Added::Pid { pid, cgroup, old } => {
            println!(
                "{verb}: pid {pid} moved into {} on tunnel {t}",
                cgroup.display()
            );
            if !old.is_empty() {
                println!(
                    "  {} socket(s) opened before keep their old route (restart those connections):",
                    old.len()
                );
                for so in old {
                    println!("    {} {} -> {}", so.proto, so.local, so.remote);
                }
            }
        }
        Added::Iface(name) => {
            println!("{verb}: everything forwarded in by {name} on tunnel {t}");
        }
        Added::Src { prefix, on } => {
            println!("{verb}: source {prefix} (entering by {on}) on tunnel {t}");
        }
    }
    Ok(())
}

fn del(opts: &Options, selector: &Selector) -> Result<()> {
    match steer::del(opts, &selector.into())? {
        Removed::Cgroup { dir, id } => println!("removed: cgroup {} (id {id})", dir.display()),
        Removed::Uid(uid) => println!("removed: uid {uid}"),
        Removed::Pid { pid, back } => println!("removed: pid {pid}, back in {}", back.display()),
        Removed::Forwarded(name) => println!("removed: {name}"),
    }
    Ok(())
}

fn set_info(opts: &Options, f: impl FnOnce(&mut TunnelInfo)) -> Result<()> {
    let info = steer::set_info(opts, &mut adopted(opts), f)?;
    println!("tunnel {}: {}", opts.tunnel, describe_info(&info));
    Ok(())
}

fn describe_info(info: &TunnelInfo) -> String {
    let dns: Vec<String> = [
        (info.dns4 != [0; 4]).then(|| Ipv4Addr::from(info.dns4).to_string()),
        (info.dns6 != [0; 16]).then(|| Ipv6Addr::from(info.dns6).to_string()),
    ]
    .into_iter()
    .flatten()
    .collect();
    format!(
        "{} tunnel, dns {}, ipv6 {}",
        if info.flags & TUNNEL_FULL != 0 {
            "full"
        } else {
            "split"
        },
        if dns.is_empty() {
            "not redirected".to_owned()
        } else {
            dns.join(" ")
        },
        if info.flags & TUNNEL_CARRIES_V6 != 0 {
            "tunnelled"
        } else {
            "refused (the tunnel carries none)"
        }
    )
}

fn list(opts: &Options, json: bool) -> Result<()> {
    if !Steering::is_loaded(opts) {
        if json {
            println!(
                "{}",
                serde_json::json!({ "tunnel": opts.tunnel, "loaded": false, "cgroups": [], "uids": [] })
            );
        } else {
            println!("tunnel {}: no steering loaded", opts.tunnel);
        }
        return Ok(());
    }
    let s = Steering::open(opts)?;
    let rules = s.cgroups()?;
    let uids = s.uids()?;
    let info = s.tunnel_info()?;
    let uplinks = guard::attached(s.pin_dir(), Hook::Guard);
    let (stats, sources) = steer::counters(&s)?;
    if json {
        let stats: serde_json::Map<String, serde_json::Value> = stats
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).into()))
            .collect();
        let uids: Vec<_> = uids
            .iter()
            .map(|(u, a)| serde_json::json!({ "uid": u, "action": a }))
            .collect();
        println!(
            "{}",
            serde_json::json!({ "tunnel": opts.tunnel, "loaded": true, "pin_dir": s.pin_dir(),
                "mark": format!("{:#x}", s.config()?.mark), "cgroups": rules, "uids": uids,
                "dns4": (info.dns4 != [0; 4]).then(|| Ipv4Addr::from(info.dns4).to_string()),
                "dns6": (info.dns6 != [0; 16]).then(|| Ipv6Addr::from(info.dns6).to_string()),
                "ipv6_tunnelled": info.flags & TUNNEL_CARRIES_V6 != 0, "guarded_uplinks": uplinks,
                "sources": sources.iter().map(|c| serde_json::json!({ "source": c.source,
                    "steered_packets": c.steered_packets, "steered_bytes": c.steered_bytes,
                    "blocked_packets": c.blocked_packets, "blocked_bytes": c.blocked_bytes })).collect::<Vec<_>>(),
                "stats": stats })
        );
    } else {
        println!(
            "tunnel {}: mark {:#x}, pinned at {}",
            opts.tunnel,
            s.config()?.mark,
            s.pin_dir().display()
        );
        println!("  {}", describe_info(&info));
        for r in &rules {
            println!("  cgroup id {:<10} {}", r.cgroup_id, r.action);
        }
        for (uid, action) in &uids {
            println!("  uid {uid:<16} {action}");
        }
        if !uplinks.is_empty() {
            println!("  guarded uplinks: {}", uplinks.join(", "));
        }
        for c in &sources {
            println!(
                "  source {:<20} tunnelled {} pkts {} B, leaks blocked {} pkts {} B",
                c.source, c.steered_packets, c.steered_bytes, c.blocked_packets, c.blocked_bytes
            );
        }
        for (k, v) in stats {
            println!("  {k:<22} {v}");
        }
    }
    Ok(())
}

/// Removes the tunnel's steering and its policy routing.
pub fn clear(opts: &Options) -> Result<bool> {
    steer::clear(opts)
}

pub fn watch(opts: &Options) -> Result<()> {
    let mut s = Steering::open(opts)?;
    let prog_id = s.program_id()?;
    let logger = aya_log::EbpfLogger::init_from_id(prog_id)
        .context("attaching to the programs' log ring buffer")?;
    let mut events = steer::events::Events::open(s.pin_dir())?;
    s.set_log_decisions(true)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
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
                _ = tick.tick() => {
                    // The guard's leak events (its ring buffer has no
                    // async reader in aya; a 100 ms poll is plenty for people).
                    while let Some(ev) = events.try_next() {
                        println!("{}", steer::events::Leak(&ev));
                    }
                    std::io::Write::flush(&mut std::io::stdout())?;
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
    steer::join(opts, &mut adopted(opts))?;
    let err = std::process::Command::new(program).args(args).exec();
    Err(anyhow::Error::new(err).context(format!("running {}", program.to_string_lossy())))
}

/// `vpn-ctl attach UPLINK`: the egress guard on an uplink. Plaintext from
/// steered sources that would leave by it is dropped and counted, while
/// the tunnel is down and while no daemon runs; the tunnel's own encrypted
/// UDP passes.
pub fn attach(opts: &Options, uplink: &str) -> Result<()> {
    if !steer::attach(opts, uplink, &mut adopted(opts))? {
        println!("{uplink} is already guarded for tunnel {}", opts.tunnel);
        return Ok(());
    }
    println!(
        "guarding {uplink}: steered plaintext leaving by it is dropped (tunnel {})",
        opts.tunnel
    );
    Ok(())
}

/// `vpn-ctl detach UPLINK`.
pub fn detach(opts: &Options, uplink: &str) -> Result<()> {
    steer::detach(opts, uplink)?;
    println!("{uplink} is no longer guarded");
    Ok(())
}

/// `vpn-ctl metrics`: a Prometheus text endpoint on a loopback address,
/// opt-in; every scrape reads the tunnel's UAPI snapshot and the pinned
/// steering counters afresh.
pub fn metrics(opts: &Options, listen: std::net::SocketAddr) -> Result<()> {
    use std::io::{Read, Write};
    if !listen.ip().is_loopback() {
        bail!("metrics are served on loopback only (like 127.0.0.1:9586), not {listen}");
    }
    let server =
        std::net::TcpListener::bind(listen).with_context(|| format!("listening on {listen}"))?;
    log::info!(
        "serving metrics of tunnel {} on http://{listen}/metrics",
        opts.tunnel
    );
    for conn in server.incoming() {
        let Ok(mut conn) = conn else { continue };
        let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(2)));
        let mut req = [0u8; 1024];
        let _ = conn.read(&mut req);
        let body = scrape(opts).unwrap_or_else(|e| format!("# scrape failed: {e:#}\n"));
        let _ = write!(
            conn,
            "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
    }
    Ok(())
}

fn scrape(opts: &Options) -> Result<String> {
    let snapshot = super::tunnel::uapi_get(&opts.tunnel).ok();
    let mut counters = Vec::new();
    let mut rows = Vec::new();
    if Steering::is_loaded(opts) {
        (counters, rows) = steer::counters(&Steering::open(opts)?)?;
    }
    let counters: Vec<_> = counters
        .iter()
        .map(|(name, value)| metrics::Counter {
            name,
            value: *value,
        })
        .collect();
    let sources: Vec<_> = rows
        .iter()
        .map(|r| metrics::SourceRow {
            source: &r.source,
            tunnelled_packets: r.steered_packets,
            tunnelled_bytes: r.steered_bytes,
            blocked_packets: r.blocked_packets,
            blocked_bytes: r.blocked_bytes,
        })
        .collect();
    Ok(metrics::render(
        &opts.tunnel,
        snapshot.as_ref(),
        &counters,
        &sources,
    ))
}
