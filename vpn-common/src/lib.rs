//! Types shared by the eBPF programs (`vpn-ebpf`) and the controller (`vpn-ctl`).
//!
//! Every type here crosses the kernel/user boundary through a BPF map, so each
//! one is `#[repr(C)]`, `Copy`, free of implicit padding and of `bool`, and has
//! its size pinned by a compile-time assertion.
#![no_std]

/// Names of the maps and programs in the eBPF object; userspace looks them up
/// by these names and pins them under the same names.
pub mod names {
    pub const CONFIG: &str = "VPN_CONFIG";
    pub const STEER_CGROUPS: &str = "STEER_CGROUPS";
    pub const STATS: &str = "VPN_STATS";
    pub const PROG_SOCK_CREATE: &str = "vpn_sock_create";
    // Uplink guard and forwarded-source classifier (`guard` in vpn-ctl).
    pub const GUARD_CONFIG: &str = "GUARD_CONFIG";
    pub const STEER_SRC_V4: &str = "STEER_SRC_V4";
    pub const STEER_SRC_V6: &str = "STEER_SRC_V6";
    pub const STEER_IFACES: &str = "STEER_IFACES";
    pub const SOURCE_STATS: &str = "SOURCE_STATS";
    pub const GUARD_STATS: &str = "GUARD_STATS";
    pub const LEAK_EVENTS: &str = "LEAK_EVENTS";
    pub const SOCK_OWNERS: &str = "SOCK_OWNERS";
    pub const PROG_TC_INGRESS: &str = "vpn_tc_ingress";
    pub const PROG_TC_GUARD: &str = "vpn_tc_guard";
    pub const PROG_XDP_FILTER: &str = "vpn_xdp_filter";
}

/// Deepest cgroup level whose ancestors the classifier walks. cgroup v2 trees
/// in practice stay well below this (systemd: slice/slice/unit/scope).
pub const MAX_CGROUP_DEPTH: u32 = 16;

/// Global knobs of one vpn instance, the only entry (index 0) of `VPN_CONFIG`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// fwmark bits given to steered sockets (a single bit under `mark_mask`).
    pub mark: u32,
    /// Bits of `skb->mark`/`sk->mark` that vpn owns; the rest is left alone.
    pub mark_mask: u32,
    /// Non-zero: log every steering decision through aya-log.
    pub log_decisions: u32,
    /// fwmark bit of sockets that stay direct: excluded sources, and the
    /// tunnel's own UDP socket in full-tunnel mode.
    pub direct_mark: u32,
}
const _: () = assert!(core::mem::size_of::<Config>() == 16);

impl Config {
    /// Applies vpn's mark to an existing mark value, preserving foreign bits.
    #[must_use]
    pub const fn apply_mark(&self, current: u32) -> u32 {
        (current & !self.mark_mask) | (self.mark & self.mark_mask)
    }

    /// Applies the direct (excluded) mark, clearing vpn's steering bit.
    #[must_use]
    pub const fn apply_direct(&self, current: u32) -> u32 {
        (current & !self.mark_mask) | self.direct_mark
    }
}

/// Value of `STEER_CGROUPS`, keyed by cgroup id (the inode number of the
/// cgroup v2 directory). A rule covers the cgroup and all its descendants.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SteerRule {
    /// One of [`SteerAction`] as u32.
    pub action: u32,
    /// Tunnel slot (reserved for several tunnels; 0 today).
    pub tunnel: u32,
}
const _: () = assert!(core::mem::size_of::<SteerRule>() == 8);

/// What a matching rule does.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SteerAction {
    /// Traffic from the source enters the tunnel.
    Include = 1,
    /// Traffic from the source is left direct (full-tunnel exclude mode).
    Exclude = 2,
}

impl SteerAction {
    #[must_use]
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Include),
            2 => Some(Self::Exclude),
            _ => None,
        }
    }
}

/// Indices of the per-CPU counters in `VPN_STATS`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// Sockets created by any process under the attach point.
    SocketsSeen = 0,
    /// Sockets that got vpn's mark.
    SocketsMarked = 1,
    /// Sockets left alone because an exclude rule matched first.
    SocketsExcluded = 2,
}

impl Stat {
    pub const COUNT: u32 = 3;
    pub const ALL: [Stat; Self::COUNT as usize] = [
        Stat::SocketsSeen,
        Stat::SocketsMarked,
        Stat::SocketsExcluded,
    ];

    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Stat::SocketsSeen => "sockets_seen",
            Stat::SocketsMarked => "sockets_marked",
            Stat::SocketsExcluded => "sockets_excluded",
        }
    }
}

