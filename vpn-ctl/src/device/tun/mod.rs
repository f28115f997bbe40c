//! The TUN device (`device/tun/`): `/dev/net/tun` in layer-3 mode without
//! packet info, with what its offloads need beside it.
//!
//! A [`Tun`] is one queue (one file descriptor) of a TUN link. It is always
//! non-blocking; use [`AsyncTun`] from tokio, or [`Tun::read_timeout`] /
//! [`Tun::write_blocking`] from a dedicated thread. With
//! [`TunOptions::multi_queue`] more queues of the same link can be opened with
//! [`Tun::open_queue`], one per core.
//!
//! With [`TunOptions::vnet_hdr`] every packet read or written is preceded by a
//! [`VirtioNetHdr`] ([`vnet`]) and the kernel may hand over TCP/UDP
//! super-packets of up to 64 KiB (TSO/USO), as upstream wireguard-go and
//! Tailscale do. The two halves of that offload sit next to the device:
//! [`gso`] splits what the kernel hands over, [`gro`] coalesces what the
//! tunnel opens into super-packets for the kernel.

pub mod gro;
pub mod gso;
pub mod vnet;

pub use gso::{gso_split, GsoError};
pub use vnet::VirtioNetHdr;

use std::{
    fs::{File, OpenOptions},
    io,
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd, RawFd},
        unix::fs::OpenOptionsExt,
    },
    time::{Duration, Instant},
};

use tokio::io::{unix::AsyncFd, Interest};

const TUN_PATH: &str = "/dev/net/tun";

// ioctl numbers from <linux/if_tun.h>: _IOW('T', n, int/unsigned int).
const TUNSETIFF: u64 = 0x4004_54ca;
const TUNSETOFFLOAD: u64 = 0x4004_54d0;
const TUNSETVNETHDRSZ: u64 = 0x4004_54d8;
const TUNGETIFF: u64 = 0x8004_54d2;

const IFF_TUN: i16 = 0x0001;
const IFF_NO_PI: i16 = 0x1000;
const IFF_MULTI_QUEUE: i16 = 0x0100;
const IFF_VNET_HDR: i16 = 0x4000;

const TUN_F_CSUM: u32 = 0x01;
const TUN_F_TSO4: u32 = 0x02;
const TUN_F_TSO6: u32 = 0x04;
const TUN_F_USO4: u32 = 0x20;
const TUN_F_USO6: u32 = 0x40;

/// Longest interface name (IFNAMSIZ - 1).
pub const MAX_NAME_LEN: usize = libc::IFNAMSIZ - 1;

/// Why a TUN could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TunError {
    /// No TUN driver or device node.
    #[error(
        "{TUN_PATH} does not exist: load the driver (`modprobe tun`) or create the node \
         (`mkdir -p /dev/net && mknod /dev/net/tun c 10 200`)"
    )]
    NoDevice(#[source] io::Error),
    /// Not allowed (needs root or CAP_NET_ADMIN).
    #[error("not permitted to {op}: run as root or with CAP_NET_ADMIN")]
    PermissionDenied {
        /// What was attempted.
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// The requested name is longer than the kernel allows.
    #[error("interface name {name:?} is longer than {MAX_NAME_LEN} bytes")]
    NameTooLong {
        /// The name.
        name: String,
    },
    /// The requested name is not a valid interface name.
    #[error("invalid interface name {name:?}")]
    InvalidName {
        /// The name.
        name: String,
    },
    /// The TUN exists and is in use by another process (single queue).
    #[error("TUN device {name:?} is busy (already opened by another process)")]
    Busy {
        /// The name.
        name: String,
        #[source]
        source: io::Error,
    },
    /// The name belongs to a device that is not a TUN of the same kind.
    #[error(
        "cannot attach to {name:?}: the name is used by a non-TUN device or a TUN \
         opened with other flags (multi-queue / vnet header)"
    )]
    NameInUse {
        /// The name.
        name: String,
        #[source]
        source: io::Error,
    },
    /// Any other failure.
    #[error("TUN: {op} failed")]
    Io {
        /// What was attempted.
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

/// How to open a TUN.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TunOptions {
    /// Interface name; `None` lets the kernel choose (`tun0`, `tun1`, ...).
    pub name: Option<String>,
    /// `IFF_MULTI_QUEUE`: allow more queues with [`Tun::open_queue`].
    pub multi_queue: bool,
    /// `IFF_VNET_HDR` plus TSO/USO offloads: packets carry a [`VirtioNetHdr`].
    pub vnet_hdr: bool,
}

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: i16,
    _pad: [u8; 22],
}

