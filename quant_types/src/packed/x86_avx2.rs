//! AVX2 (+ FMA, F16C) kernels over the same packed layouts as the AVX-512 ones, for CPUs
//! without AVX-512 (AMD Zen 1-3, most laptops). A register tile of R weight rows by T
//! activation rows; one 256-bit register holds 32 levels, one activation block.
//!
//! Products: `vpmaddubsw` (u8 x i8 -> i16 pairs). 4-, 5- and 6-bit levels are multiplied as
//! the unsigned levels the layout stores (2 * 63 * 127 cannot saturate an i16) and their offsets
//! go through the bias terms, as on AVX-512. 8-bit levels (Q8_0, and the tables of IQ4_NL and
//! NF4) would saturate as unsigned values, so they are turned back into signed levels and use
//! ggml's sign trick (|w| times sign(w) * x); their bias is then zero.
//!
//! Scales: 32-weight types sum each block's pairs to i32 (`vpmaddwd` by ones), convert and
//! add with the block's weight x activation scale (one broadcast load from a per-group table).
//! K-quants share one activation scale per super-block, so their sub-block scales are applied
//! in integers (`vpmaddwd` by the scale) and converted once per super-block.

// Tile loops index several per-row and per-token arrays by the same r and t.
#![allow(clippy::needless_range_loop)]

use super::drive::{drive, RegisterTile};
use super::layout::{geometry, PackedMatrix};
use super::PackedActs;
use crate::formats::{KVALUES_IQ4NL, NF4_LEVELS_I8};
use crate::GgmlType;
use core::arch::x86_64::*;
use std::ops::Range;

pub(super) fn available() -> bool {
    crate::SimdPath::Avx2.is_supported()
        && is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// One packed type, seen by the kernels.
trait Packed {
    const TY: GgmlType;
    /// Levels are signed (sign trick, no bias) rather than unsigned with a bias.
    const SIGNED: bool;
    /// The 64 levels of a chunk, elements 0-31 and 32-63.
    unsafe fn levels(p: *const u8) -> [__m256i; 2];
}

/// A 32-weight-block type (512-weight groups of 16 blocks): header decoding.
trait Packed32: Packed {
    const HEADER: usize;
    const CHUNK: usize;
    /// Weight scale of each of the group's 16 blocks, and bias of each (zero if SIGNED).
    unsafe fn header(h: *const u8) -> ([__m256; 2], [__m256; 2]);
}

/// A K-quant (256-weight groups): header decoding.
trait PackedK: Packed {
    const CHUNK: usize;
    /// Super-block scale d; i16 sub-block scales arranged for [`sub_scale`]; bias lanes
    /// (8 per 32 against c32, or 16 per 16 against c16 for Q6_K).
    unsafe fn header(h: *const u8) -> (f32, __m256i, [__m256; 2]);
    const BIAS16: bool;
}

#[inline(always)]
unsafe fn nibbles(p: *const u8) -> [__m256i; 2] {
    let v = _mm256_loadu_si256(p as *const __m256i);
    let m = _mm256_set1_epi8(0x0F);
    [
        _mm256_and_si256(v, m),
        _mm256_and_si256(_mm256_srli_epi16(v, 4), m),
    ]
}

/// 0x10 in byte i where bit i of the 32-bit word at `p` is set (ggml's bytes_from_bits_32).
#[inline(always)]
unsafe fn fifth_bits32(p: *const u8) -> __m256i {
    let x = (p as *const i32).read_unaligned();
    let shuf = _mm256_set_epi64x(
        0x0303030303030303,
        0x0202020202020202,
        0x0101010101010101,
        0,
    );
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x), shuf);
    let bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    let set = _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1));
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

#[inline(always)]
unsafe fn nib5(p: *const u8) -> [__m256i; 2] {
    let [a, b] = nibbles(p);
    [
        _mm256_or_si256(a, fifth_bits32(p.add(32))),
        _mm256_or_si256(b, fifth_bits32(p.add(36))),
    ]
}

#[inline(always)]
unsafe fn table(t: &[i8; 16]) -> __m256i {
    _mm256_broadcastsi128_si256(_mm_loadu_si128(t.as_ptr() as *const __m128i))
}

#[inline(always)]
unsafe fn f16x8(p: *const u8) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
}

