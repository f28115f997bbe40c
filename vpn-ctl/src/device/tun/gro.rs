//! TCP receive coalescing for the TUN (what upstream wireguard-go calls
//! TUN GRO): consecutive segments of one TCP flow, opened from the tunnel,
//! are written to a vnet-header TUN as one super-packet with a virtio GSO
//! header, so the kernel's TCP stack sees one 64 KiB packet instead of ~45.
//!
//! A segment joins the open run when it is the same flow (addresses,
//! ports, TOS/TTL or traffic class/hop limit, ack, window, TCP options),
//! its sequence number follows, every earlier segment had the run's full
//! segment size (a shorter one ends the run), only ACK/PSH are set, and the
//! super-packet stays under 64 KiB. A PSH segment ends the run. Anything
//! else is written as it is, in order.
//!
//! UDP datagrams of one flow are coalesced the same way (USO, `GSO_UDP_L4`)
//! when the TUN accepts it: same addresses and ports, equal sizes (a
//! shorter one ends the run).
//!
//! The super-packet's IP length and IPv4 header checksum are rewritten; its
//! TCP/UDP checksum field holds the pseudo-header sum with `NEEDS_CSUM`, as
//! the kernel expects for partial checksums.

use std::io;

use super::{Tun, VirtioNetHdr};
use crate::device::checksum::{add as csum_add, fold as csum_fold};

const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;
const MAX_IP_LEN: usize = 65_535;

/// Where a packet goes: the TUN, or a test's sink.
pub trait Sink {
    /// Writes one packet including its [`VirtioNetHdr`].
    ///
    /// # Errors
    /// The write error.
    fn write_vnet(&mut self, buf: &[u8]) -> io::Result<()>;
}

impl Sink for &Tun {
    fn write_vnet(&mut self, buf: &[u8]) -> io::Result<()> {
        self.write(buf).map(drop)
    }
}

#[derive(Debug, Clone, Copy)]
struct Tcp {
    v6: bool,
    /// A UDP datagram (`tcp_hlen` is then 8, `seq` and `flags` 0).
    udp: bool,
    ip_hlen: usize,
    tcp_hlen: usize,
    payload: usize,
    seq: u32,
    flags: u8,
}

fn be16(b: &[u8], at: usize) -> usize {
    usize::from(u16::from_be_bytes([b[at], b[at + 1]]))
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// A plain TCP segment with payload and only ACK/PSH set, a UDP datagram
/// with payload (if `udp` is allowed), or `None`.
fn parse(p: &[u8], udp: bool) -> Option<Tcp> {
    let (v6, ip_hlen, proto) = match p.first()? >> 4 {
        4 if p.len() >= 28 => {
            let frag = be16(p, 6) & 0x3fff;
            (p[0] == 0x45 && be16(p, 2) == p.len() && frag == 0).then_some(())?;
            (false, 20, p[9])
        }
        6 if p.len() >= 48 => {
            (be16(p, 4) + 40 == p.len()).then_some(())?;
            (true, 40, p[6])
        }
        _ => return None,
    };
    if proto == 17 && udp {
        let ulen = be16(p, ip_hlen + 4);
        return (ulen == p.len() - ip_hlen && ulen > 8).then_some(Tcp {
            v6,
            udp: true,
            ip_hlen,
            tcp_hlen: 8,
            payload: ulen - 8,
            seq: 0,
            flags: 0,
        });
    }
    if proto != 6 || p.len() < ip_hlen + 20 {
        return None;
    }
    let tcp_hlen = usize::from(p[ip_hlen + 12] >> 4) * 4;
    if tcp_hlen < 20 || ip_hlen + tcp_hlen >= p.len() {
        return None;
    }
    let flags = p[ip_hlen + 13];
    if flags & !(TCP_ACK | TCP_PSH) != 0 || flags & TCP_ACK == 0 {
        return None;
    }
    Some(Tcp {
        v6,
        udp: false,
        ip_hlen,
        tcp_hlen,
        payload: p.len() - ip_hlen - tcp_hlen,
        seq: be32(p, ip_hlen + 4),
        flags,
    })
}

/// The open run in the buffer.
#[derive(Debug, Clone, Copy)]
struct Run {
    first: Tcp,
    mss: usize,
    count: usize,
    /// Bytes of the super-packet (after the vnet header).
    len: usize,
    next_seq: u32,
    /// A PSH or a short segment ended it.
    closed: bool,
}

/// The coalescer: one open run at a time (a bulk flow is one run).
pub struct Gro {
    buf: Vec<u8>,
    /// Coalesce UDP too (the TUN accepts `GSO_UDP_L4`).
    udp: bool,
    run: Option<Run>,
    /// Super-packets written, and segments they carried (for tests/stats).
    pub merged: u64,
}

impl std::fmt::Debug for Gro {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gro")
            .field("run", &self.run)
            .finish_non_exhaustive()
    }
}

