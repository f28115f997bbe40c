//! UDP sockets for the tunnel underlay (`device/udp/`).
//!
//! One socket per address family (IPv6 with `IPV6_V6ONLY`), both on the same
//! port as wireguard-go does ([`bind_dual`]). Sockets are non-blocking and
//! registered with tokio; datagrams move in batches with `recvmmsg` /
//! `sendmmsg` through preallocated [`RecvBatch`] / [`SendBatch`] buffers
//! ([`batch`]), so the data path allocates nothing per packet.
//!
//! Buffers are raised with `SO_RCVBUFFORCE` / `SO_SNDBUFFORCE` (falling back
//! to the `rmem_max`-capped `SO_RCVBUF` / `SO_SNDBUF`), the bypass mark is set
//! with `SO_MARK`, UDP GRO (`UDP_GRO`: coalesced datagrams with their segment
//! size) can be enabled on receive, and GSO (`UDP_SEGMENT`) used per send.

pub mod batch;

pub use batch::{RecvBatch, RecvPacket, SendBatch};

use std::{
    io,
    mem::{size_of, MaybeUninit},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
    ptr,
};

use tokio::io::{unix::AsyncFd, Interest};

const SOL_UDP: libc::c_int = 17;
const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;

/// Socket buffer size asked for by default (gotatun uses 7 MiB).
pub const DEFAULT_BUFFER_SIZE: usize = 7 << 20;

/// Largest UDP payload in one (possibly GRO-coalesced) receive.
pub const MAX_GRO_SIZE: usize = 65_535;

/// Why a socket could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("UDP: {op} failed")]
pub struct UdpError {
    /// What was attempted, e.g. "bind [::]:51820".
    pub op: String,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

impl UdpError {
    fn new(op: impl Into<String>, source: io::Error) -> Self {
        Self {
            op: op.into(),
            source,
        }
    }
}

/// Socket settings applied at bind time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpOptions {
    /// Receive and send buffer size to ask for (the kernel reports double).
    pub buffer_size: usize,
    /// `SO_MARK` for outgoing packets (the tunnel's bypass mark).
    pub fwmark: Option<u32>,
    /// Enable UDP GRO on receive; receive slots should then be
    /// [`MAX_GRO_SIZE`] bytes.
    pub gro: bool,
}

impl Default for UdpOptions {
    fn default() -> Self {
        Self {
            buffer_size: DEFAULT_BUFFER_SIZE,
            fwmark: None,
            gro: false,
        }
    }
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, val: &T) -> io::Result<()> {
    // SAFETY: val points to a live T of the given size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            ptr::from_ref(val).cast(),
            socklen_of::<T>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn getsockopt_int(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut val: libc::c_int = 0;
    let mut len = socklen_of::<libc::c_int>();
    // SAFETY: val and len are live and sized.
    let rc = unsafe { libc::getsockopt(fd, level, name, ptr::from_mut(&mut val).cast(), &mut len) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(val)
    }
}

fn socklen_of<T>() -> libc::socklen_t {
    libc::socklen_t::try_from(size_of::<T>()).expect("small type")
}

/// `SocketAddr` to a `sockaddr_storage` and its length.
fn to_sockaddr(addr: SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { ptr::write(ptr::from_mut(out).cast::<libc::sockaddr_in>(), sin) };
            socklen_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo().to_be(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { ptr::write(ptr::from_mut(out).cast::<libc::sockaddr_in6>(), sin6) };
            socklen_of::<libc::sockaddr_in6>()
        }
    }
}