/// Block scales at `h` (16 f16), and their biases `k * s`.
#[inline(always)]
unsafe fn scales16(h: *const u8, k: f32) -> ([__m256; 2], [__m256; 2]) {
    let s = [f16x8(h), f16x8(h.add(16))];
    let k = _mm256_set1_ps(k);
    (s, [_mm256_mul_ps(s[0], k), _mm256_mul_ps(s[1], k)])
}

macro_rules! blocks32 {
    ($name:ident, $ty:ident, $signed:expr, $chunk:expr, $header:expr,
     |$h:ident| $hdr:expr, |$p:ident| $levels:expr) => {
        struct $name;
        impl Packed for $name {
            const TY: GgmlType = GgmlType::$ty;
            const SIGNED: bool = $signed;
            #[inline(always)]
            unsafe fn levels($p: *const u8) -> [__m256i; 2] {
                $levels
            }
        }
        impl Packed32 for $name {
            const HEADER: usize = $header;
            const CHUNK: usize = $chunk;
            #[inline(always)]
            unsafe fn header($h: *const u8) -> ([__m256; 2], [__m256; 2]) {
                $hdr
            }
        }
    };
}

blocks32!(PQ4_0, Q4_0, false, 32, 32, |h| scales16(h, -8.0), |p| {
    nibbles(p)
});
blocks32!(
    PQ4_1,
    Q4_1,
    false,
    32,
    64,
    |h| (
        [f16x8(h), f16x8(h.add(16))],
        [f16x8(h.add(32)), f16x8(h.add(48))]
    ),
    |p| nibbles(p)
);
blocks32!(
    PQ5_0,
    Q5_0,
    false,
    40,
    32,
    |h| scales16(h, -16.0),
    |p| nib5(p)
);
blocks32!(
    PQ5_1,
    Q5_1,
    false,
    40,
    64,
    |h| (
        [f16x8(h), f16x8(h.add(16))],
        [f16x8(h.add(32)), f16x8(h.add(48))]
    ),
    |p| nib5(p)
);
blocks32!(PQ8_0, Q8_0, true, 64, 32, |h| scales16(h, 0.0), |p| {
    // Stored as level + 128: flipping the top bit gives the signed level back.
    let flip = _mm256_set1_epi8(-128);
    [
        _mm256_xor_si256(_mm256_loadu_si256(p as *const __m256i), flip),
        _mm256_xor_si256(_mm256_loadu_si256(p.add(32) as *const __m256i), flip),
    ]
});
blocks32!(PIq4Nl, IQ4_NL, true, 32, 32, |h| scales16(h, 0.0), |p| {
    let t = table(&KVALUES_IQ4NL);
    let [a, b] = nibbles(p);
    [_mm256_shuffle_epi8(t, a), _mm256_shuffle_epi8(t, b)]
});
blocks32!(
    PNf4,
    NF4,
    true,
    32,
    32,
    |h| {
        // One scale per 64-weight NF4 block (the header's first 8 f16), for both of its
        // 32-weight halves; levels are int8 images of the NF4 levels, hence 1/127.
        let s = _mm256_mul_ps(f16x8(h), _mm256_set1_ps(1.0 / 127.0));
        let lo = _mm256_permutevar8x32_ps(s, _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3));
        let hi = _mm256_permutevar8x32_ps(s, _mm256_setr_epi32(4, 4, 5, 5, 6, 6, 7, 7));
        ([lo, hi], [_mm256_setzero_ps(); 2])
    },
    |p| {
        let t = table(&NF4_LEVELS_I8);
        let [a, b] = nibbles(p);
        [_mm256_shuffle_epi8(t, a), _mm256_shuffle_epi8(t, b)]
    }
);

/// i16 scale vector for half-chunk `k` (0..8) of a K-quant group: bytes 2k, 2k+1 of each
/// 128-bit lane of the arranged scales, repeated.
#[inline(always)]
unsafe fn sub_scale(arranged: __m256i, k: usize) -> __m256i {
    let lo = (2 * k) as i8;
    let ctl = _mm256_set1_epi16(((lo as u8 as u16) | ((lo as u8 as u16 + 1) << 8)) as i16);
    _mm256_shuffle_epi8(arranged, ctl)
}

#[inline(always)]
unsafe fn f16_at(h: *const u8) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
        (h as *const u16).read_unaligned() as i32,
    )))
}

