//! Scaled dot-product attention with a fused softmax: causal over a KV cache of f16 or f32
//! (decoders) and bidirectional in f32 within a sequence, optionally windowed (encoders). Work
//! is spread over (token, head) pairs; score buffers are per thread and reused, so steady
//! decoding allocates nothing.
//!
//! Decoders default to an f16 cache, as llama.cpp does: half the memory, and the same numbers.
//! Qwen2's first layers have large query/key biases: scores from an f32 cache drift by ~1% from
//! llama.cpp's, enough to flip int8 activation levels downstream (an error that grows as the
//! square root of the difference) and double the KL divergence between the two runtimes.

use super::ops::{axpy, dot, softmax};
use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;
use std::cell::RefCell;

thread_local! {
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static ROW: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Shapes of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct Heads {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
}

impl Heads {
    fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }
    fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
}

/// An element type of the KV cache: rows are read as f32, converted when they are not.
pub trait KvElem: Copy + Send + Sync + 'static {
    fn read<'a>(src: &'a [Self], buf: &'a mut [f32]) -> &'a [f32];
    fn write(src: &[f32], dst: &mut [Self]);
}

impl KvElem for f32 {
    #[inline]
    fn read<'a>(src: &'a [f32], _: &'a mut [f32]) -> &'a [f32] {
        src
    }
    fn write(src: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(src)
    }
}

impl KvElem for f16 {
    #[inline]
    fn read<'a>(src: &'a [f16], buf: &'a mut [f32]) -> &'a [f32] {
        src.convert_to_f32_slice(buf);
        buf
    }
    fn write(src: &[f32], dst: &mut [f16]) {
        dst.convert_from_f32_slice(src)
    }
}

/// Causal attention for `n` queries at positions `pos0..pos0+n`; `k` and `v` hold the cache
/// rows of positions `0..pos0+n` (row-major, `kv_dim` each). Grouped-query heads share KV
/// heads. Queries, scores, softmax and the weighted sum stay in f32, as in ggml's tiled CPU
/// flash attention that llama.cpp runs on prompts.
pub fn causal<T: KvElem>(
    q: &[f32],
    k: &[T],
    v: &[T],
    n: usize,
    pos0: usize,
    h: Heads,
    out: &mut [f32],
) {
    let scale = 1.0 / (h.head_dim as f32).sqrt();
    let group = h.n_head / h.n_head_kv;
    let (qd, kvd, hd) = (h.q_dim(), h.kv_dim(), h.head_dim);
    out[..n * qd]
        .par_chunks_mut(hd)
        .enumerate()
        .for_each(|(i, o)| {
            let (t, head) = (i / h.n_head, i % h.n_head);
            let kvh = head / group;
            let qv = &q[t * qd + head * hd..t * qd + (head + 1) * hd];
            let len = pos0 + t + 1;
            ROW.with_borrow_mut(|row| {
                row.resize(hd, 0.0);
                SCORES.with_borrow_mut(|s| {
                    s.clear();
                    s.extend((0..len).map(|j| {
                        let at = j * kvd + kvh * hd;
                        dot(qv, T::read(&k[at..at + hd], row)) * scale
                    }));
                    softmax(s);
                    o.fill(0.0);
                    for (j, &p) in s.iter().enumerate() {
                        let at = j * kvd + kvh * hd;
                        axpy(o, p, T::read(&v[at..at + hd], row));
                    }
                });
            });
        });
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
    let group = h.n_head / h.n_head_kv;
    let (qd, kvd, hd) = (h.q_dim(), h.kv_dim(), h.head_dim);
    out[..len * qd]
        .par_chunks_mut(hd)
        .enumerate()
        .for_each(|(i, o)| {
            let (t, head) = (i / h.n_head, i % h.n_head);
            let kvh = head / group;
            let qv = &q[t * qd + head * hd..t * qd + (head + 1) * hd];
            let (lo, hi) = match window {
                Some(w) => (t.saturating_sub(w), (t + w + 1).min(len)),
                None => (0, len),
            };
            SCORES.with_borrow_mut(|s| {
                s.clear();
                s.extend(
                    (lo..hi)
                        .map(|j| dot(qv, &k[j * kvd + kvh * hd..j * kvd + (kvh + 1) * hd]) * scale),
                );
                softmax(s);
                o.fill(0.0);
                for (idx, &p) in s.iter().enumerate() {
                    let j = lo + idx;
                    axpy(o, p, &v[j * kvd + kvh * hd..j * kvd + (kvh + 1) * hd]);
                }
            });
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        t: usize,
        keys: std::ops::Range<usize>,
        hd: usize,
    ) -> Vec<f32> {
        let mut s: Vec<f32> = keys
            .clone()
            .map(|j| dot(&q[t * hd..(t + 1) * hd], &k[j * hd..(j + 1) * hd]) / (hd as f32).sqrt())
            .collect();
        softmax(&mut s);
        let mut o = vec![0.0; hd];
        for (p, j) in s.iter().zip(keys) {
            axpy(&mut o, *p, &v[j * hd..(j + 1) * hd]);
        }
        o
    }

    #[test]
    fn causal_and_windowed_match_naive() {
        let hd = 8;
        let n = 6;
        let f = |i: usize| ((i * 2654435761usize) % 1000) as f32 / 500.0 - 1.0;
        let q: Vec<f32> = (0..n * hd).map(f).collect();
        let k: Vec<f32> = (0..n * hd).map(|i| f(i + 7)).collect();
        let v: Vec<f32> = (0..n * hd).map(|i| f(i + 13)).collect();
        let h = Heads {
            n_head: 1,
            n_head_kv: 1,
            head_dim: hd,
        };
        let mut out = vec![0.0; n * hd];
        let k16: Vec<f16> = k.iter().map(|&x| f16::from_f32(x)).collect();
        let v16: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
        causal(&q, &k16, &v16, n, 0, h, &mut out);
        // The cache holds f16: the naive reference sees the same keys and values.
        let round =
            |x: &[f32]| -> Vec<f32> { x.iter().map(|&v| f16::from_f32(v).to_f32()).collect() };
        let (kr, vr) = (round(&k), round(&v));
        for t in 0..n {
            let want = naive(&q, &kr, &vr, t, 0..t + 1, hd);
            for (a, b) in out[t * hd..(t + 1) * hd].iter().zip(&want) {
                assert!((a - b).abs() < 1e-6);
            }
        }
        bidirectional(&q, &k, &v, 5, Some(1), h, &mut out);
        for t in 0..5 {
            let want = naive(&q, &k, &v, t, t.saturating_sub(1)..(t + 2).min(5), hd);
            for (a, b) in out[t * hd..(t + 1) * hd].iter().zip(&want) {
                assert!((a - b).abs() < 1e-6);
            }
        }
    }
}
