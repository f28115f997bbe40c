//! The Internet checksum (RFC 1071, `device/checksum.rs`), the one copy
//! shared by the data path: the offload split ([`super::tun::gso`]), the
//! receive coalescer ([`super::tun::gro`]) and the ICMP errors of
//! [`super::icmp`].

/// Adds `data` to a one's-complement sum (big-endian 16-bit words; an odd
/// last byte is padded with zero).
#[must_use]
pub fn add(mut sum: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u64::from(u16::from_be_bytes([*last, 0]));
    }
    sum
}

/// Folds a sum to 16 bits, not inverted (a partial checksum, as a
/// pseudo-header sum left for the kernel to complete).
#[must_use]
pub fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    u16::try_from(sum).unwrap_or(u16::MAX)
}

/// The checksum field's value: the folded sum, inverted.
#[must_use]
pub fn finish(sum: u64) -> u16 {
    !fold(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: 0001 f203 f4f5 f6f7 sums to ddf2 (folded).
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(add(0, &data)), 0xddf2);
        assert_eq!(finish(add(0, &data)), !0xddf2);
        // An odd byte counts as the high half of a word.
        assert_eq!(fold(add(0, &[0x12])), 0x1200);
    }
}
