//! The packet path: two dedicated threads, one per direction, so a bulk
//! transfer uses both cores (one seals while the other opens).
//!
//! - **outbound** (TUN → UDP): blocks on the TUN, reads super-packets from
//!   the vnet-header TUN (TSO: up to 64 KiB, one read per ~45 segments) and
//!   whatever else is queued, splits them ([`gso_split`]), then locks the
//!   device once for the whole batch, seals each segment and queues the
//!   datagrams; after unlocking it sends them with `sendmmsg`, coalescing
//!   runs of equal-sized datagrams to one destination into UDP GSO sends.
//! - **inbound** (UDP → TUN): polls both sockets, receives batches with
//!   `recvmmsg` (UDP GRO on), locks the device once per batch to open
//!   every datagram into preallocated buffers, unlocks, then writes the IP
//!   packets to the TUN. Handshake replies go out through `sendmmsg`.
//!
//! Nothing is allocated per packet: every buffer is made when the thread
//! starts. The engine's pending transmissions are drained after every call
//! ([`Engine::poll_transmit`](vpn_noise::Engine::poll_transmit)).
//!
//! Cookie mode: when `recvmmsg` comes back full [`UNDER_LOAD_BATCHES`]
//! times in a row the receive backlog is deep, and the engine is put under
//! load (handshakes must carry a cookie) for [`UNDER_LOAD_HOLD`], as
//! wireguard-go does.

