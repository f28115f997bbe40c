//! TC ingress classifier for forwarded sources (a container or VM behind a
//! veth or bridge): a packet whose source address is in a steered prefix, or
//! that arrives on a steered interface, gets vpn's mark, so the fwmark rule
//! routes it into the tunnel. The longest matching prefix decides first, the
//! interface after it; an exclude rule leaves the packet unmarked. It never
//! drops: the uplink guard is what fails closed.
use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};
use vpn_common::{GuardStat, SteerAction};

use crate::{
    guard_maps::{address_key, count, count_source, iface_action, prefix_action},
    maps::config,
    packet,
};

const PASS: i32 = TC_ACT_OK as i32;

#[classifier]
pub fn vpn_tc_ingress(ctx: TcContext) -> i32 {
    match try_ingress(&ctx) {
        Ok(v) | Err(v) => v,
    }
}

fn try_ingress(ctx: &TcContext) -> Result<i32, i32> {
    let Some(cfg) = config() else { return Ok(PASS) };
    let Some(flow) = packet::parse(ctx) else {
        return Ok(PASS);
    };
    // SAFETY: reading a field of this program's own __sk_buff.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let action = match prefix_action(&flow) {
        Some(a) => Some(a),
        None => iface_action(ifindex),
    };
    match action {
        Some(SteerAction::Include) => {
            // SAFETY: as above.
            let mark = unsafe { (*ctx.skb.skb).mark };
            ctx.set_mark(cfg.apply_mark(mark));
            count(GuardStat::IngressMarked);
            count_source(&address_key(&flow), ctx.len(), false);
        }
        Some(SteerAction::Exclude) => count(GuardStat::IngressExcluded),
        None => {}
    }
    Ok(PASS)
}
