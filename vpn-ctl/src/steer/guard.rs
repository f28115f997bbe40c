//! The uplink guard, the forwarded-source classifier and the XDP WireGuard
//! filter: userspace side of `vpn-ebpf/src/tc_guard.rs`, `tc_ingress.rs` and
//! `xdp_filter.rs`. Their hooks ([`Hook`]: attach, detach, attached), the
//! guard's maps ([`Maps`]: config, the prefix and interface rules of
//! [`super::rules`], per-source counters) and the interface lookups.
//!
//! These functions work on the same loaded [`Ebpf`] object as the steering
//! (so `VPN_CONFIG`, `STEER_CGROUPS` and the socket-owner map are shared with
//! cgroup/sock_create), or on the maps pinned under a tunnel's pin directory:
//!
//! ```text
//! let maps = guard::Maps::take(&mut bpf, Some(dir))?;   // pin the guard maps
//! let events = events::Events::take(&mut bpf, Some(dir))?;
//! guard::load_programs(&mut bpf)?;                        // verifier
//! guard::pin_programs(&bpf, dir)?;                        // optional
//! guard::attach(&mut bpf, Hook::Guard, "eth0", Some(dir))?; // link_tc_guard_eth0
//! // later, in another process:
//! let mut maps = guard::Maps::open(dir)?;
//! maps.add_prefix("10.9.0.0".parse()?, 24, SteerAction::Include)?;
//! guard::detach(dir, Hook::Guard, "eth0")?;
//! ```
//!
//! Attaching uses TCX (a bpf_link) on the interface of that name in the
//! calling thread's network namespace; pinning the link keeps the program
//! attached after the process exits, and removing the pin detaches it.
//!
//! A later process (say `vpn-ctl attach eth1` after steering was loaded by
//! an earlier run) must not load a fresh object for the guard: its maps
//! would be new and empty. It attaches the programs pinned at first load
//! with [`attach_pinned`], which shares the maps of that load (and so
//! `STEER_CGROUPS`, `VPN_CONFIG` and the socket owners), or loads the object
//! with [`object::load`] given the pin directory, which reuses every pinned
//! map.
use std::{
    ffi::CString,
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, HashMap, Map, MapData, PerCpuArray, PerCpuHashMap},
    programs::{
        links::FdLink,
        tc::{SchedClassifier, TcAttachType},
        Xdp, XdpMode,
    },
    Ebpf,
};
use vpn_common::{
    names, GuardConfig, GuardStat, SourceCounters, SourceKey, SourceKind, SteerAction, SteerRule,
};

use super::{
    object::{self, link_err, map_err, pin_err, prog_err, BpfError, LoadError},
    rules::{PrefixRule, Prefixes, RuleMap},
};
use crate::{config::IpPrefix, io_error};

/// Pin names of the two programs inside a tunnel's pin directory.
pub const PIN_PROG_TC_GUARD: &str = "prog_tc_guard";
pub const PIN_PROG_TC_INGRESS: &str = "prog_tc_ingress";
pub const PIN_PROG_XDP_FILTER: &str = "prog_xdp_filter";

/// Maps the guard owns (pinned under these names, as in `vpn_common::names`).
pub const MAP_NAMES: [&str; 6] = [
    names::GUARD_CONFIG,
    names::STEER_SRC_V4,
    names::STEER_SRC_V6,
    names::STEER_IFACES,
    names::SOURCE_STATS,
    names::GUARD_STATS,
];

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error(transparent)]
    Bpf(#[from] BpfError),
    #[error(transparent)]
    Io(#[from] io_error::PathError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("interface {0:?} does not exist (in this network namespace)")]
    NoSuchInterface(String),
    #[error("prefix length {len} is too long for {addr} (at most {max})")]
    BadPrefixLen { addr: IpAddr, len: u8, max: u8 },
}

/// Which classifier, and so which direction of which interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// Egress of an uplink: drop steered plaintext (`vpn_tc_guard`).
    Guard,
    /// Ingress of a container/VM-facing interface: mark steered sources
    /// (`vpn_tc_ingress`).
    Ingress,
}

impl Hook {
    #[must_use]
    pub const fn program(self) -> &'static str {
        match self {
            Hook::Guard => names::PROG_TC_GUARD,
            Hook::Ingress => names::PROG_TC_INGRESS,
        }
    }

    #[must_use]
    pub const fn attach_type(self) -> TcAttachType {
        match self {
            Hook::Guard => TcAttachType::Egress,
            Hook::Ingress => TcAttachType::Ingress,
        }
    }

    const fn prog_pin(self) -> &'static str {
        match self {
            Hook::Guard => PIN_PROG_TC_GUARD,
            Hook::Ingress => PIN_PROG_TC_INGRESS,
        }
    }

    /// Pin name of this hook's link on `ifname` (starts with `link_`, so a
    /// directory sweep removes links before maps).
    #[must_use]
    pub fn link_pin(self, ifname: &str) -> String {
        match self {
            Hook::Guard => format!("link_tc_guard_{ifname}"),
            Hook::Ingress => format!("link_tc_ingress_{ifname}"),
        }
    }
}

