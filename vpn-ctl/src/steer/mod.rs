//! Steering, the control plane of vpn's eBPF programs: which sources
//! (cgroups, uids, processes, forwarded interfaces and prefixes) enter the
//! tunnel, and the guard that keeps their plaintext off the uplinks.
//!
//! ```text
//! steer/
//!   mod.rs      Options, Steering (load, open, unload the pinned programs
//!               and maps of one tunnel) and the use cases the CLI calls:
//!               ensure_loaded, add, del, attach, detach, clear, set_info,
//!               set_mode, join (exec), counters; a first load that fails
//!               is rolled back in one place
//!   object.rs   the embedded eBPF object, loading it, BpfError, the pin
//!               layer (pin, open by name, unpin, remove links first)
//!   rules.rs    one generic rule map (key -> include/exclude) for cgroups,
//!               uids, interfaces and the two prefix tries
//!   guard.rs    TC guard (uplink egress), TC ingress classifier, XDP filter:
//!               Hook, attach/detach/attached, the guard's maps, ifindex
//!   events.rs   leak events: the ring buffer and their one-line form
//!   forward.rs  forwarded sources: forwarding, NAT, MSS clamp, DNS (nft)
//!   cgroup.rs   cgroup v2 and bpffs discovery, cgroup ids, moving pids
//!   process.rs  steering a process by moving it into vpn's cgroup
//!   policy.rs   policy routing: vpn's table, fwmark rules, blackhole, and
//!               the repair the tunnel daemon runs
//!   testing.rs  test fixtures (frames, BPF_PROG_TEST_RUN); not public API
//! ```
//!
//! Steering loads vpn's programs, attaches them, pins programs, links and
//! maps under `<bpffs>/vpn/<tunnel>/`, and edits the steering maps.
//! Pinning is what makes steering outlive the controller: once loaded, the
//! kernel keeps the programs attached through the pinned links, so a killed
//! daemon leaves steering in force and a restarted one adopts the pins (opens
//! the maps by path) without a gap. [`Steering::unload`] removes the pins,
//! which detaches everything.
use std::{
    fs,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::{CgroupAttachMode, CgroupSock, CgroupSockAddr, ProgramInfo},
};
use vpn_common::{
    names, sock_names, Config, SockAddrStat, Stat, SteerAction, SteerRule, TunnelInfo, TUNNEL_FULL,
};

use self::{
    object::{map_err, prog_err, BpfError, LoadError},
    rules::RuleMap,
};
use crate::{
    config::IpPrefix,
    io_error,
    netlink::Netlink,
    tunnel::{control, daemon},
};
use anyhow::Context as _;

pub mod cgroup;
pub mod events;
pub mod forward;
pub mod guard;
pub mod object;
pub mod policy;
pub mod process;
pub mod rules;
#[doc(hidden)]
pub mod testing;

/// vpn's default fwmark bit. wg-quick marks with 51820 (0xca6c) and Tailscale
/// uses bits under 0xff0000; this bit is clear of both.
pub const DEFAULT_MARK: u32 = 0x1000_0000;
/// The bit of sockets that stay direct (excluded sources; the tunnel's own
/// UDP socket in full-tunnel mode).
pub const DEFAULT_DIRECT_MARK: u32 = 0x8000_0000;

const PIN_PROG_SOCK_CREATE: &str = "prog_sock_create";
const PIN_LINK_SOCK_CREATE: &str = "link_sock_create";

