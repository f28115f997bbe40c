//! Maps of the per-process hooks: uid steering, the tunnel's resolvers and
//! families, and their counters. Names match `vpn_common::sock_names`.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use vpn_common::{SockAddrStat, SteerRule, TunnelInfo};

/// Steered uids (the socket creator's effective... real uid as the kernel
/// reports it through `bpf_get_current_uid_gid`).
#[map(name = "STEER_UIDS")]
pub static STEER_UIDS: HashMap<u32, SteerRule> = HashMap::with_max_entries(4096, 0);

/// Index 0: the tunnel's resolvers and families.
#[map(name = "TUNNEL_INFO")]
pub static TUNNEL_INFO: Array<TunnelInfo> = Array::with_max_entries(1, 0);

/// Per-CPU counters indexed by [`SockAddrStat`].
#[map(name = "SOCKADDR_STATS")]
pub static SOCKADDR_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(SockAddrStat::COUNT, 0);

#[inline(always)]
pub fn count(stat: SockAddrStat) {
    if let Some(v) = SOCKADDR_STATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *v += 1 };
    }
}

#[inline(always)]
pub fn uid_rule(uid: u32) -> Option<SteerRule> {
    // SAFETY: read-only lookup; the value is copied out.
    unsafe { STEER_UIDS.get(&uid) }.copied()
}
