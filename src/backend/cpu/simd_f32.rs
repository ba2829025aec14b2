//! f32 kernels of attention, compiled twice: for AVX2 + FMA, chosen at run time, and portably.
//! The bodies are plain Rust over fixed-width chunks; under `target_feature` the compiler turns
//! them into 256-bit FMA code (the crate itself is built for baseline x86-64).

use std::ops::Range;

#[inline(always)]
fn dot_body<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let n = a.len() / 16 * 16;
    for (ca, cb) in a[..n].chunks_exact(16).zip(b[..n].chunks_exact(16)) {
        for k in 0..16 {
            acc[k] = if FMA {
                ca[k].mul_add(cb[k], acc[k])
            } else {
                acc[k] + ca[k] * cb[k]
            };
        }
    }
    let mut s = 0.0;
    for v in acc {
        s += v;
    }
    for i in n..a.len() {
        s += a[i] * b[i];
    }
    s
}

#[inline(always)]
fn scores_body<const FMA: bool>(
    q: &[f32],
    k: &[f32],
    stride: usize,
    off: usize,
    keys: Range<usize>,
    scale: f32,
    out: &mut Vec<f32>,
) {
    let hd = q.len();
    out.clear();
    for j in keys {
        let at = j * stride + off;
        out.push(dot_body::<FMA>(q, &k[at..at + hd]) * scale);
    }
}

#[inline(always)]
fn weighted_sum_body<const FMA: bool>(
    p: &[f32],
    v: &[f32],
    stride: usize,
    off: usize,
    first: usize,
    out: &mut [f32],
) {
    let hd = out.len();
    out.fill(0.0);
    for (i, &w) in p.iter().enumerate() {
        let at = (first + i) * stride + off;
        for (o, &x) in out.iter_mut().zip(&v[at..at + hd]) {
            *o = if FMA { x.mul_add(w, *o) } else { *o + x * w };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn scores(
        q: &[f32],
        k: &[f32],
        stride: usize,
        off: usize,
        keys: Range<usize>,
        scale: f32,
        out: &mut Vec<f32>,
    ) {
        scores_body::<true>(q, k, stride, off, keys, scale, out)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn weighted_sum(
        p: &[f32],
        v: &[f32],
        stride: usize,
        off: usize,
        first: usize,
        out: &mut [f32],
    ) {
        weighted_sum_body::<true>(p, v, stride, off, first, out)
    }
}

fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// out = [q . k_j * scale for j in keys], where key j is `k[j * stride + off..][..q.len()]`.
pub fn scores(
    q: &[f32],
    k: &[f32],
    stride: usize,
    off: usize,
    keys: Range<usize>,
    scale: f32,
    out: &mut Vec<f32>,
) {
    assert!(keys.is_empty() || (keys.end - 1) * stride + off + q.len() <= k.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA; indices were checked above and by slicing.
        return unsafe { avx2::scores(q, k, stride, off, keys, scale, out) };
    }
    scores_body::<false>(q, k, stride, off, keys, scale, out)
}

/// out = sum_i p[i] * v_(first + i), where value j is `v[j * stride + off..][..out.len()]`.
pub fn weighted_sum(
    p: &[f32],
    v: &[f32],
    stride: usize,
    off: usize,
    first: usize,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA; slicing checks every index.
        return unsafe { avx2::weighted_sum(p, v, stride, off, first, out) };
    }
    weighted_sum_body::<false>(p, v, stride, off, first, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simd_and_portable_agree() {
        let f = |i: usize| ((i * 2654435761usize) % 1000) as f32 / 500.0 - 1.0;
        let (hd, stride, len) = (64, 192, 37);
        let q: Vec<f32> = (0..hd).map(f).collect();
        let k: Vec<f32> = (0..len * stride).map(|i| f(i + 3)).collect();
        let mut a = Vec::new();
        let mut b = Vec::new();
        scores(&q, &k, stride, 64, 2..len, 0.125, &mut a);
        scores_body::<false>(&q, &k, stride, 64, 2..len, 0.125, &mut b);
        assert_eq!(a.len(), len - 2);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
        let want: f32 = (0..hd).map(|i| q[i] * k[5 * stride + 64 + i]).sum::<f32>() * 0.125;
        assert!((a[3] - want).abs() < 1e-5);
        let mut o1 = vec![0.0; hd];
        let mut o2 = vec![0.0; hd];
        weighted_sum(&a, &k, stride, 128, 2, &mut o1);
        weighted_sum_body::<false>(&a, &k, stride, 128, 2, &mut o2);
        for (x, y) in o1.iter().zip(&o2) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
    }
}