use std::{
    io,
    net::SocketAddr,
    os::fd::{AsRawFd, RawFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use tokio::sync::Notify;
use vpn_noise::Action;

use super::{
    icmp, lock,
    tun::{gro::Gro, gso_split, Tun, VirtioNetHdr},
    udp::{DualStack, RecvBatch, SendBatch, UdpSocket, MAX_GRO_SIZE},
    Counters, Shared,
};

/// How long a thread blocks before it looks at the stop flag.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Full receive batches in a row that mean "under load".
pub const UNDER_LOAD_BATCHES: u32 = 16;
/// How long the device stays under load after the backlog was last deep.
pub const UNDER_LOAD_HOLD: Duration = Duration::from_secs(1);
/// Segments one outbound batch holds (a 64 KiB TSO packet at MSS 1380 is 48).
const OUT_SEGMENTS: usize = 192;
/// Room a read needs before another TUN read joins the batch.
const OUT_READ_ROOM: usize = 64;
/// Datagrams one `recvmmsg` returns at most.
const RECV_SLOTS: usize = 32;
/// Opened packets held before they are written to the TUN.
const IN_SLOTS: usize = 128;
/// Largest datagram the receive path opens (bigger ones are counted and
/// dropped; a peer's MTU would have to exceed 16 KiB).
const IN_SLOT_LEN: usize = 16 * 1024;
/// Largest UDP GSO send (the kernel's limit is 64 segments / 64 KiB).
const GSO_MAX_BYTES: usize = 65_000;
const GSO_MAX_SEGMENTS: usize = 64;
/// Largest datagram a slot holds: a sealed packet of a 64 KiB MTU (the
/// kernel then refuses what exceeds the family's UDP limit, counted as a
/// send error).
const MAX_DATAGRAM: usize = 65_535 + 32;

/// Tells the threads to stop, and the daemon that the interface is gone.
#[derive(Debug, Default)]
pub struct Signals {
    /// Set by the daemon to stop the threads.
    pub stop: AtomicBool,
    /// Set by a thread when the TUN fails (the link was deleted).
    pub link_gone: AtomicBool,
    /// Notified with `link_gone`.
    pub notify: Notify,
}

/// The running threads.
#[derive(Debug)]
pub struct DataPath {
    signals: Arc<Signals>,
    threads: Vec<JoinHandle<()>>,
}

impl DataPath {
    /// Starts both threads on `tun`. `mtu` sizes the segment buffers.
    ///
    /// # Errors
    /// If a thread cannot be spawned.
    pub fn start(
        device: &Shared,
        tun: &Arc<Tun>,
        mtu: usize,
        signals: &Arc<Signals>,
    ) -> io::Result<Self> {
        let mut threads = Vec::new();
        {
            let (device, tun, signals) = (Arc::clone(device), Arc::clone(tun), Arc::clone(signals));
            threads.push(
                std::thread::Builder::new()
                    .name("vpn-tun-rx".into())
                    .spawn(move || Outbound::new(device, tun, mtu, signals).run())?,
            );
        }
        {
            let (device, tun, signals) = (Arc::clone(device), Arc::clone(tun), Arc::clone(signals));
            threads.push(
                std::thread::Builder::new()
                    .name("vpn-udp-rx".into())
                    .spawn(move || Inbound::new(device, tun, signals).run())?,
            );
        }
        Ok(Self {
            signals: Arc::clone(signals),
            threads,
        })
    }

    /// Stops the threads and waits for them (at most one poll interval).
    pub fn stop(self) {
        self.signals.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn link_gone(signals: &Signals, e: &io::Error) {
    if !signals.stop.load(Ordering::Relaxed) {
        log::warn!("TUN failed ({e}); the interface is gone");
    }
    signals.link_gone.store(true, Ordering::Relaxed);
    signals.notify.notify_one();
}

/// Waits until `fd` is ready for `events`, at most `timeout`.
fn poll_fds(fds: &mut [libc::pollfd], timeout: Duration) -> io::Result<usize> {
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: fds is a live slice of pollfd.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(n.unsigned_abs() as usize)
}

fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// Datagrams waiting to be sent on one socket, with UDP GSO coalescing:
/// consecutive datagrams to the same destination and of the same size (the
/// last may be shorter) share one slot and go out as one `sendmsg`.
struct Outbox {
    batch: SendBatch,
    /// The open GSO run: destination, segment size, bytes, segments.
    run: Option<(SocketAddr, usize, usize, usize)>,
    /// The run's bytes, copied into a slot when the run closes.
    staging: Vec<u8>,
    gso: bool,
    /// Datagrams longer than this go out one by one. The kernel refuses
    /// (`EMSGSIZE` or `EINVAL`) a GSO train whose segments exceed the underlay's MTU
    /// (a tunnel MTU raised past the path's); the first refusal lowers it.
    gso_max_segment: usize,
    /// The largest segment of a GSO train queued since the last flush.
    largest_train_segment: usize,
}

impl Outbox {
    fn new(slots: usize, gso: bool) -> Self {
        Self {
            batch: SendBatch::new(slots, MAX_DATAGRAM),
            run: None,
            staging: vec![0; MAX_DATAGRAM],
            gso,
            gso_max_segment: usize::MAX,
            largest_train_segment: 0,
        }
    }

    /// Closes the open run into a batch slot. False if the batch is full.
    fn close_run(&mut self) -> bool {
        let Some((to, seg, bytes, count)) = self.run else {
            return true;
        };
        let segment = (count > 1).then(|| u16::try_from(seg).unwrap_or(u16::MAX));
        if self.batch.push_gso(&self.staging[..bytes], to, segment) {
            if count > 1 {
                self.largest_train_segment = self.largest_train_segment.max(seg);
            }
            self.run = None;
            true
        } else {
            false
        }
    }

    /// Queues one datagram; false if the batch is full (flush, then retry).
    fn push(&mut self, to: SocketAddr, data: &[u8]) -> bool {
        if !self.gso {
            return self.batch.push(data, to);
        }
        if let Some((rto, seg, bytes, count)) = self.run {
            let fits = rto == to
                && data.len() <= seg
                && seg <= self.gso_max_segment
                && bytes + data.len() <= GSO_MAX_BYTES
                && count < GSO_MAX_SEGMENTS
                // A shorter datagram must be the last of its run.
                && bytes == seg * count;
            if fits {
                self.staging[bytes..bytes + data.len()].copy_from_slice(data);
                self.run = Some((rto, seg, bytes + data.len(), count + 1));
                return true;
            }
            if !self.close_run() {
                return false;
            }
        }
        if self.batch.is_full() {
            return false;
        }
        self.staging[..data.len()].copy_from_slice(data);
        self.run = Some((to, data.len(), data.len(), 1));
        true
    }

    fn is_empty(&self) -> bool {
        self.run.is_none() && self.batch.is_empty()
    }

    /// Sends everything queued, waiting up to a second for buffer space.
    fn flush(&mut self, sock: Option<&UdpSocket>, counters: &Counters) {
        let _ = self.close_run();
        let Some(sock) = sock else {
            // An IPv6 destination without an IPv6 socket.
            if !self.batch.is_empty() {
                Counters::bump(&counters.udp_send_errors);
            }
            self.batch.clear();
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(1);
        while !self.batch.is_empty() {
            match sock.try_send_batch(&mut self.batch) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        self.batch.clear();
                        Counters::bump(&counters.udp_send_errors);
                        return;
                    }
                    let mut fds = [pollfd(sock_fd(sock), libc::POLLOUT)];
                    let _ = poll_fds(&mut fds, Duration::from_millis(100));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let refused = matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EMSGSIZE));
                    if refused && self.largest_train_segment > 0 {
                        let limit = self.largest_train_segment - 1;
                        if limit < self.gso_max_segment {
                            log::info!(
                                "the underlay refuses GSO trains of {}-byte datagrams \
                                 (tunnel MTU above the path's): sending them one by one",
                                self.largest_train_segment
                            );
                            self.gso_max_segment = limit;
                        }
                    }
                    log::debug!("UDP send: {e}");
                    Counters::bump(&counters.udp_send_errors);
                }
            }
        }
        self.largest_train_segment = 0;
    }
}