/// A classifier of the loaded object, for attaching or `test_run`.
pub fn program(bpf: &Ebpf, hook: Hook) -> Result<&SchedClassifier, GuardError> {
    Ok(bpf
        .program(hook.program())
        .ok_or(BpfError::Missing(hook.program()))?
        .try_into()
        .map_err(prog_err(hook.program()))?)
}

fn program_mut(bpf: &mut Ebpf, hook: Hook) -> Result<&mut SchedClassifier, GuardError> {
    Ok(bpf
        .program_mut(hook.program())
        .ok_or(BpfError::Missing(hook.program()))?
        .try_into()
        .map_err(prog_err(hook.program()))?)
}

/// Loads (verifies) both TC programs into the kernel. Call after taking the
/// maps you want to keep (maps are created and relocated at object load).
/// Loading twice is an error in aya; this loads only what is not loaded.
pub fn load_programs(bpf: &mut Ebpf) -> Result<(), GuardError> {
    for hook in [Hook::Guard, Hook::Ingress] {
        let prog = program_mut(bpf, hook)?;
        if prog.fd().is_err() {
            object::load_retrying(|| prog.load()).map_err(prog_err(format!(
                "loading {} (the kernel needs TC BPF and BTF)",
                hook.program()
            )))?;
        }
    }
    let xdp = xdp_program_mut(bpf)?;
    if xdp.fd().is_err() {
        object::load_retrying(|| xdp.load())
            .map_err(prog_err(format!("loading {}", names::PROG_XDP_FILTER)))?;
    }
    Ok(())
}

/// Pins the loaded programs as `prog_tc_guard`, `prog_tc_ingress` and
/// `prog_xdp_filter`.
pub fn pin_programs(bpf: &mut Ebpf, pin_dir: &Path) -> Result<(), GuardError> {
    for hook in [Hook::Guard, Hook::Ingress] {
        let path = pin_dir.join(hook.prog_pin());
        program_mut(bpf, hook)?
            .pin(&path)
            .map_err(pin_err(path.display().to_string()))?;
    }
    let path = pin_dir.join(PIN_PROG_XDP_FILTER);
    xdp_program_mut(bpf)?
        .pin(&path)
        .map_err(pin_err(path.display().to_string()))?;
    Ok(())
}

/// The XDP WireGuard filter of the loaded object, for attaching or
/// `test_run`.
pub fn xdp_program(bpf: &Ebpf) -> Result<&Xdp, GuardError> {
    Ok(bpf
        .program(names::PROG_XDP_FILTER)
        .ok_or(BpfError::Missing(names::PROG_XDP_FILTER))?
        .try_into()
        .map_err(prog_err(names::PROG_XDP_FILTER))?)
}

fn xdp_program_mut(bpf: &mut Ebpf) -> Result<&mut Xdp, GuardError> {
    Ok(bpf
        .program_mut(names::PROG_XDP_FILTER)
        .ok_or(BpfError::Missing(names::PROG_XDP_FILTER))?
        .try_into()
        .map_err(prog_err(names::PROG_XDP_FILTER))?)
}

/// Pin name of the XDP filter's link on `ifname`.
#[must_use]
pub fn xdp_link_pin(ifname: &str) -> String {
    format!("link_xdp_{ifname}")
}

/// Attaches the XDP WireGuard filter to an uplink (the kernel picks native
/// or generic mode) for the port set with [`Maps::set_tunnel_port`]; pinned
/// as [`xdp_link_pin`] under `pin_dir` when given.
pub fn attach_xdp(
    bpf: &mut Ebpf,
    ifname: &str,
    pin_dir: Option<&Path>,
) -> Result<Attachment, GuardError> {
    attach_xdp_prog(xdp_program_mut(bpf)?, ifname, pin_dir)
}

/// Loads vpn's object again in a later process so that every map pinned
/// under `pin_dir` (by [`Maps::take`], [`super::events::Events::take`] or the
/// steering) is reused instead of created: its programs then share the
/// first load's state ([`object::load`] with the pin directory).
pub fn load_sharing_pins(pin_dir: &Path) -> Result<Ebpf, GuardError> {
    Ok(object::load(Some(pin_dir))?)
}

fn attach_xdp_prog(
    prog: &mut Xdp,
    ifname: &str,
    pin_dir: Option<&Path>,
) -> Result<Attachment, GuardError> {
    if ifindex(ifname).is_none() {
        return Err(GuardError::NoSuchInterface(ifname.to_owned()));
    }
    let id = prog
        .attach(ifname, XdpMode::Default)
        .map_err(prog_err(format!("attaching the XDP filter to {ifname}")))?;
    let link = prog
        .take_link(id)
        .map_err(prog_err("taking the XDP link"))?;
    let link = FdLink::try_from(link).map_err(link_err(format!(
        "the XDP link on {ifname} is not a bpf_link (needs Linux >= 5.9)"
    )))?;
    pin_link(link, pin_dir.map(|d| d.join(xdp_link_pin(ifname))))
}

/// Detaches a pinned XDP filter; returns whether it was attached.
pub fn detach_xdp(pin_dir: &Path, ifname: &str) -> Result<bool, GuardError> {
    Ok(object::unpin(&pin_dir.join(xdp_link_pin(ifname)))?)
}

