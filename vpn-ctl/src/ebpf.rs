//! The eBPF object, built from `vpn-ebpf` by build.rs and embedded here so a
//! single `vpn-ctl` binary carries its kernel programs.

/// ELF object with every vpn program and map (aligned for the ELF parser).
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vpn-ebpf.o"));

#[cfg(test)]
mod tests {
    #[test]
    fn object_is_a_bpf_elf() {
        assert_eq!(&super::OBJECT[..4], b"\x7fELF");
        // e_machine (offset 18, little endian) is EM_BPF = 247.
        assert_eq!(
            u16::from_le_bytes([super::OBJECT[18], super::OBJECT[19]]),
            247
        );
    }
}