/// Global knobs of the uplink guard, the only entry (index 0) of
/// `GUARD_CONFIG`. Kept apart from [`Config`] so the guard can be configured
/// (bypass identity) without rewriting the steering config.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardConfig {
    /// Packets whose `skb->mark & bypass_mask == bypass_mark` are vpn's own
    /// (the tunnel's encrypted UDP socket carries this SO_MARK). Ignored when
    /// `bypass_mask` is 0.
    pub bypass_mark: u32,
    pub bypass_mask: u32,
    /// UDP source port of the tunnel's socket (host order); 0: none. UDP from
    /// this port is vpn's encrypted traffic and always passes.
    pub tunnel_port: u32,
    /// Non-zero: do not raise a [`LeakEvent`] per drop (the counters are
    /// always kept). Zero, the default, raises them.
    pub no_events: u32,
}
const _: () = assert!(core::mem::size_of::<GuardConfig>() == 16);

/// What a [`SourceKey`] names.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// `addr[..8]` is a cgroup id (little endian), for local sockets.
    Cgroup = 1,
    /// `addr[..4]` is an IPv4 source address (network order).
    Ipv4 = 4,
    /// `addr` is an IPv6 source address (network order).
    Ipv6 = 6,
}

impl SourceKind {
    #[must_use]
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Cgroup),
            4 => Some(Self::Ipv4),
            6 => Some(Self::Ipv6),
            _ => None,
        }
    }
}

/// Key of `SOURCE_STATS`: one steered source (a cgroup or an address).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SourceKey {
    /// One of [`SourceKind`] as u32.
    pub kind: u32,
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<SourceKey>() == 20);

/// Value of `SOURCE_STATS` (per CPU; userspace sums).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceCounters {
    /// Packets (and bytes) the ingress classifier marked for the tunnel.
    pub steered_packets: u64,
    pub steered_bytes: u64,
    /// Plaintext packets (and bytes) the uplink guard dropped.
    pub blocked_packets: u64,
    pub blocked_bytes: u64,
}
const _: () = assert!(core::mem::size_of::<SourceCounters>() == 32);

/// Value of `SOCK_OWNERS`, keyed by socket cookie: who created the socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockOwner {
    /// Thread-group id (the process id as userspace sees it).
    pub pid: u32,
    pub uid: u32,
    pub comm: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<SockOwner>() == 24);

/// Why the guard considered a packet steered.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeakReason {
    /// `skb->mark` carries vpn's bit.
    Mark = 1,
    /// The socket's cgroup (or an ancestor) is steered.
    Cgroup = 2,
    /// The source address is in a steered prefix.
    Prefix = 3,
}

impl LeakReason {
    #[must_use]
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Mark),
            2 => Some(Self::Cgroup),
            3 => Some(Self::Prefix),
            _ => None,
        }
    }

    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Mark => "mark",
            Self::Cgroup => "cgroup",
            Self::Prefix => "prefix",
        }
    }
}

/// A plaintext packet of a steered source that the uplink guard dropped,
/// raised through the `LEAK_EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeakEvent {
    /// cgroup of the sending socket; 0 for forwarded packets.
    pub cgroup_id: u64,
    /// Process that created the socket; 0 when unknown (forwarded packets,
    /// sockets created before the guard was loaded).
    pub pid: u32,
    /// Uplink the packet tried to leave by.
    pub ifindex: u32,
    /// `AF_INET` (2) or `AF_INET6` (10).
    pub family: u16,
    /// IP protocol (6 TCP, 17 UDP, 1/58 ICMP...).
    pub proto: u8,
    /// One of [`LeakReason`] as u8.
    pub reason: u8,
    /// Ports in host order; 0 when the protocol has none.
    pub sport: u16,
    pub dport: u16,
    pub comm: [u8; 16],
    /// Addresses in network order; IPv4 in the first 4 bytes.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub mark: u32,
    /// Packet length on the wire (skb->len).
    pub len: u32,
}
const _: () = assert!(core::mem::size_of::<LeakEvent>() == 80);

/// Indices of the per-CPU counters in `GUARD_STATS`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuardStat {
    /// Packets the guard let through (not steered, or excluded).
    Passed = 0,
    /// vpn's own encrypted UDP (bypass mark or tunnel port).
    Bypassed = 1,
    /// Plaintext packets of steered sources dropped.
    Dropped = 2,
    /// Leak events lost because the ring buffer was full.
    EventsLost = 3,
    /// Forwarded packets the ingress classifier marked.
    IngressMarked = 4,
    /// Forwarded packets an exclude rule left unmarked.
    IngressExcluded = 5,
    /// Datagrams to the tunnel port that look like WireGuard (XDP filter).
    XdpPassed = 6,
    /// Datagrams to the tunnel port the XDP filter dropped as malformed.
    XdpDropped = 7,
}

