//! f32 kernels of attention, compiled twice: for AVX2 + FMA, chosen at run time, and portably.
//! The bodies are plain Rust over fixed-width chunks; under `target_feature` the compiler turns
//! them into 256-bit FMA code (the crate itself is built for baseline x86-64).

use std::ops::Range;

/// An element of the KV cache that the attention kernels read: f32, or f16 converted as it is
/// read (decoding reads an f16 cache in place, with the numbers of f32 copies of its rows).
pub trait CacheValue: Copy + Send + Sync {
    fn to_f32(self) -> f32;

    /// Eight values at `p` as floats.
    ///
    /// # Safety
    /// `p..p + 8` is readable and the CPU has AVX2 and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> core::arch::x86_64::__m256;
}

impl CacheValue for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const f32) -> core::arch::x86_64::__m256 {
        core::arch::x86_64::_mm256_loadu_ps(p)
    }
}

impl CacheValue for half::f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const half::f16) -> core::arch::x86_64::__m256 {
        use core::arch::x86_64::*;
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }
}

#[inline(always)]
fn dot_body<E: CacheValue, const FMA: bool>(a: &[f32], b: &[E]) -> f32 {
    let mut acc = [0.0f32; 16];
    let n = a.len() / 16 * 16;
    for (ca, cb) in a[..n].chunks_exact(16).zip(b[..n].chunks_exact(16)) {
        for k in 0..16 {
            acc[k] = fma::<FMA>(ca[k], cb[k].to_f32(), acc[k]);
        }
    }
    let mut s = 0.0;
    for v in acc {
        s += v;
    }
    for i in n..a.len() {
        s += a[i] * b[i].to_f32();
    }
    s
}

#[inline(always)]
fn scores_body<E: CacheValue, const FMA: bool>(
    q: &[f32],
    k: &[E],
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
        out.push(dot_body::<E, FMA>(q, &k[at..at + hd]) * scale);
    }
}

#[inline(always)]
fn weighted_sum_body<E: CacheValue, const FMA: bool>(
    p: &[f32],
    v: &[E],
    stride: usize,
    off: usize,
    first: usize,
    out: &mut [f32],
) {
    let hd = out.len();
    out.fill(0.0);
    for (i, &w) in p.iter().enumerate() {
        let at = (first + i) * stride + off;
        for (o, x) in out.iter_mut().zip(&v[at..at + hd]) {
            *o = fma::<FMA>(x.to_f32(), w, *o);
        }
    }
}

/// Queries per tile of [`attend_tile`]: one 256-bit register of lanes.
pub const TILE: usize = 8;

#[inline(always)]
fn fma<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        c + a * b
    }
}

/// Inputs of one [`attend_tile`] call besides the output.
pub struct Tile<'a> {
    /// The tile's queries: row i at `q[i * q_stride..][..hd]`, i < `ranges.len()` <= TILE.
    pub q: &'a [f32],
    pub q_stride: usize,
    /// Keys and values: position j at `k[j * stride + off..][..hd]` (same for `v`).
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub stride: usize,
    pub off: usize,
    /// Keys each query attends to.
    pub ranges: &'a [Range<usize>],
    pub scale: f32,
}

/// Sizes `scratch` for a tile of `hd`-value heads: the queries transposed (`hd` rows of TILE
/// lanes, lane i of row d = query i's element d, lanes past the tile's queries zero), then one
/// row of TILE scores per key of the union of the queries' ranges. Returns that union's first
/// key and length.
fn stage_tile(x: &Tile, hd: usize, scratch: &mut Vec<f32>) -> (usize, usize) {
    let lo = x.ranges.iter().map(|r| r.start).min().unwrap_or(0);
    let hi = x.ranges.iter().map(|r| r.end).max().unwrap_or(0);
    scratch.clear();
    scratch.resize((hd + hi - lo) * TILE, 0.0);
    for (i, q) in x.q.chunks(x.q_stride).take(x.ranges.len()).enumerate() {
        for (d, &qd) in q[..hd].iter().enumerate() {
            scratch[d * TILE + i] = qd;
        }
    }
    (lo, hi - lo)
}

