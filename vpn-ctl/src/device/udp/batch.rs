//! Datagram batches (`device/udp/batch.rs`): the preallocated buffers of
//! `recvmmsg` / `sendmmsg` ([`RecvBatch`], [`SendBatch`]) with their per-datagram
//! control messages, the GRO segment size received (`UDP_GRO`) and the GSO
//! segment size sent (`UDP_SEGMENT`).

use std::{
    io,
    mem::{size_of, MaybeUninit},
    net::{Ipv4Addr, SocketAddr},
    os::fd::RawFd,
    ptr,
};

use super::{
    from_sockaddr, socklen_of, to_sockaddr, zeroed_storage, SOL_UDP, UDP_GRO, UDP_SEGMENT,
};

fn zeroed_mmsghdr() -> libc::mmsghdr {
    // SAFETY: all-zero (null pointers, zero lengths) is a valid mmsghdr.
    unsafe { MaybeUninit::zeroed().assume_init() }
}

/// Control-message space for one datagram, aligned for `cmsghdr`.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct CmsgBuf([u8; 64]);

/// One received datagram (or GRO train of datagrams) in a [`RecvBatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvPacket<'a> {
    /// The payload; with GRO, consecutive datagrams of `segment_size` bytes
    /// (the last may be shorter).
    pub data: &'a [u8],
    /// Where it came from.
    pub from: SocketAddr,
    /// Size of each datagram in `data` (equal to `data.len()` without GRO).
    pub segment_size: usize,
    /// The slot was too small and the payload was cut.
    pub truncated: bool,
}

impl<'a> RecvPacket<'a> {
    /// The individual datagrams.
    pub fn segments(&self) -> impl Iterator<Item = &'a [u8]> {
        self.data.chunks(self.segment_size.max(1))
    }
}

#[derive(Debug, Clone, Copy)]
struct RecvMeta {
    len: usize,
    from: SocketAddr,
    segment_size: usize,
    truncated: bool,
}

/// Preallocated buffers for `recvmmsg`.
pub struct RecvBatch {
    data: Vec<u8>,
    slot_len: usize,
    names: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    cmsgs: Vec<CmsgBuf>,
    meta: Vec<RecvMeta>,
    count: usize,
}

