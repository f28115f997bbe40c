//! `vpn-ctl steer ...` and `vpn-ctl watch`.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use vpn_common::{SteerAction, TunnelInfo, TUNNEL_CARRIES_V6, TUNNEL_FULL};
use vpn_ctl::{
    cgroup, forward,
    guard::{self, Hook},
    metrics,
    netlink::Netlink,
    process, steer,
    steer::{Options, Steering},
    tunnel::{control, daemon},
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
    let fresh = !Steering::is_loaded(opts);
    if fresh {
        if let Some(ns) = control::query(&daemon::ctl_path(&opts.tunnel))
            .ok()
            .and_then(|s| s.info.netns)
        {
            anyhow::bail!(
                "tunnel {} lives in network namespace {ns} (`up --netns`): everything in \
                 there already uses it, and its routes are not in this namespace, so \
                 steering here would only reach vpn's blackhole; steer a tunnel that runs \
                 here (without --netns)",
                opts.tunnel
            );
        }
        let policy = opts.policy(false);
        with_netlink(async |nl| Ok(policy.check_conflicts(nl).await?))?;
    }
    let (mut s, _) = Steering::open_or_load(opts)?;
    if fresh {
        // A tunnel of that name already running tells the hooks its DNS and
        // families; `steer dns` / `steer ipv6` override.
        if let Ok(status) = control::query(&daemon::ctl_path(&opts.tunnel)) {
            let info = steer::tunnel_info_from(&status.info.addresses, &status.info.dns);
            s.set_tunnel_info(info)?;
            println!("tunnel {} is up: {}", opts.tunnel, describe_info(&info));
        }
    }
    let policy = opts.policy(s.tunnel_info()?.flags & TUNNEL_FULL != 0);
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
            let full = mode == Mode::Full;
            set_info(opts, |info| {
                info.flags &= !TUNNEL_FULL;
                if full {
                    info.flags |= TUNNEL_FULL;
                }
            })?;
            let policy = opts.policy(full);
            with_netlink(async |nl| {
                policy.install(nl).await?;
                Ok(policy.prune(nl).await?)
            })
        }
        SteerCmd::Ipv6 { state } => set_info(opts, |info| {
            info.flags &= !TUNNEL_CARRIES_V6;
            if state == OnOff::On {
                info.flags |= TUNNEL_CARRIES_V6;
            }
        }),
        SteerCmd::Clear => {
            if clear(opts)? {
                println!("tunnel {}: steering removed", opts.tunnel);
            } else {
                println!("tunnel {}: nothing to remove", opts.tunnel);
            }
            Ok(())
        }
    }
}

