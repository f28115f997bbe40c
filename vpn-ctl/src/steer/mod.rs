//! The steering control plane: loads vpn's eBPF programs, attaches them,
//! pins programs, links and maps under `<bpffs>/vpn/<tunnel>/`, and edits the
//! steering maps.
//!
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
    names, sock_names, Config, SockAddrStat, Stat, SteerAction, SteerRule, TunnelInfo,
};

use self::{
    object::{map_err, prog_err, BpfError, LoadError},
    rules::RuleMap,
};
use crate::io_error;

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
        let mut rules: Vec<CgroupRule> = self
            .cgroups
            .list()?
            .into_iter()
            .map(|(cgroup_id, action)| CgroupRule { cgroup_id, action })
            .collect();
        rules.sort_by_key(|r| r.cgroup_id);
        Ok(rules)
    }

    pub fn add_uid(&mut self, uid: u32, action: SteerAction) -> Result<(), SteerError> {
        Ok(self.uids.add(&uid, action, uid)?)
    }

    /// Returns whether the uid was steered.
    pub fn del_uid(&mut self, uid: u32) -> Result<bool, SteerError> {
        Ok(self.uids.del(&uid, uid)?)
    }

    pub fn uids(&self) -> Result<Vec<(u32, &'static str)>, SteerError> {
        let mut out = self.uids.list()?;
        out.sort_unstable();
        Ok(out)
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
        SockAddrStat::ALL
            .iter()
            .map(|&s| {
                let v = self
                    .sockaddr_stats
                    .get(&(s as u32), 0)
                    .map_err(map_err("reading stats"))?;
                Ok((s, v.iter().sum()))
            })
            .collect()
    }

    /// Counters summed over CPUs, in [`Stat::ALL`] order.
    pub fn stats(&self) -> Result<Vec<(Stat, u64)>, SteerError> {
        Stat::ALL
            .iter()
            .map(|&s| {
                let v = self
                    .stats
                    .get(&(s as u32), 0)
                    .map_err(map_err("reading stats"))?;
                Ok((s, v.iter().sum()))
            })
            .collect()
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