/// A `sockaddr_storage` filled by the kernel to a `SocketAddr`.
fn from_sockaddr(ss: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    match libc::c_int::from(ss.ss_family) {
        libc::AF_INET if len >= socklen_of::<libc::sockaddr_in>() => {
            // SAFETY: family and length say this is a sockaddr_in.
            let sin = unsafe { &*ptr::from_ref(ss).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= socklen_of::<libc::sockaddr_in6>() => {
            // SAFETY: family and length say this is a sockaddr_in6.
            let sin6 = unsafe { &*ptr::from_ref(ss).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                u32::from_be(sin6.sin6_flowinfo),
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: all-zero is a valid sockaddr_storage.
    unsafe { MaybeUninit::zeroed().assume_init() }
}

/// A non-blocking UDP socket registered with tokio.
#[derive(Debug)]
pub struct UdpSocket {
    fd: AsyncFd<OwnedFd>,
    local: SocketAddr,
    gro: bool,
    gso: bool,
}

impl UdpSocket {
    /// Creates a socket bound to `addr` (port 0 picks one) with `opts`.
    /// IPv6 sockets are `IPV6_V6ONLY`. Must run inside a tokio runtime.
    ///
    /// # Errors
    /// [`UdpError`] naming the step that failed (socket, bind, buffers, mark).
    pub fn bind(addr: SocketAddr, opts: &UdpOptions) -> Result<Self, UdpError> {
        let domain = if addr.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        // SAFETY: plain socket(2).
        let raw = unsafe {
            libc::socket(
                domain,
                libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::IPPROTO_UDP,
            )
        };
        if raw < 0 {
            return Err(UdpError::new(
                format!("create socket for {addr}"),
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: raw is a fresh fd we own.
        let owned = unsafe { OwnedFd::from_raw_fd(raw) };
        let fd = owned.as_raw_fd();
        if addr.is_ipv6() {
            setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, &1i32)
                .map_err(|e| UdpError::new("set IPV6_V6ONLY", e))?;
        }
        let size = libc::c_int::try_from(opts.buffer_size).unwrap_or(libc::c_int::MAX);
        for (force, plain, what) in [
            (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, "receive"),
            (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, "send"),
        ] {
            if setsockopt(fd, libc::SOL_SOCKET, force, &size).is_err() {
                // Without CAP_NET_ADMIN: capped by net.core.[rw]mem_max.
                setsockopt(fd, libc::SOL_SOCKET, plain, &size)
                    .map_err(|e| UdpError::new(format!("set {what} buffer to {size}"), e))?;
            }
        }
        if let Some(mark) = opts.fwmark {
            setsockopt(fd, libc::SOL_SOCKET, libc::SO_MARK, &mark)
                .map_err(|e| UdpError::new(format!("set SO_MARK {mark:#x}"), e))?;
        }
        let gro = opts.gro && setsockopt(fd, SOL_UDP, UDP_GRO, &1i32).is_ok();
        let gso = getsockopt_int(fd, SOL_UDP, UDP_SEGMENT).is_ok();

        let mut ss = zeroed_storage();
        let len = to_sockaddr(addr, &mut ss);
        // SAFETY: ss holds a sockaddr of length len.
        let rc = unsafe { libc::bind(fd, ptr::from_ref(&ss).cast(), len) };
        if rc < 0 {
            return Err(UdpError::new(
                format!("bind {addr}"),
                io::Error::last_os_error(),
            ));
        }
        let mut ss = zeroed_storage();
        let mut len = socklen_of::<libc::sockaddr_storage>();
        // SAFETY: ss and len are live and sized.
        let rc = unsafe { libc::getsockname(fd, ptr::from_mut(&mut ss).cast(), &mut len) };
        if rc < 0 {
            return Err(UdpError::new("getsockname", io::Error::last_os_error()));
        }
        let local = from_sockaddr(&ss, len).unwrap_or(addr);
        // SAFETY: the OwnedFd is moved into the AsyncFd and only closed when
        // it is dropped with it.
        let fd = unsafe {
            AsyncFd::register_with_interest(owned, Interest::READABLE | Interest::WRITABLE)
        }
        .map_err(|e| UdpError::new("register with tokio", e.into()))?;
        Ok(Self {
            fd,
            local,
            gro,
            gso,
        })
    }

    /// The bound address (with the port the kernel picked).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Whether UDP GRO is on: received slots may hold several datagrams.
    #[must_use]
    pub fn gro_enabled(&self) -> bool {
        self.gro
    }

    /// Whether the kernel supports UDP GSO (`UDP_SEGMENT`) sends.
    #[must_use]
    pub fn gso_supported(&self) -> bool {
        self.gso
    }

    fn raw(&self) -> RawFd {
        self.fd.get_ref().as_raw_fd()
    }

    /// Sets `SO_MARK` (needs CAP_NET_ADMIN).
    ///
    /// # Errors
    /// The setsockopt error.
    pub fn set_mark(&self, mark: u32) -> io::Result<()> {
        setsockopt(self.raw(), libc::SOL_SOCKET, libc::SO_MARK, &mark)
    }

    /// The current `SO_MARK`.
    ///
    /// # Errors
    /// The getsockopt error.
    pub fn mark(&self) -> io::Result<u32> {
        getsockopt_int(self.raw(), libc::SOL_SOCKET, libc::SO_MARK).map(i32::cast_unsigned)
    }

    /// The receive buffer size as the kernel reports it (twice what was set).
    ///
    /// # Errors
    /// The getsockopt error.
    pub fn recv_buffer_size(&self) -> io::Result<usize> {
        getsockopt_int(self.raw(), libc::SOL_SOCKET, libc::SO_RCVBUF)
            .map(|v| usize::try_from(v).unwrap_or_default())
    }

    /// The send buffer size as the kernel reports it (twice what was set).
    ///
    /// # Errors
    /// The getsockopt error.
    pub fn send_buffer_size(&self) -> io::Result<usize> {
        getsockopt_int(self.raw(), libc::SOL_SOCKET, libc::SO_SNDBUF)
            .map(|v| usize::try_from(v).unwrap_or_default())
    }

    /// Receives as many datagrams as are queued (up to the batch's capacity)
    /// without waiting; `WouldBlock` if none.
    ///
    /// # Errors
    /// The recvmmsg error.
    pub fn try_recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        batch.recv(self.raw())
    }

    /// Waits for datagrams and receives a batch of them.
    ///
    /// # Errors
    /// The recvmmsg error.
    pub async fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            if let Ok(r) = guard.try_io(|fd| batch.recv(fd.get_ref().as_raw_fd())) {
                return r;
            }
        }
    }

    /// Sends queued datagrams without waiting; returns how many left. Sent
    /// datagrams leave the batch (it is cleared once empty). If a datagram is
    /// refused (e.g. unreachable, wrong family), it is dropped from the batch
    /// and its error returned; call again for the rest.
    ///
    /// # Errors
    /// `WouldBlock` when the send buffer is full, or the refusal.
    pub fn try_send_batch(&self, batch: &mut SendBatch) -> io::Result<usize> {
        batch.send(self.raw())
    }

    /// Sends every queued datagram, waiting for buffer space as needed.
    /// Returns how many were sent.
    ///
    /// # Errors
    /// The first refusal (that datagram is dropped; the rest stay queued).
    pub async fn send_batch(&self, batch: &mut SendBatch) -> io::Result<usize> {
        let mut total = 0;
        while !batch.is_empty() {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| batch.send(fd.get_ref().as_raw_fd())) {
                Ok(Ok(n)) => total += n,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
        Ok(total)
    }

    /// Sends one datagram.
    ///
    /// # Errors
    /// The sendto error.
    pub async fn send_to(&self, buf: &[u8], dst: SocketAddr) -> io::Result<usize> {
        let mut ss = zeroed_storage();
        let len = to_sockaddr(dst, &mut ss);
        self.fd
            .async_io(Interest::WRITABLE, |fd| {
                // SAFETY: buf and ss are live for the call.
                let n = unsafe {
                    libc::sendto(
                        fd.as_raw_fd(),
                        buf.as_ptr().cast(),
                        buf.len(),
                        0,
                        ptr::from_ref(&ss).cast(),
                        len,
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n.unsigned_abs())
                }
            })
            .await
    }

    /// Receives one datagram (with GRO on, possibly several coalesced).
    ///
    /// # Errors
    /// The recvfrom error.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.fd
            .async_io(Interest::READABLE, |fd| {
                let mut ss = zeroed_storage();
                let mut len = socklen_of::<libc::sockaddr_storage>();
                // SAFETY: buf, ss and len are live for the call.
                let n = unsafe {
                    libc::recvfrom(
                        fd.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                        ptr::from_mut(&mut ss).cast(),
                        &mut len,
                    )
                };
                if n < 0 {
                    return Err(io::Error::last_os_error());
                }
                let from = from_sockaddr(&ss, len)
                    .ok_or_else(|| io::Error::other("unknown source address family"))?;
                Ok((n.unsigned_abs(), from))
            })
            .await
    }
}

impl AsFd for UdpSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.get_ref().as_fd()
    }
}

/// The two underlay sockets on one port.
#[derive(Debug)]
pub struct DualStack {
    /// The IPv4 socket (`0.0.0.0:port`).
    pub v4: UdpSocket,
    /// The IPv6 socket (`[::]:port`), absent if the host has no IPv6.
    pub v6: Option<UdpSocket>,
}

impl DualStack {
    /// The shared port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.v4.local_addr().port()
    }

    /// The socket for sending to `dst`.
    #[must_use]
    pub fn for_dst(&self, dst: SocketAddr) -> Option<&UdpSocket> {
        if dst.is_ipv4() {
            Some(&self.v4)
        } else {
            self.v6.as_ref()
        }
    }
}

/// Binds `0.0.0.0:port` and `[::]:port`. With port 0 the kernel picks the
/// IPv4 port and IPv6 takes the same one, retrying a few times if that port
/// is taken for IPv6 (as wireguard-go does). IPv6 is skipped if the host has
/// none.
///
/// # Errors
/// [`UdpError`] from the failing bind or option.
pub fn bind_dual(port: u16, opts: &UdpOptions) -> Result<DualStack, UdpError> {
    let mut last = None;
    for _ in 0..if port == 0 { 100 } else { 1 } {
        let v4 = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port).into(), opts)?;
        let p = v4.local_addr().port();
        match UdpSocket::bind((Ipv6Addr::UNSPECIFIED, p).into(), opts) {
            Ok(v6) => return Ok(DualStack { v4, v6: Some(v6) }),
            Err(e) if e.source.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
                return Ok(DualStack { v4, v6: None });
            }
            Err(e) if port == 0 && e.source.raw_os_error() == Some(libc::EADDRINUSE) => {
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| UdpError::new("bind", io::ErrorKind::AddrInUse.into())))
}