#[derive(Debug, thiserror::Error)]
pub enum SteerError {
    #[error("loading eBPF programs needs root (CAP_BPF and CAP_NET_ADMIN); run vpn-ctl as root")]
    NotRoot,
    #[error("steering for tunnel {tunnel:?} is not loaded (nothing pinned at {dir}); add a steering rule first")]
    NotLoaded { tunnel: String, dir: PathBuf },
    #[error("tunnel name {0:?} is invalid: use 1-15 characters from [A-Za-z0-9_=+.-]")]
    BadTunnelName(String),
    #[error("the kernel refused to load the eBPF object (vpn needs Linux >= 5.7 with CONFIG_CGROUP_BPF and BTF; `vpn-ctl doctor` checks)")]
    Load(#[source] aya::EbpfError),
    #[error(transparent)]
    Bpf(#[from] BpfError),
    #[error(transparent)]
    Io(#[from] io_error::PathError),
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    #[error(transparent)]
    Guard(guard::GuardError),
}

/// Where and how steering is loaded.
#[derive(Clone, Debug)]
pub struct Options {
    /// Tunnel whose steering this is; names the pin directory.
    pub tunnel: String,
    /// Parent of the per-tunnel pin directories, normally `<bpffs>/vpn`.
    pub pin_root: PathBuf,
    /// cgroup the programs attach to; every process below it is classified.
    /// Normally the cgroup v2 root; tests use their own sub-tree.
    pub attach_cgroup: PathBuf,
    pub mark: u32,
    pub mark_mask: u32,
    pub direct_mark: u32,
    /// vpn's routing table and the priority of its fwmark rule.
    pub table: u32,
    pub priority: u32,
}

impl Options {
    /// Defaults from the running system: bpffs and cgroup v2 root discovered.
    pub fn discover(tunnel: &str) -> Result<Self, SteerError> {
        Ok(Self {
            tunnel: tunnel.to_owned(),
            pin_root: cgroup::bpffs_mount()?.join("vpn"),
            attach_cgroup: cgroup::cgroup2_mount()?,
            mark: DEFAULT_MARK,
            mark_mask: DEFAULT_MARK,
            direct_mark: DEFAULT_DIRECT_MARK,
            table: policy::DEFAULT_TABLE,
            priority: policy::DEFAULT_PRIORITY,
        })
    }

    #[must_use]
    pub fn pin_dir(&self) -> PathBuf {
        self.pin_root.join(&self.tunnel)
    }

    /// The policy routing that sends this tunnel's traffic to its table:
    /// marked sockets only (split), or all but the direct ones (full).
    #[must_use]
    pub fn policy(&self, full: bool) -> policy::Policy {
        policy::Policy {
            table: self.table,
            priority: self.priority,
            mark: self.mark,
            mask: self.mark_mask,
            direct_mark: self.direct_mark,
            full,
        }
    }
}

/// One row of `steer list`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CgroupRule {
    pub cgroup_id: u64,
    pub action: &'static str,
}

/// Handles on the pinned maps of one tunnel's steering.
pub struct Steering {
    dir: PathBuf,
    config: Array<MapData, Config>,
    cgroups: RuleMap<HashMap<MapData, u64, SteerRule>>,
    stats: PerCpuArray<MapData, u64>,
    tunnel_info: Array<MapData, TunnelInfo>,
    uids: RuleMap<HashMap<MapData, u32, SteerRule>>,
    sockaddr_stats: PerCpuArray<MapData, u64>,
}

/// A tunnel is named like its interface (wg-quick's rule).
fn valid_tunnel_name(name: &str) -> bool {
    crate::config::validate_interface_name(name).is_ok()
}

fn require_root() -> Result<(), SteerError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(SteerError::NotRoot);
    }
    Ok(())
}

impl Steering {
    /// Whether steering for this tunnel is pinned (loaded and attached).
    #[must_use]
    pub fn is_loaded(opts: &Options) -> bool {
        opts.pin_dir().join(PIN_LINK_SOCK_CREATE).exists()
    }

    /// Adopts the pinned state of a running (or crashed) instance, or loads
    /// and pins a fresh one. Returns whether it loaded.
    pub fn open_or_load(opts: &Options) -> Result<(Self, bool), SteerError> {
        if Self::is_loaded(opts) {
            Ok((Self::open(opts)?, false))
        } else {
            Ok((Self::load(opts)?, true))
        }
    }

    /// Adopts pinned state; fails if nothing is loaded for the tunnel.
    pub fn open(opts: &Options) -> Result<Self, SteerError> {
        require_root()?;
        if !valid_tunnel_name(&opts.tunnel) {
            return Err(SteerError::BadTunnelName(opts.tunnel.clone()));
        }
        let dir = opts.pin_dir();
        if !Self::is_loaded(opts) {
            return Err(SteerError::NotLoaded {
                tunnel: opts.tunnel.clone(),
                dir,
            });
        }
        let open = |name| object::open_pinned(&dir, name);
        Ok(Self {
            config: Array::try_from(open(names::CONFIG)?).map_err(map_err(names::CONFIG))?,
            cgroups: cgroup_rules(open(names::STEER_CGROUPS)?)?,
            stats: PerCpuArray::try_from(open(names::STATS)?).map_err(map_err(names::STATS))?,
            tunnel_info: Array::try_from(open(sock_names::TUNNEL_INFO)?)
                .map_err(map_err(sock_names::TUNNEL_INFO))?,
            uids: uid_rules(open(sock_names::STEER_UIDS)?)?,
            sockaddr_stats: PerCpuArray::try_from(open(sock_names::SOCKADDR_STATS)?)
                .map_err(map_err(sock_names::SOCKADDR_STATS))?,
            dir,
        })
    }

