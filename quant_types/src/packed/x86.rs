//! AVX-512 VNNI kernels over the packed layouts: a register tile of R weight rows by T
//! activation rows. Per 64 weights and per (row, token) pair: one `vpdpbusd`, one conversion,
//! one multiply and one fused add; weights are decoded once per tile row and activations loaded
//! once per tile column, so decoding costs are shared across T tokens and activation loads
//! across R rows. Biases (offsets, minimums) are applied once per group as a 16-lane FMA.

use super::drive::{drive, RegisterTile};
use super::layout::{geometry, Kind, PackedMatrix, IQ4NL_U8, NF4_U8};
use super::PackedActs;
use crate::GgmlType;
use core::arch::x86_64::*;
use std::ops::Range;

pub(super) fn available() -> bool {
    use std::sync::OnceLock;
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512dq")
            && is_x86_feature_detected!("avx512vnni")
            && is_x86_feature_detected!("f16c")
            && is_x86_feature_detected!("fma")
            && crate::SimdPath::best() == crate::SimdPath::Avx512Vnni
    })
}

/// One packed type, seen by the kernels.
trait Packed {
    const TY: GgmlType;
    /// Weights per group.
    const GROUP: usize;
    const HEADER: usize;
    const CHUNK: usize;
    /// The header's weight scales (lanes as `lane_scale` expects) and bias vector (lanes
    /// aligned with the activation sums `act_bias` loads).
    unsafe fn header(h: *const u8) -> (__m512, __m512);
    /// Weight scale of each int32 lane of chunk `c`.
    unsafe fn lane_scale(s: __m512, c: usize) -> __m512;
    /// The 64 unsigned levels of a chunk.
    unsafe fn levels(p: *const u8) -> __m512i;
    /// Activation sums matching the header's bias lanes, for the group at element `e`.
    unsafe fn act_bias(c16: *const f32, c32: *const f32, e: usize) -> __m512;
    /// Activation scales of the group at element `e` (16 per-32 scales, or 8 for a 256-group).
    unsafe fn act_scales(s32: *const f32, e: usize) -> __m512 {
        if Self::GROUP == 512 {
            _mm512_loadu_ps(s32.add(e / 32))
        } else {
            _mm512_maskz_loadu_ps(0xFF, s32.add(e / 32))
        }
    }
}

/// Index vector sending scale 2c to lanes 0-7 and 2c+1 to lanes 8-15.
#[inline(always)]
unsafe fn idx_pair(c: usize) -> __m512i {
    let c = c as i32;
    _mm512_mask_blend_epi32(
        0xFF00,
        _mm512_set1_epi32(2 * c),
        _mm512_set1_epi32(2 * c + 1),
    )
}

#[inline(always)]
unsafe fn nibbles(p: *const u8) -> __m512i {
    let v = _mm512_broadcast_i64x4(_mm256_loadu_si256(p as *const __m256i));
    let v = _mm512_srlv_epi64(v, _mm512_set_epi64(4, 4, 4, 4, 0, 0, 0, 0));
    _mm512_and_si512(v, _mm512_set1_epi8(0x0F))
}

#[inline(always)]
unsafe fn fifth_bits(p: *const u8) -> __m512i {
    let bits = (p as *const u64).read_unaligned();
    _mm512_maskz_mov_epi8(bits, _mm512_set1_epi8(0x10))
}

#[inline(always)]
unsafe fn table(t: &[u8; 16]) -> __m512i {
    _mm512_broadcast_i32x4(_mm_loadu_si128(t.as_ptr() as *const __m128i))
}

#[inline(always)]
unsafe fn f16x16(p: *const u8) -> __m512 {
    _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
}

macro_rules! blocks32 {
    ($name:ident, $ty:ident, $chunk:expr, $header:expr, |$hp:ident, $s:ident| $bias:expr, |$p:ident| $levels:expr) => {
        struct $name;
        impl Packed for $name {
            const TY: GgmlType = GgmlType::$ty;
            const GROUP: usize = 512;
            const HEADER: usize = $header;
            const CHUNK: usize = $chunk;
            #[inline(always)]
            #[allow(unused_variables)]
            unsafe fn header($hp: *const u8) -> (__m512, __m512) {
                let $s = f16x16($hp);
                ($s, $bias)
            }
            #[inline(always)]
            unsafe fn lane_scale(s: __m512, c: usize) -> __m512 {
                _mm512_permutexvar_ps(idx_pair(c), s)
            }
            #[inline(always)]
            unsafe fn levels($p: *const u8) -> __m512i {
                $levels
            }
            #[inline(always)]
            unsafe fn act_bias(_c16: *const f32, c32: *const f32, e: usize) -> __m512 {
                _mm512_loadu_ps(c32.add(e / 32))
            }
        }
    };
}