#[cfg(test)]
mod tests {
    use std::{net::IpAddr, time::Duration};

    use super::*;
    use crate::netlink::testns::TestNs;

    async fn recv_all(
        sock: &UdpSocket,
        batch: &mut RecvBatch,
        want: usize,
    ) -> Vec<(Vec<u8>, SocketAddr, usize)> {
        let mut got = Vec::new();
        while got.len() < want {
            let n = tokio::time::timeout(Duration::from_secs(5), sock.recv_batch(batch))
                .await
                .expect("datagrams within 5 s")
                .unwrap();
            assert!(n > 0);
            for p in batch.iter() {
                assert!(!p.truncated);
                for s in p.segments() {
                    got.push((s.to_vec(), p.from, p.segment_size));
                }
            }
        }
        got
    }

    fn payload(i: usize) -> Vec<u8> {
        let len = 16 + (i * 37) % 1400;
        let mut v = vec![u8::try_from(i % 251).unwrap(); len];
        v[..8].copy_from_slice(&(i as u64).to_le_bytes());
        v
    }

    #[test]
    fn batch_send_recv_v4_v6() {
        let ns = TestNs::new();
        ns.block_on(|| async {
            let opts = UdpOptions::default();
            let a = bind_dual(0, &opts).unwrap();
            let b = bind_dual(0, &opts).unwrap();
            assert_eq!(a.v6.as_ref().unwrap().local_addr().port(), a.port());
            assert_ne!(a.port(), b.port());
            for (lo, a_sock, b_sock) in [
                (IpAddr::from(Ipv4Addr::LOCALHOST), &a.v4, &b.v4),
                (
                    Ipv6Addr::LOCALHOST.into(),
                    a.v6.as_ref().unwrap(),
                    b.v6.as_ref().unwrap(),
                ),
            ] {
                let dst = SocketAddr::new(lo, b.port());
                const N: usize = 500;
                let mut send = SendBatch::new(64, 2048);
                let mut recv = RecvBatch::new(64, 2048);
                let mut sent = 0;
                let mut got = Vec::new();
                while sent < N {
                    let start = sent;
                    while sent < N && send.push(&payload(sent), dst) {
                        sent += 1;
                    }
                    assert_eq!(a_sock.send_batch(&mut send).await.unwrap(), sent - start);
                    assert!(send.is_empty());
                    // Drain as we go.
                    while let Ok(n) = b_sock.try_recv_batch(&mut recv) {
                        assert!(n > 0);
                        got.extend(
                            recv.iter()
                                .map(|p| (p.data.to_vec(), p.from, p.segment_size)),
                        );
                    }
                }
                if got.len() < N {
                    got.extend(recv_all(b_sock, &mut recv, N - got.len()).await);
                }
                assert_eq!(got.len(), N);
                for (k, (data, from, seg)) in got.iter().enumerate() {
                    assert_eq!(data, &payload(k), "datagram {k}");
                    assert_eq!(*from, SocketAddr::new(lo, a.port()));
                    assert_eq!(*seg, data.len());
                }
            }
        });
    }

