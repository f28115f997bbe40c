//! Running a loaded aya program on one packet with BPF_PROG_TEST_RUN
//! (`repeat` times, nothing attached, nothing sent): the verdict, the
//! `skb->mark` a classifier leaves, and the kernel's mean time per run.
//! Behind the `bpf` feature, so users of the namespace helpers alone
//! (xtask) do not build aya.
use std::time::Duration;

use anyhow::{Context, Result};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions, TestRunResult};

/// TC verdicts (`TC_ACT_OK`, `TC_ACT_SHOT`).
pub const TC_ACT_OK: i32 = 0;
pub const TC_ACT_SHOT: i32 = 2;

/// `sizeof(struct __sk_buff)` and the offset of its `mark` field.
const SKB_LEN: usize = 192;
const SKB_MARK: std::ops::Range<usize> = 8..12;

/// One run of a classifier.
#[derive(Clone, Copy, Debug)]
pub struct TcRun {
    pub verdict: i32,
    pub mark: u32,
    /// The kernel's mean time per run.
    pub duration: Duration,
}

/// Runs `prog` on the Ethernet frame `frame` with `skb->mark = mark`,
/// `repeat` times (at least once).
///
/// # Errors
/// If the kernel refuses the test run.
pub fn run_tc(prog: &SchedClassifier, frame: &[u8], mark: u32, repeat: u32) -> Result<TcRun> {
    let mut ctx_in = [0u8; SKB_LEN];
    ctx_in[SKB_MARK].copy_from_slice(&mark.to_ne_bytes());
    let mut ctx_out = [0u8; SKB_LEN];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.ctx_in = Some(&ctx_in);
    opts.ctx_out = Some(&mut ctx_out);
    opts.repeat = repeat.max(1);
    let r = prog
        .test_run(opts)
        .context("BPF_PROG_TEST_RUN of a TC program")?;
    let mut mark_out = [0u8; 4];
    mark_out.copy_from_slice(&ctx_out[SKB_MARK]);
    Ok(TcRun {
        verdict: r.return_value as i32,
        mark: u32::from_ne_bytes(mark_out),
        duration: r.duration,
    })
}

/// Runs any packet program (XDP, socket filter...) on `frame`, `repeat`
/// times (at least once), with no context.
///
/// # Errors
/// If the kernel refuses the test run.
pub fn run_packet<P>(prog: &P, frame: &[u8], repeat: u32) -> Result<TestRunResult>
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = TestRunResult>,
{
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.repeat = repeat.max(1);
    prog.test_run(opts).context("BPF_PROG_TEST_RUN")
}