/// Adds one rule; a first add that fails leaves nothing loaded behind.
fn add(opts: &Options, selector: &Selector, action: SteerAction) -> Result<()> {
    let verb = if action == SteerAction::Exclude {
        "excluded"
    } else {
        "steered"
    };
    // Validate before loading anything.
    let cgroup = match selector {
        Selector::Cgroup { path } => Some(cgroup_selector(path)?),
        _ => None,
    };
    let forwarded = forwarded_entry(selector, action)?;
    let fresh = !Steering::is_loaded(opts);
    let mut s = ensure_loaded(opts)?;
    let result = (|| -> Result<()> {
        match (selector, cgroup) {
            (Selector::Cgroup { .. }, Some((dir, id))) => {
                s.add_cgroup(id, action)?;
                println!(
                    "{verb}: cgroup {} (id {id}) on tunnel {}",
                    dir.display(),
                    opts.tunnel
                );
            }
            (Selector::Uid { uid }, _) => {
                s.add_uid(*uid, action)?;
                println!("{verb}: uid {uid} on tunnel {}", opts.tunnel);
            }
            (Selector::Pid { pid }, _) => {
                let old = process::steer_pid(opts, &mut s, *pid, action)?;
                println!(
                    "{verb}: pid {pid} moved into {} on tunnel {}",
                    process::managed_cgroup(opts, action).display(),
                    opts.tunnel
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
            (Selector::Iface { name, .. }, _) => {
                let ifindex = guard::ifindex(name).context("interface vanished")?;
                guard::Maps::open(s.pin_dir())?.add_iface(ifindex, action)?;
                add_forwarded(opts, &s, forwarded.clone().context("entry")?)?;
                println!(
                    "{verb}: everything forwarded in by {name} on tunnel {}",
                    opts.tunnel
                );
            }
            (Selector::Src { prefix, .. }, _) => {
                let (addr, len) = forward::parse_prefix(prefix).context("prefix")?;
                guard::Maps::open(s.pin_dir())?.add_prefix(addr, len, action)?;
                let entry = forwarded.clone().context("entry")?;
                let on = entry.ingress.clone();
                add_forwarded(opts, &s, entry)?;
                println!(
                    "{verb}: source {addr}/{len} (entering by {on}) on tunnel {}",
                    opts.tunnel
                );
            }
            (Selector::Cgroup { .. }, None) => unreachable!("resolved above"),
        }
        Ok(())
    })();
    if result.is_err() && fresh {
        let _ = clear(opts);
    }
    result
}

fn del(opts: &Options, selector: &Selector) -> Result<()> {
    match selector {
        Selector::Cgroup { path } => {
            let (dir, id) = cgroup_selector(path)?;
            if !Steering::open(opts)?.del_cgroup(id)? {
                bail!(
                    "cgroup {} (id {id}) is not steered on tunnel {}",
                    dir.display(),
                    opts.tunnel
                );
            }
            println!("removed: cgroup {} (id {id})", dir.display());
        }
        Selector::Uid { uid } => {
            if !Steering::open(opts)?.del_uid(*uid)? {
                bail!("uid {uid} is not steered on tunnel {}", opts.tunnel);
            }
            println!("removed: uid {uid}");
        }
        Selector::Pid { pid } => {
            let back = process::unsteer_pid(opts, *pid)?;
            println!("removed: pid {pid}, back in {}", back.display());
        }
        Selector::Iface { name, .. } | Selector::Src { prefix: name, .. } => {
            let s = Steering::open(opts)?;
            let mut maps = guard::Maps::open(s.pin_dir())?;
            let removed = match selector {
                Selector::Iface { name, .. } => {
                    let ifindex = guard::ifindex(name).context(format!("no interface {name}"))?;
                    maps.del_iface(ifindex)?
                }
                _ => {
                    let (addr, len) =
                        forward::parse_prefix(name).context(format!("{name:?} is not a prefix"))?;
                    maps.del_prefix(addr, len)?
                }
            };
            if !removed {
                bail!("{name} is not steered on tunnel {}", opts.tunnel);
            }
            let mut state = forward::State::load(&opts.tunnel)?;
            let gone: Vec<forward::Entry> = state
                .entries
                .iter()
                .filter(|e| matches!(&e.source, forward::Source::Iface(i) | forward::Source::Prefix(i) if i == name))
                .cloned()
                .collect();
            state.entries.retain(|e| !gone.contains(e));
            for e in &gone {
                if !state.entries.iter().any(|o| o.ingress == e.ingress) {
                    guard::detach(s.pin_dir(), Hook::Ingress, &e.ingress)?;
                }
            }
            forward::apply(
                &opts.tunnel,
                &mut state,
                forward::resolver_of(s.tunnel_info()?.dns4),
            )?;
            println!("removed: {name}");
        }
    }
    Ok(())
}

/// The forwarding entry of an `iface`/`src` selector, validated before
/// anything is loaded.
fn forwarded_entry(selector: &Selector, action: SteerAction) -> Result<Option<forward::Entry>> {
    let include = action == SteerAction::Include;
    Ok(match selector {
        Selector::Iface { name, keep_source } => {
            if guard::ifindex(name).is_none() {
                bail!("there is no interface {name} in this network namespace (see `ip link`)");
            }
            Some(forward::Entry {
                source: forward::Source::Iface(name.clone()),
                ingress: name.clone(),
                keep_source: *keep_source,
                include,
            })
        }
        Selector::Src {
            prefix,
            on,
            keep_source,
        } => {
            let (addr, len) = forward::parse_prefix(prefix).with_context(|| {
                format!("{prefix:?} is not an address prefix (like 198.18.5.0/24 or fd00:5::/64)")
            })?;
            let ingress = match on {
                Some(i) => i.clone(),
                None => route_dev(addr).with_context(|| {
                    format!("no route to {addr} tells where {prefix} enters; name the interface with --on")
                })?,
            };
            if guard::ifindex(&ingress).is_none() {
                bail!("there is no interface {ingress} in this network namespace (see `ip link`)");
            }
            Some(forward::Entry {
                source: forward::Source::Prefix(format!("{addr}/{len}")),
                ingress,
                keep_source: *keep_source,
                include,
            })
        }
        _ => None,
    })
}

/// The interface the main table routes `addr` by (`ip route get`).
fn route_dev(addr: IpAddr) -> Option<String> {
    let out = std::process::Command::new("ip")
        .args(["-j", "route", "get"])
        .arg(addr.to_string())
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v.get(0)?.get("dev")?.as_str().map(str::to_owned)
}

/// Records a forwarded source, classifies where it enters, and applies
/// forwarding, translation, clamping and DNS.
fn add_forwarded(opts: &Options, s: &Steering, entry: forward::Entry) -> Result<()> {
    if !guard::attached(s.pin_dir(), Hook::Ingress).contains(&entry.ingress) {
        guard::attach_pinned(s.pin_dir(), Hook::Ingress, &entry.ingress)?;
    }
    let mut state = forward::State::load(&opts.tunnel)?;
    state.entries.retain(|e| e.source != entry.source);
    state.entries.push(entry);
    forward::apply(
        &opts.tunnel,
        &mut state,
        forward::resolver_of(s.tunnel_info()?.dns4),
    )?;
    Ok(())
}

fn set_info(opts: &Options, f: impl FnOnce(&mut TunnelInfo)) -> Result<()> {
    let mut s = ensure_loaded(opts)?;
    let mut info = s.tunnel_info()?;
    f(&mut info);
    s.set_tunnel_info(info)?;
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
    let gmaps = guard::Maps::open(s.pin_dir())?;
    let uplinks = guard::attached(s.pin_dir(), Hook::Guard);
    let sources = gmaps.sources()?;
    let stats: Vec<(&str, u64)> = s
        .stats()?
        .into_iter()
        .map(|(k, v)| (k.name(), v))
        .chain(s.sockaddr_stats()?.into_iter().map(|(k, v)| (k.name(), v)))
        .chain(gmaps.stats()?.into_iter().map(|(k, v)| (k.name(), v)))
        .collect();
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
    process::remove_managed(opts)?;
    forward::remove(&opts.tunnel)?;
    // Removal covers the rules of both modes.
    let policy = opts.policy(true);
    with_netlink(async |nl| Ok(policy.remove(nl).await?))?;
    Ok(Steering::unload(opts)?)
}

pub fn watch(opts: &Options) -> Result<()> {
    let mut s = Steering::open(opts)?;
    let prog_id = s.program_id()?;
    let logger = aya_log::EbpfLogger::init_from_id(prog_id)
        .context("attaching to the programs' log ring buffer")?;
    let mut events = guard::Events::open(s.pin_dir())?;
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
                        println!("{}", guard::Leak(&ev));
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
    let mut s = ensure_loaded(opts)?;
    let dir = process::ensure_managed(opts, &mut s, SteerAction::Include)?;
    drop(s);
    cgroup::move_pid(&dir, std::process::id())?;
    let err = std::process::Command::new(program).args(args).exec();
    Err(anyhow::Error::new(err).context(format!("running {}", program.to_string_lossy())))
}

/// `vpn-ctl attach UPLINK`: the egress guard on an uplink. Plaintext from
/// steered sources that would leave by it is dropped and counted, while
/// the tunnel is down and while no daemon runs; the tunnel's own encrypted
/// UDP passes.
pub fn attach(opts: &Options, uplink: &str) -> Result<()> {
    if guard::ifindex(uplink).is_none() {
        bail!("there is no interface {uplink} in this network namespace (see `ip link`)");
    }
    let fresh = !Steering::is_loaded(opts);
    drop(ensure_loaded(opts)?);
    let dir = opts.pin_dir();
    if guard::attached(&dir, Hook::Guard)
        .iter()
        .any(|i| i == uplink)
    {
        println!("{uplink} is already guarded for tunnel {}", opts.tunnel);
        return Ok(());
    }
    let result = (|| -> Result<()> {
        let mut maps = guard::Maps::open(&dir)?;
        if let Ok(status) = control::query(&daemon::ctl_path(&opts.tunnel)) {
            maps.set_tunnel_port(status.listen_port)?;
        }
        guard::attach_pinned(&dir, Hook::Guard, uplink)?;
        Ok(())
    })();
    if result.is_err() && fresh {
        let _ = clear(opts);
    }
    result?;
    println!(
        "guarding {uplink}: steered plaintext leaving by it is dropped (tunnel {})",
        opts.tunnel
    );
    Ok(())
}

/// `vpn-ctl detach UPLINK`.
pub fn detach(opts: &Options, uplink: &str) -> Result<()> {
    if !guard::detach(&opts.pin_dir(), Hook::Guard, uplink)? {
        bail!("{uplink} is not guarded for tunnel {}", opts.tunnel);
    }
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
        let s = Steering::open(opts)?;
        counters.extend(s.stats()?.into_iter().map(|(k, v)| (k.name(), v)));
        counters.extend(s.sockaddr_stats()?.into_iter().map(|(k, v)| (k.name(), v)));
        let g = guard::Maps::open(s.pin_dir())?;
        counters.extend(g.stats()?.into_iter().map(|(k, v)| (k.name(), v)));
        rows = g.sources()?;
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