/// One queue of a TUN link (non-blocking file descriptor).
#[derive(Debug)]
pub struct Tun {
    file: File,
    name: String,
    ifindex: u32,
    flags: i16,
    offloads: u32,
}

fn validate_name(name: &str) -> Result<(), TunError> {
    if name.len() > MAX_NAME_LEN {
        return Err(TunError::NameTooLong {
            name: name.to_owned(),
        });
    }
    if name.is_empty()
        || name == "."
        || name == ".."
        || name
            .bytes()
            .any(|b| b == 0 || b == b'/' || b.is_ascii_whitespace())
    {
        return Err(TunError::InvalidName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

fn ioctl_ptr<T>(fd: RawFd, req: u64, arg: *mut T) -> io::Result<()> {
    // SAFETY: the caller passes an ioctl request whose argument is a pointer to
    // a properly sized, live T.
    let rc = unsafe { libc::ioctl(fd, req as _, arg) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn ioctl_val(fd: RawFd, req: u64, arg: libc::c_ulong) -> io::Result<()> {
    // SAFETY: request takes an integer argument by value.
    let rc = unsafe { libc::ioctl(fd, req as _, arg) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn wait_fd(fd: RawFd, events: libc::c_short, deadline: Option<Instant>) -> io::Result<bool> {
    loop {
        let timeout_ms = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(false);
                }
                i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX)
            }
        };
        let mut pfd = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if rc > 0 {
            return Ok(true);
        }
    }
}

impl Tun {
    /// Opens (or creates) a TUN link and attaches this queue.
    ///
    /// # Errors
    /// [`TunError`] naming the cause: no `/dev/net/tun`, not permitted, name
    /// too long, busy or used by another device kind.
    pub fn open(opts: &TunOptions) -> Result<Self, TunError> {
        let mut flags = IFF_TUN | IFF_NO_PI;
        if opts.multi_queue {
            flags |= IFF_MULTI_QUEUE;
        }
        if opts.vnet_hdr {
            flags |= IFF_VNET_HDR;
        }
        Self::attach(opts.name.as_deref(), flags)
    }

    fn attach(name: Option<&str>, flags: i16) -> Result<Self, TunError> {
        if let Some(n) = name {
            validate_name(n)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(TUN_PATH)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ENOENT | libc::ENODEV | libc::ENXIO) => TunError::NoDevice(e),
                Some(libc::EPERM | libc::EACCES) => TunError::PermissionDenied {
                    op: "open /dev/net/tun",
                    source: e,
                },
                _ => TunError::Io {
                    op: "open /dev/net/tun",
                    source: e,
                },
            })?;
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags,
            _pad: [0; 22],
        };
        if let Some(n) = name {
            req.name[..n.len()].copy_from_slice(n.as_bytes());
        }
        let shown = name.unwrap_or("<kernel-chosen>").to_owned();
        ioctl_ptr(file.as_raw_fd(), TUNSETIFF, &mut req).map_err(|e| match e.raw_os_error() {
            Some(libc::EPERM | libc::EACCES) => TunError::PermissionDenied {
                op: "create a TUN device (TUNSETIFF)",
                source: e,
            },
            Some(libc::EBUSY) => TunError::Busy {
                name: shown.clone(),
                source: e,
            },
            Some(libc::EINVAL) if name.is_some() => TunError::NameInUse {
                name: shown.clone(),
                source: e,
            },
            _ => TunError::Io {
                op: "TUNSETIFF",
                source: e,
            },
        })?;
        let len = req
            .name
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(req.name.len());
        let actual = String::from_utf8_lossy(&req.name[..len]).into_owned();
        let mut offloads = 0;
        if flags & IFF_VNET_HDR != 0 {
            let mut size: libc::c_int = VirtioNetHdr::LEN as libc::c_int;
            ioctl_ptr(file.as_raw_fd(), TUNSETVNETHDRSZ, &mut size).map_err(|e| TunError::Io {
                op: "TUNSETVNETHDRSZ",
                source: e,
            })?;
            let base = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
            let with_uso = base | TUN_F_USO4 | TUN_F_USO6;
            offloads = if ioctl_val(file.as_raw_fd(), TUNSETOFFLOAD, with_uso.into()).is_ok() {
                with_uso
            } else {
                ioctl_val(file.as_raw_fd(), TUNSETOFFLOAD, base.into()).map_err(|e| {
                    TunError::Io {
                        op: "TUNSETOFFLOAD",
                        source: e,
                    }
                })?;
                base
            };
        }
        let ifindex = crate::netlink::ifindex(&actual).ok_or_else(|| TunError::Io {
            op: "if_nametoindex",
            source: io::Error::last_os_error(),
        })?;
        Ok(Self {
            file,
            name: actual,
            ifindex,
            flags,
            offloads,
        })
    }

    /// Opens one more queue of this (multi-queue) link.
    ///
    /// # Errors
    /// As [`Tun::open`]; `NameInUse` if the link was not opened multi-queue.
    pub fn open_queue(&self) -> Result<Self, TunError> {
        Self::attach(Some(&self.name), self.flags)
    }

    /// The interface name the kernel gave the link.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The interface index.
    #[must_use]
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Whether the link still exists (`TUNGETIFF` fails with `EBADFD` once
    /// it was deleted). This holds wherever the link lives: it may have
    /// been moved to another network namespace, where its name and index
    /// are not visible from here.
    #[must_use]
    pub fn attached(&self) -> bool {
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: 0,
            _pad: [0; 22],
        };
        match ioctl_ptr(self.file.as_raw_fd(), TUNGETIFF, &mut req) {
            Ok(()) => true,
            Err(e) => e.raw_os_error() != Some(libc::EBADFD),
        }
    }

    /// Whether packets carry a [`VirtioNetHdr`].
    #[must_use]
    pub fn vnet_hdr(&self) -> bool {
        self.flags & IFF_VNET_HDR != 0
    }

    /// Whether the kernel may hand over UDP super-packets (USO) too, not only TCP.
    #[must_use]
    pub fn uso(&self) -> bool {
        self.offloads & TUN_F_USO4 != 0
    }

    /// Reads one packet without blocking (`WouldBlock` if none is queued).
    ///
    /// # Errors
    /// The read error.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: buf is valid for buf.len() bytes.
        let n = unsafe { libc::read(self.file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n.unsigned_abs())
        }
    }

    /// Writes one packet without blocking.
    ///
    /// # Errors
    /// The write error (`EINVAL` for a malformed packet).
    pub fn write(&self, packet: &[u8]) -> io::Result<usize> {
        // SAFETY: packet is valid for packet.len() bytes.
        let n = unsafe { libc::write(self.file.as_raw_fd(), packet.as_ptr().cast(), packet.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n.unsigned_abs())
        }
    }

    /// Writes one plain IP packet without blocking; in vnet-header mode a
    /// zero [`VirtioNetHdr`] (no offload) is put in front with `writev`, no copy.
    /// Returns the IP packet bytes written.
    ///
    /// # Errors
    /// The write error.
    pub fn write_ip(&self, packet: &[u8]) -> io::Result<usize> {
        if !self.vnet_hdr() {
            return self.write(packet);
        }
        let hdr = [0u8; VirtioNetHdr::LEN];
        let iov = [
            libc::iovec {
                iov_base: hdr.as_ptr().cast_mut().cast(),
                iov_len: hdr.len(),
            },
            libc::iovec {
                iov_base: packet.as_ptr().cast_mut().cast(),
                iov_len: packet.len(),
            },
        ];
        // SAFETY: both iovecs point at live buffers; writev only reads them.
        let n = unsafe { libc::writev(self.file.as_raw_fd(), iov.as_ptr(), 2) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n.unsigned_abs().saturating_sub(VirtioNetHdr::LEN))
        }
    }

    /// Blocking read for a dedicated thread: waits up to `timeout` (forever
    /// with `None`) for a packet. Times out with `ErrorKind::TimedOut`.
    ///
    /// # Errors
    /// The read or poll error, or `TimedOut`.
    pub fn read_timeout(&self, buf: &mut [u8], timeout: Option<Duration>) -> io::Result<usize> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            match self.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
            if !wait_fd(self.file.as_raw_fd(), libc::POLLIN, deadline)? {
                return Err(io::ErrorKind::TimedOut.into());
            }
        }
    }

    /// Blocking write for a dedicated thread (waits while the queue is full).
    ///
    /// # Errors
    /// The write or poll error.
    pub fn write_blocking(&self, packet: &[u8]) -> io::Result<usize> {
        loop {
            match self.write(packet) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
            wait_fd(self.file.as_raw_fd(), libc::POLLOUT, None)?;
        }
    }

    /// Wraps this queue for tokio; needs a runtime with IO enabled.
    ///
    /// # Errors
    /// If the fd cannot be registered with the reactor.
    pub fn into_async(self) -> io::Result<AsyncTun> {
        // SAFETY: the Tun owns its fd and never closes or replaces it while
        // the AsyncFd holds it.
        let fd = unsafe {
            AsyncFd::register_with_interest(self, Interest::READABLE | Interest::WRITABLE)
        }?;
        Ok(AsyncTun { fd })
    }
}