/// Q4_K / Q5_K header: d; the 8 u8 scales as i16 in both lanes; biases -dmin * m (8 lanes).
#[inline(always)]
unsafe fn k45_header(h: *const u8) -> (f32, __m256i, [__m256; 2]) {
    let d = f16_at(h);
    let dmin = f16_at(h.add(2));
    let sc = _mm_cvtepu8_epi16(_mm_loadl_epi64(h.add(4) as *const __m128i));
    let m = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(
        h.add(12) as *const __m128i
    )));
    let b = _mm256_mul_ps(_mm256_set1_ps(-dmin), m);
    (d, _mm256_broadcastsi128_si256(sc), [b, _mm256_setzero_ps()])
}

struct PQ4K;
impl Packed for PQ4K {
    const TY: GgmlType = GgmlType::Q4_K;
    const SIGNED: bool = false;
    #[inline(always)]
    unsafe fn levels(p: *const u8) -> [__m256i; 2] {
        nibbles(p)
    }
}
impl PackedK for PQ4K {
    const CHUNK: usize = 32;
    const BIAS16: bool = false;
    #[inline(always)]
    unsafe fn header(h: *const u8) -> (f32, __m256i, [__m256; 2]) {
        k45_header(h)
    }
}

struct PQ5K;
impl Packed for PQ5K {
    const TY: GgmlType = GgmlType::Q5_K;
    const SIGNED: bool = false;
    #[inline(always)]
    unsafe fn levels(p: *const u8) -> [__m256i; 2] {
        nib5(p)
    }
}
impl PackedK for PQ5K {
    const CHUNK: usize = 40;
    const BIAS16: bool = false;
    #[inline(always)]
    unsafe fn header(h: *const u8) -> (f32, __m256i, [__m256; 2]) {
        k45_header(h)
    }
}

struct PQ6K;
impl Packed for PQ6K {
    const TY: GgmlType = GgmlType::Q6_K;
    const SIGNED: bool = false;
    #[inline(always)]
    unsafe fn levels(p: *const u8) -> [__m256i; 2] {
        // Tops: byte i holds elements i, 16 + i, 32 + i, 48 + i at bits 0, 2, 4, 6. Broadcast
        // to both lanes and move the pair each lane needs to bits 4-5.
        let t = _mm256_broadcastsi128_si256(_mm_loadu_si128(p.add(32) as *const __m128i));
        let m = _mm256_set1_epi8(0x30);
        let t0 = _mm256_and_si256(
            _mm256_sllv_epi32(t, _mm256_setr_epi32(4, 4, 4, 4, 2, 2, 2, 2)),
            m,
        );
        let t1 = _mm256_and_si256(
            _mm256_srlv_epi32(t, _mm256_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2)),
            m,
        );
        let [a, b] = nibbles(p);
        [_mm256_or_si256(a, t0), _mm256_or_si256(b, t1)]
    }
}
impl PackedK for PQ6K {
    const CHUNK: usize = 48;
    const BIAS16: bool = true;
    #[inline(always)]
    unsafe fn header(h: *const u8) -> (f32, __m256i, [__m256; 2]) {
        let d = f16_at(h);
        let sc = _mm_loadu_si128(h.add(4) as *const __m128i);
        // Half-chunk k covers sub-blocks 2k (low lane) and 2k + 1 (high lane): even scales to
        // the low lane, odd ones to the high lane.
        let evens_odds = _mm_shuffle_epi8(
            sc,
            _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15),
        );
        let arranged = _mm256_cvtepi8_epi16(evens_odds);
        let s = [
            _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc)),
            _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(sc, 8))),
        ];
        let k = _mm256_set1_ps(-32.0 * d);
        (
            d,
            arranged,
            [_mm256_mul_ps(s[0], k), _mm256_mul_ps(s[1], k)],
        )
    }
}

/// i16 pair sums of levels `w` (as prepared by [`prep`]) times activations `x`.
#[inline(always)]
unsafe fn pairs(signed: bool, wa: __m256i, w: __m256i, x: __m256i) -> __m256i {
    if signed {
        _mm256_maddubs_epi16(wa, _mm256_sign_epi8(x, w))
    } else {
        _mm256_maddubs_epi16(wa, x)
    }
}

/// The unsigned factor of a product: |w| for signed levels.
#[inline(always)]
unsafe fn prep(signed: bool, w: __m256i) -> __m256i {
    if signed {
        _mm256_abs_epi8(w)
    } else {
        w
    }
}