/// An attached classifier: either pinned (stays attached after drop), or
/// owned by this handle (detached on drop).
#[derive(Debug)]
pub enum Attachment {
    Pinned(PathBuf),
    Owned(FdLink),
}

/// Attaches a loaded classifier to `ifname` (in the calling thread's network
/// namespace) through TCX. With `pin_dir`, the link is pinned there as
/// [`Hook::link_pin`] and outlives this process; attaching where a pin
/// already exists is refused by the pin (EEXIST) and rolled back.
pub fn attach(
    bpf: &mut Ebpf,
    hook: Hook,
    ifname: &str,
    pin_dir: Option<&Path>,
) -> Result<Attachment, GuardError> {
    attach_classifier(program_mut(bpf, hook)?, hook, ifname, pin_dir)
}

/// Attaches the classifier pinned by [`pin_programs`] under `pin_dir` (so
/// it shares the maps of the process that loaded it, e.g. a `vpn-ctl
/// attach` after steering was loaded by another run) and pins the link.
pub fn attach_pinned(pin_dir: &Path, hook: Hook, ifname: &str) -> Result<PathBuf, GuardError> {
    let path = pin_dir.join(hook.prog_pin());
    let mut prog = SchedClassifier::from_pin(&path).map_err(prog_err(format!(
        "opening the pinned program {}",
        path.display()
    )))?;
    match attach_classifier(&mut prog, hook, ifname, Some(pin_dir))? {
        Attachment::Pinned(p) => Ok(p),
        Attachment::Owned(_) => unreachable!("pinned on request"),
    }
}

fn attach_classifier(
    prog: &mut SchedClassifier,
    hook: Hook,
    ifname: &str,
    pin_dir: Option<&Path>,
) -> Result<Attachment, GuardError> {
    if ifindex(ifname).is_none() {
        return Err(GuardError::NoSuchInterface(ifname.to_owned()));
    }
    let id = prog
        .attach(ifname, hook.attach_type())
        .map_err(prog_err(format!(
            "attaching {} to {ifname} ({:?})",
            hook.program(),
            hook.attach_type()
        )))?;
    let link = prog.take_link(id).map_err(prog_err("taking the TC link"))?;
    let link = FdLink::try_from(link).map_err(link_err(format!(
        "the {} link on {ifname} is not a bpf_link (TCX needs Linux >= 6.6)",
        hook.program()
    )))?;
    pin_link(link, pin_dir.map(|d| d.join(hook.link_pin(ifname))))
}

/// Pins `link` at `path` (on failure the link is dropped, which detaches
/// it), or hands it back owned.
fn pin_link(link: FdLink, path: Option<PathBuf>) -> Result<Attachment, GuardError> {
    match path {
        None => Ok(Attachment::Owned(link)),
        Some(path) => {
            link.pin(&path)
                .map_err(pin_err(path.display().to_string()))?;
            Ok(Attachment::Pinned(path))
        }
    }
}

/// Attaches the guard to an uplink (egress) and pins the link.
pub fn attach_uplink(bpf: &mut Ebpf, ifname: &str, pin_dir: &Path) -> Result<PathBuf, GuardError> {
    match attach(bpf, Hook::Guard, ifname, Some(pin_dir))? {
        Attachment::Pinned(p) => Ok(p),
        Attachment::Owned(_) => unreachable!("pinned on request"),
    }
}

/// Detaches a pinned classifier by removing its link pin. Returns whether
/// it was attached.
pub fn detach(pin_dir: &Path, hook: Hook, ifname: &str) -> Result<bool, GuardError> {
    Ok(object::unpin(&pin_dir.join(hook.link_pin(ifname)))?)
}

/// Interfaces with a pinned classifier of this hook in `pin_dir`.
#[must_use]
pub fn attached(pin_dir: &Path, hook: Hook) -> Vec<String> {
    let prefix = hook.link_pin("");
    let mut out: Vec<String> = fs::read_dir(pin_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_prefix(&prefix)
                .map(str::to_owned)
        })
        .collect();
    out.sort();
    out
}

/// The index of an interface in the calling thread's network namespace.
#[must_use]
pub fn ifindex(ifname: &str) -> Option<u32> {
    let c = CString::new(ifname).ok()?;
    // SAFETY: c is a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// The name of an interface index in the calling thread's namespace.
#[must_use]
pub fn ifname(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf holds IF_NAMESIZE bytes as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success buf holds a NUL-terminated name.
    let s = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(s.to_string_lossy().into_owned())
}

/// One steered interface.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct IfaceRule {
    pub ifindex: u32,
    pub action: &'static str,
}

/// Counters of one source, summed over CPUs.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SourceCount {
    /// "cgroup 1234", "10.9.0.5" or "fd00::5".
    pub source: String,
    pub steered_packets: u64,
    pub steered_bytes: u64,
    pub blocked_packets: u64,
    pub blocked_bytes: u64,
}

/// Handles on the guard's maps (taken from a loaded object or opened from
/// pins).
pub struct Maps {
    config: Array<MapData, GuardConfig>,
    prefixes: Prefixes,
    ifaces: RuleMap<HashMap<MapData, u32, SteerRule>>,
    sources: PerCpuHashMap<MapData, SourceKey, SourceCounters>,
    stats: PerCpuArray<MapData, u64>,
    /// `SOCK_OWNERS` when taken from a loaded object (see [`Maps::take`]).
    _owners: Option<Map>,
}

