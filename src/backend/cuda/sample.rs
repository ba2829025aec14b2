//! Sampling launches (kernels/sample.cu): greedy in one pass over the logits, top-k in blocks of
//! up to 4096 logits whose best candidates the last block sorts and draws from.

use super::device::{Gpu, Grow};
use crate::backend::SampleSpec;
use anyhow::Result;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct SampleParams {
    logits: u64,
    step: u64,
    cand_v: u64,
    cand_i: u64,
    counter: u64,
    out: u64,
    n_vocab: i32,
    top_k: i32,
    top_p: f32,
    temperature: f32,
    penalty: f32,
    per_block: i32,
}
const _: () = assert!(std::mem::size_of::<SampleParams>() == 72);

/// The most candidates the device's top-k keeps (larger k, or k = 0, samples on the host).
pub const MAX_TOP_K: usize = 64;
/// Logits per block of the top-k kernel, and candidates the last block sorts at most.
const TOPK_N: usize = 4096;
/// Repetition-penalty ids the Step block holds.
pub const MAX_PENALIZED: usize = 256;

/// Device buffers of sampling.
#[derive(Default)]
pub struct SampleScratch {
    cand_v: Grow,
    cand_i: Grow,
    counter: Grow,
    zeroed: bool,
    pub out: Grow,
}

/// Whether the device samples with these settings (else the host does, from the logits).
pub fn on_device(s: &SampleSpec) -> bool {
    let c = s.cfg;
    (c.temperature <= 0.0 || (c.top_k > 0 && c.top_k <= MAX_TOP_K))
        && s.penalized.len() <= MAX_PENALIZED
}

/// Queues the sampling of a token from `vocab` logits at `logits` into the `out` buffer.
pub fn launch(
    g: &Gpu,
    sc: &mut SampleScratch,
    logits: u64,
    vocab: usize,
    s: &SampleSpec,
    step: u64,
) -> Result<()> {
    let c = s.cfg;
    let greedy = c.temperature <= 0.0;
    let blocks = if greedy {
        (g.sm_count * 2).min(vocab.div_ceil(256)).max(1)
    } else {
        vocab.div_ceil(TOPK_N)
    };
    let k = if greedy { 1 } else { c.top_k.min(vocab) };
    if !greedy && blocks * k > TOPK_N {
        anyhow::bail!("top-k {k} over {vocab} logits exceeds the device's {TOPK_N} candidates");
    }
    let cand_v = sc.cand_v.ptr(g, blocks * k * 4)?;
    let cand_i = sc.cand_i.ptr(g, blocks * k * 4)?;
    let counter = sc.counter.ptr(g, 4)?;
    if !sc.zeroed {
        g.zero(counter, 4)?;
        sc.zeroed = true;
    }
    let out = sc.out.ptr(g, 4)?;
    let p = SampleParams {
        logits,
        step,
        cand_v,
        cand_i,
        counter,
        out,
        n_vocab: vocab as i32,
        top_k: k as i32,
        top_p: c.top_p,
        temperature: c.temperature,
        penalty: c.repeat_penalty,
        per_block: TOPK_N as i32,
    };
    if greedy {
        g.launch_struct(g.func("sample_argmax")?, (blocks as u32, 1, 1), 256, 0, &p)
    } else {
        g.launch_struct(g.func("sample_topk")?, (blocks as u32, 1, 1), 1024, 0, &p)
    }
}