#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Asks for the weight bytes 128 chunks (5-8 KiB) ahead of `p` (a chunk is 64 weights). Rows of
/// 32-weight types are short in small models (896 weights: 640 bytes), and the hardware
/// prefetcher alone kept one core decoding Q5_0 from DRAM at 3.8 GiB/s, Q8_0 at 6.8, against
/// 13.5 GB/s that `qrun bandwidth -t 1` reads (`cargo bench --bench packed -- gemv_dram`, Zen 3).
/// With this: 6.5-8.0 and 8.1-8.7 (distances of 16 to 256 chunks tried; 128-192 were best).
/// K-quant rows are long (4864 weights) and got slower with it, so they go without.
#[inline(always)]
unsafe fn prefetch<P: Packed32>(p: *const u8) {
    _mm_prefetch(p.wrapping_add(128 * P::CHUNK) as *const i8, _MM_HINT_T0);
}

/// Pointers to activation row data for T rows from `t0`.
struct Rows<const T: usize> {
    q: [*const i8; T],
    s32: [*const f32; T],
    c32: [*const f32; T],
    c16: [*const f32; T],
}

#[inline(always)]
unsafe fn act_rows<const T: usize>(a: &PackedActs, t0: usize) -> Rows<T> {
    let kp = a.kp;
    Rows {
        q: std::array::from_fn(|t| a.q.as_ptr().add((t0 + t) * kp)),
        s32: std::array::from_fn(|t| a.s32.as_ptr().add((t0 + t) * kp / 32)),
        c32: std::array::from_fn(|t| a.c32.as_ptr().add((t0 + t) * kp / 32)),
        c16: std::array::from_fn(|t| a.c16.as_ptr().add((t0 + t) * kp / 16)),
    }
}

/// One register tile of a 32-weight-block type: rows `w` times activation rows `t0..t0+T`.
#[inline(always)]
unsafe fn tile32<P: Packed32, const R: usize, const T: usize>(
    w: [*const u8; R],
    a: &PackedActs,
    t0: usize,
    cols: usize,
) -> [[f32; T]; R] {
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    let ar = act_rows::<T>(a, t0);
    let ones = _mm256_set1_epi16(1);
    let chunks = cols.div_ceil(64);
    // Per group: weight scale x activation scale of each block, per (row, token).
    let mut prod = [[[0f32; 16]; T]; R];
    let mut off = 0usize;
    let mut e = 0usize;
    while e < chunks * 64 {
        let n = 8.min(chunks - e / 64);
        let mut wb = [[_mm256_setzero_ps(); 2]; R];
        for r in 0..R {
            let (ws, b) = P::header(w[r].add(off));
            wb[r] = b;
            for t in 0..T {
                let sa = ar.s32[t].add(e / 32);
                let p = prod[r][t].as_mut_ptr();
                _mm256_storeu_ps(p, _mm256_mul_ps(ws[0], _mm256_loadu_ps(sa)));
                _mm256_storeu_ps(p.add(8), _mm256_mul_ps(ws[1], _mm256_loadu_ps(sa.add(8))));
            }
        }
        off += P::HEADER;
        for c in 0..n {
            for r in 0..R {
                let p = w[r].add(off + c * P::CHUNK);
                prefetch::<P>(p);
                let lv = P::levels(p);
                for (h, &wv) in lv.iter().enumerate() {
                    let wa = prep(P::SIGNED, wv);
                    for t in 0..T {
                        let x =
                            _mm256_loadu_si256(ar.q[t].add(e + 64 * c + 32 * h) as *const __m256i);
                        let i = _mm256_madd_epi16(pairs(P::SIGNED, wa, wv, x), ones);
                        let s = _mm256_broadcast_ss(&prod[r][t][2 * c + h]);
                        acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), s, acc[r][t]);
                    }
                }
            }
        }
        off += n * P::CHUNK;
        if !P::SIGNED {
            for t in 0..T {
                let cb = ar.c32[t].add(e / 32);
                let (c0, c1) = (_mm256_loadu_ps(cb), _mm256_loadu_ps(cb.add(8)));
                for r in 0..R {
                    acc[r][t] = _mm256_fmadd_ps(wb[r][0], c0, acc[r][t]);
                    acc[r][t] = _mm256_fmadd_ps(wb[r][1], c1, acc[r][t]);
                }
            }
        }
        e += 512;
    }
    let mut out = [[0f32; T]; R];
    for r in 0..R {
        for t in 0..T {
            out[r][t] = hsum(acc[r][t]);
        }
    }
    out
}