// SAFETY: the raw pointers in `iovs` and `hdrs` only ever point into this
// batch's own heap buffers and are rewritten before every syscall.
unsafe impl Send for RecvBatch {}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("slots", &self.capacity())
            .field("slot_len", &self.slot_len)
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl RecvBatch {
    /// `slots` datagrams of up to `slot_len` bytes each (use
    /// [`MAX_GRO_SIZE`](super::MAX_GRO_SIZE) with GRO).
    ///
    /// # Panics
    /// If `slots` or `slot_len` is zero.
    #[must_use]
    pub fn new(slots: usize, slot_len: usize) -> Self {
        assert!(slots > 0 && slot_len > 0, "empty receive batch");
        let unspec = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
        Self {
            data: vec![0; slots * slot_len],
            slot_len,
            names: vec![zeroed_storage(); slots],
            iovs: vec![
                libc::iovec {
                    iov_base: ptr::null_mut(),
                    iov_len: 0,
                };
                slots
            ],
            hdrs: (0..slots).map(|_| zeroed_mmsghdr()).collect(),
            cmsgs: vec![CmsgBuf([0; 64]); slots],
            meta: vec![
                RecvMeta {
                    len: 0,
                    from: unspec,
                    segment_size: 0,
                    truncated: false,
                };
                slots
            ],
            count: 0,
        }
    }

    /// How many datagrams the last receive got.
    #[must_use]
    pub fn len(&self) -> usize {
        self.count
    }

    /// Nothing received.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Number of slots.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// The `i`th received datagram.
    #[must_use]
    pub fn get(&self, i: usize) -> Option<RecvPacket<'_>> {
        if i >= self.count {
            return None;
        }
        let m = &self.meta[i];
        let start = i * self.slot_len;
        Some(RecvPacket {
            data: &self.data[start..start + m.len],
            from: m.from,
            segment_size: m.segment_size,
            truncated: m.truncated,
        })
    }

    /// The `i`th received payload, writable (for decrypting in place).
    pub fn data_mut(&mut self, i: usize) -> Option<&mut [u8]> {
        if i >= self.count {
            return None;
        }
        let start = i * self.slot_len;
        Some(&mut self.data[start..start + self.meta[i].len])
    }

    /// The received datagrams.
    pub fn iter(&self) -> impl Iterator<Item = RecvPacket<'_>> {
        (0..self.count).filter_map(|i| self.get(i))
    }

    pub(super) fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.count = 0;
        let base = self.data.as_mut_ptr();
        for i in 0..self.capacity() {
            self.iovs[i] = libc::iovec {
                // SAFETY: i * slot_len is inside `data`.
                iov_base: unsafe { base.add(i * self.slot_len) }.cast(),
                iov_len: self.slot_len,
            };
            let h = &mut self.hdrs[i];
            h.msg_len = 0;
            h.msg_hdr.msg_name = ptr::from_mut(&mut self.names[i]).cast();
            h.msg_hdr.msg_namelen = socklen_of::<libc::sockaddr_storage>();
            h.msg_hdr.msg_iov = ptr::from_mut(&mut self.iovs[i]);
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = ptr::from_mut(&mut self.cmsgs[i]).cast();
            h.msg_hdr.msg_controllen = size_of::<CmsgBuf>() as _;
            h.msg_hdr.msg_flags = 0;
        }
        let vlen = libc::c_uint::try_from(self.capacity()).unwrap_or(libc::c_uint::MAX);
        // SAFETY: every header points at live buffers of the stated sizes.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                vlen,
                libc::MSG_DONTWAIT,
                ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n.unsigned_abs() as usize;
        for i in 0..n {
            let h = &self.hdrs[i];
            let len = (h.msg_len as usize).min(self.slot_len);
            let mut segment_size = len;
            // SAFETY: msg_control/msg_controllen were set by the kernel for
            // this header and point into cmsgs[i].
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&h.msg_hdr);
                while !c.is_null() {
                    if (*c).cmsg_level == SOL_UDP && (*c).cmsg_type == UDP_GRO {
                        let v = ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                        if let Ok(v) = usize::try_from(v) {
                            if v > 0 {
                                segment_size = v;
                            }
                        }
                    }
                    c = libc::CMSG_NXTHDR(&h.msg_hdr, c);
                }
            }
            let from = from_sockaddr(&self.names[i], h.msg_hdr.msg_namelen)
                .unwrap_or_else(|| SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
            self.meta[i] = RecvMeta {
                len,
                from,
                segment_size,
                truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            };
        }
        self.count = n;
        Ok(n)
    }
}

/// Preallocated datagrams queued for `sendmmsg`.
pub struct SendBatch {
    data: Vec<u8>,
    slot_len: usize,
    lens: Vec<usize>,
    names: Vec<libc::sockaddr_storage>,
    namelens: Vec<libc::socklen_t>,
    segs: Vec<u16>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    cmsgs: Vec<CmsgBuf>,
    count: usize,
    sent: usize,
}

// SAFETY: as for RecvBatch, pointers are private and rebuilt before each use.
unsafe impl Send for SendBatch {}

impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch")
            .field("slots", &self.capacity())
            .field("slot_len", &self.slot_len)
            .field("queued", &self.len())
            .finish_non_exhaustive()
    }
}

impl SendBatch {
    /// `slots` datagrams of up to `slot_len` bytes (a GSO super-datagram
    /// needs up to 64 KiB).
    ///
    /// # Panics
    /// If `slots` or `slot_len` is zero.
    #[must_use]
    pub fn new(slots: usize, slot_len: usize) -> Self {
        assert!(slots > 0 && slot_len > 0, "empty send batch");
        Self {
            data: vec![0; slots * slot_len],
            slot_len,
            lens: vec![0; slots],
            names: vec![zeroed_storage(); slots],
            namelens: vec![0; slots],
            segs: vec![0; slots],
            iovs: vec![
                libc::iovec {
                    iov_base: ptr::null_mut(),
                    iov_len: 0,
                };
                slots
            ],
            hdrs: (0..slots).map(|_| zeroed_mmsghdr()).collect(),
            cmsgs: vec![CmsgBuf([0; 64]); slots],
            count: 0,
            sent: 0,
        }
    }