blocks32!(
    PQ4_0,
    Q4_0,
    32,
    32,
    |h, s| _mm512_mul_ps(s, _mm512_set1_ps(-8.0)),
    |p| nibbles(p)
);
blocks32!(PQ4_1, Q4_1, 32, 64, |h, s| f16x16(h.add(32)), |p| nibbles(
    p
));
blocks32!(
    PQ5_0,
    Q5_0,
    40,
    32,
    |h, s| _mm512_mul_ps(s, _mm512_set1_ps(-16.0)),
    |p| _mm512_or_si512(nibbles(p), fifth_bits(p.add(32)))
);
blocks32!(PQ5_1, Q5_1, 40, 64, |h, s| f16x16(h.add(32)), |p| {
    _mm512_or_si512(nibbles(p), fifth_bits(p.add(32)))
});
blocks32!(
    PQ8_0,
    Q8_0,
    64,
    32,
    |h, s| _mm512_mul_ps(s, _mm512_set1_ps(-128.0)),
    |p| _mm512_loadu_si512(p as *const __m512i)
);
blocks32!(
    PIq4Nl,
    IQ4_NL,
    32,
    32,
    |h, s| _mm512_mul_ps(s, _mm512_set1_ps(-128.0)),
    |p| _mm512_shuffle_epi8(table(&IQ4NL_U8), nibbles(p))
);

struct PNf4;
impl Packed for PNf4 {
    const TY: GgmlType = GgmlType::NF4;
    const GROUP: usize = 512;
    const HEADER: usize = 32;
    const CHUNK: usize = 32;
    #[inline(always)]
    unsafe fn header(h: *const u8) -> (__m512, __m512) {
        // Lane c: the scale of NF4 block c (64 weights); levels are int8 images of the NF4
        // levels, hence 1/127. Bias lanes follow the activations' 32-blocks: two per block.
        let s = _mm512_mul_ps(f16x16(h), _mm512_set1_ps(1.0 / 127.0));
        let halves = _mm512_srli_epi32(
            _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
            1,
        );
        let b = _mm512_mul_ps(_mm512_permutexvar_ps(halves, s), _mm512_set1_ps(-128.0));
        (s, b)
    }
    #[inline(always)]
    unsafe fn lane_scale(s: __m512, c: usize) -> __m512 {
        _mm512_permutexvar_ps(_mm512_set1_epi32(c as i32), s)
    }
    #[inline(always)]
    unsafe fn levels(p: *const u8) -> __m512i {
        _mm512_shuffle_epi8(table(&NF4_U8), nibbles(p))
    }
    #[inline(always)]
    unsafe fn act_bias(_c16: *const f32, c32: *const f32, e: usize) -> __m512 {
        _mm512_loadu_ps(c32.add(e / 32))
    }
}

/// Q4_K / Q5_K header: sub-block scales d * sc (lanes 0-7) and biases -dmin * m (lanes 0-7).
#[inline(always)]
unsafe fn k_header(h: *const u8) -> (__m512, __m512) {
    let dd = _mm_cvtph_ps(_mm_cvtsi32_si128((h as *const i32).read_unaligned()));
    let d = _mm512_broadcastss_ps(dd);
    let dmin = _mm512_broadcastss_ps(_mm_movehdup_ps(dd));
    let sc = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadl_epi64(
        h.add(4) as *const __m128i
    )));
    let m = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadl_epi64(
        h.add(12) as *const __m128i
    )));
    let low8 = 0x00FF;
    (
        _mm512_maskz_mul_ps(low8, d, sc),
        _mm512_maskz_mul_ps(low8, _mm512_sub_ps(_mm512_setzero_ps(), dmin), m),
    )
}

macro_rules! kquant45 {
    ($name:ident, $ty:ident, $chunk:expr, |$p:ident| $levels:expr) => {
        struct $name;
        impl Packed for $name {
            const TY: GgmlType = GgmlType::$ty;
            const GROUP: usize = 256;
            const HEADER: usize = 20;
            const CHUNK: usize = $chunk;
            #[inline(always)]
            unsafe fn header(h: *const u8) -> (__m512, __m512) {
                k_header(h)
            }
            #[inline(always)]
            unsafe fn lane_scale(s: __m512, c: usize) -> __m512 {
                _mm512_permutexvar_ps(idx_pair(c), s)
            }
            #[inline(always)]
            unsafe fn levels($p: *const u8) -> __m512i {
                $levels
            }
            #[inline(always)]
            unsafe fn act_bias(_c16: *const f32, c32: *const f32, e: usize) -> __m512 {
                _mm512_maskz_loadu_ps(0xFF, c32.add(e / 32))
            }
        }
    };
}

