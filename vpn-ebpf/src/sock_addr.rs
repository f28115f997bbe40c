//! `cgroup/connect4|6` and `cgroup/sendmsg4|6`: what a steered socket may
//! talk to.
//!
//! - DNS: a steered socket's queries to port 53 on any address (the local
//!   stub 127.0.0.53 included), UDP or TCP, go to the tunnel's resolver.
//! - IPv6: when the tunnel carries no IPv6, a steered socket's IPv6 connect
//!   or send is refused at once (EPERM) instead of leaking or timing out.
//!
//! A socket is steered when it carries vpn's mark (given at creation).
use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};
use vpn_common::{SockAddrStat, TunnelInfo, TUNNEL_CARRIES_V6};

use crate::{
    maps::config,
    process_maps::{count, TUNNEL_INFO},
};

const ALLOW: i32 = 1;
const REFUSE: i32 = 0;
/// Port 53 as it sits in `user_port` (network order in the low 16 bits).
const DNS_PORT_BE: u32 = 53u16.to_be() as u32;

#[cgroup_sock_addr(connect4)]
pub fn vpn_connect4(ctx: SockAddrContext) -> i32 {
    redirect_dns4(&ctx);
    ALLOW
}

#[cgroup_sock_addr(sendmsg4)]
pub fn vpn_sendmsg4(ctx: SockAddrContext) -> i32 {
    redirect_dns4(&ctx);
    ALLOW
}

#[cgroup_sock_addr(connect6)]
pub fn vpn_connect6(ctx: SockAddrContext) -> i32 {
    check6(&ctx)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn vpn_sendmsg6(ctx: SockAddrContext) -> i32 {
    check6(&ctx)
}

#[inline(always)]
fn steered(ctx: &SockAddrContext) -> bool {
    let Some(cfg) = config() else { return false };
    // SAFETY: sock_addr and its sk are the kernel's context for this hook;
    // `mark` is readable.
    let mark = unsafe {
        let sk = (*ctx.sock_addr).__bindgen_anon_1.sk;
        if sk.is_null() {
            return false;
        }
        (*sk).mark
    };
    cfg.mark_mask != 0 && mark & cfg.mark_mask == cfg.mark & cfg.mark_mask
}

#[inline(always)]
fn info() -> Option<&'static TunnelInfo> {
    TUNNEL_INFO.get(0)
}

fn redirect_dns4(ctx: &SockAddrContext) {
    // SAFETY: reads of the hook's context.
    let port = unsafe { (*ctx.sock_addr).user_port };
    if port != DNS_PORT_BE || !steered(ctx) {
        return;
    }
    let Some(info) = info() else { return };
    if info.dns4 == [0; 4] {
        return;
    }
    // SAFETY: user_ip4 is writable from connect4/sendmsg4.
    unsafe { (*ctx.sock_addr).user_ip4 = u32::from_ne_bytes(info.dns4) };
    count(SockAddrStat::DnsRedirected);
}

fn check6(ctx: &SockAddrContext) -> i32 {
    if !steered(ctx) {
        return ALLOW;
    }
    let Some(info) = info() else { return ALLOW };
    // SAFETY: reads of the hook's context.
    let (ip, port) = unsafe { ((*ctx.sock_addr).user_ip6, (*ctx.sock_addr).user_port) };
    if is_loopback6(ip) {
        return ALLOW;
    }
    if info.flags & TUNNEL_CARRIES_V6 == 0 {
        count(SockAddrStat::Ipv6Refused);
        return REFUSE;
    }
    if port == DNS_PORT_BE && info.dns6 != [0; 16] {
        let mut words = [0u32; 4];
        let mut i = 0;
        while i < 4 {
            let b = &info.dns6[i * 4..i * 4 + 4];
            words[i] = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
            i += 1;
        }
        // SAFETY: user_ip6 is writable from connect6/sendmsg6.
        unsafe { (*ctx.sock_addr).user_ip6 = words };
        count(SockAddrStat::DnsRedirected);
    }
    ALLOW
}

#[inline(always)]
fn is_loopback6(ip: [u32; 4]) -> bool {
    ip[0] == 0 && ip[1] == 0 && ip[2] == 0 && ip[3] == 1u32.to_be()
}
