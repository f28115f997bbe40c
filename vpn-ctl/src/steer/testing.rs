//! Test fixtures for the classifiers: a crafted Ethernet frame and one
//! BPF_PROG_TEST_RUN of a TC program. Not public API: the unit tests, the
//! guard suite and the steering benchmark use them.
use std::{net::IpAddr, time::Duration};

use aya::programs::{tc::SchedClassifier, TestRun, TestRunOptions};

use super::object::{prog_err, BpfError};

/// One `test_run` of a classifier: the verdict, the mark it left, and the
/// kernel's mean time per run.
#[derive(Clone, Copy, Debug)]
pub struct TcRun {
    pub verdict: i32,
    pub mark: u32,
    pub duration: Duration,
}

/// `TC_ACT_OK` and `TC_ACT_SHOT`.
pub const TC_ACT_OK: i32 = 0;
pub const TC_ACT_SHOT: i32 = 2;

/// Size of the kernel's `struct __sk_buff` and the offset of `mark` in it.
const SKB_CTX_LEN: usize = 192;
const SKB_MARK: usize = 8;

/// Runs a loaded classifier on one Ethernet frame with `skb->mark = mark`,
/// `repeat` times (BPF_PROG_TEST_RUN; nothing is attached or sent).
pub fn test_run(
    prog: &SchedClassifier,
    frame: &[u8],
    mark: u32,
    repeat: u32,
) -> Result<TcRun, BpfError> {
    let mut ctx_in = [0u8; SKB_CTX_LEN];
    ctx_in[SKB_MARK..SKB_MARK + 4].copy_from_slice(&mark.to_ne_bytes());
    let mut ctx_out = [0u8; SKB_CTX_LEN];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.ctx_in = Some(&ctx_in);
    opts.ctx_out = Some(&mut ctx_out);
    opts.repeat = repeat.max(1);
    let r = prog
        .test_run(opts)
        .map_err(prog_err("BPF_PROG_TEST_RUN of a TC program"))?;
    let mark_out = u32::from_ne_bytes(
        ctx_out[SKB_MARK..SKB_MARK + 4]
            .try_into()
            .expect("four bytes"),
    );
    Ok(TcRun {
        verdict: r.return_value as i32,
        mark: mark_out,
        duration: r.duration,
    })
}

/// An Ethernet frame carrying an IPv4 or IPv6 packet from `src` to `dst`
/// with a TCP or UDP header (ports) or, for other protocols, 8 zero bytes.
/// Both addresses must be of the same family. Checksums are left zero.
#[must_use]
pub fn eth_frame(src: IpAddr, dst: IpAddr, proto: u8, sport: u16, dport: u16) -> Vec<u8> {
    let mut l4 = vec![0u8; if proto == 6 { 20 } else { 8 }];
    l4[0..2].copy_from_slice(&sport.to_be_bytes());
    l4[2..4].copy_from_slice(&dport.to_be_bytes());
    if proto == 17 {
        l4[4..6].copy_from_slice(&8u16.to_be_bytes());
    } else if proto == 6 {
        l4[12] = 5 << 4;
    }
    let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&0x0800u16.to_be_bytes());
            let total = (20 + l4.len()) as u16;
            f.extend_from_slice(&[0x45, 0]);
            f.extend_from_slice(&total.to_be_bytes());
            f.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&0x86ddu16.to_be_bytes());
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            f.extend_from_slice(&[proto, 64]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
        }
        _ => panic!("eth_frame: {src} and {dst} are of different families"),
    }
    f.extend_from_slice(&l4);
    f
}