kquant45!(PQ4K, Q4_K, 32, |p| nibbles(p));
kquant45!(PQ5K, Q5_K, 40, |p| _mm512_or_si512(
    nibbles(p),
    fifth_bits(p.add(32))
));

struct PQ6K;
impl Packed for PQ6K {
    const TY: GgmlType = GgmlType::Q6_K;
    const GROUP: usize = 256;
    const HEADER: usize = 20;
    const CHUNK: usize = 48;
    #[inline(always)]
    unsafe fn header(h: *const u8) -> (__m512, __m512) {
        let d = _mm512_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(
            (h as *const u16).read_unaligned() as i32,
        )));
        let sc = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(
            h.add(4) as *const __m128i
        )));
        let s = _mm512_mul_ps(d, sc);
        (s, _mm512_mul_ps(s, _mm512_set1_ps(-32.0)))
    }
    #[inline(always)]
    unsafe fn lane_scale(s: __m512, c: usize) -> __m512 {
        let base = _mm512_set1_epi32(4 * c as i32);
        let quarter = _mm512_srli_epi32(
            _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
            2,
        );
        _mm512_permutexvar_ps(_mm512_add_epi32(base, quarter), s)
    }
    #[inline(always)]
    unsafe fn levels(p: *const u8) -> __m512i {
        // Tops: 16 bytes broadcast to the four 128-bit lanes; lane L takes bits 2L and 2L+1.
        let t = _mm512_broadcast_i32x4(_mm_loadu_si128(p.add(32) as *const __m128i));
        let shifts = _mm512_set_epi64(
            0x0006_0006_0006_0006,
            0x0006_0006_0006_0006,
            0x0004_0004_0004_0004,
            0x0004_0004_0004_0004,
            0x0002_0002_0002_0002,
            0x0002_0002_0002_0002,
            0,
            0,
        );
        let tops = _mm512_and_si512(_mm512_srlv_epi16(t, shifts), _mm512_set1_epi8(0x03));
        _mm512_or_si512(nibbles(p), _mm512_slli_epi16(tops, 4))
    }
    #[inline(always)]
    unsafe fn act_bias(c16: *const f32, _c32: *const f32, e: usize) -> __m512 {
        _mm512_loadu_ps(c16.add(e / 16))
    }
}

/// Asks for the weight bytes `PREFETCH_CHUNKS` chunks ahead of `p`, for the 32-weight types
/// (groups of 512): their rows are short in small models (896 weights) and the hardware
/// prefetcher alone leaves one core well below the read bandwidth when the weights stream from
/// DRAM (see `x86_avx2::prefetch`; `cargo bench --bench packed -- gemv_dram` measures both).
/// K-quant rows are long and go without, as on AVX2.
#[inline(always)]
unsafe fn prefetch<P: Packed>(p: *const u8) {
    if P::GROUP == 512 {
        _mm_prefetch(
            p.wrapping_add(PREFETCH_CHUNKS * P::CHUNK) as *const i8,
            _MM_HINT_T0,
        );
    }
}

const PREFETCH_CHUNKS: usize = 128;