// Tiles index queries, lanes and accumulators by the same counters.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn attend_tile_body<const FMA: bool>(x: &Tile, scratch: &mut Vec<f32>, out: &mut [f32]) {
    let tq = x.ranges.len();
    let hd = out.len() / tq;
    let (lo, l) = stage_tile(x, hd, scratch);
    let (qt, st) = scratch.split_at_mut(hd * TILE);
    let qt: &mut [[f32; TILE]] = bytemuck::cast_slice_mut(qt);
    let st: &mut [[f32; TILE]] = bytemuck::cast_slice_mut(st);
    let key = |j: usize| &x.k[j * x.stride + x.off..][..hd];
    // Scores, transposed: st[j][i] = q_i . k_(lo+j). Eight keys per pass keep eight
    // independent accumulators of TILE lanes in flight.
    let mut j = 0;
    while j + 8 <= l {
        let ks: [&[f32]; 8] = std::array::from_fn(|u| key(lo + j + u));
        let mut acc = [[0f32; TILE]; 8];
        for (d, qd) in qt.iter().enumerate() {
            for u in 0..8 {
                let kd = ks[u][d];
                for i in 0..TILE {
                    acc[u][i] = fma::<FMA>(qd[i], kd, acc[u][i]);
                }
            }
        }
        st[j..j + 8].copy_from_slice(&acc);
        j += 8;
    }
    while j < l {
        let kj = key(lo + j);
        let mut acc = [0f32; TILE];
        for (qd, &kd) in qt.iter().zip(kj) {
            for i in 0..TILE {
                acc[i] = fma::<FMA>(qd[i], kd, acc[i]);
            }
        }
        st[j] = acc;
        j += 1;
    }
    // Softmax per query over its own keys (others weigh 0); the division by the sum waits for
    // the output.
    let sum = softmax_lanes(x, lo, bytemuck::cast_slice_mut(st));
    // Weighted sums: four queries by 16 values per pass (eight accumulators of 8 lanes).
    let value = |j: usize| &x.v[j * x.stride + x.off..][..hd];
    for i0 in (0..tq).step_by(4) {
        for d0 in (0..hd).step_by(16) {
            let mut acc = [[0f32; 16]; 4];
            for (j, p) in st.iter().enumerate() {
                let vj = &value(lo + j)[d0..d0 + 16];
                for ii in 0..4 {
                    let w = p[(i0 + ii) % TILE];
                    for e in 0..16 {
                        acc[ii][e] = fma::<FMA>(vj[e], w, acc[ii][e]);
                    }
                }
            }
            for ii in 0..4.min(tq - i0) {
                let inv = 1.0 / sum[i0 + ii];
                let o = &mut out[(i0 + ii) * hd + d0..][..16];
                for e in 0..16 {
                    o[e] = acc[ii][e] * inv;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;

    /// [`super::scores`]: [`scores4`] where the head size is a multiple of 16, else the
    /// portable body with fused products.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn scores<E: CacheValue>(
        q: &[f32],
        k: &[E],
        stride: usize,
        off: usize,
        keys: Range<usize>,
        scale: f32,
        out: &mut Vec<f32>,
    ) {
        if q.len().is_multiple_of(16) {
            return scores4(q, k, stride, off, keys, scale, out);
        }
        scores_body::<E, true>(q, k, stride, off, keys, scale, out)
    }

    /// [`super::weighted_sum`]: one fused multiply-add per value, in the order of
    /// [`weighted_sum_body`] (each output sums its keys in order), 64 outputs per pass over
    /// the keys: eight independent chains of multiply-adds (one chain of 8 outputs per pass was
    /// bound by the add latency, 4 cycles a key). Head sizes off a multiple of 8 take the
    /// portable body with fused products.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn weighted_sum<E: CacheValue>(
        p: &[f32],
        v: &[E],
        stride: usize,
        off: usize,
        first: usize,
        out: &mut [f32],
    ) {
        let hd = out.len();
        if !hd.is_multiple_of(8) {
            return weighted_sum_body::<E, true>(p, v, stride, off, first, out);
        }
        let mut c = 0;
        while c + 64 <= hd {
            weighted_columns::<E, 8>(p, v, stride, off + c, first, out.as_mut_ptr().add(c));
            c += 64;
        }
        while c < hd {
            weighted_columns::<E, 1>(p, v, stride, off + c, first, out.as_mut_ptr().add(c));
            c += 8;
        }
    }

    /// One key's 16 lanes (two registers of products along the head) summed to a float, by the
    /// tree [`sum4`] uses for four keys at once.
    #[inline(always)]
    unsafe fn sum1(a: core::arch::x86_64::__m256) -> f32 {
        use core::arch::x86_64::*;
        let t = _mm256_hadd_ps(a, a);
        let t = _mm256_hadd_ps(t, t);
        _mm_cvtss_f32(_mm_add_ps(
            _mm256_castps256_ps128(t),
            _mm256_extractf128_ps::<1>(t),
        ))
    }

    /// Four keys' lanes summed: lane u of the result is key u's sum, the same tree as [`sum1`].
    #[inline(always)]
    unsafe fn sum4(a: [core::arch::x86_64::__m256; 4]) -> core::arch::x86_64::__m128 {
        use core::arch::x86_64::*;
        let t = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
        _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps::<1>(t))
    }

    /// Scores of keys `keys` (rows of `k` at `j * stride + off`), four keys per pass so that
    /// the lanes of four dot products are summed by one tree of horizontal adds instead of 16
    /// dependent scalar adds per key (those made the scores of a decoded token about 3% of its
    /// time at 128 cached positions). Needs `q.len() % 16 == 0` and every row inside `k`.
    #[inline(always)]
    unsafe fn scores4<E: CacheValue>(
        q: &[f32],
        k: &[E],
        stride: usize,
        off: usize,
        keys: Range<usize>,
        scale: f32,
        out: &mut Vec<f32>,
    ) {
        use core::arch::x86_64::*;
        let hd = q.len();
        debug_assert!(hd.is_multiple_of(16));
        out.clear();
        out.reserve(keys.len());
        let row = |j: usize| k.as_ptr().add(j * stride + off);
        let qp = q.as_ptr();
        let mut j = keys.start;
        while j + 4 <= keys.end {
            let mut acc = [_mm256_setzero_ps(); 4];
            for c in (0..hd).step_by(16) {
                let (q0, q1) = (_mm256_loadu_ps(qp.add(c)), _mm256_loadu_ps(qp.add(c + 8)));
                for (u, a) in acc.iter_mut().enumerate() {
                    let kp = row(j + u).add(c);
                    let p = _mm256_mul_ps(q0, E::load8(kp));
                    *a = _mm256_add_ps(*a, _mm256_fmadd_ps(q1, E::load8(kp.add(8)), p));
                }
            }
            let mut s = [0f32; 4];
            _mm_storeu_ps(s.as_mut_ptr(), _mm_mul_ps(sum4(acc), _mm_set1_ps(scale)));
            out.extend_from_slice(&s);
            j += 4;
        }
        while j < keys.end {
            let mut a = _mm256_setzero_ps();
            for c in (0..hd).step_by(16) {
                let (q0, q1) = (_mm256_loadu_ps(qp.add(c)), _mm256_loadu_ps(qp.add(c + 8)));
                let kp = row(j).add(c);
                let p = _mm256_mul_ps(q0, E::load8(kp));
                a = _mm256_add_ps(a, _mm256_fmadd_ps(q1, E::load8(kp.add(8)), p));
            }
            out.push(sum1(a) * scale);
            j += 1;
        }
    }

    /// Outputs `8 R` columns from `off` of [`weighted_sum`], written to `out`.
    #[inline(always)]
    unsafe fn weighted_columns<E: CacheValue, const R: usize>(
        p: &[f32],
        v: &[E],
        stride: usize,
        off: usize,
        first: usize,
        out: *mut f32,
    ) {
        use core::arch::x86_64::*;
        let mut acc = [_mm256_setzero_ps(); R];
        for (i, &w) in p.iter().enumerate() {
            let vp = v.as_ptr().add((first + i) * stride + off);
            let w = _mm256_set1_ps(w);
            for (r, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(E::load8(vp.add(8 * r)), w, *a);
            }
        }
        for (r, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.add(8 * r), *a);
        }
    }

    /// [`attend_tile_body`] written with intrinsics: the compiler kept the portable version's
    /// accumulator arrays on the stack (128-bit moves), slower than one query at a time.
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn attend_tile(x: &Tile, scratch: &mut Vec<f32>, out: &mut [f32]) {
        use core::arch::x86_64::*;
        let tq = x.ranges.len();
        let hd = out.len() / tq;
        let (lo, l) = stage_tile(x, hd, scratch);
        let hi = lo + l;
        let (qt, st) = scratch.split_at_mut(hd * TILE);
        // Every key and value row read below lies inside `k` / `v`: rows lo..hi, hd values
        // from `off` (checked once here rather than per load).
        assert!(x.k.len() >= (hi - 1) * x.stride + x.off + hd);
        assert!(x.v.len() >= (hi - 1) * x.stride + x.off + hd);
        let kp = |j: usize| x.k.as_ptr().add(j * x.stride + x.off);
        let qp = qt.as_ptr();
        let sp = st.as_mut_ptr();
        let mut j = 0;
        while j + 8 <= l {
            let ks: [*const f32; 8] = std::array::from_fn(|u| kp(lo + j + u));
            let mut acc = [_mm256_setzero_ps(); 8];
            for d in 0..hd {
                let qd = _mm256_loadu_ps(qp.add(d * TILE));
                for u in 0..8 {
                    acc[u] = _mm256_fmadd_ps(qd, _mm256_broadcast_ss(&*ks[u].add(d)), acc[u]);
                }
            }
            for (u, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(sp.add((j + u) * TILE), *a);
            }
            j += 8;
        }
        while j < l {
            let kj = kp(lo + j);
            let mut acc = _mm256_setzero_ps();
            for d in 0..hd {
                let qd = _mm256_loadu_ps(qp.add(d * TILE));
                acc = _mm256_fmadd_ps(qd, _mm256_broadcast_ss(&*kj.add(d)), acc);
            }
            _mm256_storeu_ps(sp.add(j * TILE), acc);
            j += 1;
        }
        let sum = softmax_lanes_avx2(x, lo, st);
        let vp = |j: usize| x.v.as_ptr().add(j * x.stride + x.off);
        for i0 in (0..tq).step_by(4) {
            for d0 in (0..hd).step_by(16) {
                let mut acc = [[_mm256_setzero_ps(); 2]; 4];
                for j in 0..l {
                    let v = vp(lo + j).add(d0);
                    let (v0, v1) = (_mm256_loadu_ps(v), _mm256_loadu_ps(v.add(8)));
                    for ii in 0..4 {
                        let w = _mm256_broadcast_ss(&*sp.add(j * TILE + (i0 + ii) % TILE));
                        acc[ii][0] = _mm256_fmadd_ps(v0, w, acc[ii][0]);
                        acc[ii][1] = _mm256_fmadd_ps(v1, w, acc[ii][1]);
                    }
                }
                for ii in 0..4.min(tq - i0) {
                    let inv = _mm256_set1_ps(1.0 / sum[i0 + ii]);
                    let o = out[(i0 + ii) * hd + d0..][..16].as_mut_ptr();
                    _mm256_storeu_ps(o, _mm256_mul_ps(acc[ii][0], inv));
                    _mm256_storeu_ps(o.add(8), _mm256_mul_ps(acc[ii][1], inv));
                }
            }
        }
    }
}

