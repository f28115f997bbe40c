//! `cgroup/sock_create`: gives the sockets of processes in steered cgroups
//! vpn's fwmark, so `ip rule fwmark M/MASK lookup T` sends them to the tunnel.
use aya_ebpf::{
    helpers::{
        bpf_get_current_uid_gid,
        generated::{bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id},
    },
    macros::cgroup_sock,
    programs::SockContext,
};
use aya_log_ebpf::info;
use vpn_common::{SockAddrStat, Stat, SteerAction, SteerRule, MAX_CGROUP_DEPTH};

use crate::{
    maps::{config, count, STEER_CGROUPS},
    process_maps::{self, uid_rule},
};

/// Allow the socket; sock_create programs only ever allow (1) or deny (0).
const ALLOW: i32 = 1;

#[cgroup_sock(sock_create)]
pub fn vpn_sock_create(ctx: SockContext) -> i32 {
    try_sock_create(&ctx);
    ALLOW
}

fn try_sock_create(ctx: &SockContext) {
    count(Stat::SocketsSeen);
    crate::owner::record(ctx);
    let Some(cfg) = config() else { return };
    // A cgroup rule is the more specific one; a uid rule applies otherwise.
    let (cgroup, rule, by_uid) = match lookup_cgroup_rule() {
        Some((cgroup, rule)) => (cgroup, rule, None),
        None => {
            let uid = bpf_get_current_uid_gid() as u32;
            match uid_rule(uid) {
                Some(rule) => (0, rule, Some(uid)),
                None => return,
            }
        }
    };
    match SteerAction::from_u32(rule.action) {
        Some(SteerAction::Include) => {
            // SAFETY: ctx.sock is the kernel's bpf_sock for this hook; `mark`
            // is writable from cgroup/sock_create.
            unsafe { (*ctx.sock).mark = cfg.apply_mark((*ctx.sock).mark) };
            count(Stat::SocketsMarked);
            if by_uid.is_some() {
                process_maps::count(SockAddrStat::UidMarked);
            }
            if cfg.log_decisions != 0 {
                match by_uid {
                    None => info!(ctx, "steer: socket in cgroup {} marked {:x}", cgroup, cfg.mark),
                    Some(uid) => info!(ctx, "steer: socket of uid {} marked {:x}", uid, cfg.mark),
                }
            }
        }
        Some(SteerAction::Exclude) => {
            // SAFETY: as above.
            unsafe { (*ctx.sock).mark = cfg.apply_direct((*ctx.sock).mark) };
            count(Stat::SocketsExcluded);
        }
        None => {}
    }
}

/// The rule of the nearest steered cgroup: the current cgroup first, then its
/// ancestors from the deepest up. Returns the matching cgroup id and rule.
#[inline(always)]
fn lookup_cgroup_rule() -> Option<(u64, SteerRule)> {
    // SAFETY: helper without pointer arguments.
    let own = unsafe { bpf_get_current_cgroup_id() };
    if let Some(rule) = unsafe { STEER_CGROUPS.get(&own) } {
        return Some((own, *rule));
    }
    // Level 0 is the root; the walk goes from deep to shallow so the nearest
    // rule wins (an exclude inside an included subtree).
    let mut level = MAX_CGROUP_DEPTH as i32;
    while level >= 0 {
        // SAFETY: helper without pointer arguments; returns 0 past the depth.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
        if id != 0 && id != own {
            if let Some(rule) = unsafe { STEER_CGROUPS.get(&id) } {
                return Some((id, *rule));
            }
        }
        level -= 1;
    }
    None
}