/// One register tile: rows `w[0..R]` (packed row pointers) times activation rows `t0..t0+T`.
#[inline(always)]
unsafe fn tile<P: Packed, const R: usize, const T: usize>(
    w: [*const u8; R],
    a: &PackedActs,
    t0: usize,
    cols: usize,
) -> [[f32; T]; R] {
    let mut acc = [[_mm512_setzero_ps(); T]; R];
    let kp = a.kp;
    let q: [*const i8; T] = std::array::from_fn(|t| a.q.as_ptr().add((t0 + t) * kp));
    let s32: [*const f32; T] = std::array::from_fn(|t| a.s32.as_ptr().add((t0 + t) * kp / 32));
    let c32: [*const f32; T] = std::array::from_fn(|t| a.c32.as_ptr().add((t0 + t) * kp / 32));
    let c16: [*const f32; T] = std::array::from_fn(|t| a.c16.as_ptr().add((t0 + t) * kp / 16));
    let chunks = cols.div_ceil(64);
    let per_group = P::GROUP / 64;
    let mut off = 0usize;
    let mut e = 0usize;
    while e < chunks * 64 {
        let n = per_group.min(chunks - e / 64);
        let mut ws = [_mm512_setzero_ps(); R];
        let mut wb = [_mm512_setzero_ps(); R];
        for r in 0..R {
            (ws[r], wb[r]) = P::header(w[r].add(off));
        }
        let sa: [__m512; T] = std::array::from_fn(|t| P::act_scales(s32[t], e));
        off += P::HEADER;
        for c in 0..n {
            let idx = idx_pair(c);
            let x: [__m512i; T] =
                std::array::from_fn(|t| _mm512_loadu_si512(q[t].add(e + 64 * c) as *const __m512i));
            let xs: [__m512; T] = std::array::from_fn(|t| _mm512_permutexvar_ps(idx, sa[t]));
            for r in 0..R {
                let p = w[r].add(off + c * P::CHUNK);
                prefetch::<P>(p);
                let u = P::levels(p);
                let us = P::lane_scale(ws[r], c);
                for t in 0..T {
                    let p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, x[t]);
                    acc[r][t] =
                        _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(us, xs[t]), acc[r][t]);
                }
            }
        }
        off += n * P::CHUNK;
        for t in 0..T {
            let cb = P::act_bias(c16[t], c32[t], e);
            for r in 0..R {
                acc[r][t] = _mm512_fmadd_ps(wb[r], cb, acc[r][t]);
            }
        }
        e += P::GROUP;
    }
    let mut out = [[0f32; T]; R];
    for r in 0..R {
        for t in 0..T {
            out[r][t] = _mm512_reduce_add_ps(acc[r][t]);
        }
    }
    out
}

/// [`tile`] of packed type `P`, for the shared driver.
struct Avx512<P>(std::marker::PhantomData<P>);

impl<P: Packed> RegisterTile for Avx512<P> {
    #[inline(always)]
    unsafe fn tile<const R: usize, const T: usize>(
        w: [*const u8; R],
        a: &PackedActs,
        t0: usize,
        cols: usize,
    ) -> [[f32; T]; R] {
        tile::<P, R, T>(w, a, t0, cols)
    }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
unsafe fn gemm_typed<P: Packed>(
    w: &PackedMatrix,
    rows: Range<usize>,
    a: &PackedActs,
    out: &mut [f32],
) {
    // Prefill tiles measured on a 2-core Xeon with AVX-512 VNNI (qrun bench -p 512, Qwen2.5-0.5B;
    // ModernBERT batch 32 x 128): 4x4 is 4% faster than 3x4 on Q4_K_M prefill and 9% on the
    // ModernBERT batch; 32-weight types stay 3x4 (Q8_0 2% slower at 4x4); 3x6 and 6x2 lost.
    debug_assert_eq!(geometry(P::TY).chunk, P::CHUNK);
    if a.n == 1 {
        drive::<Avx512<P>, 4, 1>(w, rows, a, out)
    } else if P::GROUP == 256 {
        drive::<Avx512<P>, 4, 4>(w, rows, a, out)
    } else {
        drive::<Avx512<P>, 3, 4>(w, rows, a, out)
    }
}

/// # Safety
/// The CPU must have the instructions [`available`] checks; `w`, `rows`, `a` and `out` must
/// have passed `super::check`.
pub(super) unsafe fn gemm(w: &PackedMatrix, rows: Range<usize>, a: &PackedActs, out: &mut [f32]) {
    debug_assert!(!matches!(geometry(w.ty()).kind, Kind::Byte) || w.ty() == GgmlType::Q8_0);
    match w.ty() {
        GgmlType::Q4_0 => gemm_typed::<PQ4_0>(w, rows, a, out),
        GgmlType::Q4_1 => gemm_typed::<PQ4_1>(w, rows, a, out),
        GgmlType::Q5_0 => gemm_typed::<PQ5_0>(w, rows, a, out),
        GgmlType::Q5_1 => gemm_typed::<PQ5_1>(w, rows, a, out),
        GgmlType::Q8_0 => gemm_typed::<PQ8_0>(w, rows, a, out),
        GgmlType::IQ4_NL => gemm_typed::<PIq4Nl>(w, rows, a, out),
        GgmlType::NF4 => gemm_typed::<PNf4>(w, rows, a, out),
        GgmlType::Q4_K => gemm_typed::<PQ4K>(w, rows, a, out),
        GgmlType::Q5_K => gemm_typed::<PQ5K>(w, rows, a, out),
        GgmlType::Q6_K => gemm_typed::<PQ6K>(w, rows, a, out),
        other => unreachable!("{other} has no packed layout"),
    }
}