/// e^x per lane (x <= 88.7), within 2 ulp of `f32::exp` on the range softmax uses
/// (x <= 0): the Cephes polynomial, with 2^n built in the exponent bits.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn exp256(x: core::arch::x86_64::__m256) -> core::arch::x86_64::__m256 {
    use core::arch::x86_64::*;
    let x = _mm256_max_ps(
        _mm256_min_ps(x, _mm256_set1_ps(88.37626)),
        _mm256_set1_ps(-87.33654),
    );
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm256_set1_ps(1.987_569_1e-4);
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        0.166_666_65,
        0.5,
    ] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let p = _mm256_fmadd_ps(
        p,
        _mm256_mul_ps(r, r),
        _mm256_add_ps(r, _mm256_set1_ps(1.0)),
    );
    let e = _mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(n),
        _mm256_set1_epi32(127),
    ));
    _mm256_mul_ps(p, _mm256_castsi256_ps(e))
}

/// [`softmax_lanes`] across the lanes: one vector per key, each query's keys selected by
/// comparing the key index with the lanes' ranges.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_lanes_avx2(x: &Tile, lo: usize, st: &mut [f32]) -> [f32; TILE] {
    use core::arch::x86_64::*;
    let rows = st.len() / TILE;
    // Lanes without a query get the empty range 0..0.
    let bound = |f: &dyn Fn(&Range<usize>) -> usize| {
        let v: [i32; TILE] =
            std::array::from_fn(|i| x.ranges.get(i).map_or(0, |r| (f(r) - lo) as i32));
        _mm256_loadu_si256(v.as_ptr() as *const __m256i)
    };
    let (start, end) = (bound(&|r| r.start), bound(&|r| r.end));
    let valid = |j: usize| {
        let j = _mm256_set1_epi32(j as i32);
        // start <= j < end
        _mm256_castsi256_ps(_mm256_andnot_si256(
            _mm256_cmpgt_epi32(start, j),
            _mm256_cmpgt_epi32(end, j),
        ))
    };
    let scale = _mm256_set1_ps(x.scale);
    let ninf = _mm256_set1_ps(f32::NEG_INFINITY);
    let p = st.as_mut_ptr();
    assert_eq!(st.len(), rows * TILE);
    let mut max = ninf;
    for j in 0..rows {
        let s = _mm256_blendv_ps(
            ninf,
            _mm256_mul_ps(_mm256_loadu_ps(p.add(j * TILE)), scale),
            valid(j),
        );
        _mm256_storeu_ps(p.add(j * TILE), s);
        max = _mm256_max_ps(max, s);
    }
    let mut sum = _mm256_setzero_ps();
    for j in 0..rows {
        let e = exp256(_mm256_sub_ps(_mm256_loadu_ps(p.add(j * TILE)), max));
        let e = _mm256_and_ps(e, valid(j));
        _mm256_storeu_ps(p.add(j * TILE), e);
        sum = _mm256_add_ps(sum, e);
    }
    let mut out = [0f32; TILE];
    _mm256_storeu_ps(out.as_mut_ptr(), sum);
    out
}