    /// Loads the object, writes the config, pins maps, attaches the programs
    /// and pins their links. On any failure everything done so far is undone.
    pub fn load(opts: &Options) -> Result<Self, SteerError> {
        require_root()?;
        if !valid_tunnel_name(&opts.tunnel) {
            return Err(SteerError::BadTunnelName(opts.tunnel.clone()));
        }
        let dir = opts.pin_dir();
        fs::create_dir_all(&dir).map_err(io_error::at("creating pin directory", &dir))?;
        match Self::load_into(opts, &dir) {
            Ok(s) => Ok(s),
            Err(e) => {
                // Roll back: unpinning detaches whatever got attached.
                let _ = object::remove_pins(&dir);
                Err(e)
            }
        }
    }

    fn load_into(opts: &Options, dir: &Path) -> Result<Self, SteerError> {
        let mut bpf = object::load(None).map_err(|e| match e {
            LoadError::Kernel(e) => SteerError::Load(*e),
            LoadError::Pins(e) => SteerError::Io(e),
        })?;

        let mut take_pinned = |name| object::take_pinned(&mut bpf, name, dir);
        let mut config_map: Array<MapData, Config> =
            Array::try_from(take_pinned(names::CONFIG)?).map_err(map_err(names::CONFIG))?;
        let cgroups = cgroup_rules(take_pinned(names::STEER_CGROUPS)?)?;
        let stats: PerCpuArray<MapData, u64> =
            PerCpuArray::try_from(take_pinned(names::STATS)?).map_err(map_err(names::STATS))?;
        let config = Config {
            mark: opts.mark,
            mark_mask: opts.mark_mask,
            log_decisions: 0,
            direct_mark: opts.direct_mark,
        };
        config_map
            .set(0, config, 0)
            .map_err(map_err("writing config"))?;

        let info = TunnelInfo::default();
        let mut tunnel_info: Array<MapData, TunnelInfo> =
            Array::try_from(take_pinned(sock_names::TUNNEL_INFO)?)
                .map_err(map_err(sock_names::TUNNEL_INFO))?;
        tunnel_info
            .set(0, info, 0)
            .map_err(map_err("writing tunnel info"))?;
        let uids = uid_rules(take_pinned(sock_names::STEER_UIDS)?)?;
        let sockaddr_stats: PerCpuArray<MapData, u64> =
            PerCpuArray::try_from(take_pinned(sock_names::SOCKADDR_STATS)?)
                .map_err(map_err(sock_names::SOCKADDR_STATS))?;

        // The guard and ingress classifier share this load's maps (steered
        // cgroups, config, socket owners); their maps and programs are pinned
        // here too, and attached per interface by `attach` / `steer add iface`.
        let mut guard_maps = guard::Maps::take(&mut bpf, Some(dir)).map_err(SteerError::Guard)?;
        events::Events::take(&mut bpf, Some(dir))?;
        guard_maps
            .set_bypass_mark(opts.direct_mark, opts.direct_mark)
            .map_err(SteerError::Guard)?;
        guard::load_programs(&mut bpf).map_err(SteerError::Guard)?;
        guard::pin_programs(&mut bpf, dir).map_err(SteerError::Guard)?;
        drop(guard_maps);

        let cg = fs::File::open(&opts.attach_cgroup)
            .map_err(io_error::at("opening cgroup", &opts.attach_cgroup))?;
        let at = opts.attach_cgroup.display();
        let prog: &mut CgroupSock = bpf
            .program_mut(names::PROG_SOCK_CREATE)
            .ok_or(BpfError::Missing(names::PROG_SOCK_CREATE))?
            .try_into()
            .map_err(prog_err(names::PROG_SOCK_CREATE))?;
        object::load_retrying(|| prog.load()).map_err(prog_err(
            "loading cgroup/sock_create (is CONFIG_CGROUP_BPF on?)",
        ))?;
        let link_id = prog
            .attach(cg.as_fd(), CgroupAttachMode::Single)
            .map_err(prog_err(format!("attaching cgroup/sock_create to {at}")))?;
        let link = prog
            .take_link(link_id)
            .map_err(prog_err("taking the sock_create link"))?;
        object::pin_program(
            prog.pin(dir.join(PIN_PROG_SOCK_CREATE)),
            PIN_PROG_SOCK_CREATE,
        )?;
        object::pin_link(link.try_into(), dir, PIN_LINK_SOCK_CREATE)?;

        for name in [
            sock_names::PROG_CONNECT4,
            sock_names::PROG_CONNECT6,
            sock_names::PROG_SENDMSG4,
            sock_names::PROG_SENDMSG6,
        ] {
            let prog: &mut CgroupSockAddr = bpf
                .program_mut(name)
                .ok_or(BpfError::Missing(name))?
                .try_into()
                .map_err(prog_err(name))?;
            object::load_retrying(|| prog.load()).map_err(prog_err(format!("loading {name}")))?;
            let link_id = prog
                .attach(cg.as_fd(), CgroupAttachMode::Single)
                .map_err(prog_err(format!("attaching {name} to {at}")))?;
            let link = prog
                .take_link(link_id)
                .map_err(prog_err(format!("taking the {name} link")))?;
            object::pin_program(prog.pin(dir.join(format!("prog_{name}"))), name)?;
            object::pin_link(link.try_into(), dir, &format!("link_{name}"))?;
        }
        log::info!(
            "steering for {} loaded: cgroup/sock_create on {}, pinned at {}",
            opts.tunnel,
            opts.attach_cgroup.display(),
            dir.display()
        );
        Ok(Self {
            dir: dir.to_owned(),
            config: config_map,
            cgroups,
            stats,
            tunnel_info,
            uids,
            sockaddr_stats,
        })
    }