    #[test]
    fn buffers_and_mark() {
        let ns = TestNs::new();
        let sizes = ns.block_on(|| async {
            let opts = UdpOptions {
                fwmark: Some(0x8_0001),
                ..UdpOptions::default()
            };
            let d = bind_dual(0, &opts).unwrap();
            let mut sizes = Vec::new();
            for s in [&d.v4, d.v6.as_ref().unwrap()] {
                assert_eq!(s.mark().unwrap(), 0x8_0001);
                let r = s.recv_buffer_size().unwrap();
                let w = s.send_buffer_size().unwrap();
                assert!(r >= DEFAULT_BUFFER_SIZE, "rcvbuf {r}");
                assert!(w >= DEFAULT_BUFFER_SIZE, "sndbuf {w}");
                sizes.push((r, w));
                s.set_mark(0x42).unwrap();
                assert_eq!(s.mark().unwrap(), 0x42);
            }
            // IPV6_V6ONLY really set.
            let v6 = getsockopt_int(
                d.v6.as_ref().unwrap().raw(),
                libc::IPPROTO_IPV6,
                libc::IPV6_V6ONLY,
            )
            .unwrap();
            assert_eq!(v6, 1);
            // A fixed port is shared by both families; binding it again fails clearly.
            let port = d.port();
            drop(d);
            let e = {
                let d = bind_dual(port, &UdpOptions::default()).unwrap();
                assert_eq!(d.v6.as_ref().unwrap().local_addr().port(), port);
                bind_dual(port, &UdpOptions::default()).unwrap_err()
            };
            assert_eq!(e.source.kind(), io::ErrorKind::AddrInUse);
            assert!(
                e.to_string().contains(&format!("bind 0.0.0.0:{port}")),
                "{e}"
            );
            sizes
        });
        eprintln!("buffer sizes (rcv, snd) per family: {sizes:?}");
    }

