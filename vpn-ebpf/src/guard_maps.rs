//! Maps of the forwarded-source classifier and the uplink guard. Names match
//! `vpn_common::names`.
use aya_ebpf::{
    macros::map,
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, LruPerCpuHashMap, PerCpuArray, RingBuf},
};
use vpn_common::{
    GuardConfig, GuardStat, SourceCounters, SourceKey, SourceKind, SteerAction, SteerRule,
};

use crate::packet::{Flow, AF_INET};

/// Index 0: the guard's [`GuardConfig`] (bypass identity, event switch).
#[map(name = "GUARD_CONFIG")]
pub static GUARD_CONFIG: Array<GuardConfig> = Array::with_max_entries(1, 0);

/// Steered IPv4 source prefixes (longest prefix wins).
#[map(name = "STEER_SRC_V4")]
pub static STEER_SRC_V4: LpmTrie<[u8; 4], SteerRule> = LpmTrie::with_max_entries(65536, 0);

/// Steered IPv6 source prefixes (longest prefix wins).
#[map(name = "STEER_SRC_V6")]
pub static STEER_SRC_V6: LpmTrie<[u8; 16], SteerRule> = LpmTrie::with_max_entries(65536, 0);

/// Steered ingress interfaces (a container's or VM's veth) by ifindex.
#[map(name = "STEER_IFACES")]
pub static STEER_IFACES: HashMap<u32, SteerRule> = HashMap::with_max_entries(1024, 0);

/// Per-source counters; LRU so that a flood of sources cannot fill it.
#[map(name = "SOURCE_STATS")]
pub static SOURCE_STATS: LruPerCpuHashMap<SourceKey, SourceCounters> =
    LruPerCpuHashMap::with_max_entries(16384, 0);

/// Per-CPU counters indexed by [`GuardStat`].
#[map(name = "GUARD_STATS")]
pub static GUARD_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(GuardStat::COUNT, 0);

/// One `LeakEvent` per dropped packet.
#[map(name = "LEAK_EVENTS")]
pub static LEAK_EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

#[inline(always)]
pub fn guard_config() -> GuardConfig {
    GUARD_CONFIG.get(0).copied().unwrap_or_default()
}

#[inline(always)]
pub fn count(stat: GuardStat) {
    if let Some(v) = GUARD_STATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *v += 1 };
    }
}

/// The rule of the longest steered prefix holding the flow's source.
#[inline(always)]
pub fn prefix_action(flow: &Flow) -> Option<SteerAction> {
    let rule = if flow.family == AF_INET {
        let mut a = [0u8; 4];
        a.copy_from_slice(&flow.saddr[..4]);
        STEER_SRC_V4.get(Key::new(32, a))
    } else {
        STEER_SRC_V6.get(Key::new(128, flow.saddr))
    }?;
    SteerAction::from_u32(rule.action)
}

#[inline(always)]
pub fn iface_action(ifindex: u32) -> Option<SteerAction> {
    // SAFETY: the value is copied out before the map could change it.
    let rule = unsafe { STEER_IFACES.get(&ifindex) }?;
    SteerAction::from_u32(rule.action)
}

#[inline(always)]
pub fn address_key(flow: &Flow) -> SourceKey {
    SourceKey {
        kind: if flow.family == AF_INET {
            SourceKind::Ipv4 as u32
        } else {
            SourceKind::Ipv6 as u32
        },
        addr: flow.saddr,
    }
}

#[inline(always)]
pub fn cgroup_key(cgroup_id: u64) -> SourceKey {
    let mut addr = [0u8; 16];
    addr[..8].copy_from_slice(&cgroup_id.to_le_bytes());
    SourceKey {
        kind: SourceKind::Cgroup as u32,
        addr,
    }
}

/// Adds one packet of `len` bytes to a source's counters.
#[inline(always)]
pub fn count_source(key: &SourceKey, len: u32, blocked: bool) {
    if SOURCE_STATS.get_ptr_mut(key).is_none() {
        let _ = SOURCE_STATS.insert(key, &SourceCounters::default(), 0);
    }
    if let Some(c) = SOURCE_STATS.get_ptr_mut(key) {
        // SAFETY: per-CPU value, no concurrent writer on this CPU.
        unsafe {
            if blocked {
                (*c).blocked_packets += 1;
                (*c).blocked_bytes += u64::from(len);
            } else {
                (*c).steered_packets += 1;
                (*c).steered_bytes += u64::from(len);
            }
        }
    }
}
