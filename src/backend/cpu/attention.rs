//! Scaled dot-product attention with a fused softmax: causal over a KV cache of f16 or f32
//! (decoders) and bidirectional in f32 within a sequence, optionally windowed (encoders). Work
//! is spread over (token, head) pairs; score buffers are per thread and reused, so steady
//! decoding allocates nothing.
//!
//! Decoders default to an f16 cache, as llama.cpp does: half the memory, and the same numbers.
//! Qwen2's first layers have large query/key biases: scores from an f32 cache drift by ~1% from
//! llama.cpp's, enough to flip int8 activation levels downstream (an error that grows as the
//! square root of the difference) and double the KL divergence between the two runtimes.

use super::ops::softmax;
use super::simd_f32::{self, CacheValue, Tile, TILE};
use rayon::prelude::*;

use super::team;
use std::ops::Range;

pub use crate::backend::Heads;

/// Scores, softmax and weighted sum of one query head over keys `keys` of one KV head (at
/// offset `off` of rows of `stride` values).
#[allow(clippy::too_many_arguments)]
fn attend_one<E: CacheValue>(
    q: &[f32],
    k: &[E],
    v: &[E],
    stride: usize,
    off: usize,
    keys: Range<usize>,
    scale: f32,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let first = keys.start;
    simd_f32::scores(q, k, stride, off, keys, scale, scores);
    softmax(scores);
    simd_f32::weighted_sum(scores, v, stride, off, first, out);
}

/// Attention of `n` queries in tiles of [`TILE`] consecutive tokens (all heads of a tile on one
/// thread, tiles in parallel); query t of head `head` attends to keys `keys(t)`.
#[allow(clippy::too_many_arguments)]
fn tiled(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    n: usize,
    h: Heads,
    scale: f32,
    keys: impl Fn(usize) -> Range<usize> + Sync,
    out: &mut [f32],
) {
    let group = h.n_head / h.n_head_kv;
    let (qd, kvd, hd) = (h.q_dim(), h.kv_dim(), h.head_dim);
    out[..n * qd]
        .par_chunks_mut(TILE * qd)
        .enumerate()
        .for_each_init(
            || (Vec::new(), Vec::new()),
            |(scratch, tile_out), (ti, rows)| {
                let t0 = ti * TILE;
                let tq = rows.len() / qd;
                let ranges: [Range<usize>; TILE] =
                    std::array::from_fn(|i| keys(t0 + i.min(tq - 1)));
                tile_out.resize(tq * hd, 0.0);
                for head in 0..h.n_head {
                    let tile = Tile {
                        q: &q[t0 * qd + head * hd..],
                        q_stride: qd,
                        k,
                        v,
                        stride: kvd,
                        off: (head / group) * hd,
                        ranges: &ranges[..tq],
                        scale,
                    };
                    simd_f32::attend_tile(&tile, scratch, tile_out);
                    for (i, o) in tile_out.chunks_exact(hd).enumerate() {
                        rows[i * qd + head * hd..][..hd].copy_from_slice(o);
                    }
                }
            },
        );
}

/// Whether [`tiled`] serves `n` queries of heads `h`: a prompt rather than one token (a tile
/// of one query would waste its lanes), whole 16-value blocks per head, and a CPU with the
/// tile's SIMD version.
fn tiles_serve(n: usize, h: Heads) -> bool {
    n >= TILE && h.head_dim.is_multiple_of(16) && simd_f32::tiles_fast()
}

/// Causal attention for `n` queries at positions `pos0..pos0+n`; `k` and `v` hold the cache
/// rows of positions `0..pos0+n` (row-major, `kv_dim` each) in f32. Grouped-query heads share KV
/// heads. Queries, scores, softmax and the weighted sum stay in f32, as in ggml's tiled CPU
/// flash attention that llama.cpp runs on prompts.
pub fn causal(q: &[f32], k: &[f32], v: &[f32], n: usize, pos0: usize, h: Heads, out: &mut [f32]) {
    if tiles_serve(n, h) {
        let scale = 1.0 / (h.head_dim as f32).sqrt();
        return tiled(q, k, v, n, h, scale, |t| 0..pos0 + t + 1, out);
    }
    causal_by_heads(q, k, v, n, pos0, h, out)
}

