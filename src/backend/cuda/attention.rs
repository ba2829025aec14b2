//! Launches of the attention kernels (kernels/attention.cu): split-key decoding over the f16
//! cache for a few tokens, and the tensor-core kernel for prompts and encoder batches.

use super::device::{Gpu, Grow};
use super::kernels::Kernels;
use crate::backend::Heads;
use anyhow::{bail, Result};

/// Keys per warp of the decoding kernel; a block's four warps take four splits.
pub const SPLIT_LEN: usize = 64;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct AttnParams {
    q: u64,
    kc: u64,
    vc: u64,
    out: u64,
    part: u64,
    counters: u64,
    step: u64,
    n_head: i32,
    n_kv: i32,
    split_len: i32,
    blocks: i32,
    scale: f32,
    q_stride: i32,
    out_stride: i32,
    pad: i32,
}
const _: () = assert!(std::mem::size_of::<AttnParams>() == 88);

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct FlashParams {
    pub q: u64,
    pub k: u64,
    pub v: u64,
    pub out: u64,
    pub out16: u64,
    pub tiles: u64,
    pub pos: u64,
    pub rope: u64,
    pub step: u64,
    pub q_stride: i32,
    pub k_stride: i32,
    pub v_stride: i32,
    pub out_stride: i32,
    pub n_head: i32,
    pub n_kv: i32,
    pub window: i32,
    pub n_q: i32,
    pub scale: f32,
    pub kv_f16: i32,
    pub causal: i32,
    pub pad: i32,
}
const _: () = assert!(std::mem::size_of::<FlashParams>() == 120);

/// Queries per block of the tensor-core kernel.
pub const FLASH_QUERIES: usize = 64;

/// Partial results and arrival counters of the decoding kernel.
#[derive(Default)]
pub struct DecodeScratch {
    part: Grow,
    counters: Grow,
    counters_len: usize,
}

fn check_heads(h: Heads) -> Result<usize> {
    if h.n_head_kv == 0 || !h.n_head.is_multiple_of(h.n_head_kv) {
        bail!(
            "{} heads over {} KV heads cannot run on the GPU",
            h.n_head,
            h.n_head_kv
        );
    }
    Kernels::head_index(h.head_dim)
}

/// Causal attention of `n` tokens (queries at rows of `q`, positions Step.pos0..) over a cache
/// of `ctx` positions; the split count depends on `ctx` only, so the launch is the same at
/// every position.
#[allow(clippy::too_many_arguments)]
pub fn decode(
    g: &Gpu,
    k: &Kernels,
    s: &mut DecodeScratch,
    (q, out): (u64, u64),
    (kc, vc, ctx): (u64, u64, usize),
    n: usize,
    h: Heads,
    step: u64,
) -> Result<()> {
    let hi = check_heads(h)?;
    let blocks = ctx.div_ceil(4 * SPLIT_LEN).max(1);
    let rows = n * h.n_head;
    let part = s.part.ptr(g, rows * blocks * (h.head_dim + 2) * 4)?;
    if s.counters_len < rows {
        let p = s.counters.ptr(g, rows * 4)?;
        g.zero(p, rows * 4)?;
        s.counters_len = rows;
    }
    let p = AttnParams {
        q,
        kc,
        vc,
        out,
        part,
        counters: s.counters.current().0,
        step,
        n_head: h.n_head as i32,
        n_kv: h.n_head_kv as i32,
        split_len: SPLIT_LEN as i32,
        blocks: blocks as i32,
        scale: 1.0 / (h.head_dim as f32).sqrt(),
        q_stride: h.q_dim() as i32,
        out_stride: h.q_dim() as i32,
        pad: 0,
    };
    g.launch_struct(
        k.attn_decode[hi],
        (blocks as u32, h.n_head as u32, n as u32),
        128,
        0,
        &p,
    )
}

/// The tensor-core kernel over `tiles` query tiles (encoders: from the batch's tile list;
/// causal: ceil(n_q / 64)).
pub fn flash(g: &Gpu, k: &Kernels, p: &FlashParams, tiles: usize, h: Heads) -> Result<()> {
    let hi = check_heads(h)?;
    g.launch_struct(k.flash[hi], (tiles as u32, h.n_head as u32, 1), 128, 0, p)
}