impl Maps {
    /// Handles on the guard maps of a loaded object.
    ///
    /// With `pin_dir`, each map (and `SOCK_OWNERS`, which sock_create fills
    /// and the guard reads) is pinned there under its name while staying in
    /// the object, and the handles are opened from the pins: dropping them
    /// (before or after [`load_programs`]) closes nothing the object's
    /// programs refer to. Without `pin_dir` the maps are taken out of the
    /// object, and the result must then be kept alive until the programs are
    /// loaded: a map whose fd is closed before then fails the load (EBADF).
    pub fn take(bpf: &mut Ebpf, pin_dir: Option<&Path>) -> Result<Self, GuardError> {
        if let Some(dir) = pin_dir {
            for name in MAP_NAMES.iter().chain([&names::SOCK_OWNERS]) {
                object::pin_in_place(bpf, name, dir)?;
            }
            return Self::open(dir);
        }
        let mut take = |name: &'static str| bpf.take_map(name).ok_or(BpfError::Missing(name));
        let owners = take(names::SOCK_OWNERS)?;
        let mut maps = Self::from_maps([
            take(names::GUARD_CONFIG)?,
            take(names::STEER_SRC_V4)?,
            take(names::STEER_SRC_V6)?,
            take(names::STEER_IFACES)?,
            take(names::SOURCE_STATS)?,
            take(names::GUARD_STATS)?,
        ])?;
        maps._owners = Some(owners);
        Ok(maps)
    }

    /// Opens the maps pinned under `pin_dir` by [`Maps::take`].
    pub fn open(pin_dir: &Path) -> Result<Self, GuardError> {
        let open = |name| object::open_pinned(pin_dir, name);
        Self::from_maps([
            open(names::GUARD_CONFIG)?,
            open(names::STEER_SRC_V4)?,
            open(names::STEER_SRC_V6)?,
            open(names::STEER_IFACES)?,
            open(names::SOURCE_STATS)?,
            open(names::GUARD_STATS)?,
        ])
    }

    fn from_maps(maps: [Map; 6]) -> Result<Self, GuardError> {
        let [config, v4, v6, ifaces, sources, stats] = maps;
        Ok(Self {
            config: Array::try_from(config).map_err(map_err(names::GUARD_CONFIG))?,
            prefixes: Prefixes::new(
                TryFrom::try_from(v4).map_err(map_err(names::STEER_SRC_V4))?,
                TryFrom::try_from(v6).map_err(map_err(names::STEER_SRC_V6))?,
            ),
            ifaces: RuleMap::new(
                HashMap::try_from(ifaces).map_err(map_err(names::STEER_IFACES))?,
                "interface",
                "interfaces",
            ),
            sources: PerCpuHashMap::try_from(sources).map_err(map_err(names::SOURCE_STATS))?,
            stats: PerCpuArray::try_from(stats).map_err(map_err(names::GUARD_STATS))?,
            _owners: None,
        })
    }

    pub fn config(&self) -> Result<GuardConfig, GuardError> {
        Ok(self
            .config
            .get(&0, 0)
            .map_err(map_err("reading the guard config"))?)
    }

    pub fn set_config(&mut self, config: GuardConfig) -> Result<(), GuardError> {
        self.config
            .set(0, config, 0)
            .map_err(map_err("writing the guard config"))?;
        Ok(())
    }

    /// Lets UDP from the tunnel's source port through (0: no port bypass).
    pub fn set_tunnel_port(&mut self, port: u16) -> Result<(), GuardError> {
        let mut c = self.config()?;
        c.tunnel_port = u32::from(port);
        self.set_config(c)
    }

    /// Lets packets whose mark matches `mark` under `mask` through (the
    /// tunnel socket's SO_MARK; mask 0: no mark bypass).
    pub fn set_bypass_mark(&mut self, mark: u32, mask: u32) -> Result<(), GuardError> {
        let mut c = self.config()?;
        c.bypass_mark = mark;
        c.bypass_mask = mask;
        self.set_config(c)
    }

    /// Steers (or excludes) the source prefix `addr/len`; host bits are
    /// cleared. Replaces an existing rule for the same prefix.
    pub fn add_prefix(
        &mut self,
        addr: IpAddr,
        len: u8,
        action: SteerAction,
    ) -> Result<(), GuardError> {
        Ok(self.prefixes.add(prefix(addr, len)?, action)?)
    }

    /// Returns whether the prefix was steered.
    pub fn del_prefix(&mut self, addr: IpAddr, len: u8) -> Result<bool, GuardError> {
        Ok(self.prefixes.del(prefix(addr, len)?)?)
    }

    pub fn prefixes(&self) -> Result<Vec<PrefixRule>, GuardError> {
        Ok(self.prefixes.list()?)
    }

    /// Steers (or excludes) everything arriving on the interface.
    pub fn add_iface(&mut self, ifindex: u32, action: SteerAction) -> Result<(), GuardError> {
        Ok(self.ifaces.add(&ifindex, action, ifindex)?)
    }

