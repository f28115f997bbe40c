//! The TSO/USO split (`device/tun/gso.rs`): cuts a super-packet read from a
//! vnet-header TUN into plain IP packets with every header and checksum
//! fixed. Its receive half, the coalescer, is [`super::gro`].

use super::VirtioNetHdr;
use crate::device::checksum::{add as csum_add, finish as csum_fold};

/// Why a super-packet could not be split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GsoError {
    /// Headers do not parse, or disagree with the virtio header.
    #[error("malformed offload packet: {0}")]
    Malformed(&'static str),
    /// Not enough output buffers, or one is too small.
    #[error("output buffers too few or too small for the segments")]
    NoRoom,
}

/// Splits what one read from a vnet-header TUN returned into plain IP
/// packets, each written at `out[i][out_offset..]` (room in front for the
/// tunnel header) with its length in `sizes[i]`; returns how many.
///
/// `hdr` is the [`VirtioNetHdr`] read in front of `packet`. TCP (TSO) and UDP
/// (USO) super-packets are cut at `gso_size` bytes of payload with IP length,
/// id, TCP sequence, flags and all checksums fixed; a single packet whose
/// checksum the kernel left partial (`F_NEEDS_CSUM`) gets it completed.
///
/// # Errors
/// [`GsoError`] if the packet is malformed or the outputs lack room.
pub fn gso_split(
    hdr: &VirtioNetHdr,
    packet: &[u8],
    out: &mut [&mut [u8]],
    sizes: &mut [usize],
    out_offset: usize,
) -> Result<usize, GsoError> {
    let gso = hdr.gso_type & !VirtioNetHdr::GSO_ECN;
    if gso == VirtioNetHdr::GSO_NONE {
        let (Some(dst), Some(size)) = (out.first_mut(), sizes.first_mut()) else {
            return Err(GsoError::NoRoom);
        };
        let dst = dst
            .get_mut(out_offset..out_offset + packet.len())
            .ok_or(GsoError::NoRoom)?;
        dst.copy_from_slice(packet);
        if hdr.flags & VirtioNetHdr::F_NEEDS_CSUM != 0 {
            let start = usize::from(hdr.csum_start);
            let at = start + usize::from(hdr.csum_offset);
            if at + 2 > dst.len() {
                return Err(GsoError::Malformed("checksum offset beyond packet"));
            }
            // The field holds the pseudo-header sum; fold the rest in.
            let c = csum_fold(csum_add(0, &dst[start..]));
            dst[at..at + 2].copy_from_slice(&c.to_be_bytes());
        }
        *size = packet.len();
        return Ok(1);
    }
    let (tcp, v6) = match gso {
        VirtioNetHdr::GSO_TCPV4 => (true, false),
        VirtioNetHdr::GSO_TCPV6 => (true, true),
        VirtioNetHdr::GSO_UDP_L4 => (false, packet.first().is_some_and(|b| b >> 4 == 6)),
        _ => return Err(GsoError::Malformed("unsupported gso type")),
    };
    let version = packet.first().map(|b| b >> 4);
    if version != Some(if v6 { 6 } else { 4 }) {
        return Err(GsoError::Malformed("IP version does not match gso type"));
    }
    let l4 = usize::from(hdr.csum_start);
    let min_l3 = if v6 { 40 } else { 20 };
    if l4 < min_l3 || packet.len() < l4 + 8 {
        return Err(GsoError::Malformed("transport header out of range"));
    }
    if !v6 && usize::from(packet[0] & 0x0f) * 4 != l4 {
        return Err(GsoError::Malformed("IPv4 header length != csum_start"));
    }
    let l4_len = if tcp {
        if packet.len() < l4 + 20 {
            return Err(GsoError::Malformed("short TCP header"));
        }
        usize::from(packet[l4 + 12] >> 4) * 4
    } else {
        8
    };
    let hlen = l4 + l4_len;
    let mss = usize::from(hdr.gso_size);
    if l4_len < 8 || packet.len() < hlen || mss == 0 {
        return Err(GsoError::Malformed("bad header or segment size"));
    }
    let payload = &packet[hlen..];
    let nseg = payload.len().div_ceil(mss).max(1);
    if nseg > out.len() || nseg > sizes.len() {
        return Err(GsoError::NoRoom);
    }
    let (src, dst_addr) = if v6 {
        (&packet[8..24], &packet[24..40])
    } else {
        (&packet[12..16], &packet[16..20])
    };
    let proto = if tcp { 6u8 } else { 17 };
    let ip_id = u16::from_be_bytes([packet[4], packet[5]]);
    let seq = u32::from_be_bytes([
        packet[l4 + 4],
        packet[l4 + 5],
        packet[l4 + 6],
        packet[l4 + 7],
    ]);
    for (i, chunk) in payload.chunks(mss).enumerate() {
        let seg_len = hlen + chunk.len();
        let buf = out[i]
            .get_mut(out_offset..out_offset + seg_len)
            .ok_or(GsoError::NoRoom)?;
        buf[..hlen].copy_from_slice(&packet[..hlen]);
        buf[hlen..].copy_from_slice(chunk);
        let idx = u16::try_from(i).map_err(|_| GsoError::NoRoom)?;
        if v6 {
            let plen = u16::try_from(seg_len - 40).map_err(|_| GsoError::NoRoom)?;
            buf[4..6].copy_from_slice(&plen.to_be_bytes());
        } else {
            let tot = u16::try_from(seg_len).map_err(|_| GsoError::NoRoom)?;
            buf[2..4].copy_from_slice(&tot.to_be_bytes());
            buf[4..6].copy_from_slice(&ip_id.wrapping_add(idx).to_be_bytes());
            buf[10..12].fill(0);
            let c = csum_fold(csum_add(0, &buf[..l4]));
            buf[10..12].copy_from_slice(&c.to_be_bytes());
        }
        let l4_total = seg_len - l4;
        let csum_at = if tcp {
            let s = seq.wrapping_add(u32::try_from(i * mss).map_err(|_| GsoError::NoRoom)?);
            buf[l4 + 4..l4 + 8].copy_from_slice(&s.to_be_bytes());
            let last = i + 1 == nseg;
            if !last {
                buf[l4 + 13] &= !(0x01 | 0x08); // FIN, PSH only on the last
            }
            if i > 0 {
                buf[l4 + 13] &= !0x80; // CWR only on the first
            }
            l4 + 16
        } else {
            let ulen = u16::try_from(l4_total).map_err(|_| GsoError::NoRoom)?;
            buf[l4 + 4..l4 + 6].copy_from_slice(&ulen.to_be_bytes());
            l4 + 6
        };
        buf[csum_at..csum_at + 2].fill(0);
        // Pseudo-header: addresses, protocol, transport length.
        let mut sum = csum_add(0, src);
        sum = csum_add(sum, dst_addr);
        sum += u64::from(proto);
        sum += l4_total as u64;
        let mut c = csum_fold(csum_add(sum, &buf[l4..]));
        if !tcp && c == 0 {
            c = 0xffff;
        }
        buf[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
        sizes[i] = seg_len;
    }
    Ok(nseg)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Checks IP and transport checksums of a plain packet; returns (l4 offset, proto).
    pub(in crate::device) fn verify_checksums(p: &[u8]) -> (usize, u8) {
        let (l4, proto, src, dst) = if p[0] >> 4 == 4 {
            let ihl = usize::from(p[0] & 0xf) * 4;
            assert_eq!(csum_fold(csum_add(0, &p[..ihl])), 0, "IPv4 header checksum");
            assert_eq!(usize::from(u16::from_be_bytes([p[2], p[3]])), p.len());
            (ihl, p[9], &p[12..16], &p[16..20])
        } else {
            assert_eq!(usize::from(u16::from_be_bytes([p[4], p[5]])), p.len() - 40);
            (40, p[6], &p[8..24], &p[24..40])
        };
        let mut sum = csum_add(0, src);
        sum = csum_add(sum, dst);
        sum += u64::from(proto);
        sum += (p.len() - l4) as u64;
        assert_eq!(csum_fold(csum_add(sum, &p[l4..])), 0, "transport checksum");
        (l4, proto)
    }

    fn tcp_super(v6: bool, payload_len: usize, flags: u8) -> (VirtioNetHdr, Vec<u8>) {
        let l4 = if v6 { 40 } else { 20 };
        let mut p = vec![0u8; l4 + 20 + payload_len];
        if v6 {
            p[0] = 0x60;
            p[6] = 6;
            p[7] = 64;
            p[8] = 0xfd;
            p[23] = 1;
            p[24] = 0xfd;
            p[39] = 2;
        } else {
            p[0] = 0x45;
            p[4..6].copy_from_slice(&0xfffeu16.to_be_bytes());
            p[8] = 64;
            p[9] = 6;
            p[12..16].copy_from_slice(&[100, 64, 0, 1]);
            p[16..20].copy_from_slice(&[100, 64, 0, 2]);
        }
        p[l4..l4 + 2].copy_from_slice(&40000u16.to_be_bytes());
        p[l4 + 2..l4 + 4].copy_from_slice(&443u16.to_be_bytes());
        p[l4 + 4..l4 + 8].copy_from_slice(&0xffff_fc00u32.to_be_bytes());
        p[l4 + 12] = 5 << 4;
        p[l4 + 13] = flags;
        for (i, b) in p[l4 + 20..].iter_mut().enumerate() {
            *b = u8::try_from(i % 251).unwrap();
        }
        let hdr = VirtioNetHdr {
            flags: VirtioNetHdr::F_NEEDS_CSUM,
            gso_type: if v6 {
                VirtioNetHdr::GSO_TCPV6
            } else {
                VirtioNetHdr::GSO_TCPV4
            },
            hdr_len: u16::try_from(l4 + 20).unwrap(),
            gso_size: 1000,
            csum_start: u16::try_from(l4).unwrap(),
            csum_offset: 16,
        };
        (hdr, p)
    }

    #[test]
    fn gso_split_tcp() {
        for v6 in [false, true] {
            // PSH|FIN|CWR|ACK
            let (hdr, p) = tcp_super(v6, 2500, 0x01 | 0x08 | 0x80 | 0x10);
            let mut bufs = vec![vec![0u8; 2048]; 4];
            let mut outs: Vec<&mut [u8]> = bufs.iter_mut().map(Vec::as_mut_slice).collect();
            let mut sizes = [0usize; 4];
            let n = gso_split(&hdr, &p, &mut outs, &mut sizes, 16).unwrap();
            assert_eq!(n, 3);
            let l4 = if v6 { 40 } else { 20 };
            let mut joined = Vec::new();
            for i in 0..n {
                let seg = &outs[i][16..16 + sizes[i]];
                verify_checksums(seg);
                let seq = u32::from_be_bytes(seg[l4 + 4..l4 + 8].try_into().unwrap());
                assert_eq!(
                    seq,
                    0xffff_fc00u32.wrapping_add(u32::try_from(i).unwrap() * 1000)
                );
                let fl = seg[l4 + 13];
                assert_eq!(fl & 0x10, 0x10, "ACK kept");
                assert_eq!(fl & 0x09 != 0, i == 2, "FIN/PSH only on the last");
                assert_eq!(fl & 0x80 != 0, i == 0, "CWR only on the first");
                if !v6 {
                    let id = u16::from_be_bytes([seg[4], seg[5]]);
                    assert_eq!(id, 0xfffeu16.wrapping_add(u16::try_from(i).unwrap()));
                }
                joined.extend_from_slice(&seg[l4 + 20..]);
            }
            assert_eq!(sizes[..3], [l4 + 1020, l4 + 1020, l4 + 520]);
            assert_eq!(joined, p[l4 + 20..]);
            // Too few outputs.
            let mut sizes = [0usize; 2];
            assert_eq!(
                gso_split(&hdr, &p, &mut outs[..2], &mut sizes, 0),
                Err(GsoError::NoRoom)
            );
        }
        // A lone packet with a partial checksum gets it completed.
        let (mut hdr, mut p) = tcp_super(false, 100, 0x10);
        hdr.gso_type = VirtioNetHdr::GSO_NONE;
        let mut sum = csum_add(0, &p[12..20]) + 6 + 120;
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        p[36..38].copy_from_slice(&u16::try_from(sum).unwrap().to_be_bytes());
        p[2..4].copy_from_slice(&140u16.to_be_bytes());
        let c = csum_fold(csum_add(0, &p[..20]));
        p[10..12].copy_from_slice(&c.to_be_bytes());
        let mut buf = [0u8; 256];
        let mut sizes = [0usize; 1];
        assert_eq!(
            gso_split(&hdr, &p, &mut [&mut buf[..]], &mut sizes, 0),
            Ok(1)
        );
        verify_checksums(&buf[..sizes[0]]);
        // Garbage is refused, not panicked on.
        hdr.gso_type = VirtioNetHdr::GSO_TCPV4;
        assert!(matches!(
            gso_split(&hdr, &p[..30], &mut [&mut buf[..]], &mut sizes, 0),
            Err(GsoError::Malformed(_))
        ));
    }
}