fn sock_fd(s: &UdpSocket) -> RawFd {
    use std::os::fd::AsFd;
    s.as_fd().as_raw_fd()
}

/// Datagrams for both families.
struct Outboxes {
    v4: Outbox,
    v6: Outbox,
}

impl Outboxes {
    fn new(slots: usize, sockets: &DualStack) -> Self {
        Self {
            v4: Outbox::new(slots, sockets.v4.gso_supported()),
            v6: Outbox::new(
                slots,
                sockets.v6.as_ref().is_some_and(UdpSocket::gso_supported),
            ),
        }
    }

    fn push(&mut self, to: SocketAddr, data: &[u8], sockets: &DualStack, counters: &Counters) {
        if data.len() > MAX_DATAGRAM {
            Counters::bump(&counters.udp_send_errors);
            return;
        }
        let (ob, sock) = if to.is_ipv4() {
            (&mut self.v4, Some(&sockets.v4))
        } else {
            (&mut self.v6, sockets.v6.as_ref())
        };
        if !ob.push(to, data) {
            ob.flush(sock, counters);
            if !ob.push(to, data) {
                Counters::bump(&counters.udp_send_errors);
            }
        }
    }

    fn flush(&mut self, sockets: &DualStack, counters: &Counters) {
        if !self.v4.is_empty() {
            self.v4.flush(Some(&sockets.v4), counters);
        }
        if !self.v6.is_empty() {
            self.v6.flush(sockets.v6.as_ref(), counters);
        }
    }
}

/// TUN → seal → UDP.
struct Outbound {
    device: Shared,
    tun: Arc<Tun>,
    signals: Arc<Signals>,
    counters: Arc<Counters>,
    slot: usize,
}

impl Outbound {
    fn new(device: Shared, tun: Arc<Tun>, mtu: usize, signals: Arc<Signals>) -> Self {
        let counters = Arc::clone(&lock(&device).counters);
        Self {
            device,
            tun,
            signals,
            counters,
            // Segments never exceed the MTU; leave room for odd packets.
            slot: mtu.max(1280) + 256,
        }
    }