    /// Removes every pin of a tunnel's steering; the kernel then detaches the
    /// programs and frees the maps once no process holds them.
    pub fn unload(opts: &Options) -> Result<bool, SteerError> {
        require_root()?;
        let dir = opts.pin_dir();
        if !dir.exists() {
            return Ok(false);
        }
        object::remove_pins(&dir).map_err(io_error::at("removing pins", &dir))?;
        // The per-tunnel parent is ours too; leave it only if others remain.
        let _ = fs::remove_dir(&opts.pin_root);
        Ok(true)
    }

    #[must_use]
    pub fn pin_dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> Result<Config, SteerError> {
        Ok(self.config.get(&0, 0).map_err(map_err("reading config"))?)
    }

    /// Turns the per-socket aya-log decision lines on or off.
    pub fn set_log_decisions(&mut self, on: bool) -> Result<(), SteerError> {
        let mut c = self.config()?;
        c.log_decisions = u32::from(on);
        self.config
            .set(0, c, 0)
            .map_err(map_err("writing config"))?;
        Ok(())
    }

    pub fn add_cgroup(&mut self, cgroup_id: u64, action: SteerAction) -> Result<(), SteerError> {
        Ok(self.cgroups.add(&cgroup_id, action, cgroup_id)?)
    }

    /// Returns whether the cgroup was steered.
    pub fn del_cgroup(&mut self, cgroup_id: u64) -> Result<bool, SteerError> {
        Ok(self.cgroups.del(&cgroup_id, cgroup_id)?)
    }

    pub fn cgroups(&self) -> Result<Vec<CgroupRule>, SteerError> {
        let rules = self.cgroups.sorted()?.into_iter();
        Ok(rules
            .map(|(cgroup_id, action)| CgroupRule { cgroup_id, action })
            .collect())
    }

    pub fn add_uid(&mut self, uid: u32, action: SteerAction) -> Result<(), SteerError> {
        Ok(self.uids.add(&uid, action, uid)?)
    }

    /// Returns whether the uid was steered.
    pub fn del_uid(&mut self, uid: u32) -> Result<bool, SteerError> {
        Ok(self.uids.del(&uid, uid)?)
    }

    pub fn uids(&self) -> Result<Vec<(u32, &'static str)>, SteerError> {
        Ok(self.uids.sorted()?)
    }

    pub fn tunnel_info(&self) -> Result<TunnelInfo, SteerError> {
        Ok(self
            .tunnel_info
            .get(&0, 0)
            .map_err(map_err("reading tunnel info"))?)
    }

    /// Tells the per-process hooks the tunnel's resolvers and families.
    pub fn set_tunnel_info(&mut self, info: TunnelInfo) -> Result<(), SteerError> {
        self.tunnel_info
            .set(0, info, 0)
            .map_err(map_err("writing tunnel info"))?;
        Ok(())
    }

    /// Counters of the per-process hooks summed over CPUs.
    pub fn sockaddr_stats(&self) -> Result<Vec<(SockAddrStat, u64)>, SteerError> {
        Ok(object::sum_counters(
            &self.sockaddr_stats,
            &SockAddrStat::ALL,
            |s| s as u32,
            "reading stats",
        )?)
    }

    /// Counters summed over CPUs, in [`Stat::ALL`] order.
    pub fn stats(&self) -> Result<Vec<(Stat, u64)>, SteerError> {
        Ok(object::sum_counters(
            &self.stats,
            &Stat::ALL,
            |s| s as u32,
            "reading stats",
        )?)
    }

