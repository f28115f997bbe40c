//! Leak events: the guard's ring buffer of blocked packets ([`Events`]) and
//! their one-line form for people ([`Leak`]), as `vpn-ctl watch` prints
//! them.
use std::{
    fmt, io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd,
    path::Path,
    time::Duration,
};

use aya::{
    maps::{Map, MapData, RingBuf},
    Ebpf,
};
use vpn_common::{names, LeakEvent, LeakReason};

use super::{
    guard::ifname,
    object::{self, map_err, BpfError},
};

/// The leak-event ring buffer.
pub struct Events {
    ring: RingBuf<MapData>,
}

impl Events {
    /// A reader of the object's `LEAK_EVENTS`. With `pin_dir` the ring is
    /// pinned there, left in the object and read through the pin (dropping
    /// the reader early is harmless); without, it is taken out of the object
    /// and must outlive [`super::guard::load_programs`].
    pub fn take(bpf: &mut Ebpf, pin_dir: Option<&Path>) -> Result<Self, BpfError> {
        if let Some(dir) = pin_dir {
            object::pin_in_place(bpf, names::LEAK_EVENTS, dir)?;
            return Self::open(dir);
        }
        let map = bpf
            .take_map(names::LEAK_EVENTS)
            .ok_or(BpfError::Missing(names::LEAK_EVENTS))?;
        Self::from_map(map)
    }

    /// Opens the pinned ring buffer (one reader at a time consumes it).
    pub fn open(pin_dir: &Path) -> Result<Self, BpfError> {
        Self::from_map(object::open_pinned(pin_dir, names::LEAK_EVENTS)?)
    }

    fn from_map(map: Map) -> Result<Self, BpfError> {
        Ok(Self {
            ring: RingBuf::try_from(map).map_err(map_err(names::LEAK_EVENTS))?,
        })
    }

    /// The next queued event, without blocking.
    pub fn try_next(&mut self) -> Option<LeakEvent> {
        loop {
            let item = self.ring.next()?;
            if item.len() < std::mem::size_of::<LeakEvent>() {
                continue;
            }
            // SAFETY: LeakEvent is Pod-like (u8/u16/u32/u64 fields and byte
            // arrays, no padding) and the record holds at least its size.
            return Some(unsafe { item.as_ptr().cast::<LeakEvent>().read_unaligned() });
        }
    }

    /// Waits until an event is queued or `timeout` passes; true if readable.
    pub fn wait(&self, timeout: Duration) -> io::Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.ring.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n > 0)
    }

    /// Every event that arrives within `timeout` (stops early at `max`).
    pub fn collect(&mut self, timeout: Duration, max: usize) -> io::Result<Vec<LeakEvent>> {
        let deadline = std::time::Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < max {
            while let Some(e) = self.try_next() {
                out.push(e);
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() || out.len() >= max || !self.wait(left)? {
                break;
            }
        }
        Ok(out)
    }
}

/// A leak event for humans, e.g.
/// `blocked: pid 4242 (curl) in cgroup 871 → 198.18.9.9:443 via eth0 (tcp, steered by cgroup)`.
/// The uplink's name is looked up in the caller's network namespace; use
/// [`Leak::via`] when the uplink lives in another one.
pub struct Leak<'a>(pub &'a LeakEvent);

/// [`Leak`] with the uplink's name given.
pub struct LeakVia<'a> {
    event: &'a LeakEvent,
    ifname: &'a str,
}

fn event_addr(family: u16, bytes: &[u8; 16]) -> IpAddr {
    if family == libc::AF_INET6 as u16 {
        IpAddr::V6(Ipv6Addr::from(*bytes))
    } else {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    }
}

fn with_port(addr: IpAddr, port: u16) -> String {
    match (addr, port) {
        (a, 0) => a.to_string(),
        (IpAddr::V4(a), p) => format!("{a}:{p}"),
        (IpAddr::V6(a), p) => format!("[{a}]:{p}"),
    }
}

fn proto_name(proto: u8) -> String {
    match proto {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        p => format!("proto {p}"),
    }
}

/// The NUL-terminated command name of an event.
#[must_use]
pub fn comm(ev: &LeakEvent) -> String {
    let end = ev
        .comm
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(ev.comm.len());
    String::from_utf8_lossy(&ev.comm[..end]).into_owned()
}

impl<'a> Leak<'a> {
    /// Names the uplink `ifname` instead of looking its index up.
    #[must_use]
    pub fn via(self, ifname: &'a str) -> LeakVia<'a> {
        LeakVia {
            event: self.0,
            ifname,
        }
    }

    #[must_use]
    pub fn source(&self) -> IpAddr {
        event_addr(self.0.family, &self.0.saddr)
    }

    #[must_use]
    pub fn destination(&self) -> IpAddr {
        event_addr(self.0.family, &self.0.daddr)
    }
}

impl fmt::Display for Leak<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let via = ifname(self.0.ifindex).unwrap_or_else(|| format!("ifindex {}", self.0.ifindex));
        write_leak(f, self.0, &via)
    }
}

impl fmt::Display for LeakVia<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_leak(f, self.event, self.ifname)
    }
}

fn write_leak(f: &mut fmt::Formatter<'_>, ev: &LeakEvent, via: &str) -> fmt::Result {
    let leak = Leak(ev);
    write!(f, "blocked: ")?;
    if ev.pid != 0 {
        write!(f, "pid {} ({}) ", ev.pid, comm(ev))?;
    }
    if ev.cgroup_id != 0 {
        write!(f, "in cgroup {} ", ev.cgroup_id)?;
    }
    if ev.pid == 0 && ev.cgroup_id == 0 {
        write!(f, "{} ", leak.source())?;
    }
    let reason = LeakReason::from_u8(ev.reason).map_or("?", LeakReason::name);
    write!(
        f,
        "→ {} via {via} ({}, steered by {reason})",
        with_port(leak.destination(), ev.dport),
        proto_name(ev.proto)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leak_lines_read_well() {
        let mut ev = LeakEvent {
            cgroup_id: 871,
            pid: 4242,
            ifindex: 1,
            family: 2,
            proto: 6,
            reason: LeakReason::Cgroup as u8,
            sport: 40000,
            dport: 443,
            ..LeakEvent::default()
        };
        ev.comm[..4].copy_from_slice(b"curl");
        ev.daddr[..4].copy_from_slice(&[198, 18, 9, 9]);
        assert_eq!(
            Leak(&ev).to_string(),
            "blocked: pid 4242 (curl) in cgroup 871 → 198.18.9.9:443 via lo (tcp, steered by cgroup)"
        );
        ev.pid = 0;
        ev.cgroup_id = 0;
        ev.saddr[..4].copy_from_slice(&[10, 9, 0, 5]);
        ev.ifindex = 0;
        assert_eq!(
            Leak(&ev).to_string(),
            "blocked: 10.9.0.5 → 198.18.9.9:443 via ifindex 0 (tcp, steered by cgroup)"
        );
    }
}