    /// The segment slot a read needs: the whole packet, or one segment of a
    /// super-packet (headers plus `gso_size`), plus room for odd packets.
    fn needed_slot(&self, read: &[u8]) -> usize {
        let packet = if self.tun.vnet_hdr() {
            let Some(hdr) = VirtioNetHdr::parse(read) else {
                return 0;
            };
            let len = read.len().saturating_sub(VirtioNetHdr::LEN);
            if hdr.gso_type & !VirtioNetHdr::GSO_ECN == VirtioNetHdr::GSO_NONE {
                len
            } else {
                // hdr_len is advisory; bound it by what was read.
                (usize::from(hdr.hdr_len).max(usize::from(hdr.csum_start) + 60)
                    + usize::from(hdr.gso_size))
                .min(len)
            }
        } else {
            read.len()
        };
        packet + 256
    }

    /// Splits one read into `segs[at..]`; returns how many segments.
    fn split(&self, read: &[u8], segs: &mut [&mut [u8]], sizes: &mut [usize], at: usize) -> usize {
        if !self.tun.vnet_hdr() {
            let Some(dst) = segs.get_mut(at).and_then(|s| s.get_mut(..read.len())) else {
                Counters::bump(&self.counters.tun_malformed);
                return 0;
            };
            dst.copy_from_slice(read);
            sizes[at] = read.len();
            return 1;
        }
        let Some(hdr) = VirtioNetHdr::parse(read) else {
            Counters::bump(&self.counters.tun_malformed);
            return 0;
        };
        match gso_split(
            &hdr,
            &read[VirtioNetHdr::LEN..],
            &mut segs[at..],
            &mut sizes[at..],
            0,
        ) {
            Ok(n) => n,
            Err(e) => {
                log::debug!("TUN packet dropped: {e}");
                Counters::bump(&self.counters.tun_malformed);
                0
            }
        }
    }

    fn run(mut self) {
        let mut read_buf = vec![0u8; 65_536 + VirtioNetHdr::LEN];
        let mut seg_buf = vec![0u8; OUT_SEGMENTS * self.slot];
        let mut segs: Vec<&mut [u8]> = seg_buf.chunks_mut(self.slot).collect();
        let mut sizes = vec![0usize; OUT_SEGMENTS];
        let mut sealed = vec![0u8; 65_536 + 64];
        let (mut sockets, mut generation) = {
            let d = lock(&self.device);
            (d.sockets(), d.sockets_generation)
        };
        let mut out = Outboxes::new(OUT_SEGMENTS / 4 + 8, &sockets);
        // A read that needed bigger slots than the batch had, kept in
        // read_buf for the next batch.
        let mut pending: Option<usize> = None;

        while !self.signals.stop.load(Ordering::Relaxed) {
            let n = if let Some(n) = pending.take() {
                n
            } else {
                match self.tun.read_timeout(&mut read_buf, Some(POLL_INTERVAL)) {
                    Ok(n) => n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::TimedOut
                                | io::ErrorKind::WouldBlock
                                | io::ErrorKind::Interrupted
                        ) =>
                    {
                        continue
                    }
                    Err(e) => {
                        link_gone(&self.signals, &e);
                        return;
                    }
                }
            };
            // The MTU was raised (`ip link set mtu`, up to 65535): grow the
            // segment slots, never shrink them.
            let need = self.needed_slot(&read_buf[..n]);
            if need > self.slot {
                self.slot = need.next_multiple_of(1024);
                log::debug!(
                    "TUN packets of {need} bytes: segment slots now {}",
                    self.slot
                );
                drop(segs);
                seg_buf = vec![0u8; OUT_SEGMENTS * self.slot];
                segs = seg_buf.chunks_mut(self.slot).collect();
            }
            let mut count = self.split(&read_buf[..n], &mut segs, &mut sizes, 0);
            // Take whatever else is queued while there is room.
            while OUT_SEGMENTS - count >= OUT_READ_ROOM {
                match self.tun.read(&mut read_buf) {
                    Ok(n) if self.needed_slot(&read_buf[..n]) > self.slot => {
                        pending = Some(n);
                        break;
                    }
                    Ok(n) => count += self.split(&read_buf[..n], &mut segs, &mut sizes, count),
                    Err(_) => break,
                }
            }
            if count == 0 {
                continue;
            }

            let now = Instant::now();
            {
                let mut d = lock(&self.device);
                if d.sockets_generation != generation {
                    out.flush(&sockets, &self.counters);
                    sockets = d.sockets();
                    generation = d.sockets_generation;
                }
                for (seg, &size) in segs.iter().zip(&sizes).take(count) {
                    if size > icmp::MAX_INNER {
                        // No datagram holds it: tell the sender the MTU.
                        if let Some(n) =
                            icmp::packet_too_big(&seg[..size], icmp::MAX_INNER, &mut sealed)
                        {
                            let _ = self.tun.write_ip(&sealed[..n]);
                        }
                        continue;
                    }
                    if let Action::SendDatagram { to, len } =
                        d.engine.handle_tun_packet(&seg[..size], &mut sealed, now)
                    {
                        out.push(to, &sealed[..len], &sockets, &self.counters);
                    }
                    while let Some(t) = d.engine.poll_transmit(&mut sealed, now) {
                        out.push(t.to, &sealed[..t.len], &sockets, &self.counters);
                    }
                }
            }
            out.flush(&sockets, &self.counters);
        }
    }
}