    /// Number of slots.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.lens.len()
    }

    /// Bytes per slot.
    #[must_use]
    pub fn slot_len(&self) -> usize {
        self.slot_len
    }

    /// Datagrams queued and not yet sent.
    #[must_use]
    pub fn len(&self) -> usize {
        self.count - self.sent
    }

    /// Nothing queued.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// No slot left.
    #[must_use]
    pub fn is_full(&self) -> bool {
        self.count == self.capacity()
    }

    /// Drops everything queued.
    pub fn clear(&mut self) {
        self.count = 0;
        self.sent = 0;
    }

    /// Queues a datagram whose bytes `fill` writes into the slot (so it can
    /// be encrypted in place); `fill` returns the length used. With
    /// `segment_size`, the slot is sent as a GSO train of datagrams of that
    /// size. Returns false if the batch is full.
    ///
    /// # Panics
    /// If `fill` returns more than the slot length.
    pub fn push_with(
        &mut self,
        dst: SocketAddr,
        segment_size: Option<u16>,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> bool {
        if self.is_full() {
            return false;
        }
        let i = self.count;
        let start = i * self.slot_len;
        let len = fill(&mut self.data[start..start + self.slot_len]);
        assert!(len <= self.slot_len, "datagram longer than the slot");
        self.lens[i] = len;
        self.namelens[i] = to_sockaddr(dst, &mut self.names[i]);
        self.segs[i] = segment_size.unwrap_or(0);
        self.count += 1;
        true
    }

    /// Queues a copy of `data` for `dst`. False if full or too long.
    pub fn push(&mut self, data: &[u8], dst: SocketAddr) -> bool {
        self.push_gso(data, dst, None)
    }

    /// Queues `data` (consecutive datagrams of `segment_size` bytes, the last
    /// may be shorter) as one GSO send. False if full or too long.
    pub fn push_gso(&mut self, data: &[u8], dst: SocketAddr, segment_size: Option<u16>) -> bool {
        if data.len() > self.slot_len {
            return false;
        }
        self.push_with(dst, segment_size, |slot| {
            slot[..data.len()].copy_from_slice(data);
            data.len()
        })
    }

    pub(super) fn send(&mut self, fd: RawFd) -> io::Result<usize> {
        if self.is_empty() {
            return Ok(0);
        }
        let base = self.data.as_mut_ptr();
        for i in self.sent..self.count {
            self.iovs[i] = libc::iovec {
                // SAFETY: i * slot_len is inside `data`.
                iov_base: unsafe { base.add(i * self.slot_len) }.cast(),
                iov_len: self.lens[i],
            };
            let h = &mut self.hdrs[i];
            h.msg_len = 0;
            h.msg_hdr.msg_name = ptr::from_mut(&mut self.names[i]).cast();
            h.msg_hdr.msg_namelen = self.namelens[i];
            h.msg_hdr.msg_iov = ptr::from_mut(&mut self.iovs[i]);
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_flags = 0;
            if self.segs[i] == 0 {
                h.msg_hdr.msg_control = ptr::null_mut();
                h.msg_hdr.msg_controllen = 0;
            } else {
                let cbuf = &mut self.cmsgs[i];
                h.msg_hdr.msg_control = ptr::from_mut(cbuf).cast();
                // SAFETY: CMSG_SPACE is a pure computation.
                h.msg_hdr.msg_controllen =
                    unsafe { libc::CMSG_SPACE(size_of::<u16>() as libc::c_uint) } as _;
                // SAFETY: the control buffer is 64 aligned bytes, enough for
                // one cmsghdr with a u16.
                unsafe {
                    let c = libc::CMSG_FIRSTHDR(&h.msg_hdr);
                    (*c).cmsg_level = SOL_UDP;
                    (*c).cmsg_type = UDP_SEGMENT;
                    (*c).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as libc::c_uint) as _;
                    ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), self.segs[i]);
                }
            }
        }
        let vlen = libc::c_uint::try_from(self.count - self.sent).unwrap_or(libc::c_uint::MAX);
        // SAFETY: headers sent..count point at live buffers of stated sizes.
        let n = unsafe {
            libc::sendmmsg(
                fd,
                self.hdrs[self.sent..].as_mut_ptr(),
                vlen,
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::WouldBlock && e.kind() != io::ErrorKind::Interrupted {
                // Drop the datagram the kernel refused so the rest can go.
                self.sent += 1;
                if self.sent == self.count {
                    self.clear();
                }
            }
            return Err(e);
        }
        let n = n.unsigned_abs() as usize;
        self.sent += n;
        if self.sent == self.count {
            self.clear();
        }
        Ok(n)
    }
}