impl Default for Gro {
    fn default() -> Self {
        Self {
            buf: vec![0; VirtioNetHdr::LEN + MAX_IP_LEN],
            udp: false,
            run: None,
            merged: 0,
        }
    }
}

impl Gro {
    /// A coalescer that also merges UDP (for a TUN with USO, [`Tun::uso`]).
    #[must_use]
    pub fn with_udp(udp: bool) -> Self {
        Self {
            udp,
            ..Self::default()
        }
    }

    /// Whether `p` (parsed as `t`) can join the open run.
    fn joins(&self, run: &Run, p: &[u8], t: &Tcp) -> bool {
        let h = &self.buf[VirtioNetHdr::LEN..];
        let f = &run.first;
        if run.closed
            || t.udp != f.udp
            || t.v6 != f.v6
            || t.tcp_hlen != f.tcp_hlen
            || (!t.udp && t.seq != run.next_seq)
            || t.payload > run.mss
            || run.len + t.payload > MAX_IP_LEN
        {
            return false;
        }
        let ip_same = if t.v6 {
            // Version/class/flow, hop limit, addresses.
            p[..4] == h[..4] && p[7] == h[7] && p[8..40] == h[8..40]
        } else {
            // TOS, DF, TTL, addresses.
            p[1] == h[1] && p[6] == h[6] && p[8] == h[8] && p[12..20] == h[12..20]
        };
        let o = f.ip_hlen;
        if t.udp {
            // Ports; and every earlier datagram had the full size.
            return ip_same && p[o..o + 4] == h[o..o + 4] && run.len - o - 8 == run.mss * run.count;
        }
        // Ports, ack, window, options.
        ip_same
            && p[o..o + 4] == h[o..o + 4]
            && p[o + 8..o + 12] == h[o + 8..o + 12]
            && p[o + 14..o + 16] == h[o + 14..o + 16]
            && p[o + 20..o + t.tcp_hlen] == h[o + 20..o + f.tcp_hlen]
    }

    /// Adds one opened IP packet; writes whatever it completes.
    pub fn push(&mut self, p: &[u8], sink: &mut impl Sink) -> io::Result<()> {
        let Some(t) = parse(p, self.udp) else {
            self.flush(sink)?;
            return write_plain(&mut self.buf, p, sink);
        };
        if let Some(run) = self.run {
            if self.joins(&run, p, &t) {
                let start = VirtioNetHdr::LEN + run.len;
                let data = &p[t.ip_hlen + t.tcp_hlen..];
                self.buf[start..start + data.len()].copy_from_slice(data);
                if t.flags & TCP_PSH != 0 {
                    self.buf[VirtioNetHdr::LEN + run.first.ip_hlen + 13] |= TCP_PSH;
                }
                self.run = Some(Run {
                    count: run.count + 1,
                    len: run.len + data.len(),
                    next_seq: run.next_seq.wrapping_add(data.len() as u32),
                    closed: t.flags & TCP_PSH != 0 || data.len() < run.mss,
                    ..run
                });
                return Ok(());
            }
            self.flush(sink)?;
        }
        self.buf[VirtioNetHdr::LEN..VirtioNetHdr::LEN + p.len()].copy_from_slice(p);
        self.run = Some(Run {
            first: t,
            mss: t.payload,
            count: 1,
            len: p.len(),
            next_seq: t.seq.wrapping_add(t.payload as u32),
            closed: t.flags & TCP_PSH != 0,
        });
        Ok(())
    }