/// Cookie-mode decision: under load after [`UNDER_LOAD_BATCHES`] full
/// `recvmmsg` batches in a row, until [`UNDER_LOAD_HOLD`] after the last.
#[derive(Debug, Default, Clone, Copy)]
pub struct Load {
    full_batches: u32,
    until: Option<Instant>,
}

impl Load {
    /// Records one batch; `Some(true)` when this one puts the device under
    /// load.
    pub fn observe(&mut self, full: bool, now: Instant) -> Option<bool> {
        if !full {
            self.full_batches = 0;
            return None;
        }
        self.full_batches = self.full_batches.saturating_add(1);
        if self.full_batches < UNDER_LOAD_BATCHES {
            return None;
        }
        let was = self.until.is_some();
        self.until = Some(now + UNDER_LOAD_HOLD);
        (!was).then_some(true)
    }

    /// True when the hold time has passed and the device leaves load mode.
    pub fn expire(&mut self, now: Instant) -> bool {
        if self.until.is_some_and(|t| now >= t) {
            self.until = None;
            self.full_batches = 0;
            return true;
        }
        false
    }
}

/// The inbound thread's preallocated buffers.
struct Buffers<'a> {
    opened: &'a mut [u8],
    lens: &'a mut [usize],
    reply: &'a mut [u8],
    gro: &'a mut Gro,
}

/// UDP → open → TUN.
struct Inbound {
    device: Shared,
    tun: Arc<Tun>,
    signals: Arc<Signals>,
    counters: Arc<Counters>,
    load: Load,
}

impl Inbound {
    fn new(device: Shared, tun: Arc<Tun>, signals: Arc<Signals>) -> Self {
        let counters = Arc::clone(&lock(&device).counters);
        Self {
            device,
            tun,
            signals,
            counters,
            load: Load::default(),
        }
    }