    /// The kernel id of the pinned sock_create program, for attaching the
    /// aya-log reader of a program this process did not load.
    pub fn program_id(&self) -> Result<u32, SteerError> {
        let info = ProgramInfo::from_pin(self.dir.join(PIN_PROG_SOCK_CREATE))
            .map_err(prog_err("reading the pinned sock_create"))?;
        Ok(info.id())
    }
}

/// What the per-process hooks should know of a tunnel, from its `Address =`
/// (CIDR strings) and `DNS =` entries: the first resolver of each family, and
/// which families the tunnel carries.
#[must_use]
pub fn tunnel_info_from(addresses: &[String], dns: &[String]) -> TunnelInfo {
    let mut info = TunnelInfo::default();
    for a in addresses {
        match a
            .split('/')
            .next()
            .and_then(|ip| ip.parse::<std::net::IpAddr>().ok())
        {
            Some(std::net::IpAddr::V4(_)) => info.flags |= vpn_common::TUNNEL_CARRIES_V4,
            Some(std::net::IpAddr::V6(_)) => info.flags |= vpn_common::TUNNEL_CARRIES_V6,
            None => {}
        }
    }
    for d in dns.iter().rev() {
        match d.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(a)) => info.dns4 = a.octets(),
            Ok(std::net::IpAddr::V6(a)) => info.dns6 = a.octets(),
            Err(_) => {}
        }
    }
    info
}

fn cgroup_rules(
    map: aya::maps::Map,
) -> Result<RuleMap<HashMap<MapData, u64, SteerRule>>, BpfError> {
    let map = HashMap::try_from(map).map_err(map_err(names::STEER_CGROUPS))?;
    Ok(RuleMap::new(map, "cgroup", "cgroups"))
}

fn uid_rules(map: aya::maps::Map) -> Result<RuleMap<HashMap<MapData, u32, SteerRule>>, BpfError> {
    let map = HashMap::try_from(map).map_err(map_err(sock_names::STEER_UIDS))?;
    Ok(RuleMap::new(map, "uid", "uids"))
}

// ---------------------------------------------------------------------------
// The steering use cases: what `vpn-ctl steer ...`, `attach`, `detach`,
// `exec` and `down` do, each over the pins above. The CLI parses and prints.
// ---------------------------------------------------------------------------

/// What a steering rule selects (`steer add` / `steer del`).
#[derive(Clone, Debug)]
pub enum Selector {
    /// A cgroup v2 path, absolute or relative to the cgroup v2 mount.
    Cgroup(PathBuf),
    /// A running process, moved into vpn's cgroup for the tunnel.
    Pid(u32),
    /// Every socket a user's processes create.
    Uid(u32),
    /// Everything forwarded in by an interface.
    Iface { name: String, keep_source: bool },
    /// Everything forwarded from a source prefix, classified where it
    /// enters (`on`, or the interface the prefix is routed by).
    Src {
        prefix: String,
        on: Option<String>,
        keep_source: bool,
    },
}

/// What [`add`] steered.
#[derive(Debug)]
pub enum Added {
    Cgroup {
        dir: PathBuf,
        id: u64,
    },
    Uid(u32),
    /// The process moved into `cgroup`; `old` are the sockets it opened
    /// before, which keep their old route.
    Pid {
        pid: u32,
        cgroup: PathBuf,
        old: Vec<process::SocketInfo>,
    },
    Iface(String),
    Src {
        prefix: IpPrefix,
        on: String,
    },
}

/// What [`del`] removed.
#[derive(Debug)]
pub enum Removed {
    Cgroup {
        dir: PathBuf,
        id: u64,
    },
    Uid(u32),
    /// The process, and the cgroup it is back in.
    Pid {
        pid: u32,
        back: PathBuf,
    },
    /// A forwarded interface or prefix, as given.
    Forwarded(String),
}

/// Runs one netlink job on a throwaway current-thread runtime.
fn with_netlink<T>(f: impl AsyncFnOnce(&Netlink) -> anyhow::Result<T>) -> anyhow::Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let nl = Netlink::new()?;
        f(&nl).await
    })
}

/// The status of the tunnel daemon of that name, if one runs.
fn daemon_status(tunnel: &str) -> Option<control::Status> {
    control::query(&daemon::ctl_path(tunnel)).ok()
}

/// Runs `f` on steering that [`ensure_loaded`] gave; if that load was the
/// first and `f` fails, everything is removed again ([`clear`]).
fn rolling_back<T>(
    opts: &Options,
    adopted: &mut dyn FnMut(&TunnelInfo),
    f: impl FnOnce(&mut Steering) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let fresh = !Steering::is_loaded(opts);
    let mut s = ensure_loaded(opts, adopted)?;
    let result = f(&mut s);
    drop(s);
    if result.is_err() && fresh {
        let _ = clear(opts);
    }
    result
}

