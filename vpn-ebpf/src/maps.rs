//! Every map the programs share. Names match `vpn_common::names`.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use vpn_common::{Config, Stat, SteerRule};

/// Index 0: the instance's [`Config`]. Written by userspace before attach.
#[map(name = "VPN_CONFIG")]
pub static VPN_CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// Steered cgroups by cgroup id; descendants are covered by the ancestor walk.
#[map(name = "STEER_CGROUPS")]
pub static STEER_CGROUPS: HashMap<u64, SteerRule> = HashMap::with_max_entries(65536, 0);

/// Per-CPU counters indexed by [`Stat`].
#[map(name = "VPN_STATS")]
pub static VPN_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Stat::COUNT, 0);

#[inline(always)]
pub fn config() -> Option<&'static Config> {
    VPN_CONFIG.get(0)
}

#[inline(always)]
pub fn count(stat: Stat) {
    if let Some(v) = VPN_STATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *v += 1 };
    }
}
