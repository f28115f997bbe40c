//! XDP on the uplink, for the tunnel's UDP port: drops datagrams that
//! cannot be WireGuard messages before the stack (and the daemon's socket)
//! spends anything on them. A message is well formed when its type is 1-4,
//! its three reserved bytes are zero and its length is the type's (148 for
//! an initiation, 92 for a response, 64 for a cookie reply; for transport
//! data at least 32 and a multiple of 16, as the sender pads). Everything
//! else, including other ports and non-IP frames, passes untouched.
use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    macros::xdp,
    programs::XdpContext,
};
use vpn_common::GuardStat;

use crate::guard_maps::{count, guard_config};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_UDP: u8 = 17;
const UDP_HLEN: usize = 8;

// Lengths from the WireGuard paper, section 5.4 (and the kernel's
// drivers/net/wireguard/messages.h).
const MESSAGE_INITIATION_LEN: usize = 148;
const MESSAGE_RESPONSE_LEN: usize = 92;
const MESSAGE_COOKIE_REPLY_LEN: usize = 64;
const MESSAGE_DATA_MIN_LEN: usize = 32;

#[xdp]
pub fn vpn_xdp_filter(ctx: XdpContext) -> u32 {
    match try_filter(&ctx) {
        Ok(v) | Err(v) => v,
    }
}

/// A pointer to `len` bytes at `offset`, bounds-checked for the verifier.
#[inline(always)]
fn bytes(ctx: &XdpContext, offset: usize, len: usize) -> Option<*const u8> {
    let start = ctx.data();
    if start + offset + len > ctx.data_end() {
        return None;
    }
    Some((start + offset) as *const u8)
}

#[inline(always)]
fn byte(p: *const u8, i: usize) -> u8 {
    // SAFETY: callers only index within the range `bytes` checked.
    unsafe { *p.add(i) }
}

fn try_filter(ctx: &XdpContext) -> Result<u32, u32> {
    let port = guard_config().tunnel_port;
    if port == 0 {
        return Ok(XDP_PASS);
    }
    let Some(udp) = udp_offset(ctx) else {
        return Ok(XDP_PASS);
    };
    let h = bytes(ctx, udp, UDP_HLEN).ok_or(XDP_PASS)?;
    let dport = u16::from_be_bytes([byte(h, 2), byte(h, 3)]);
    if u32::from(dport) != port {
        return Ok(XDP_PASS);
    }
    let udp_len = usize::from(u16::from_be_bytes([byte(h, 4), byte(h, 5)]));
    let frame_left = ctx.data_end() - ctx.data() - udp;
    if udp_len < UDP_HLEN + 4 || udp_len > frame_left {
        count(GuardStat::XdpDropped);
        return Ok(XDP_DROP);
    }
    let m = bytes(ctx, udp + UDP_HLEN, 4).ok_or(XDP_PASS)?;
    if well_formed(
        byte(m, 0),
        [byte(m, 1), byte(m, 2), byte(m, 3)],
        udp_len - UDP_HLEN,
    ) {
        count(GuardStat::XdpPassed);
        Ok(XDP_PASS)
    } else {
        count(GuardStat::XdpDropped);
        Ok(XDP_DROP)
    }
}

#[inline(always)]
fn well_formed(msg_type: u8, reserved: [u8; 3], len: usize) -> bool {
    if reserved != [0, 0, 0] {
        return false;
    }
    match msg_type {
        1 => len == MESSAGE_INITIATION_LEN,
        2 => len == MESSAGE_RESPONSE_LEN,
        3 => len == MESSAGE_COOKIE_REPLY_LEN,
        4 => len >= MESSAGE_DATA_MIN_LEN && len % 16 == 0,
        _ => false,
    }
}

/// Offset of the UDP header of an IPv4/IPv6 UDP frame (no IPv6 extension
/// headers, no IPv4 fragments past the first).
#[inline(always)]
fn udp_offset(ctx: &XdpContext) -> Option<usize> {
    let eth = bytes(ctx, 0, ETH_HLEN)?;
    match u16::from_be_bytes([byte(eth, 12), byte(eth, 13)]) {
        ETH_P_IP => {
            let ip = bytes(ctx, ETH_HLEN, 20)?;
            let ihl = usize::from(byte(ip, 0) & 0x0f) * 4;
            let frag = u16::from_be_bytes([byte(ip, 6), byte(ip, 7)]) & 0x1fff;
            (byte(ip, 0) >> 4 == 4 && ihl >= 20 && frag == 0 && byte(ip, 9) == IPPROTO_UDP)
                .then_some(ETH_HLEN + ihl)
        }
        ETH_P_IPV6 => {
            let ip = bytes(ctx, ETH_HLEN, 40)?;
            (byte(ip, 0) >> 4 == 6 && byte(ip, 6) == IPPROTO_UDP).then_some(ETH_HLEN + 40)
        }
        _ => None,
    }
}