    /// Drops CAP_NET_ADMIN and CAP_NET_RAW (either allows SO_MARK) from the
    /// calling thread's effective set.
    fn drop_net_caps() {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        const V3: u32 = 0x2008_0522;
        const CAP_NET_ADMIN: u32 = 12;
        const CAP_NET_RAW: u32 = 13;
        let mut h = Header {
            version: V3,
            pid: 0,
        };
        let mut d = [Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        // SAFETY: capget/capset with a v3 header and two data slots; pid 0 is
        // this thread only.
        unsafe {
            assert_eq!(libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()), 0);
            d[0].effective &= !(1 << CAP_NET_ADMIN | 1 << CAP_NET_RAW);
            assert_eq!(libc::syscall(libc::SYS_capset, &mut h, d.as_ptr()), 0);
        }
    }

    #[test]
    fn buffers_fall_back_without_capabilities() {
        let ns = TestNs::new();
        let (r, w, rmax, wmax, mark_err) = ns.run(|| {
            drop_net_caps();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let read = |p: &str| -> usize {
                    std::fs::read_to_string(p).unwrap().trim().parse().unwrap()
                };
                let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0).into(), &UdpOptions::default())
                    .unwrap();
                let mark_err = UdpSocket::bind(
                    (Ipv4Addr::LOCALHOST, 0).into(),
                    &UdpOptions {
                        fwmark: Some(1),
                        ..UdpOptions::default()
                    },
                )
                .unwrap_err();
                (
                    s.recv_buffer_size().unwrap(),
                    s.send_buffer_size().unwrap(),
                    read("/proc/sys/net/core/rmem_max"),
                    read("/proc/sys/net/core/wmem_max"),
                    mark_err,
                )
            })
        });
        eprintln!(
            "without CAP_NET_ADMIN/CAP_NET_RAW: rcvbuf {r} (rmem_max {rmax}), sndbuf {w} (wmem_max {wmax})"
        );
        assert_eq!(r, 2 * rmax.min(DEFAULT_BUFFER_SIZE));
        assert_eq!(w, 2 * wmax.min(DEFAULT_BUFFER_SIZE));
        assert_eq!(mark_err.source.raw_os_error(), Some(libc::EPERM));
        assert!(mark_err.to_string().contains("SO_MARK"), "{mark_err}");
    }

    #[test]
    fn gso_to_gro() {
        let ns = TestNs::new();
        ns.block_on(|| async {
            let tx =
                UdpSocket::bind((Ipv4Addr::LOCALHOST, 0).into(), &UdpOptions::default()).unwrap();
            assert!(tx.gso_supported());
            let gro_rx = UdpSocket::bind(
                (Ipv4Addr::LOCALHOST, 0).into(),
                &UdpOptions {
                    gro: true,
                    ..UdpOptions::default()
                },
            )
            .unwrap();
            assert!(gro_rx.gro_enabled());
            let plain_rx =
                UdpSocket::bind((Ipv4Addr::LOCALHOST, 0).into(), &UdpOptions::default()).unwrap();

            // 10 datagrams of 1000 bytes plus a 300-byte tail, in one send.
            let train: Vec<u8> = (0..10_300)
                .map(|i| u8::try_from(i / 1000).unwrap())
                .collect();
            let mut send = SendBatch::new(4, MAX_GRO_SIZE);
            assert!(send.push_gso(&train, gro_rx.local_addr(), Some(1000)));
            assert!(send.push_gso(&train, plain_rx.local_addr(), Some(1000)));
            assert_eq!(tx.send_batch(&mut send).await.unwrap(), 2);

            let mut recv = RecvBatch::new(16, MAX_GRO_SIZE);
            let got = recv_all(&gro_rx, &mut recv, 11).await;
            assert_eq!(got.len(), 11);
            assert!(got
                .iter()
                .all(|(_, from, seg)| *from == tx.local_addr() && *seg == 1000));
            let joined: Vec<u8> = got.iter().flat_map(|(d, _, _)| d.clone()).collect();
            assert_eq!(joined, train);

            let mut recv = RecvBatch::new(16, 2048);
            let got = recv_all(&plain_rx, &mut recv, 11).await;
            assert_eq!(got.len(), 11);
            assert_eq!(got[10].0.len(), 300);
            assert!(got[..10]
                .iter()
                .all(|(d, _, seg)| d.len() == 1000 && *seg == 1000));

            // Single datagram helpers, and a refused send is reported and dropped.
            tx.send_to(b"one", plain_rx.local_addr()).await.unwrap();
            let mut buf = [0u8; 16];
            let (n, from) = plain_rx.recv_from(&mut buf).await.unwrap();
            assert_eq!((&buf[..n], from), (&b"one"[..], tx.local_addr()));
            let mut send = SendBatch::new(4, 64);
            assert!(send.push(b"x", "[::1]:9".parse().unwrap()));
            assert!(tx.send_batch(&mut send).await.is_err());
            assert!(send.is_empty());
        });
    }
}