    /// Returns whether the interface was steered.
    pub fn del_iface(&mut self, ifindex: u32) -> Result<bool, GuardError> {
        Ok(self.ifaces.del(&ifindex, ifindex)?)
    }

    pub fn ifaces(&self) -> Result<Vec<IfaceRule>, GuardError> {
        let rules = self.ifaces.sorted()?.into_iter();
        Ok(rules
            .map(|(ifindex, action)| IfaceRule { ifindex, action })
            .collect())
    }

    /// Per-source counters (summed over CPUs), most blocked first.
    pub fn sources(&self) -> Result<Vec<SourceCount>, GuardError> {
        let mut out = Vec::new();
        for item in self.sources.iter() {
            let (key, per_cpu) = item.map_err(map_err("reading per-source counters"))?;
            let mut c = SourceCount {
                source: source_name(&key),
                steered_packets: 0,
                steered_bytes: 0,
                blocked_packets: 0,
                blocked_bytes: 0,
            };
            for v in per_cpu.iter() {
                c.steered_packets += v.steered_packets;
                c.steered_bytes += v.steered_bytes;
                c.blocked_packets += v.blocked_packets;
                c.blocked_bytes += v.blocked_bytes;
            }
            out.push(c);
        }
        out.sort_by(|a, b| {
            (b.blocked_packets, b.steered_packets, &a.source).cmp(&(
                a.blocked_packets,
                a.steered_packets,
                &b.source,
            ))
        });
        Ok(out)
    }

    /// Counters summed over CPUs, in [`GuardStat::ALL`] order.
    pub fn stats(&self) -> Result<Vec<(GuardStat, u64)>, GuardError> {
        Ok(object::sum_counters(
            &self.stats,
            &GuardStat::ALL,
            |s| s as u32,
            "reading guard stats",
        )?)
    }

    /// One counter summed over CPUs.
    pub fn stat(&self, stat: GuardStat) -> Result<u64, GuardError> {
        let v = self
            .stats
            .get(&(stat as u32), 0)
            .map_err(map_err("reading guard stats"))?;
        Ok(v.iter().sum())
    }
}

/// `addr/len` as a prefix, or why not.
fn prefix(addr: IpAddr, len: u8) -> Result<IpPrefix, GuardError> {
    IpPrefix::new(addr, len).map_err(|_| GuardError::BadPrefixLen {
        addr,
        len,
        max: if addr.is_ipv4() { 32 } else { 128 },
    })
}

/// "cgroup 1234", "10.9.0.5" or "fd00::5".
#[must_use]
pub fn source_name(key: &SourceKey) -> String {
    match SourceKind::from_u32(key.kind) {
        Some(SourceKind::Cgroup) => {
            let mut id = [0u8; 8];
            id.copy_from_slice(&key.addr[..8]);
            format!("cgroup {}", u64::from_le_bytes(id))
        }
        Some(SourceKind::Ipv4) => {
            Ipv4Addr::new(key.addr[0], key.addr[1], key.addr[2], key.addr[3]).to_string()
        }
        Some(SourceKind::Ipv6) => Ipv6Addr::from(key.addr).to_string(),
        None => format!("unknown source kind {}", key.kind),
    }
}