/// Causal attention of one decoded token at position `pos0` over an f16 cache read in place
/// (`k`, `v`: rows of positions `0..=pos0`): the numbers of [`causal`] on f32 copies of the
/// rows, without converting a layer's whole cache on one thread every token (at 128 cached
/// positions that conversion was about 4% of a Qwen2.5-0.5B token, with the other threads
/// idle).
pub fn decode_f16(
    q: &[f32],
    k: &[half::f16],
    v: &[half::f16],
    pos0: usize,
    h: Heads,
    out: &mut [f32],
) {
    causal_by_heads(q, k, v, 1, pos0, h, out)
}

/// [`causal`] one (token, head) pair at a time, over a cache of f32 or f16.
fn causal_by_heads<E: CacheValue>(
    q: &[f32],
    k: &[E],
    v: &[E],
    n: usize,
    pos0: usize,
    h: Heads,
    out: &mut [f32],
) {
    let scale = 1.0 / (h.head_dim as f32).sqrt();
    let group = h.n_head / h.n_head_kv;
    let (qd, kvd, hd) = (h.q_dim(), h.kv_dim(), h.head_dim);
    let head_out = |scores: &mut Vec<f32>, (i, o): (usize, &mut [f32])| {
        let (t, head) = (i / h.n_head, i % h.n_head);
        let qv = &q[t * qd + head * hd..t * qd + (head + 1) * hd];
        let keys = 0..pos0 + t + 1;
        attend_one(qv, k, v, kvd, (head / group) * hd, keys, scale, scores, o);
    };
    // A decoded token's heads go to the decoding team, which spins between the token's
    // products; waking rayon's sleeping worker for them would cost more than a head.
    if let (1, Some(team)) = (n, team::global()) {
        let heads = out[..qd].chunks_mut(hd).enumerate().collect();
        team.for_each(heads, |head| head_out(&mut Vec::new(), head));
        return;
    }
    out[..n * qd]
        .par_chunks_mut(hd)
        .enumerate()
        .for_each_init(Vec::new, head_out);
}