impl AsFd for Tun {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl AsRawFd for Tun {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// A TUN queue driven by tokio.
#[derive(Debug)]
pub struct AsyncTun {
    fd: AsyncFd<Tun>,
}

impl AsyncTun {
    /// The queue.
    #[must_use]
    pub fn get_ref(&self) -> &Tun {
        self.fd.get_ref()
    }

    /// Gives the queue back (deregistered from tokio).
    #[must_use]
    pub fn into_inner(self) -> Tun {
        self.fd.into_inner()
    }

    /// Reads one packet, waiting until one arrives.
    ///
    /// # Errors
    /// The read error.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| fd.get_ref().read(buf)) {
                Ok(r) => return r,
                Err(_would_block) => {}
            }
        }
    }

    /// Writes one packet, waiting while the queue is full.
    ///
    /// # Errors
    /// The write error.
    pub async fn send(&self, packet: &[u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| fd.get_ref().write(packet)) {
                Ok(r) => return r,
                Err(_would_block) => {}
            }
        }
    }

    /// Writes one plain IP packet (see [`Tun::write_ip`]), waiting while the
    /// queue is full.
    ///
    /// # Errors
    /// The write error.
    pub async fn send_ip(&self, packet: &[u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.writable().await?;
            if let Ok(r) = guard.try_io(|fd| fd.get_ref().write_ip(packet)) {
                return r;
            }
        }
    }

    /// Waits until a read would not block.
    ///
    /// # Errors
    /// Reactor errors.
    pub async fn readable(&self) -> io::Result<()> {
        self.fd.readable().await.map(|mut g| g.retain_ready())
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};

    use super::*;
    use crate::netlink::testns::TestNs;

    fn checksum(data: &[u8]) -> u16 {
        let mut sum = 0u32;
        for c in data.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], 0])
            };
            sum += u32::from(w);
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !u16::try_from(sum).unwrap()
    }

    /// IPv4 + UDP (checksum 0), `payload`.
    fn udp4(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
        let total = 28 + payload.len();
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&u16::try_from(total).unwrap().to_be_bytes());
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&src.ip().octets());
        p[16..20].copy_from_slice(&dst.ip().octets());
        let c = checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p[20..22].copy_from_slice(&src.port().to_be_bytes());
        p[22..24].copy_from_slice(&dst.port().to_be_bytes());
        p[24..26].copy_from_slice(&u16::try_from(8 + payload.len()).unwrap().to_be_bytes());
        p[28..].copy_from_slice(payload);
        p
    }

    /// Reads until an IPv4 UDP packet to `dst` shows up (skips IPv6 noise).
    fn read_udp_to(tun: &Tun, dst: SocketAddrV4, skip: usize) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no packet to {dst} on the tun");
            let n = match tun.read_timeout(&mut buf, Some(left)) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::TimedOut => continue,
                Err(e) => panic!("tun read: {e}"),
            };
            let p = &buf[skip..n];
            if p.len() >= 28
                && p[0] >> 4 == 4
                && p[9] == 17
                && p[16..20] == dst.ip().octets()
                && p[22..24] == dst.port().to_be_bytes()
            {
                return p.to_vec();
            }
        }
    }

    fn setup(ns: &TestNs, name: &str) {
        ns.ip(&["addr", "add", "100.64.0.1/24", "dev", name]);
        ns.ip(&["link", "set", name, "up"]);
    }

    #[test]
    fn tun_roundtrip_blocking() {
        let ns = TestNs::new();
        let tun = ns.run(|| {
            Tun::open(&TunOptions {
                name: Some("vpnt0".into()),
                ..TunOptions::default()
            })
            .unwrap()
        });
        assert_eq!(tun.name(), "vpnt0");
        let links = ns.ip_json(&["link", "show", "vpnt0"]);
        assert_eq!(links[0]["ifindex"].as_u64(), Some(u64::from(tun.ifindex())));
        setup(&ns, "vpnt0");
        ns.run(|| {
            let sock = UdpSocket::bind("100.64.0.1:0").unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let me = match sock.local_addr().unwrap() {
                std::net::SocketAddr::V4(a) => a,
                std::net::SocketAddr::V6(_) => unreachable!(),
            };
            let peer = SocketAddrV4::new(Ipv4Addr::new(100, 64, 0, 2), 9999);
            // App -> tun.
            sock.send_to(b"hello tun", peer).unwrap();
            let p = read_udp_to(&tun, peer, 0);
            assert_eq!(&p[28..], b"hello tun");
            assert_eq!(p[12..16], me.ip().octets());
            // tun -> app.
            let pkt = udp4(peer, me, b"hello app");
            assert_eq!(tun.write_blocking(&pkt).unwrap(), pkt.len());
            let mut buf = [0u8; 64];
            let (n, from) = sock.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"hello app");
            assert_eq!(from, std::net::SocketAddr::V4(peer));
            // Nothing else queued for us: times out in bounded time.
            let t0 = Instant::now();
            let mut big = [0u8; 2048];
            loop {
                match tun.read_timeout(&mut big, Some(Duration::from_millis(100))) {
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => break,
                    Ok(_) => assert!(t0.elapsed() < Duration::from_secs(5)),
                    Err(e) => panic!("{e}"),
                }
            }
        });
    }

    #[test]
    fn tun_roundtrip_async_kernel_name() {
        let ns = TestNs::new();
        let tun = ns.run(|| Tun::open(&TunOptions::default()).unwrap());
        assert!(tun.name().starts_with("tun"), "{}", tun.name());
        let name = tun.name().to_owned();
        setup(&ns, &name);
        ns.block_on(|| async move {
            let tun = tun.into_async().unwrap();
            let sock = tokio::net::UdpSocket::bind("100.64.0.1:0").await.unwrap();
            let std::net::SocketAddr::V4(me) = sock.local_addr().unwrap() else {
                unreachable!()
            };
            let peer = SocketAddrV4::new(Ipv4Addr::new(100, 64, 0, 7), 4242);
            sock.send_to(b"async out", peer).await.unwrap();
            let mut buf = vec![0u8; 2048];
            loop {
                let n = tun.recv(&mut buf).await.unwrap();
                let p = &buf[..n];
                if p[0] >> 4 == 4 && p[9] == 17 && p[16..20] == peer.ip().octets() {
                    assert_eq!(&p[28..], b"async out");
                    break;
                }
            }
            let pkt = udp4(peer, me, b"async in");
            tun.send(&pkt).await.unwrap();
            let (n, _) = sock.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"async in");
            let pkt = udp4(peer, me, b"async ip");
            assert_eq!(tun.send_ip(&pkt).await.unwrap(), pkt.len());
            let (n, _) = sock.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"async ip");
        });
    }

    #[test]
    fn tun_errors_and_queues() {
        let ns = TestNs::new();
        ns.run(|| {
            let long = "a".repeat(16);
            let e = Tun::open(&TunOptions {
                name: Some(long),
                ..TunOptions::default()
            })
            .unwrap_err();
            assert!(matches!(e, TunError::NameTooLong { .. }), "{e}");
            let e = Tun::open(&TunOptions {
                name: Some("a/b".into()),
                ..TunOptions::default()
            })
            .unwrap_err();
            assert!(matches!(e, TunError::InvalidName { .. }), "{e}");

            let one = Tun::open(&TunOptions {
                name: Some("vpnt1".into()),
                ..TunOptions::default()
            })
            .unwrap();
            let e = Tun::open(&TunOptions {
                name: Some("vpnt1".into()),
                ..TunOptions::default()
            })
            .unwrap_err();
            assert!(matches!(e, TunError::Busy { .. }), "{e}");
            let e = Tun::open(&TunOptions {
                name: Some("lo".into()),
                ..TunOptions::default()
            })
            .unwrap_err();
            assert!(matches!(e, TunError::NameInUse { .. }), "{e}");
            drop(one);

            let q0 = Tun::open(&TunOptions {
                name: Some("vpnt2".into()),
                multi_queue: true,
                ..TunOptions::default()
            })
            .unwrap();
            let q1 = q0.open_queue().unwrap();
            assert_eq!(q1.name(), "vpnt2");
            assert_eq!(q1.ifindex(), q0.ifindex());
        });
        // No-device message tells what to do.
        let msg = TunError::NoDevice(io::ErrorKind::NotFound.into()).to_string();
        assert!(
            msg.contains("modprobe tun") && msg.contains("mknod"),
            "{msg}"
        );
    }

    #[test]
    fn tun_vnet_hdr() {
        let ns = TestNs::new();
        let tun = ns.run(|| {
            Tun::open(&TunOptions {
                name: Some("vpnt3".into()),
                vnet_hdr: true,
                ..TunOptions::default()
            })
            .unwrap()
        });
        assert!(tun.vnet_hdr());
        setup(&ns, "vpnt3");
        let feats = ns.ip(&["-d", "link", "show", "vpnt3"]);
        assert!(feats.contains("vnet_hdr"), "{feats}");
        ns.run(|| {
            let sock = UdpSocket::bind("100.64.0.1:0").unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let std::net::SocketAddr::V4(me) = sock.local_addr().unwrap() else {
                unreachable!()
            };
            let peer = SocketAddrV4::new(Ipv4Addr::new(100, 64, 0, 2), 9999);
            sock.send_to(b"with header", peer).unwrap();
            let p = read_udp_to(&tun, peer, VirtioNetHdr::LEN);
            assert_eq!(&p[28..], b"with header");
            let mut pkt = vec![0u8; VirtioNetHdr::LEN];
            VirtioNetHdr::default().write(&mut pkt);
            pkt.extend_from_slice(&udp4(peer, me, b"back"));
            tun.write_blocking(&pkt).unwrap();
            let mut buf = [0u8; 64];
            let (n, _) = sock.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"back");
            let plain = udp4(peer, me, b"plain ip");
            assert_eq!(tun.write_ip(&plain).unwrap(), plain.len());
            let (n, _) = sock.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"plain ip");
        });
    }

    /// A UDP GSO send routed into a vnet-header TUN arrives as one USO
    /// super-packet (or as plain packets if the kernel segmented it); either
    /// way the split yields the original datagrams with valid checksums.
    #[test]
    fn tun_uso_super_packet_split() {
        let ns = TestNs::new();
        let tun = ns.run(|| {
            Tun::open(&TunOptions {
                name: Some("vpnt4".into()),
                vnet_hdr: true,
                ..TunOptions::default()
            })
            .unwrap()
        });
        setup(&ns, "vpnt4");
        let uso = tun.uso();
        let (supers, datagrams) = ns.block_on(|| async move {
            let tun = tun.into_async().unwrap();
            let sock = crate::device::udp::UdpSocket::bind(
                "100.64.0.1:0".parse().unwrap(),
                &crate::device::udp::UdpOptions::default(),
            )
            .unwrap();
            let peer: std::net::SocketAddr = "100.64.0.2:7777".parse().unwrap();
            let train: Vec<u8> = (0..8 * 1200 + 77)
                .map(|i| u8::try_from(i % 199).unwrap())
                .collect();
            let mut batch = crate::device::udp::SendBatch::new(1, 65536);
            assert!(batch.push_gso(&train, peer, Some(1200)));
            sock.send_batch(&mut batch).await.unwrap();
            let mut buf = vec![0u8; 65536 + VirtioNetHdr::LEN];
            let mut bufs = vec![vec![0u8; 2048]; 64];
            let mut sizes = [0usize; 64];
            let (mut supers, mut got) = (0, Vec::new());
            let deadline = Instant::now() + Duration::from_secs(5);
            while got.len() < train.len() {
                assert!(Instant::now() < deadline, "datagrams missing");
                let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_secs(5), tun.recv(&mut buf)).await
                else {
                    panic!("tun read");
                };
                let hdr = VirtioNetHdr::parse(&buf[..n]).unwrap();
                let pkt = &buf[VirtioNetHdr::LEN..n];
                if pkt[0] >> 4 != 4 || pkt[9] != 17 {
                    continue;
                }
                if hdr.gso_type != VirtioNetHdr::GSO_NONE {
                    assert_eq!(hdr.gso_type, VirtioNetHdr::GSO_UDP_L4);
                    assert_eq!(hdr.gso_size, 1200);
                    supers += 1;
                }
                let mut outs: Vec<&mut [u8]> = bufs.iter_mut().map(Vec::as_mut_slice).collect();
                let k = gso_split(&hdr, pkt, &mut outs, &mut sizes, 0).unwrap();
                for i in 0..k {
                    let seg = &outs[i][..sizes[i]];
                    let (l4, proto) = gso::tests::verify_checksums(seg);
                    assert_eq!(proto, 17);
                    got.extend_from_slice(&seg[l4 + 8..]);
                }
            }
            assert_eq!(got, train);
            (supers, got.len())
        });
        eprintln!("USO offered: {uso}, super-packets read: {supers}, bytes: {datagrams}");
        if uso {
            assert!(supers > 0, "expected a USO super-packet");
        }
    }
}