impl GuardStat {
    pub const COUNT: u32 = 8;
    pub const ALL: [GuardStat; Self::COUNT as usize] = [
        GuardStat::Passed,
        GuardStat::Bypassed,
        GuardStat::Dropped,
        GuardStat::EventsLost,
        GuardStat::IngressMarked,
        GuardStat::IngressExcluded,
        GuardStat::XdpPassed,
        GuardStat::XdpDropped,
    ];

    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            GuardStat::Passed => "guard_passed",
            GuardStat::Bypassed => "guard_bypassed",
            GuardStat::Dropped => "guard_dropped",
            GuardStat::EventsLost => "guard_events_lost",
            GuardStat::IngressMarked => "ingress_marked",
            GuardStat::IngressExcluded => "ingress_excluded",
            GuardStat::XdpPassed => "xdp_passed",
            GuardStat::XdpDropped => "xdp_dropped",
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: both are #[repr(C)], Copy, made only of u32 fields with no padding
    // (sizes asserted above), so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::SteerRule {}
    // SAFETY: as above: #[repr(C)], Copy, integer fields and byte arrays only,
    // no padding (sizes asserted next to each type).
    unsafe impl aya::Pod for super::GuardConfig {}
    unsafe impl aya::Pod for super::SourceKey {}
    unsafe impl aya::Pod for super::SourceCounters {}
    unsafe impl aya::Pod for super::SockOwner {}
    unsafe impl aya::Pod for super::LeakEvent {}
}

/// Names of the maps and programs of the per-process hooks (uid steering,
/// DNS redirection, IPv6 fail-fast).
pub mod sock_names {
    pub const STEER_UIDS: &str = "STEER_UIDS";
    pub const TUNNEL_INFO: &str = "TUNNEL_INFO";
    pub const SOCKADDR_STATS: &str = "SOCKADDR_STATS";
    pub const PROG_CONNECT4: &str = "vpn_connect4";
    pub const PROG_CONNECT6: &str = "vpn_connect6";
    pub const PROG_SENDMSG4: &str = "vpn_sendmsg4";
    pub const PROG_SENDMSG6: &str = "vpn_sendmsg6";
}

/// [`TunnelInfo::flags`]: the tunnel carries IPv4.
pub const TUNNEL_CARRIES_V4: u32 = 1;
/// [`TunnelInfo::flags`]: the tunnel carries IPv6.
pub const TUNNEL_CARRIES_V6: u32 = 2;
/// [`TunnelInfo::flags`]: full-tunnel mode: everything but excluded sources
/// (and the tunnel's own socket) enters the tunnel.
pub const TUNNEL_FULL: u32 = 4;

/// What the per-process hooks need to know of the tunnel, the only entry
/// (index 0) of `TUNNEL_INFO`: its resolvers (from `DNS=`) and families.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TunnelInfo {
    /// IPv4 resolver in network byte order as it sits in memory; 0: none.
    pub dns4: [u8; 4],
    /// IPv6 resolver; all zero: none.
    pub dns6: [u8; 16],
    /// `TUNNEL_CARRIES_V4 | TUNNEL_CARRIES_V6`. Steered IPv6 is refused at
    /// connect/sendmsg when the tunnel does not carry it (fail fast, no leak).
    pub flags: u32,
    pub _reserved: [u32; 2],
}
const _: () = assert!(core::mem::size_of::<TunnelInfo>() == 32);

/// Indices of the per-CPU counters in `SOCKADDR_STATS`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SockAddrStat {
    /// Steered DNS queries (port 53, UDP or TCP) sent to the tunnel's resolver.
    DnsRedirected = 0,
    /// Steered IPv6 connects/sends refused because the tunnel has no IPv6.
    Ipv6Refused = 1,
    /// Sockets steered by a uid rule (counted at creation).
    UidMarked = 2,
}

impl SockAddrStat {
    pub const COUNT: u32 = 3;
    pub const ALL: [SockAddrStat; Self::COUNT as usize] = [
        SockAddrStat::DnsRedirected,
        SockAddrStat::Ipv6Refused,
        SockAddrStat::UidMarked,
    ];

    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            SockAddrStat::DnsRedirected => "dns_redirected",
            SockAddrStat::Ipv6Refused => "ipv6_refused",
            SockAddrStat::UidMarked => "sockets_marked_by_uid",
        }
    }
}

#[cfg(feature = "user")]
mod sock_pod {
    // SAFETY: #[repr(C)], Copy, u8/u32 fields only, no padding (size asserted).
    unsafe impl aya::Pod for super::TunnelInfo {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_direct_sets_only_the_direct_bit() {
        let c = Config {
            mark: 0x1000_0000,
            mark_mask: 0x1000_0000,
            direct_mark: 0x2000_0000,
            ..Config::default()
        };
        assert_eq!(c.apply_direct(0x1000_0000 | 0xca6c), 0x2000_ca6c);
    }

    #[test]
    fn apply_mark_keeps_foreign_bits() {
        let c = Config {
            mark: 0x0100_0000,
            mark_mask: 0x0100_0000,
            ..Config::default()
        };
        assert_eq!(c.apply_mark(0), 0x0100_0000);
        assert_eq!(c.apply_mark(0x80000), 0x0108_0000);
        assert_eq!(c.apply_mark(0x0100_0000 | 0xca6c), 0x0100_ca6c);
    }

    #[test]
    fn steer_action_roundtrip() {
        for a in [SteerAction::Include, SteerAction::Exclude] {
            assert_eq!(SteerAction::from_u32(a as u32), Some(a));
        }
        assert_eq!(SteerAction::from_u32(0), None);
        assert_eq!(SteerAction::from_u32(3), None);
    }
}