    /// Writes the open run.
    pub fn flush(&mut self, sink: &mut impl Sink) -> io::Result<()> {
        let Some(run) = self.run.take() else {
            return Ok(());
        };
        let (hdr, pkt) = self.buf.split_at_mut(VirtioNetHdr::LEN);
        let pkt = &mut pkt[..run.len];
        if run.count == 1 {
            hdr.fill(0);
            return sink.write_vnet(&self.buf[..VirtioNetHdr::LEN + run.len]);
        }
        let f = run.first;
        let l4_len = run.len - f.ip_hlen;
        let mut sum: u64;
        if f.v6 {
            pkt[4..6].copy_from_slice(&u16::try_from(run.len - 40).unwrap_or(0).to_be_bytes());
            sum = csum_add(0, &pkt[8..40]);
        } else {
            pkt[2..4].copy_from_slice(&u16::try_from(run.len).unwrap_or(0).to_be_bytes());
            pkt[10..12].fill(0);
            let c = csum_fold(csum_add(0, &pkt[..20]));
            pkt[10..12].copy_from_slice(&(!c).to_be_bytes());
            sum = csum_add(0, &pkt[12..20]);
        }
        let (proto, csum_offset) = if f.udp { (17, 6) } else { (6, 16) };
        if f.udp {
            let at = f.ip_hlen + 4;
            pkt[at..at + 2].copy_from_slice(&u16::try_from(l4_len).unwrap_or(0).to_be_bytes());
        }
        sum += proto + l4_len as u64;
        let at = f.ip_hlen + csum_offset;
        pkt[at..at + 2].copy_from_slice(&csum_fold(sum).to_be_bytes());
        let vh = VirtioNetHdr {
            flags: VirtioNetHdr::F_NEEDS_CSUM,
            gso_type: if f.udp {
                VirtioNetHdr::GSO_UDP_L4
            } else if f.v6 {
                VirtioNetHdr::GSO_TCPV6
            } else {
                VirtioNetHdr::GSO_TCPV4
            },
            hdr_len: u16::try_from(f.ip_hlen + f.tcp_hlen).unwrap_or(0),
            gso_size: u16::try_from(run.mss).unwrap_or(0),
            csum_start: u16::try_from(f.ip_hlen).unwrap_or(0),
            csum_offset: u16::try_from(csum_offset).unwrap_or(0),
        };
        vh.write(hdr);
        self.merged += run.count as u64;
        sink.write_vnet(&self.buf[..VirtioNetHdr::LEN + run.len])
    }
}

