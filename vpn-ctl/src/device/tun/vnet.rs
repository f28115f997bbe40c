//! `struct virtio_net_hdr` (`device/tun/vnet.rs`): the 10-byte header in
//! front of every packet of a vnet-header TUN, which carries the kernel's
//! segmentation and checksum offload requests.

/// `struct virtio_net_hdr` (10 bytes, little-endian) preceding each packet in
/// vnet-header mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VirtioNetHdr {
    /// `VIRTIO_NET_HDR_F_*`.
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_*`.
    pub gso_type: u8,
    /// Length of the headers (IP + transport) of each segment.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where checksumming starts.
    pub csum_start: u16,
    /// Where the checksum goes, from `csum_start`.
    pub csum_offset: u16,
}

impl VirtioNetHdr {
    /// Bytes on the wire.
    pub const LEN: usize = 10;
    /// The checksum is partial and must be completed.
    pub const F_NEEDS_CSUM: u8 = 1;
    /// Not a super-packet.
    pub const GSO_NONE: u8 = 0;
    /// TCP over IPv4 super-packet.
    pub const GSO_TCPV4: u8 = 1;
    /// UDP fragmentation offload (obsolete).
    pub const GSO_UDP: u8 = 3;
    /// TCP over IPv6 super-packet.
    pub const GSO_TCPV6: u8 = 4;
    /// UDP segmentation (USO) super-packet.
    pub const GSO_UDP_L4: u8 = 5;
    /// ECN bit.
    pub const GSO_ECN: u8 = 0x80;

    /// Parses the header at the start of `buf`.
    #[must_use]
    pub fn parse(buf: &[u8]) -> Option<Self> {
        let b = buf.get(..Self::LEN)?;
        let u = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Some(Self {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }

    /// Writes the header to the start of `buf` (at least [`Self::LEN`] bytes).
    ///
    /// # Panics
    /// If `buf` is shorter than [`Self::LEN`].
    pub fn write(&self, buf: &mut [u8]) {
        buf[0] = self.flags;
        buf[1] = self.gso_type;
        buf[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        buf[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        buf[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        buf[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vnet_hdr_parse_write() {
        let h = VirtioNetHdr {
            flags: 1,
            gso_type: VirtioNetHdr::GSO_TCPV4,
            hdr_len: 52,
            gso_size: 1388,
            csum_start: 20,
            csum_offset: 16,
        };
        let mut b = [0u8; 10];
        h.write(&mut b);
        assert_eq!(VirtioNetHdr::parse(&b), Some(h));
        assert_eq!(VirtioNetHdr::parse(&b[..9]), None);
    }
}