    fn run(mut self) {
        let (mut sockets, mut generation) = {
            let d = lock(&self.device);
            (d.sockets(), d.sockets_generation)
        };
        let mut recv = RecvBatch::new(RECV_SLOTS, MAX_GRO_SIZE);
        let mut opened = vec![0u8; IN_SLOTS * IN_SLOT_LEN];
        let mut lens = vec![0usize; IN_SLOTS];
        let mut reply = vec![0u8; 65_536 + 64];
        let mut out = Outboxes::new(16, &sockets);
        let mut gro = Gro::with_udp(self.tun.uso());

        while !self.signals.stop.load(Ordering::Relaxed) {
            {
                let d = lock(&self.device);
                if d.sockets_generation != generation {
                    sockets = d.sockets();
                    generation = d.sockets_generation;
                }
            }
            let mut fds = [
                pollfd(sock_fd(&sockets.v4), libc::POLLIN),
                pollfd(sockets.v6.as_ref().map_or(-1, sock_fd), libc::POLLIN),
            ];
            match poll_fds(&mut fds, POLL_INTERVAL) {
                Ok(0) => {
                    self.maybe_leave_under_load();
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    log::error!("poll on the UDP sockets: {e}");
                    std::thread::sleep(POLL_INTERVAL);
                    continue;
                }
            }
            let socks = [Some(&sockets.v4), sockets.v6.as_ref()];
            for (fd, sock) in fds.iter().zip(socks) {
                let Some(sock) = sock else { continue };
                if fd.revents == 0 {
                    continue;
                }
                // Drain the socket, but come back to poll (and the other
                // socket) after a few batches.
                for _ in 0..8 {
                    let n = match sock.try_recv_batch(&mut recv) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            // ICMP errors of earlier sends surface here.
                            log::debug!("UDP receive: {e}");
                            continue;
                        }
                    };
                    self.track_load(n == recv.capacity());
                    self.process(
                        &recv,
                        &mut Buffers {
                            opened: &mut opened,
                            lens: &mut lens,
                            reply: &mut reply,
                            gro: &mut gro,
                        },
                        &mut out,
                        &sockets,
                    );
                    if n < recv.capacity() {
                        break;
                    }
                }
            }
            self.maybe_leave_under_load();
        }
    }

    fn track_load(&mut self, full: bool) {
        if self.load.observe(full, Instant::now()) == Some(true) {
            log::info!("receive backlog is deep: handshakes now need cookies");
            Counters::bump(&self.counters.under_load_entered);
            lock(&self.device).engine.set_under_load(true);
        }
    }

    fn maybe_leave_under_load(&mut self) {
        if self.load.expire(Instant::now()) {
            log::info!("receive backlog drained: cookies no longer required");
            lock(&self.device).engine.set_under_load(false);
        }
    }

    /// Opens one datagram too big for an [`IN_SLOT_LEN`] slot into `buf`
    /// and writes it to the TUN on its own (without coalescing).
    #[allow(clippy::too_many_arguments, reason = "the receive loop's state")]
    fn open_big(
        &self,
        d: &mut super::Device,
        from: SocketAddr,
        seg: &[u8],
        buf: &mut [u8],
        out: &mut Outboxes,
        sockets: &DualStack,
        now: Instant,
    ) {
        if seg.len() > buf.len() {
            Counters::bump(&self.counters.oversize);
            return;
        }
        match d.engine.handle_datagram(from, seg, buf, now) {
            Action::WriteToTun { len, .. } => {
                if let Err(e) = self.tun.write_ip(&buf[..len]) {
                    log::debug!("TUN write: {e}");
                    Counters::bump(&self.counters.tun_write_errors);
                }
            }
            Action::SendDatagram { to, len } => {
                out.push(to, &buf[..len], sockets, &self.counters);
            }
            Action::Done | Action::Error(_) => {}
        }
    }

    /// Opens every datagram of the batch and writes the packets to the TUN,
    /// [`IN_SLOTS`] at a time.
    fn process(
        &self,
        recv: &RecvBatch,
        b: &mut Buffers<'_>,
        out: &mut Outboxes,
        sockets: &DualStack,
    ) {
        let Buffers {
            opened,
            lens,
            reply,
            gro,
        } = b;
        // Cursor: datagram index and offset inside it (GRO segments).
        let (mut i, mut off) = (0usize, 0usize);
        while i < recv.len() {
            let mut k = 0;
            {
                let now = Instant::now();
                let mut d = lock(&self.device);
                while k < IN_SLOTS && i < recv.len() {
                    let Some(p) = recv.get(i) else { break };
                    if p.truncated || off >= p.data.len() {
                        if p.truncated {
                            Counters::bump(&self.counters.truncated);
                        }
                        (i, off) = (i + 1, 0);
                        continue;
                    }
                    let end = (off + p.segment_size.max(1)).min(p.data.len());
                    let seg = &p.data[off..end];
                    off = end;
                    if seg.len() > IN_SLOT_LEN {
                        // A peer with a large MTU (up to 64 KiB): opened
                        // on its own and written at once.
                        self.open_big(&mut d, p.from, seg, reply, out, sockets, now);
                        continue;
                    }
                    let slot = &mut opened[k * IN_SLOT_LEN..(k + 1) * IN_SLOT_LEN];
                    match d.engine.handle_datagram(p.from, seg, slot, now) {
                        Action::WriteToTun { len, .. } => {
                            lens[k] = len;
                            k += 1;
                        }
                        Action::SendDatagram { to, len } => {
                            out.push(to, &slot[..len], sockets, &self.counters);
                        }
                        Action::Done | Action::Error(_) => {}
                    }
                    while let Some(t) = d.engine.poll_transmit(reply, now) {
                        out.push(t.to, &reply[..t.len], sockets, &self.counters);
                    }
                }
            }
            let coalesce = self.tun.vnet_hdr();
            for (j, &len) in lens.iter().enumerate().take(k) {
                let pkt = &opened[j * IN_SLOT_LEN..j * IN_SLOT_LEN + len];
                let r = if coalesce {
                    gro.push(pkt, &mut &*self.tun)
                } else {
                    self.tun.write_ip(pkt).map(drop)
                };
                if let Err(e) = r {
                    log::debug!("TUN write: {e}");
                    Counters::bump(&self.counters.tun_write_errors);
                }
            }
            if let Err(e) = gro.flush(&mut &*self.tun) {
                log::debug!("TUN write: {e}");
                Counters::bump(&self.counters.tun_write_errors);
            }
            out.flush(sockets, &self.counters);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_backlog_enters_and_leaves_cookie_mode() {
        let t0 = Instant::now();
        let mut l = Load::default();
        for _ in 1..UNDER_LOAD_BATCHES {
            assert_eq!(l.observe(true, t0), None);
        }
        // A short batch resets the streak.
        assert_eq!(l.observe(false, t0), None);
        for _ in 1..UNDER_LOAD_BATCHES {
            assert_eq!(l.observe(true, t0), None);
        }
        assert_eq!(l.observe(true, t0), Some(true));
        // Staying deep only extends the hold.
        assert_eq!(l.observe(true, t0), None);
        assert!(!l.expire(t0 + UNDER_LOAD_HOLD / 2));
        assert!(l.expire(t0 + UNDER_LOAD_HOLD));
        assert!(!l.expire(t0 + UNDER_LOAD_HOLD * 2));
    }

    #[test]
    fn gso_runs_group_equal_sized_datagrams_to_one_destination() {
        let a: SocketAddr = "198.18.0.2:51820".parse().unwrap();
        let b: SocketAddr = "198.18.0.3:51820".parse().unwrap();
        let mut o = Outbox::new(8, true);
        assert!(o.push(a, &[1; 100]));
        assert!(o.push(a, &[2; 100]));
        assert!(o.push(a, &[3; 60])); // a shorter one ends the run
        assert!(o.push(a, &[4; 100]));
        assert!(o.push(b, &[5; 100]));
        assert!(o.close_run());
        assert_eq!(o.batch.len(), 3);
    }
}