fn write_plain(buf: &mut [u8], p: &[u8], sink: &mut impl Sink) -> io::Result<()> {
    buf[..VirtioNetHdr::LEN].fill(0);
    buf[VirtioNetHdr::LEN..VirtioNetHdr::LEN + p.len()].copy_from_slice(p);
    sink.write_vnet(&buf[..VirtioNetHdr::LEN + p.len()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::tun::gso_split;

    #[derive(Default)]
    struct Collect(Vec<Vec<u8>>);

    impl Sink for Collect {
        fn write_vnet(&mut self, buf: &[u8]) -> io::Result<()> {
            self.0.push(buf.to_vec());
            Ok(())
        }
    }

    /// A TCP/IPv4 segment with correct checksums.
    fn seg4(id: u16, seq: u32, payload: &[u8], flags: u8) -> Vec<u8> {
        let tcp_hlen = 32; // with 12 bytes of options (timestamps)
        let len = 20 + tcp_hlen + payload.len();
        let mut p = vec![0u8; len];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
        p[4..6].copy_from_slice(&id.to_be_bytes());
        p[6] = 0x40;
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[100, 64, 0, 2]);
        p[16..20].copy_from_slice(&[100, 64, 0, 1]);
        let c = csum_fold(csum_add(0, &p[..20]));
        p[10..12].copy_from_slice(&(!c).to_be_bytes());
        let t = &mut p[20..];
        t[0..2].copy_from_slice(&5201u16.to_be_bytes());
        t[2..4].copy_from_slice(&40000u16.to_be_bytes());
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[8..12].copy_from_slice(&77u32.to_be_bytes());
        t[12] = 8 << 4;
        t[13] = flags;
        t[14..16].copy_from_slice(&512u16.to_be_bytes());
        t[20..32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        t[32..].copy_from_slice(payload);
        let mut sum = csum_add(0, &p[12..20]) + 6 + (tcp_hlen + payload.len()) as u64;
        sum = csum_add(sum, &p[20..]);
        let c = !csum_fold(sum);
        p[36..38].copy_from_slice(&c.to_be_bytes());
        p
    }

    #[test]
    fn a_burst_becomes_one_super_packet_that_splits_back() {
        let mss = 1000;
        let mut segs = Vec::new();
        let mut seq = 1_000_000u32;
        for i in 0..5u8 {
            let len = if i == 4 { 300 } else { mss };
            let payload: Vec<u8> = (0..len).map(|j| (j as u8) ^ i).collect();
            let flags = if i == 4 { TCP_ACK | TCP_PSH } else { TCP_ACK };
            segs.push(seg4(u16::from(i), seq, &payload, flags));
            seq = seq.wrapping_add(len as u32);
        }
        let mut gro = Gro::default();
        let mut out = Collect::default();
        for s in &segs {
            gro.push(s, &mut out).unwrap();
        }
        // A non-TCP packet flushes the run and goes out as it is.
        let mut udp = segs[0].clone();
        udp[9] = 17;
        gro.push(&udp, &mut out).unwrap();
        gro.flush(&mut out).unwrap();
        assert_eq!(out.0.len(), 2);
        let sup = &out.0[0];
        let hdr = VirtioNetHdr::parse(sup).unwrap();
        assert_eq!(hdr.gso_type, VirtioNetHdr::GSO_TCPV4);
        assert_eq!(usize::from(hdr.gso_size), mss);
        // gso_split recomputes every checksum: the result must equal the
        // original segments byte for byte (PSH lands on the last one).
        let mut bufs = vec![vec![0u8; 2048]; 8];
        let mut refs: Vec<&mut [u8]> = bufs.iter_mut().map(Vec::as_mut_slice).collect();
        let mut sizes = [0usize; 8];
        let n = gso_split(&hdr, &sup[VirtioNetHdr::LEN..], &mut refs, &mut sizes, 0).unwrap();
        assert_eq!(n, 5);
        for (i, s) in segs.iter().enumerate() {
            let got = &refs[i][..sizes[i]];
            // The kernel's split keeps PSH on the last segment only.
            assert_eq!(&got[..36], &s[..36], "headers of segment {i}");
            assert_eq!(&got[38..], &s[38..], "payload of segment {i}");
            assert_eq!(got[36..38], s[36..38], "TCP checksum of segment {i}");
        }
        assert_eq!(&out.0[1][VirtioNetHdr::LEN..], &udp[..]);
        assert_eq!(&out.0[1][..VirtioNetHdr::LEN], &[0; VirtioNetHdr::LEN]);
    }

    /// A UDP/IPv4 datagram with correct checksums.
    fn udp4(id: u16, payload: &[u8]) -> Vec<u8> {
        let len = 28 + payload.len();
        let mut p = vec![0u8; len];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
        p[4..6].copy_from_slice(&id.to_be_bytes());
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&[100, 64, 0, 2]);
        p[16..20].copy_from_slice(&[100, 64, 0, 1]);
        let c = csum_fold(csum_add(0, &p[..20]));
        p[10..12].copy_from_slice(&(!c).to_be_bytes());
        p[20..22].copy_from_slice(&5201u16.to_be_bytes());
        p[22..24].copy_from_slice(&40000u16.to_be_bytes());
        p[24..26].copy_from_slice(&u16::try_from(len - 20).unwrap().to_be_bytes());
        p[28..].copy_from_slice(payload);
        let sum = csum_add(csum_add(0, &p[12..20]) + 17 + (len - 20) as u64, &p[20..]);
        let mut c = !csum_fold(sum);
        if c == 0 {
            c = 0xffff;
        }
        p[26..28].copy_from_slice(&c.to_be_bytes());
        p
    }

    #[test]
    fn udp_datagrams_merge_only_with_uso() {
        let dgrams: Vec<Vec<u8>> = (0..4u16)
            .map(|i| {
                let n = if i == 3 { 500 } else { 1372 };
                udp4(
                    i,
                    &(0..n).map(|j| (j as u8) ^ (i as u8)).collect::<Vec<_>>(),
                )
            })
            .collect();
        let mut plain = Gro::default();
        let mut out = Collect::default();
        for d in &dgrams {
            plain.push(d, &mut out).unwrap();
        }
        plain.flush(&mut out).unwrap();
        assert_eq!(out.0.len(), 4, "no USO: written as they are");

        let mut gro = Gro::with_udp(true);
        let mut out = Collect::default();
        for d in &dgrams {
            gro.push(d, &mut out).unwrap();
        }
        gro.flush(&mut out).unwrap();
        assert_eq!(out.0.len(), 1);
        let hdr = VirtioNetHdr::parse(&out.0[0]).unwrap();
        assert_eq!(hdr.gso_type, VirtioNetHdr::GSO_UDP_L4);
        assert_eq!(hdr.gso_size, 1372);
        let mut bufs = vec![vec![0u8; 2048]; 8];
        let mut refs: Vec<&mut [u8]> = bufs.iter_mut().map(Vec::as_mut_slice).collect();
        let mut sizes = [0usize; 8];
        let n = gso_split(
            &hdr,
            &out.0[0][VirtioNetHdr::LEN..],
            &mut refs,
            &mut sizes,
            0,
        )
        .unwrap();
        assert_eq!(n, 4);
        for (i, d) in dgrams.iter().enumerate() {
            assert_eq!(&refs[i][..sizes[i]], &d[..], "datagram {i}");
        }
    }

    #[test]
    fn gaps_and_other_flows_are_not_merged() {
        let mut gro = Gro::default();
        let mut out = Collect::default();
        let a = seg4(0, 1, &[1; 100], TCP_ACK);
        let gap = seg4(1, 500, &[2; 100], TCP_ACK);
        let syn = seg4(2, 600, &[3; 100], 0x02 | TCP_ACK);
        for p in [&a, &gap, &syn] {
            gro.push(p, &mut out).unwrap();
        }
        gro.flush(&mut out).unwrap();
        assert_eq!(out.0.len(), 3);
        for (o, p) in out.0.iter().zip([&a, &gap, &syn]) {
            assert_eq!(&o[VirtioNetHdr::LEN..], &p[..]);
        }
    }
}