/// One register tile of a K-quant.
#[inline(always)]
unsafe fn tilek<P: PackedK, const R: usize, const T: usize>(
    w: [*const u8; R],
    a: &PackedActs,
    t0: usize,
    cols: usize,
) -> [[f32; T]; R] {
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    let ar = act_rows::<T>(a, t0);
    let chunks = cols.div_ceil(64);
    let mut off = 0usize;
    let mut e = 0usize;
    while e < chunks * 64 {
        let n = 4.min(chunks - e / 64);
        let mut d = [0f32; R];
        let mut sc = [_mm256_setzero_si256(); R];
        let mut wb = [[_mm256_setzero_ps(); 2]; R];
        for r in 0..R {
            (d[r], sc[r], wb[r]) = P::header(w[r].add(off));
        }
        off += 20;
        let mut iacc = [[_mm256_setzero_si256(); T]; R];
        for c in 0..n {
            for r in 0..R {
                let lv = P::levels(w[r].add(off + c * P::CHUNK));
                for (h, &wv) in lv.iter().enumerate() {
                    let s = sub_scale(sc[r], 2 * c + h);
                    for t in 0..T {
                        let x =
                            _mm256_loadu_si256(ar.q[t].add(e + 64 * c + 32 * h) as *const __m256i);
                        let p = _mm256_maddubs_epi16(wv, x);
                        iacc[r][t] = _mm256_add_epi32(iacc[r][t], _mm256_madd_epi16(p, s));
                    }
                }
            }
        }
        off += n * P::CHUNK;
        for t in 0..T {
            let da = *ar.s32[t].add(e / 32);
            let (c0, c1) = if P::BIAS16 {
                let cb = ar.c16[t].add(e / 16);
                (_mm256_loadu_ps(cb), _mm256_loadu_ps(cb.add(8)))
            } else {
                (_mm256_loadu_ps(ar.c32[t].add(e / 32)), _mm256_setzero_ps())
            };
            for r in 0..R {
                let s = _mm256_set1_ps(d[r] * da);
                acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(iacc[r][t]), s, acc[r][t]);
                acc[r][t] = _mm256_fmadd_ps(wb[r][0], c0, acc[r][t]);
                if P::BIAS16 {
                    acc[r][t] = _mm256_fmadd_ps(wb[r][1], c1, acc[r][t]);
                }
            }
        }
        e += 256;
    }
    let mut out = [[0f32; T]; R];
    for r in 0..R {
        for t in 0..T {
            out[r][t] = hsum(acc[r][t]);
        }
    }
    out
}

/// A tile kernel of some shape, chosen by type family.
trait Tiles: Packed + RegisterTile {
    /// Sub-block scales applied in integers ([`tilek`]).
    const INT_SCALES: bool;
}

macro_rules! tiles {
    ($f:ident, $int:literal: $($name:ident),*) => {$(
        impl Tiles for $name {
            const INT_SCALES: bool = $int;
        }
        impl RegisterTile for $name {
            #[inline(always)]
            unsafe fn tile<const R: usize, const T: usize>(
                w: [*const u8; R],
                a: &PackedActs,
                t0: usize,
                cols: usize,
            ) -> [[f32; T]; R] {
                $f::<$name, R, T>(w, a, t0, cols)
            }
        }
    )*};
}
tiles!(tile32, false: PQ4_0, PQ4_1, PQ5_0, PQ5_1, PQ8_0, PIq4Nl, PNf4);
tiles!(tilek, true: PQ4K, PQ5K, PQ6K);

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemm_typed<P: Tiles>(
    w: &PackedMatrix,
    rows: Range<usize>,
    a: &PackedActs,
    out: &mut [f32],
) {
    // Tile shapes measured with `cargo bench --bench packed` on a 2-core AMD EPYC (AVX2): K-quants
    // keep one i32 accumulator per pair and take a wider token tile than the 32-weight types,
    // which also hold a float accumulator and a scale table per pair.
    debug_assert_eq!(w.ty(), P::TY);
    if a.n == 1 {
        drive::<P, 4, 1>(w, rows, a, out)
    } else if P::INT_SCALES {
        drive::<P, 2, 6>(w, rows, a, out)
    } else {
        drive::<P, 2, 4>(w, rows, a, out)
    }
}

/// # Safety
/// The CPU must have the instructions [`available`] checks; `w`, `rows`, `a` and `out` must
/// have passed `super::check`.
pub(super) unsafe fn gemm(w: &PackedMatrix, rows: Range<usize>, a: &PackedActs, out: &mut [f32]) {
    debug_assert_eq!(
        geometry(w.ty()).group,
        if w.ty().block_elems() == 256 {
            256
        } else {
            512
        }
    );
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
