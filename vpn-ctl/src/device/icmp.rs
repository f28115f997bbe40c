//! "Packet too big" for packets the tunnel cannot carry.
//!
//! A TUN link accepts an MTU up to 65535, but a sealed packet must fit one
//! UDP datagram: 65507 bytes over IPv4, so at most [`MAX_INNER`] bytes of
//! plaintext. A larger packet is answered, as a router would, with ICMP
//! "fragmentation needed" (IPv4) or ICMPv6 "packet too big" carrying
//! [`MAX_INNER`] (65472), written back to the TUN; the sender's path-MTU discovery
//! then sends smaller packets (TCP lowers its segment size at once).

/// Largest plaintext packet a datagram carries: 65507 (IPv4 UDP payload)
/// minus the 32 bytes of transport header and tag, rounded down to the
/// 16-byte padding multiple (a longer packet would be padded past it).
pub const MAX_INNER: usize = (65_507 - 32) & !15;

use super::checksum;

fn csum(sum: u64, data: &[u8]) -> [u8; 2] {
    checksum::finish(checksum::add(sum, data)).to_be_bytes()
}

/// Writes into `out` the ICMP error telling the sender of `packet` that
/// at most `mtu` bytes fit; returns its length, or `None` for a packet that
/// gets none (not IPv4/IPv6, too short, or itself an ICMP error).
#[must_use]
pub fn packet_too_big(packet: &[u8], mtu: usize, out: &mut [u8]) -> Option<usize> {
    match packet.first()? >> 4 {
        4 => v4(packet, mtu, out),
        6 => v6(packet, mtu, out),
        _ => None,
    }
}

fn v4(packet: &[u8], mtu: usize, out: &mut [u8]) -> Option<usize> {
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    if ihl < 20 || packet.len() < ihl + 8 {
        return None;
    }
    // Never answer an ICMP error with one (RFC 1122 3.2.2).
    if packet[9] == 1 && !matches!(packet[ihl], 0 | 8 | 13 | 15 | 17) {
        return None;
    }
    // IP header + ICMP header + the original, within 576 bytes.
    let quoted = packet.len().min(576 - 28);
    let len = 28 + quoted;
    let out = out.get_mut(..len)?;
    out.fill(0);
    out[0] = 0x45;
    out[2..4].copy_from_slice(&u16::try_from(len).ok()?.to_be_bytes());
    out[8] = 64;
    out[9] = 1;
    out[12..16].copy_from_slice(&packet[16..20]);
    out[16..20].copy_from_slice(&packet[12..16]);
    let c = csum(0, &out[..20]);
    out[10..12].copy_from_slice(&c);
    out[20] = 3; // destination unreachable
    out[21] = 4; // fragmentation needed
    out[26..28].copy_from_slice(&u16::try_from(mtu).unwrap_or(u16::MAX).to_be_bytes());
    out[28..].copy_from_slice(&packet[..quoted]);
    let c = csum(0, &out[20..]);
    out[22..24].copy_from_slice(&c);
    Some(len)
}

fn v6(packet: &[u8], mtu: usize, out: &mut [u8]) -> Option<usize> {
    if packet.len() < 48 {
        return None;
    }
    // ICMPv6 errors (types below 128) get no answer (RFC 4443 2.4).
    if packet[6] == 58 && packet[40] < 128 {
        return None;
    }
    // IPv6 header + ICMPv6 header + the original, within 1280 bytes.
    let quoted = packet.len().min(1280 - 48);
    let len = 48 + quoted;
    let out = out.get_mut(..len)?;
    out.fill(0);
    out[0] = 0x60;
    let payload = u16::try_from(len - 40).ok()?;
    out[4..6].copy_from_slice(&payload.to_be_bytes());
    out[6] = 58;
    out[7] = 64;
    out[8..24].copy_from_slice(&packet[24..40]);
    out[24..40].copy_from_slice(&packet[8..24]);
    out[40] = 2; // packet too big
    out[44..48].copy_from_slice(&u32::try_from(mtu).unwrap_or(u32::MAX).to_be_bytes());
    out[48..].copy_from_slice(&packet[..quoted]);
    // Pseudo-header: addresses, upper-layer length, next header.
    let sum = checksum::add(0, &out[8..40]) + u64::from(payload) + 58;
    let c = csum(sum, &out[40..]);
    out[42..44].copy_from_slice(&c);
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp4(len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
        p[6] = 0x40; // DF
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[100, 64, 0, 1]);
        p[16..20].copy_from_slice(&[100, 64, 0, 2]);
        p
    }

    fn verify(sum_over: &[u8], start: u64) -> bool {
        csum(start, sum_over) == [0, 0]
    }

    #[test]
    fn ipv4_fragmentation_needed() {
        let p = tcp4(65_535);
        let mut out = [0u8; 1500];
        let n = packet_too_big(&p, MAX_INNER, &mut out).unwrap();
        let icmp = &out[..n];
        assert_eq!(n, 576);
        assert!(verify(&icmp[..20], 0), "IP header checksum");
        assert!(verify(&icmp[20..], 0), "ICMP checksum");
        assert_eq!(&icmp[12..16], &[100, 64, 0, 2], "from the destination");
        assert_eq!(&icmp[16..20], &[100, 64, 0, 1], "to the sender");
        assert_eq!((icmp[20], icmp[21]), (3, 4));
        assert_eq!(u16::from_be_bytes([icmp[26], icmp[27]]), 65_472);
        assert_eq!(&icmp[28..48], &p[..20], "quotes the original header");
    }

    #[test]
    fn ipv6_packet_too_big() {
        let mut p = vec![0u8; 65_000];
        p[0] = 0x60;
        p[6] = 6;
        p[8..24].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        p[24..40].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        let mut out = [0u8; 1500];
        let n = packet_too_big(&p, MAX_INNER, &mut out).unwrap();
        assert_eq!(n, 1280);
        let icmp = &out[..n];
        let payload = u64::try_from(n - 40).unwrap();
        let pseudo = checksum::add(0, &icmp[8..40]) + payload + 58;
        assert!(verify(&icmp[40..], pseudo), "ICMPv6 checksum");
        assert_eq!(icmp[40], 2);
        assert_eq!(
            u32::from_be_bytes([icmp[44], icmp[45], icmp[46], icmp[47]]),
            65_472
        );
        assert_eq!(icmp[39], 1, "to the sender");
    }

    #[test]
    fn errors_and_junk_get_no_answer() {
        let mut out = [0u8; 1500];
        let mut p = tcp4(65_535);
        p[9] = 1;
        p[20] = 3; // an ICMP error itself
        assert_eq!(packet_too_big(&p, MAX_INNER, &mut out), None);
        assert_eq!(packet_too_big(&[0x45, 0], MAX_INNER, &mut out), None);
        assert_eq!(packet_too_big(&[], MAX_INNER, &mut out), None);
        assert_eq!(packet_too_big(&[0x10; 64], MAX_INNER, &mut out), None);
    }
}