/// Loads steering if needed and makes sure its policy routing is in place.
/// A first load that fails half-way is rolled back completely. When a
/// tunnel of that name runs, a first load tells the hooks its DNS and
/// families and hands them to `adopted`.
pub fn ensure_loaded(
    opts: &Options,
    adopted: &mut dyn FnMut(&TunnelInfo),
) -> anyhow::Result<Steering> {
    let fresh = !Steering::is_loaded(opts);
    if fresh {
        if let Some(ns) = daemon_status(&opts.tunnel).and_then(|s| s.info.netns) {
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
        if let Some(status) = daemon_status(&opts.tunnel) {
            let info = tunnel_info_from(&status.info.addresses, &status.info.dns);
            s.set_tunnel_info(info)?;
            adopted(&info);
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

fn cgroup_selector(path: &Path) -> anyhow::Result<(PathBuf, u64)> {
    let mount = cgroup::cgroup2_mount()?;
    let dir = cgroup::resolve(&mount, path)?;
    let id = cgroup::cgroup_id(&dir)?;
    Ok((dir, id))
}

/// Adds one rule (loading steering first if needed); a first add that
/// fails leaves nothing loaded behind.
pub fn add(
    opts: &Options,
    selector: &Selector,
    action: SteerAction,
    adopted: &mut dyn FnMut(&TunnelInfo),
) -> anyhow::Result<Added> {
    // Validate before loading anything.
    let cgroup = match selector {
        Selector::Cgroup(path) => Some(cgroup_selector(path)?),
        _ => None,
    };
    let forwarded = forwarded_entry(selector, action)?;
    rolling_back(opts, adopted, |s| {
        Ok(match (selector, cgroup) {
            (Selector::Cgroup(_), Some((dir, id))) => {
                s.add_cgroup(id, action)?;
                Added::Cgroup { dir, id }
            }
            (Selector::Uid(uid), _) => {
                s.add_uid(*uid, action)?;
                Added::Uid(*uid)
            }
            (Selector::Pid(pid), _) => {
                let old = process::steer_pid(opts, s, *pid, action)?;
                Added::Pid {
                    pid: *pid,
                    cgroup: process::managed_cgroup(opts, action),
                    old,
                }
            }
            (Selector::Iface { name, .. }, _) => {
                let ifindex = guard::ifindex(name).context("interface vanished")?;
                guard::Maps::open(s.pin_dir())?.add_iface(ifindex, action)?;
                add_forwarded(opts, s, forwarded.context("entry")?)?;
                Added::Iface(name.clone())
            }
            (Selector::Src { prefix, .. }, _) => {
                let prefix: IpPrefix = prefix.parse().ok().context("prefix")?;
                guard::Maps::open(s.pin_dir())?.add_prefix(
                    prefix.addr(),
                    prefix.prefix_len(),
                    action,
                )?;
                let entry = forwarded.context("entry")?;
                let on = entry.ingress.clone();
                add_forwarded(opts, s, entry)?;
                Added::Src { prefix, on }
            }
            (Selector::Cgroup(_), None) => unreachable!("resolved above"),
        })
    })
}

/// Removes one rule; a rule that is not there is an error.
pub fn del(opts: &Options, selector: &Selector) -> anyhow::Result<Removed> {
    Ok(match selector {
        Selector::Cgroup(path) => {
            let (dir, id) = cgroup_selector(path)?;
            if !Steering::open(opts)?.del_cgroup(id)? {
                anyhow::bail!(
                    "cgroup {} (id {id}) is not steered on tunnel {}",
                    dir.display(),
                    opts.tunnel
                );
            }
            Removed::Cgroup { dir, id }
        }
        Selector::Uid(uid) => {
            if !Steering::open(opts)?.del_uid(*uid)? {
                anyhow::bail!("uid {uid} is not steered on tunnel {}", opts.tunnel);
            }
            Removed::Uid(*uid)
        }
        Selector::Pid(pid) => Removed::Pid {
            pid: *pid,
            back: process::unsteer_pid(opts, *pid)?,
        },
        Selector::Iface { name, .. } | Selector::Src { prefix: name, .. } => {
            let s = Steering::open(opts)?;
            let mut maps = guard::Maps::open(s.pin_dir())?;
            let removed = match selector {
                Selector::Iface { name, .. } => {
                    let ifindex = guard::ifindex(name).context(format!("no interface {name}"))?;
                    maps.del_iface(ifindex)?
                }
                _ => {
                    let prefix: IpPrefix = name
                        .parse()
                        .ok()
                        .context(format!("{name:?} is not a prefix"))?;
                    maps.del_prefix(prefix.addr(), prefix.prefix_len())?
                }
            };
            if !removed {
                anyhow::bail!("{name} is not steered on tunnel {}", opts.tunnel);
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
                    guard::detach(s.pin_dir(), guard::Hook::Ingress, &e.ingress)?;
                }
            }
            forward::apply(
                &opts.tunnel,
                &mut state,
                forward::resolver_of(s.tunnel_info()?.dns4),
            )?;
            Removed::Forwarded(name.clone())
        }
    })
}

/// The forwarding entry of an `iface`/`src` selector, validated before
/// anything is loaded.
fn forwarded_entry(
    selector: &Selector,
    action: SteerAction,
) -> anyhow::Result<Option<forward::Entry>> {
    let include = action == SteerAction::Include;
    Ok(match selector {
        Selector::Iface { name, keep_source } => {
            if guard::ifindex(name).is_none() {
                anyhow::bail!(
                    "there is no interface {name} in this network namespace (see `ip link`)"
                );
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
            let parsed: IpPrefix = prefix.parse().ok().with_context(|| {
                format!("{prefix:?} is not an address prefix (like 198.18.5.0/24 or fd00:5::/64)")
            })?;
            let addr = parsed.addr();
            let ingress = match on {
                Some(i) => i.clone(),
                None => route_dev(addr).with_context(|| {
                    format!("no route to {addr} tells where {prefix} enters; name the interface with --on")
                })?,
            };
            if guard::ifindex(&ingress).is_none() {
                anyhow::bail!(
                    "there is no interface {ingress} in this network namespace (see `ip link`)"
                );
            }
            Some(forward::Entry {
                source: forward::Source::Prefix(parsed.to_string()),
                ingress,
                keep_source: *keep_source,
                include,
            })
        }
        _ => None,
    })
}

/// The interface the main table routes `addr` by (`ip route get`).
fn route_dev(addr: std::net::IpAddr) -> Option<String> {
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
fn add_forwarded(opts: &Options, s: &Steering, entry: forward::Entry) -> anyhow::Result<()> {
    if !guard::attached(s.pin_dir(), guard::Hook::Ingress).contains(&entry.ingress) {
        guard::attach_pinned(s.pin_dir(), guard::Hook::Ingress, &entry.ingress)?;
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

/// Changes what the per-process hooks know of the tunnel (loading steering
/// if needed); returns the new info.
pub fn set_info(
    opts: &Options,
    adopted: &mut dyn FnMut(&TunnelInfo),
    f: impl FnOnce(&mut TunnelInfo),
) -> anyhow::Result<TunnelInfo> {
    let mut s = ensure_loaded(opts, adopted)?;
    let mut info = s.tunnel_info()?;
    f(&mut info);
    s.set_tunnel_info(info)?;
    Ok(info)
}

/// Switches between split and full tunnel: the hooks' flag, then the rules
/// of the new mode in, those of the old one out. `announce` gets the new
/// info before the rules change.
pub fn set_mode(
    opts: &Options,
    full: bool,
    adopted: &mut dyn FnMut(&TunnelInfo),
    announce: impl FnOnce(&TunnelInfo),
) -> anyhow::Result<()> {
    let info = set_info(opts, adopted, |info| {
        info.flags &= !TUNNEL_FULL;
        if full {
            info.flags |= TUNNEL_FULL;
        }
    })?;
    announce(&info);
    let policy = opts.policy(full);
    with_netlink(async |nl| {
        policy.install(nl).await?;
        Ok(policy.prune(nl).await?)
    })
}

/// Removes the tunnel's steering and its policy routing; returns whether
/// anything was loaded.
pub fn clear(opts: &Options) -> anyhow::Result<bool> {
    process::remove_managed(opts)?;
    forward::remove(&opts.tunnel)?;
    // Removal covers the rules of both modes.
    let policy = opts.policy(true);
    with_netlink(async |nl| Ok(policy.remove(nl).await?))?;
    Ok(Steering::unload(opts)?)
}

/// Moves this process into vpn's cgroup for the tunnel (loading steering
/// if needed), so that what it runs next is steered from its first socket.
pub fn join(opts: &Options, adopted: &mut dyn FnMut(&TunnelInfo)) -> anyhow::Result<()> {
    let mut s = ensure_loaded(opts, adopted)?;
    let dir = process::ensure_managed(opts, &mut s, SteerAction::Include)?;
    drop(s);
    cgroup::move_pid(&dir, std::process::id())?;
    Ok(())
}

/// Puts the egress guard on an uplink (loading steering if needed; a first
/// load is rolled back if attaching fails). Returns false when it was
/// guarded already.
pub fn attach(
    opts: &Options,
    uplink: &str,
    adopted: &mut dyn FnMut(&TunnelInfo),
) -> anyhow::Result<bool> {
    if guard::ifindex(uplink).is_none() {
        anyhow::bail!("there is no interface {uplink} in this network namespace (see `ip link`)");
    }
    let dir = opts.pin_dir();
    let already = || {
        guard::attached(&dir, guard::Hook::Guard)
            .iter()
            .any(|i| i == uplink)
    };
    rolling_back(opts, adopted, |_| {
        if already() {
            return Ok(false);
        }
        let mut maps = guard::Maps::open(&dir)?;
        if let Some(status) = daemon_status(&opts.tunnel) {
            maps.set_tunnel_port(status.listen_port)?;
        }
        guard::attach_pinned(&dir, guard::Hook::Guard, uplink)?;
        Ok(true)
    })
}

/// Takes the guard off an uplink; an unguarded uplink is an error.
pub fn detach(opts: &Options, uplink: &str) -> anyhow::Result<()> {
    if !guard::detach(&opts.pin_dir(), guard::Hook::Guard, uplink)? {
        anyhow::bail!("{uplink} is not guarded for tunnel {}", opts.tunnel);
    }
    Ok(())
}

/// Named counters, as [`counters`] gives them.
pub type Counters = Vec<(&'static str, u64)>;

/// Every counter of a tunnel's steering (sock_create, the per-process
/// hooks, the guard) and the per-source counters, for `list` and metrics.
pub fn counters(s: &Steering) -> anyhow::Result<(Counters, Vec<guard::SourceCount>)> {
    let g = guard::Maps::open(s.pin_dir())?;
    let stats = s
        .stats()?
        .into_iter()
        .map(|(k, v)| (k.name(), v))
        .chain(s.sockaddr_stats()?.into_iter().map(|(k, v)| (k.name(), v)))
        .chain(g.stats()?.into_iter().map(|(k, v)| (k.name(), v)))
        .collect();
    Ok((stats, g.sources()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_info_takes_families_and_first_resolvers() {
        let info = tunnel_info_from(
            &["100.64.0.2/32".into(), "fd00::2/128".into()],
            &[
                "100.64.0.53".into(),
                "100.64.0.54".into(),
                "fd00::53".into(),
            ],
        );
        assert_eq!(info.dns4, [100, 64, 0, 53]);
        assert_eq!(
            info.dns6,
            "fd00::53".parse::<std::net::Ipv6Addr>().unwrap().octets()
        );
        assert_eq!(
            info.flags,
            vpn_common::TUNNEL_CARRIES_V4 | vpn_common::TUNNEL_CARRIES_V6
        );
        let v4only = tunnel_info_from(&["100.64.0.2/32".into()], &[]);
        assert_eq!(v4only.flags, vpn_common::TUNNEL_CARRIES_V4);
        assert_eq!(v4only.dns4, [0; 4]);
    }

    #[test]
    fn forwarded_prefixes_parse() {
        let p = |s: &str| {
            s.parse::<IpPrefix>()
                .ok()
                .map(|p| (p.addr(), p.prefix_len()))
        };
        assert_eq!(
            p("198.18.5.0/24"),
            Some(("198.18.5.0".parse().unwrap(), 24))
        );
        assert_eq!(p("fd00::5"), Some(("fd00::5".parse().unwrap(), 128)));
        assert_eq!(p("198.18.5.0/33"), None);
        assert_eq!(p("nonsense/8"), None);
    }

    #[test]
    fn tunnel_names_follow_interface_rules() {
        assert!(valid_tunnel_name("vpn0"));
        assert!(valid_tunnel_name("wg-mullvad.se"));
        assert!(!valid_tunnel_name(""));
        assert!(!valid_tunnel_name("../../etc"));
        assert!(!valid_tunnel_name("a-very-long-name-x"));
    }

    #[test]
    fn default_marks_clear_of_other_tools() {
        for m in [DEFAULT_MARK, DEFAULT_DIRECT_MARK] {
            assert_eq!(m & 0xca6c, 0, "wg-quick's 51820");
            assert_eq!(m & 0x00ff_0000, 0, "Tailscale's mask");
            assert_eq!(m & 0x6d6f_6c65, 0, "Mullvad's mark");
            assert_eq!(m.count_ones(), 1);
        }
        assert_ne!(DEFAULT_MARK, DEFAULT_DIRECT_MARK);
    }
}
