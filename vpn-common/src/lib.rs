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
    pub _reserved: u32,
}
const _: () = assert!(core::mem::size_of::<Config>() == 16);

impl Config {
    /// Applies vpn's mark to an existing mark value, preserving foreign bits.
    #[must_use]
    pub const fn apply_mark(&self, current: u32) -> u32 {
        (current & !self.mark_mask) | (self.mark & self.mark_mask)
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

#[cfg(feature = "user")]
mod pod {
    // SAFETY: both are #[repr(C)], Copy, made only of u32 fields with no padding
    // (sizes asserted above), so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::SteerRule {}
}

#[cfg(test)]
mod tests {
    use super::*;

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
