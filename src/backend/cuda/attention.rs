//! Attention on the GPU: the decoder's causal attention over its f16 KV cache (one kernel, with
//! key splits merged by a second when few queries meet a long cache), and the encoders'
//! bidirectional attention through cuBLAS (scores and weighted sums as batched f16 products
//! over heads, a masked softmax between them).

use super::device::{Arg, Gpu, Grow};
use super::ops;
use crate::backend::cpu::attention::Heads;
use anyhow::{bail, Result};
use std::ops::Range;

/// Head sizes the causal kernel is instantiated for.
pub const HEAD_DIMS: [usize; 4] = [16, 32, 64, 128];

/// Keys per split of the causal kernel when few queries are evaluated (decoding).
const SPLIT_LEN: usize = 256;

/// Bytes of f32 scores per cuBLAS attention step (queries are taken in chunks to fit).
const SCORE_BUDGET: usize = 64 << 20;

/// Causal attention of n queries (rows of n_head * head_dim at positions pos0..pos0 + n) over f16
/// caches holding positions 0..pos0 + n; `out` gets n rows of n_head * head_dim.
#[allow(clippy::too_many_arguments)]
pub fn causal(
    g: &Gpu,
    q: u64,
    kc: u64,
    vc: u64,
    out: u64,
    part: &mut Grow,
    n: usize,
    pos0: usize,
    h: Heads,
) -> Result<()> {
    let hd = h.head_dim;
    if !HEAD_DIMS.contains(&hd) || h.n_head_kv == 0 || !h.n_head.is_multiple_of(h.n_head_kv) {
        bail!(
            "attention with head size {hd} ({} heads, {} KV heads) is not supported on the GPU (head sizes {HEAD_DIMS:?})",
            h.n_head,
            h.n_head_kv
        );
    }
    let len = pos0 + n;
    let nsplit = if n <= 8 {
        len.div_ceil(SPLIT_LEN).clamp(1, 64)
    } else {
        1
    };
    let split_len = len.div_ceil(nsplit);
    let rows = n * h.n_head;
    let part_ptr = if nsplit > 1 {
        part.ptr(g, rows * nsplit * (hd + 2) * 4)?
    } else {
        0
    };
    g.launch(
        &format!("attn_causal_hd{hd}"),
        ((rows * nsplit).div_ceil(4) as u32, 1, 1),
        128,
        &[
            Arg::P(q),
            Arg::P(kc),
            Arg::P(vc),
            Arg::P(out),
            Arg::P(part_ptr),
            Arg::I(n as i32),
            Arg::I(h.n_head as i32),
            Arg::I(h.n_head_kv as i32),
            Arg::I(pos0 as i32),
            Arg::F(1.0 / (hd as f32).sqrt()),
            Arg::I(nsplit as i32),
            Arg::I(split_len as i32),
        ],
    )?;
    if nsplit > 1 {
        g.launch(
            "attn_combine",
            (rows.div_ceil(4) as u32, 1, 1),
            128,
            &[
                Arg::P(part_ptr),
                Arg::P(out),
                Arg::I(rows as i32),
                Arg::I(hd as i32),
                Arg::I(nsplit as i32),
            ],
        )?;
    }
    Ok(())
}

/// Buffers of the encoders' attention.
#[derive(Default)]
pub struct EncoderAttnScratch {
    qkv16: Grow,
    scores: Grow,
    probs: Grow,
}

/// Bidirectional attention within each sequence of a packed batch (no KV grouping): q, k, v are
/// f32 rows of n_head * head_dim with row stride `stride`; `out` gets rows of n_head * head_dim.
/// With `window = Some(w)`, query i attends to keys j with |i - j| <= w.
#[allow(clippy::too_many_arguments)]
pub fn bidirectional(
    g: &Gpu,
    (q, k, v): (u64, u64, u64),
    stride: usize,
    out: u64,
    seqs: &[Range<usize>],
    window: Option<usize>,
    h: Heads,
    sc: &mut EncoderAttnScratch,
) -> Result<()> {
    let (nh, hd) = (h.n_head, h.head_dim);
    let e = nh * hd;
    let n = seqs.iter().map(|s| s.end).max().unwrap_or(0);
    if n == 0 {
        return Ok(());
    }
    // f16 copies, packed [t][q | k | v].
    let qkv = sc.qkv16.ptr(g, n * 3 * e * 2)?;
    for (i, src) in [q, k, v].into_iter().enumerate() {
        ops::to_f16(g, src, stride, qkv + (2 * i * e) as u64, 3 * e, n, e)?;
    }
    let at = |row: usize, col: usize| qkv + (2 * (row * 3 * e + col)) as u64;
    let scale = 1.0 / (hd as f32).sqrt();
    for seq in seqs {
        let l = seq.len();
        if l == 0 {
            continue;
        }
        let qc_max = (SCORE_BUDGET / (l * nh * 4)).clamp(1, l);
        let s = sc.scores.ptr(g, nh * qc_max * l * 4)?;
        let p = sc.probs.ptr(g, nh * qc_max * l * 2)?;
        for q0 in (0..l).step_by(qc_max) {
            let qc = qc_max.min(l - q0);
            // Scores, per head: S (keys x queries, column-major) = K_h Q_h^T.
            g.gemm_f16(
                true,
                false,
                (l, qc, hd),
                (at(seq.start, e), 3 * e, hd),
                (at(seq.start + q0, 0), 3 * e, hd),
                (s, l, l * qc),
                0.0,
                nh,
            )?;
            ops::softmax_scores(g, s, p, nh * qc, l, qc, q0, window, scale)?;
            // Out_h (head_dim x queries, column-major, inside rows of e) = V_h^T P_h^T.
            g.gemm_f16(
                false,
                false,
                (hd, qc, l),
                (at(seq.start, 2 * e), 3 * e, hd),
                (p, l, l * qc),
                (out + (4 * (seq.start + q0) * e) as u64, e, hd),
                0.0,
                nh,
            )?;
        }
    }
    Ok(())
}