/// Kernel-side unit tests: the classifiers run with BPF_PROG_TEST_RUN on
/// crafted frames (nothing is attached, no interface is touched).
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use aya::programs::{TestRun, TestRunOptions};
    use vpn_common::{Config, LeakReason};

    use super::*;
    use crate::steer::{
        cgroup,
        events::{Events, Leak},
        testing::{eth_frame, test_run, TcRun, TC_ACT_OK, TC_ACT_SHOT},
    };

    const MARK: u32 = 0x1000_0000;
    const FOREIGN: u32 = 0x0008_0000;
    const UDP: u8 = 17;
    const TCP: u8 = 6;

    struct Loaded {
        bpf: Ebpf,
        maps: Maps,
        events: Events,
        cgroups: HashMap<MapData, u64, SteerRule>,
    }

    impl Loaded {
        fn run(&self, hook: Hook, frame: &[u8], mark: u32) -> TcRun {
            test_run(program(&self.bpf, hook).unwrap(), frame, mark, 1).unwrap()
        }

        fn guard(&self, frame: &[u8], mark: u32) -> i32 {
            self.run(Hook::Guard, frame, mark).verdict
        }

        fn ingress_mark(&self, frame: &[u8], mark: u32) -> u32 {
            let r = self.run(Hook::Ingress, frame, mark);
            assert_eq!(r.verdict, TC_ACT_OK, "the ingress classifier never drops");
            r.mark
        }
    }

    /// Loads a private copy of the object (its own maps), or says why not.
    fn load() -> Option<Loaded> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: BPF_PROG_TEST_RUN needs root");
            return None;
        }
        let mut bpf = object::load(None).unwrap();
        let mut config: Array<MapData, Config> =
            Array::try_from(bpf.take_map(names::CONFIG).unwrap()).unwrap();
        config
            .set(
                0,
                Config {
                    mark: MARK,
                    mark_mask: MARK,
                    ..Config::default()
                },
                0,
            )
            .unwrap();
        let cgroups = HashMap::try_from(bpf.take_map(names::STEER_CGROUPS).unwrap()).unwrap();
        let maps = Maps::take(&mut bpf, None).unwrap();
        let events = Events::take(&mut bpf, None).unwrap();
        load_programs(&mut bpf).unwrap();
        Some(Loaded {
            bpf,
            maps,
            events,
            cgroups,
        })
    }

    fn v4(s: &str, d: &str, proto: u8, sport: u16, dport: u16) -> Vec<u8> {
        eth_frame(s.parse().unwrap(), d.parse().unwrap(), proto, sport, dport)
    }

    #[test]
    fn guard_drops_marked_and_passes_unmarked() {
        let Some(t) = load() else { return };
        let f = v4("10.1.0.2", "198.18.9.9", UDP, 40000, 443);
        assert_eq!(t.guard(&f, MARK), TC_ACT_SHOT, "vpn's bit");
        assert_eq!(
            t.guard(&f, MARK | FOREIGN | 0xca6c),
            TC_ACT_SHOT,
            "with foreign bits"
        );
        assert_eq!(t.guard(&f, 0), TC_ACT_OK, "unmarked");
        assert_eq!(
            t.guard(&f, FOREIGN | 0xca6c),
            TC_ACT_OK,
            "foreign bits only"
        );
        let f6 = eth_frame(
            "fd00:1::2".parse().unwrap(),
            "2001:db8::9".parse().unwrap(),
            TCP,
            40000,
            443,
        );
        assert_eq!(t.guard(&f6, MARK), TC_ACT_SHOT, "IPv6, vpn's bit");
        assert_eq!(t.guard(&f6, 0), TC_ACT_OK, "IPv6, unmarked");
        assert_eq!(t.maps.stat(GuardStat::Dropped).unwrap(), 3);
        assert_eq!(t.maps.stat(GuardStat::Passed).unwrap(), 3);
    }

    #[test]
    fn guard_lets_vpns_own_udp_through() {
        let Some(mut t) = load() else { return };
        t.maps.set_tunnel_port(51820).unwrap();
        t.maps.set_bypass_mark(0x2000_0000, 0x2000_0000).unwrap();
        let wg = v4("10.1.0.2", "203.0.113.7", UDP, 51820, 51820);
        assert_eq!(t.guard(&wg, MARK), TC_ACT_OK, "tunnel port, even marked");
        let other = v4("10.1.0.2", "203.0.113.7", UDP, 51821, 51820);
        assert_eq!(t.guard(&other, MARK), TC_ACT_SHOT, "another port");
        let tcp = v4("10.1.0.2", "203.0.113.7", TCP, 51820, 443);
        assert_eq!(t.guard(&tcp, MARK), TC_ACT_SHOT, "TCP from the tunnel port");
        assert_eq!(
            t.guard(&other, MARK | 0x2000_0000),
            TC_ACT_OK,
            "bypass mark wins over vpn's bit"
        );
        assert_eq!(t.maps.stat(GuardStat::Bypassed).unwrap(), 2);
    }

    #[test]
    fn guard_drops_steered_prefixes_v4_and_v6_and_honours_exclude() {
        let Some(mut t) = load() else { return };
        let m = &mut t.maps;
        m.add_prefix("10.9.0.77".parse().unwrap(), 24, SteerAction::Include)
            .unwrap();
        m.add_prefix("10.9.0.128".parse().unwrap(), 25, SteerAction::Exclude)
            .unwrap();
        m.add_prefix("fd00:9::".parse().unwrap(), 64, SteerAction::Include)
            .unwrap();
        let rules = m.prefixes().unwrap();
        assert_eq!(rules.len(), 3, "{rules:?}");
        assert_eq!(rules[0].addr.to_string(), "10.9.0.0", "host bits cleared");
        let cases = [
            ("10.9.0.5", TC_ACT_SHOT),
            ("10.9.0.127", TC_ACT_SHOT),
            ("10.9.0.200", TC_ACT_OK),
            ("10.9.1.5", TC_ACT_OK),
        ];
        for (src, want) in cases {
            let f = v4(src, "198.18.9.9", TCP, 40000, 443);
            assert_eq!(t.guard(&f, 0), want, "source {src}");
        }
        let v6 = |s: &str| {
            eth_frame(
                s.parse().unwrap(),
                "2001:db8::9".parse().unwrap(),
                UDP,
                5353,
                53,
            )
        };
        assert_eq!(t.guard(&v6("fd00:9::5"), 0), TC_ACT_SHOT);
        assert_eq!(t.guard(&v6("fd00:9:0:1::5"), 0), TC_ACT_OK);
        assert!(t.maps.del_prefix("10.9.0.0".parse().unwrap(), 24).unwrap());
        assert!(!t.maps.del_prefix("10.9.0.0".parse().unwrap(), 24).unwrap());
        let f = v4("10.9.0.5", "198.18.9.9", TCP, 40000, 443);
        assert_eq!(t.guard(&f, 0), TC_ACT_OK, "rule removed");
        assert!(matches!(
            t.maps
                .add_prefix("10.0.0.0".parse().unwrap(), 33, SteerAction::Include),
            Err(GuardError::BadPrefixLen { .. })
        ));
    }

    /// BPF_PROG_TEST_RUN gives the skb a dummy socket charged to the calling
    /// task's cgroup, so the cgroup path is testable too.
    #[test]
    fn guard_drops_steered_cgroups_nearest_rule_wins() {
        let Some(mut t) = load() else { return };
        let mount = cgroup::cgroup2_mount().unwrap();
        let own = cgroup::cgroup_of_pid(&mount, std::process::id()).unwrap();
        let own_id = cgroup::cgroup_id(&own).unwrap();
        let f = v4("10.1.0.2", "198.18.9.9", UDP, 40000, 443);
        assert_eq!(t.guard(&f, 0), TC_ACT_OK, "no rule");
        let rule = |a: SteerAction| SteerRule {
            action: a as u32,
            tunnel: 0,
        };
        t.cgroups
            .insert(own_id, rule(SteerAction::Include), 0)
            .unwrap();
        assert_eq!(t.guard(&f, 0), TC_ACT_SHOT, "own cgroup steered");
        t.cgroups
            .insert(own_id, rule(SteerAction::Exclude), 0)
            .unwrap();
        t.maps
            .add_prefix("10.1.0.0".parse().unwrap(), 16, SteerAction::Include)
            .unwrap();
        assert_eq!(t.guard(&f, 0), TC_ACT_OK, "excluded cgroup beats prefix");
        assert_eq!(t.guard(&f, MARK), TC_ACT_SHOT, "the mark beats all");
        t.cgroups.remove(&own_id).unwrap();
        t.maps.del_prefix("10.1.0.0".parse().unwrap(), 16).unwrap();
        if own != mount {
            let parent = cgroup::cgroup_id(own.parent().unwrap()).unwrap();
            t.cgroups
                .insert(parent, rule(SteerAction::Include), 0)
                .unwrap();
            assert_eq!(t.guard(&f, 0), TC_ACT_SHOT, "ancestor steered");
        } else {
            eprintln!("ancestor case skipped: the test runs in the root cgroup");
        }
        let sources = t.maps.sources().unwrap();
        assert_eq!(sources[0].source, format!("cgroup {own_id}"), "{sources:?}");
    }

    #[test]
    fn guard_counts_drops_per_source_and_raises_events() {
        let Some(mut t) = load() else { return };
        t.maps
            .add_prefix("10.9.0.0".parse().unwrap(), 24, SteerAction::Include)
            .unwrap();
        let f = v4("10.9.0.5", "198.18.9.9", TCP, 40000, 443);
        for _ in 0..3 {
            assert_eq!(t.guard(&f, 0), TC_ACT_SHOT);
        }
        let f6 = eth_frame(
            "fd00::5".parse().unwrap(),
            "2001:db8::9".parse().unwrap(),
            UDP,
            40000,
            53,
        );
        assert_eq!(t.guard(&f6, MARK), TC_ACT_SHOT);
        let sources = t.maps.sources().unwrap();
        let s = sources.iter().find(|s| s.source == "10.9.0.5").unwrap();
        assert_eq!(
            (s.blocked_packets, s.blocked_bytes),
            (3, 3 * f.len() as u64)
        );
        let events = t.events.collect(Duration::from_secs(1), 4).unwrap();
        assert_eq!(events.len(), 4, "{events:?}");
        let e = &events[0];
        assert_eq!(Leak(e).destination().to_string(), "198.18.9.9");
        assert_eq!((e.proto, e.sport, e.dport), (TCP, 40000, 443));
        assert_eq!(e.reason, LeakReason::Prefix as u8);
        assert_eq!(e.len as usize, f.len());
        let line = Leak(&events[3]).to_string();
        assert!(
            line.contains("→ [2001:db8::9]:53 via") && line.contains("(udp, steered by mark)"),
            "{line}"
        );
        // Events can be switched off; the counters stay.
        let mut c = t.maps.config().unwrap();
        c.no_events = 1;
        t.maps.set_config(c).unwrap();
        assert_eq!(t.guard(&f, 0), TC_ACT_SHOT);
        assert!(t
            .events
            .collect(Duration::from_millis(100), 1)
            .unwrap()
            .is_empty());
        assert_eq!(t.maps.stat(GuardStat::Dropped).unwrap(), 5);
    }

    #[test]
    fn guard_passes_non_ip() {
        let Some(t) = load() else { return };
        let mut arp = vec![0xff; 6];
        arp.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
        arp.extend_from_slice(&[0u8; 28]);
        assert_eq!(t.guard(&arp, MARK), TC_ACT_OK);
        assert_eq!(t.ingress_mark(&arp, 0), 0);
    }

    #[test]
    fn ingress_marks_steered_prefixes_and_interfaces() {
        let Some(mut t) = load() else { return };
        t.maps
            .add_prefix("10.9.0.0".parse().unwrap(), 24, SteerAction::Include)
            .unwrap();
        t.maps
            .add_prefix("10.9.0.9".parse().unwrap(), 32, SteerAction::Exclude)
            .unwrap();
        t.maps
            .add_prefix("fd00:9::".parse().unwrap(), 48, SteerAction::Include)
            .unwrap();
        let f = |s: &str| v4(s, "198.18.9.9", UDP, 40000, 443);
        assert_eq!(t.ingress_mark(&f("10.9.0.5"), 0), MARK);
        assert_eq!(
            t.ingress_mark(&f("10.9.0.5"), FOREIGN),
            MARK | FOREIGN,
            "foreign bits kept"
        );
        assert_eq!(t.ingress_mark(&f("10.9.0.9"), 0), 0, "excluded host");
        assert_eq!(
            t.ingress_mark(&f("10.8.0.5"), FOREIGN),
            FOREIGN,
            "unsteered"
        );
        let f6 = eth_frame(
            "fd00:9:0:7::1".parse().unwrap(),
            "2001:db8::9".parse().unwrap(),
            TCP,
            40000,
            443,
        );
        assert_eq!(t.ingress_mark(&f6, 0), MARK, "IPv6 prefix");

        // test_run delivers the frame on lo (ifindex 1) when no ifindex is
        // given: steer that interface.
        t.maps.add_iface(1, SteerAction::Include).unwrap();
        assert_eq!(t.ingress_mark(&f("10.8.0.5"), 0), MARK, "steered interface");
        assert_eq!(
            t.ingress_mark(&f("10.9.0.9"), 0),
            0,
            "an excluded prefix beats the interface"
        );
        assert_eq!(t.maps.ifaces().unwrap().len(), 1);
        assert!(t.maps.del_iface(1).unwrap());
        assert_eq!(t.ingress_mark(&f("10.8.0.5"), 0), 0);

        assert_eq!(t.maps.stat(GuardStat::IngressMarked).unwrap(), 4);
        assert_eq!(t.maps.stat(GuardStat::IngressExcluded).unwrap(), 2);
        let sources = t.maps.sources().unwrap();
        let s = sources.iter().find(|s| s.source == "10.9.0.5").unwrap();
        assert_eq!(s.steered_packets, 2, "{sources:?}");
    }

    #[test]
    fn xdp_filter_drops_what_cannot_be_wireguard() {
        let Some(mut t) = load() else { return };
        let xdp = |frame: &[u8]| {
            let mut opts = TestRunOptions::new();
            opts.data_in = Some(frame);
            xdp_program(&t.bpf)
                .unwrap()
                .test_run(opts)
                .unwrap()
                .return_value
        };
        const XDP_DROP: u32 = 1;
        const XDP_PASS: u32 = 2;
        // A UDP frame to `dport` carrying `msg`.
        let udp = |v6: bool, dport: u16, msg: &[u8]| {
            let (s, d): (IpAddr, IpAddr) = if v6 {
                ("fd00::2".parse().unwrap(), "fd00::1".parse().unwrap())
            } else {
                ("10.0.0.2".parse().unwrap(), "10.0.0.1".parse().unwrap())
            };
            let mut f = eth_frame(s, d, UDP, 51820, dport);
            let ulen = (8 + msg.len()) as u16;
            let at = f.len() - 8;
            f[at + 4..at + 6].copy_from_slice(&ulen.to_be_bytes());
            let ip_len = if v6 { ulen } else { ulen + 20 };
            let off = if v6 { 18 } else { 16 };
            f[off..off + 2].copy_from_slice(&ip_len.to_be_bytes());
            f.extend_from_slice(msg);
            f
        };
        let msg = |ty: u8, len: usize| {
            let mut m = vec![0u8; len];
            m[0] = ty;
            m
        };
        let valid = udp(false, 51820, &msg(4, 48));
        assert_eq!(xdp(&valid), XDP_PASS, "no port configured: all pass");
        t.maps.set_tunnel_port(51820).unwrap();
        let cases = [
            ("initiation", msg(1, 148), XDP_PASS),
            ("response", msg(2, 92), XDP_PASS),
            ("cookie reply", msg(3, 64), XDP_PASS),
            ("keepalive", msg(4, 32), XDP_PASS),
            ("data", msg(4, 1440), XDP_PASS),
            ("short initiation", msg(1, 147), XDP_DROP),
            ("unpadded data", msg(4, 40), XDP_DROP),
            ("short data", msg(4, 16), XDP_DROP),
            ("unknown type", msg(7, 64), XDP_DROP),
            (
                "reserved bits",
                [vec![4, 0, 1, 0], vec![0; 28]].concat(),
                XDP_DROP,
            ),
            ("empty", vec![], XDP_DROP),
        ];
        for (what, m, want) in &cases {
            assert_eq!(xdp(&udp(false, 51820, m)), *want, "IPv4 {what}");
            assert_eq!(xdp(&udp(true, 51820, m)), *want, "IPv6 {what}");
        }
        assert_eq!(xdp(&udp(false, 53, &msg(7, 3))), XDP_PASS, "other port");
        let mut lying = udp(false, 51820, &msg(4, 32));
        let at = lying.len() - 40;
        lying[at + 4..at + 6].copy_from_slice(&200u16.to_be_bytes());
        assert_eq!(xdp(&lying), XDP_DROP, "UDP length past the frame");
        assert_eq!(t.maps.stat(GuardStat::XdpPassed).unwrap(), 10);
        assert_eq!(t.maps.stat(GuardStat::XdpDropped).unwrap(), 13);
    }
}
