//! TC egress guard for an uplink: drops the plaintext packets of steered
//! sources that would leave by it, lets vpn's own encrypted UDP through.
//!
//! Steered means, in this order: `skb->mark` carries vpn's bit; or the
//! sending socket's cgroup (or the nearest steered ancestor) has an include
//! rule; or the source address is in an included prefix. An exclude rule on
//! the cgroup or the prefix lets the packet pass. Each drop is counted per
//! source and raised as a `LeakEvent`.
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::generated::{bpf_get_socket_cookie, bpf_skb_ancestor_cgroup_id, bpf_skb_cgroup_id},
    macros::classifier,
    programs::TcContext,
    EbpfContext,
};
use vpn_common::{GuardConfig, GuardStat, LeakEvent, LeakReason, SteerAction, MAX_CGROUP_DEPTH};

use crate::{
    guard_maps::{
        address_key, cgroup_key, count, count_source, guard_config, prefix_action, LEAK_EVENTS,
    },
    maps::{config, STEER_CGROUPS},
    owner,
    packet::{self, Flow, IPPROTO_UDP},
};

const PASS: i32 = TC_ACT_OK as i32;
const DROP: i32 = TC_ACT_SHOT as i32;

#[classifier]
pub fn vpn_tc_guard(ctx: TcContext) -> i32 {
    match try_guard(&ctx) {
        Ok(v) | Err(v) => v,
    }
}

fn try_guard(ctx: &TcContext) -> Result<i32, i32> {
    let Some(flow) = packet::parse(ctx) else {
        count(GuardStat::Passed);
        return Ok(PASS);
    };
    let gcfg = guard_config();
    // SAFETY: reading a field of this program's own __sk_buff.
    let mark = unsafe { (*ctx.skb.skb).mark };
    if is_bypass(&gcfg, mark, &flow) {
        count(GuardStat::Bypassed);
        return Ok(PASS);
    }
    // SAFETY: helper on this program's skb; 0 when there is no full socket.
    let cgroup = unsafe { bpf_skb_cgroup_id(ctx.skb.skb) };
    let Some(reason) = steered_reason(ctx, mark, cgroup, &flow) else {
        count(GuardStat::Passed);
        return Ok(PASS);
    };
    record_drop(ctx, &gcfg, &flow, reason, cgroup, mark);
    Ok(DROP)
}

/// vpn's own encrypted UDP: the bypass mark, or the tunnel's source port.
#[inline(always)]
fn is_bypass(gcfg: &GuardConfig, mark: u32, flow: &Flow) -> bool {
    if gcfg.bypass_mask != 0 && mark & gcfg.bypass_mask == gcfg.bypass_mark & gcfg.bypass_mask {
        return true;
    }
    gcfg.tunnel_port != 0 && flow.proto == IPPROTO_UDP && u32::from(flow.sport) == gcfg.tunnel_port
}

#[inline(always)]
fn steered_reason(ctx: &TcContext, mark: u32, cgroup: u64, flow: &Flow) -> Option<LeakReason> {
    if let Some(cfg) = config() {
        let bit = cfg.mark & cfg.mark_mask;
        if bit != 0 && mark & bit == bit {
            return Some(LeakReason::Mark);
        }
    }
    if cgroup != 0 {
        match cgroup_action(ctx, cgroup) {
            Some(SteerAction::Include) => return Some(LeakReason::Cgroup),
            Some(SteerAction::Exclude) => return None,
            None => {}
        }
    }
    match prefix_action(flow) {
        Some(SteerAction::Include) => Some(LeakReason::Prefix),
        _ => None,
    }
}

/// The action of the nearest steered cgroup among the socket's cgroup and
/// its ancestors (the deepest rule wins, as in sock_create).
#[inline(always)]
fn cgroup_action(ctx: &TcContext, own: u64) -> Option<SteerAction> {
    // SAFETY: the value is copied out at once.
    if let Some(rule) = unsafe { STEER_CGROUPS.get(&own) } {
        return SteerAction::from_u32(rule.action);
    }
    let mut found = None;
    // Level 0 is the root; walk down towards the socket's own cgroup and keep
    // the last (deepest) match. The helper returns 0 past the socket's depth.
    let mut level = 1;
    while level <= MAX_CGROUP_DEPTH as i32 {
        // SAFETY: helper on this program's skb.
        let id = unsafe { bpf_skb_ancestor_cgroup_id(ctx.skb.skb, level) };
        if id == 0 || id == own {
            break;
        }
        // SAFETY: the value is copied out at once.
        if let Some(rule) = unsafe { STEER_CGROUPS.get(&id) } {
            found = SteerAction::from_u32(rule.action);
        }
        level += 1;
    }
    found
}

#[inline(always)]
fn record_drop(
    ctx: &TcContext,
    gcfg: &GuardConfig,
    flow: &Flow,
    reason: LeakReason,
    cgroup: u64,
    mark: u32,
) {
    count(GuardStat::Dropped);
    let len = ctx.len();
    let key = if cgroup != 0 && reason != LeakReason::Prefix {
        cgroup_key(cgroup)
    } else {
        address_key(flow)
    };
    count_source(&key, len, true);
    if gcfg.no_events != 0 {
        return;
    }
    let Some(mut entry) = LEAK_EVENTS.reserve::<LeakEvent>(0) else {
        count(GuardStat::EventsLost);
        return;
    };
    // SAFETY: helper on this program's skb; 0 when there is no socket.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let who = if cookie != 0 {
        owner::lookup(cookie)
    } else {
        None
    };
    let (pid, comm) = match who {
        Some(o) => (o.pid, o.comm),
        None => (0, [0u8; 16]),
    };
    entry.write(LeakEvent {
        cgroup_id: cgroup,
        pid,
        // SAFETY: reading a field of this program's own __sk_buff.
        ifindex: unsafe { (*ctx.skb.skb).ifindex },
        family: flow.family,
        proto: flow.proto,
        reason: reason as u8,
        sport: flow.sport,
        dport: flow.dport,
        comm,
        saddr: flow.saddr,
        daddr: flow.daddr,
        mark,
        len,
    });
    entry.submit(0);
}