/// Softmax of each query's scores (lane i of `st`, keys `x.ranges[i]` from `lo`), in place
/// and unnormalized: weights outside a query's keys become 0. Returns each query's sum.
#[inline(always)]
fn softmax_lanes(x: &Tile, lo: usize, st: &mut [f32]) -> [f32; TILE] {
    let mut sum = [0f32; TILE];
    let rows = st.len() / TILE;
    for (i, r) in x.ranges.iter().enumerate() {
        let keys = r.start - lo..r.end - lo;
        let mut max = f32::NEG_INFINITY;
        for j in keys.clone() {
            let v = st[j * TILE + i] * x.scale;
            st[j * TILE + i] = v;
            max = max.max(v);
        }
        for j in (0..keys.start).chain(keys.end..rows) {
            st[j * TILE + i] = 0.0;
        }
        let mut s = 0.0;
        for j in keys {
            let e = (st[j * TILE + i] - max).exp();
            st[j * TILE + i] = e;
            s += e;
        }
        sum[i] = s;
    }
    sum
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
pub fn scores<E: CacheValue>(
    q: &[f32],
    k: &[E],
    stride: usize,
    off: usize,
    keys: Range<usize>,
    scale: f32,
    out: &mut Vec<f32>,
) {
    assert!(keys.is_empty() || (keys.end - 1) * stride + off + q.len() <= k.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma_f16c() {
        // SAFETY: the CPU has AVX2, FMA and F16C; every row read lies inside `k` (checked
        // above).
        return unsafe { avx2::scores(q, k, stride, off, keys, scale, out) };
    }
    scores_body::<E, false>(q, k, stride, off, keys, scale, out)
}

/// out = sum_i p[i] * v_(first + i), where value j is `v[j * stride + off..][..out.len()]`.
pub fn weighted_sum<E: CacheValue>(
    p: &[f32],
    v: &[E],
    stride: usize,
    off: usize,
    first: usize,
    out: &mut [f32],
) {
    let hd = out.len();
    assert!(p.is_empty() || (first + p.len() - 1) * stride + off + hd <= v.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma_f16c() {
        // SAFETY: the CPU has AVX2, FMA and F16C; every row read lies inside `v` (checked
        // above).
        return unsafe { avx2::weighted_sum(p, v, stride, off, first, out) };
    }
    weighted_sum_body::<E, false>(p, v, stride, off, first, out)
}

/// The attention kernels' CPU: every x86-64 CPU with AVX2 and FMA also has F16C, which the
/// f16 cache's loads need.
#[cfg(target_arch = "x86_64")]
fn has_avx2_fma_f16c() -> bool {
    has_avx2_fma() && is_x86_feature_detected!("f16c")
}

/// SwiGLU in place: `gate[i] = silu(gate[i]) * up[i]`. Decoding runs it on the calling thread
/// between the gate/up and down products (4864 values a layer for Qwen2.5-0.5B), where a libm
/// `exp` per value was about 2% of a token; the AVX2 path uses [`exp256`] (within 2 ulp).
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "swiglu: gate and up lengths");
    if gate.len() >= super::ops::PARALLEL_FROM {
        // A prompt's: in parallel (element-wise, so the same results).
        use rayon::prelude::*;
        let per = super::ops::PARALLEL_FROM / 4;
        gate.par_chunks_mut(per)
            .zip(up.par_chunks(per))
            .for_each(|(g, u)| swiglu(g, u));
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA; the loop reads and writes whole chunks of 8
        // inside both slices, and the tail goes through the scalar code.
        return unsafe { swiglu_avx2(gate, up) };
    }
    swiglu_scalar(gate, up)
}

fn swiglu_scalar(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = super::ops::silu(*g) * u;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn swiglu_avx2(gate: &mut [f32], up: &[f32]) {
    use core::arch::x86_64::*;
    let n = gate.len() / 8 * 8;
    for (g, u) in gate[..n].chunks_exact_mut(8).zip(up[..n].chunks_exact(8)) {
        let x = _mm256_loadu_ps(g.as_ptr());
        // silu(x) = x / (1 + e^-x); for x < -88 e^-x is clamped near 2.4e38, giving
        // x / 2.4e38 (the scalar path: -0) instead of 0, a difference under 1e-30 for any
        // finite activation below 1e8 in size.
        let e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), x));
        let s = _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), e));
        _mm256_storeu_ps(
            g.as_mut_ptr(),
            _mm256_mul_ps(s, _mm256_loadu_ps(u.as_ptr())),
        );
    }
    swiglu_scalar(&mut gate[n..], &up[n..]);
}

