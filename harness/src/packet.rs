//! Packet fixtures: Ethernet frames carrying an IPv4 or IPv6 header and a
//! TCP or UDP header, built byte by byte for programs run with
//! BPF_PROG_TEST_RUN (nothing is sent). Checksums stay zero: the programs
//! under test classify, they do not verify.
use std::net::IpAddr;

/// IP protocol numbers.
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;

/// Destination and source MAC of every fixture (locally administered).
const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const TTL: u8 = 64;

/// The transport header: TCP (20 bytes, data offset 5, no flags), UDP
/// (8 bytes, length 8), or, for any other protocol, 8 zero bytes; ports
/// first in the first two cases.
fn l4_header(proto: u8, sport: u16, dport: u16) -> Vec<u8> {
    let mut h = match proto {
        TCP => {
            let mut h = vec![0u8; 20];
            h[12] = 5 << 4;
            h
        }
        UDP => {
            let mut h = vec![0u8; 8];
            h[4..6].copy_from_slice(&8u16.to_be_bytes());
            h
        }
        _ => return vec![0u8; 8],
    };
    h[..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h
}

/// An Ethernet frame from `src`:`sport` to `dst`:`dport` over `proto`
/// (see [`l4_header`] for what follows the IP header). IPv4 headers carry
/// DF and TTL 64, IPv6 ones hop limit 64.
///
/// # Panics
/// If `src` and `dst` are of different families.
#[must_use]
pub fn eth_frame(src: IpAddr, dst: IpAddr, proto: u8, sport: u16, dport: u16) -> Vec<u8> {
    let l4 = l4_header(proto, sport, dport);
    let len = u16::try_from(l4.len()).expect("a short header");
    let mut frame = [DST_MAC, SRC_MAC].concat();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            frame.extend(ETH_P_IP.to_be_bytes());
            // version 4, IHL 5, no DSCP; total length; id 0; DF; TTL; proto;
            // checksum 0.
            frame.extend([0x45, 0]);
            frame.extend((20 + len).to_be_bytes());
            frame.extend([0, 0, 0x40, 0, TTL, proto, 0, 0]);
            frame.extend(s.octets());
            frame.extend(d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            frame.extend(ETH_P_IPV6.to_be_bytes());
            // version 6, no traffic class or flow label; payload length;
            // next header; hop limit.
            frame.extend([0x60, 0, 0, 0]);
            frame.extend(len.to_be_bytes());
            frame.extend([proto, TTL]);
            frame.extend(s.octets());
            frame.extend(d.octets());
        }
        _ => panic!("eth_frame: {src} and {dst} are of different families"),
    }
    frame.extend(l4);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_udp_layout() {
        let f = eth_frame(
            "198.18.0.1".parse().unwrap(),
            "198.18.0.2".parse().unwrap(),
            UDP,
            1,
            51820,
        );
        assert_eq!(f.len(), 14 + 20 + 8);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        assert_eq!(f[14], 0x45);
        assert_eq!(&f[16..18], &28u16.to_be_bytes());
        assert_eq!(f[23], UDP);
        assert_eq!(&f[26..30], &[198, 18, 0, 1]);
        assert_eq!(&f[34..38], &[0, 1, 0xca, 0x6c]);
        assert_eq!(&f[38..40], &8u16.to_be_bytes());
    }

    #[test]
    fn ipv6_tcp_layout() {
        let f = eth_frame(
            "fd00::1".parse().unwrap(),
            "fd00::2".parse().unwrap(),
            TCP,
            40000,
            443,
        );
        assert_eq!(f.len(), 14 + 40 + 20);
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!(&f[18..20], &20u16.to_be_bytes());
        assert_eq!(f[20], TCP);
        assert_eq!(&f[56..58], &443u16.to_be_bytes());
        assert_eq!(f[54 + 12], 0x50);
    }
}