/// Bidirectional attention within one sequence of `len` positions (packed batches have no
/// padding to mask). With `window = Some(w)`, position i
/// attends only to positions j with |i - j| <= w (ModernBERT's local layers use w = 64).
pub fn bidirectional(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    len: usize,
    window: Option<usize>,
    h: Heads,
    out: &mut [f32],
) {
    let scale = 1.0 / (h.head_dim as f32).sqrt();
    let keys = |t: usize| match window {
        Some(w) => t.saturating_sub(w)..(t + w + 1).min(len),
        None => 0..len,
    };
    if tiles_serve(len, h) {
        return tiled(q, k, v, len, h, scale, keys, out);
    }
    let group = h.n_head / h.n_head_kv;
    let (qd, kvd, hd) = (h.q_dim(), h.kv_dim(), h.head_dim);
    out[..len * qd]
        .par_chunks_mut(hd)
        .enumerate()
        .for_each_init(Vec::new, |scores, (i, o)| {
            let (t, head) = (i / h.n_head, i % h.n_head);
            let qv = &q[t * qd + head * hd..t * qd + (head + 1) * hd];
            attend_one(
                qv,
                k,
                v,
                kvd,
                (head / group) * hd,
                keys(t),
                scale,
                scores,
                o,
            );
        });
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::backend::cpu::ops::{axpy, dot};

    /// Attention of query `t` (head `head`) over `keys`, written plainly.
    pub(crate) fn naive(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        h: Heads,
        t: usize,
        head: usize,
        keys: Range<usize>,
    ) -> Vec<f32> {
        let hd = h.head_dim;
        let kvh = head / (h.n_head / h.n_head_kv);
        let qv = &q[t * h.q_dim() + head * hd..][..hd];
        let row = |x: &[f32], j: usize| x[j * h.kv_dim() + kvh * hd..][..hd].to_vec();
        let mut s: Vec<f32> = keys
            .clone()
            .map(|j| dot(qv, &row(k, j)) / (hd as f32).sqrt())
            .collect();
        softmax(&mut s);
        let mut o = vec![0.0; hd];
        for (p, j) in s.iter().zip(keys) {
            axpy(&mut o, *p, &row(v, j));
        }
        o
    }

    pub(crate) fn data(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i + seed) * 2654435761usize) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    #[test]
    fn causal_and_windowed_match_naive() {
        // Grouped-query heads, a cache with earlier positions, a window.
        let h = Heads {
            n_head: 4,
            n_head_kv: 2,
            head_dim: 16,
        };
        let (pos0, n) = (3, 5);
        let len = pos0 + n;
        let q = data(n * h.q_dim(), 1);
        let k = data(len * h.kv_dim(), 7);
        let v = data(len * h.kv_dim(), 13);
        let mut out = vec![0.0; n * h.q_dim()];
        causal(&q, &k, &v, n, pos0, h, &mut out);
        for t in 0..n {
            for head in 0..h.n_head {
                let want = naive(&q, &k, &v, h, t, head, 0..pos0 + t + 1);
                let got = &out[t * h.q_dim() + head * 16..][..16];
                for (a, b) in got.iter().zip(&want) {
                    assert!((a - b).abs() < 1e-5, "causal t{t} head{head}: {a} vs {b}");
                }
            }
        }
        bidirectional(&q, &k, &v, n, Some(1), h, &mut out);
        for t in 0..n {
            for head in 0..h.n_head {
                let keys = t.saturating_sub(1)..(t + 2).min(n);
                let want = naive(&q, &k, &v, h, t, head, keys);
                let got = &out[t * h.q_dim() + head * 16..][..16];
                for (a, b) in got.iter().zip(&want) {
                    assert!((a - b).abs() < 1e-5, "window t{t} head{head}: {a} vs {b}");
                }
            }
        }
    }

    /// Prompts run in tiles of 8 queries: whole and partial tiles, grouped-query heads, a cache
    /// with earlier positions, windows that cut into a tile, two head sizes.
    #[test]
    fn tiles_match_naive() {
        for (hd, n_head, n_head_kv) in [(64, 6, 2), (32, 4, 4)] {
            let h = Heads {
                n_head,
                n_head_kv,
                head_dim: hd,
            };
            if !tiles_serve(21, h) {
                return; // no AVX2 here: prompts take the per-query path tested above
            }
            let (pos0, n) = (3, 21);
            let len = pos0 + n;
            let q = data(n * h.q_dim(), 2);
            let k = data(len * h.kv_dim(), 5);
            let v = data(len * h.kv_dim(), 11);
            let mut out = vec![0.0; n * h.q_dim()];
            let check = |out: &[f32], keys: &dyn Fn(usize) -> Range<usize>, what: &str| {
                for t in 0..n {
                    for head in 0..n_head {
                        let want = naive(&q, &k, &v, h, t, head, keys(t));
                        let got = &out[t * h.q_dim() + head * hd..][..hd];
                        for (a, b) in got.iter().zip(&want) {
                            assert!(
                                (a - b).abs() < 1e-5,
                                "{what} hd{hd} t{t} head{head}: {a} vs {b}"
                            );
                        }
                    }
                }
            };
            causal(&q, &k, &v, n, pos0, h, &mut out);
            check(&out, &|t| 0..pos0 + t + 1, "causal");
            for window in [None, Some(3)] {
                bidirectional(&q, &k, &v, n, window, h, &mut out);
                let keys = |t: usize| match window {
                    Some(w) => t.saturating_sub(w)..(t + w + 1).min(n),
                    None => 0..n,
                };
                check(&out, &keys, "bidirectional");
            }
        }
    }
}