/// Whether [`attend_tile`] runs its SIMD version here (x86-64 with AVX2 and FMA). Elsewhere
/// callers keep one query at a time: the portable tile is the tested reference, and the
/// compiler keeps its accumulators on the stack (slower than the per-query loop on x86).
pub fn tiles_fast() -> bool {
    has_avx2_fma()
}

/// Attention of up to [`TILE`] queries of one head (see [`Tile`]): `out` gets their outputs,
/// `hd` values each, one after the other. Keys and values are read once per tile instead of
/// once per query, and every multiply-add is a full-width vector operation (lanes are the
/// tile's queries for the scores, values for the weighted sums). `hd` must be a multiple of 16,
/// and every range non-empty.
pub fn attend_tile(x: &Tile, scratch: &mut Vec<f32>, out: &mut [f32]) {
    let tq = x.ranges.len();
    assert!((1..=TILE).contains(&tq), "{tq} queries in a tile");
    let hd = out.len() / tq;
    assert!(
        hd.is_multiple_of(16) && out.len() == tq * hd,
        "tile output of {}",
        out.len()
    );
    assert!(
        x.ranges.iter().all(|r| !r.is_empty()),
        "a query without keys"
    );
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA; slicing checks every index.
        return unsafe { avx2::attend_tile(x, scratch, out) };
    }
    attend_tile_body::<false>(x, scratch, out)
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
        scores_body::<f32, false>(&q, &k, stride, 64, 2..len, 0.125, &mut b);
        assert_eq!(a.len(), len - 2);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
        let want: f32 = (0..hd).map(|i| q[i] * k[5 * stride + 64 + i]).sum::<f32>() * 0.125;
        assert!((a[3] - want).abs() < 1e-5);
        let mut o1 = vec![0.0; hd];
        let mut o2 = vec![0.0; hd];
        weighted_sum(&a, &k, stride, 128, 2, &mut o1);
        weighted_sum_body::<f32, false>(&a, &k, stride, 128, 2, &mut o2);
        for (x, y) in o1.iter().zip(&o2) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
    }

    #[test]
    fn swiglu_matches_scalar_silu() {
        // Wide range (saturating both ways), odd length for the scalar tail.
        let gate: Vec<f32> = (0..1003).map(|i| (i as f32 - 501.0) * 0.23).collect();
        let up: Vec<f32> = (0..1003).map(|i| 1.0 + (i % 7) as f32 * 0.5).collect();
        let mut fast = gate.clone();
        swiglu(&mut fast, &up);
        let mut reference = gate.clone();
        swiglu_scalar(&mut reference, &up);
        for (i, (a, b)) in fast.iter().zip(&reference).enumerate() {
            // Relative, and absolute below e^-88 where the fast exp clamps its argument.
            let tol = 4.0 * f32::EPSILON * b.abs() + 1e-30;
            assert!(
                (a - b).abs() <= tol,
                "value {i} (gate {}): {a} vs {b}",
                gate[i]
            );
        }
        assert!((reference[501 + 9] - super::super::ops::silu(9.0 * 0.23) * up[510]).abs() < 1e-6);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_exp_is_within_two_ulp_on_softmax_inputs() {
        if !has_avx2_fma() {
            return;
        }
        use core::arch::x86_64::*;
        let mut worst = 0f32;
        for k in 0..200_000 {
            let x = -87.0 * k as f32 / 200_000.0;
            // SAFETY: the CPU has AVX2 and FMA (checked above).
            let got = unsafe {
                let mut o = [0f32; 8];
                _mm256_storeu_ps(o.as_mut_ptr(), exp256(_mm256_set1_ps(x)));
                o[3]
            };
            let want = x.exp();
            worst = worst.max((got - want).abs() / (want * f32::EPSILON));
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
    }

    /// The portable tile (ARM, old x86) against the one this CPU runs: a partial tile whose
    /// queries attend to different key ranges.
    #[test]
    fn tile_simd_and_portable_agree() {
        let f = |i: usize| ((i * 2654435761usize) % 1000) as f32 / 500.0 - 1.0;
        let (hd, stride, len) = (32, 96, 40);
        let q: Vec<f32> = (0..5 * stride).map(f).collect();
        let k: Vec<f32> = (0..len * stride).map(|i| f(i + 3)).collect();
        let v: Vec<f32> = (0..len * stride).map(|i| f(i + 7)).collect();
        let ranges = [0..33, 2..34, 5..35, 30..40, 0..1];
        let tile = Tile {
            q: &q[32..],
            q_stride: stride,
            k: &k,
            v: &v,
            stride,
            off: 64,
            ranges: &ranges,
            scale: 0.17,
        };
        let (mut a, mut b) = (vec![0.0; 5 * hd], vec![0.0; 5 * hd]);
        attend_tile(&tile, &mut Vec::new(), &mut a);
        attend_tile_body::<false>(&tile, &mut Vec::new(), &mut b);
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!((x - y).abs() < 1e-5, "{i}: {x} vs {y}");
        }
        // The last query sees one key: its output is that key's value.
        assert!((b[4 * hd] - v[64]).abs() < 1e-6);
    }
}
