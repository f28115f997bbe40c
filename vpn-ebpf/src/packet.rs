//! Just enough of IPv4/IPv6 to classify a packet: family, protocol, addresses
//! and ports. Loads are relative to the network header, so the same code
//! works on Ethernet devices (veth, uplinks) and raw-IP ones (tun).
use aya_ebpf::{
    bindings::bpf_hdr_start_off::BPF_HDR_START_NET,
    helpers::generated::bpf_skb_load_bytes_relative, programs::TcContext, EbpfContext,
};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// The classified header fields of one packet. Addresses in network order,
/// IPv4 in the first four bytes; ports in host order (0 if none).
pub struct Flow {
    pub family: u16,
    pub proto: u8,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
}

/// Copies `N` bytes at `offset` from the network header.
#[inline(always)]
fn load<const N: usize>(ctx: &TcContext, offset: u32) -> Option<[u8; N]> {
    let mut buf = [0u8; N];
    // SAFETY: the helper writes at most N bytes into `buf`.
    let rc = unsafe {
        bpf_skb_load_bytes_relative(
            ctx.as_ptr(),
            offset,
            buf.as_mut_ptr().cast(),
            N as u32,
            BPF_HDR_START_NET,
        )
    };
    (rc == 0).then_some(buf)
}

/// Parses the packet; `None` for anything that is not IPv4/IPv6 or is too
/// short to hold its header.
#[inline(always)]
pub fn parse(ctx: &TcContext) -> Option<Flow> {
    match u16::from_be(ctx.skb.protocol() as u16) {
        ETH_P_IP => parse_v4(ctx),
        ETH_P_IPV6 => parse_v6(ctx),
        _ => None,
    }
}

#[inline(always)]
fn ports(ctx: &TcContext, proto: u8, offset: u32) -> (u16, u16) {
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return (0, 0);
    }
    match load::<4>(ctx, offset) {
        Some(p) => (
            u16::from_be_bytes([p[0], p[1]]),
            u16::from_be_bytes([p[2], p[3]]),
        ),
        None => (0, 0),
    }
}

#[inline(always)]
fn parse_v4(ctx: &TcContext) -> Option<Flow> {
    let h = load::<20>(ctx, 0)?;
    if h[0] >> 4 != 4 {
        return None;
    }
    let ihl = u32::from(h[0] & 0x0f) * 4;
    let proto = h[9];
    let frag_offset = u16::from_be_bytes([h[6], h[7]]) & 0x1fff;
    let (sport, dport) = if frag_offset == 0 && ihl >= 20 {
        ports(ctx, proto, ihl & 0x3c)
    } else {
        (0, 0)
    };
    let mut saddr = [0u8; 16];
    let mut daddr = [0u8; 16];
    saddr[..4].copy_from_slice(&h[12..16]);
    daddr[..4].copy_from_slice(&h[16..20]);
    Some(Flow {
        family: AF_INET,
        proto,
        saddr,
        daddr,
        sport,
        dport,
    })
}

#[inline(always)]
fn parse_v6(ctx: &TcContext) -> Option<Flow> {
    let h = load::<40>(ctx, 0)?;
    if h[0] >> 4 != 6 {
        return None;
    }
    // Extension headers are not walked: ports are reported only when TCP or
    // UDP follows the fixed header directly.
    let proto = h[6];
    let (sport, dport) = ports(ctx, proto, 40);
    let mut saddr = [0u8; 16];
    let mut daddr = [0u8; 16];
    saddr.copy_from_slice(&h[8..24]);
    daddr.copy_from_slice(&h[24..40]);
    Some(Flow {
        family: AF_INET6,
        proto,
        saddr,
        daddr,
        sport,
        dport,
    })
}
