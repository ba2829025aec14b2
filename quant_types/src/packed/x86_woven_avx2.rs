//! AVX2 (+ FMA, F16C) kernels over the interleaved layout (`super::interleaved`), for CPUs
//! without AVX-512 (AMD Zen 1-3, most laptops). The layout is the AVX-512 kernels' own: in
//! every 64 bytes of levels, byte 4r + j belongs to row r, so the first 32 bytes hold rows 0-7
//! and the next 32 rows 8-15, and one 256-bit register holds four consecutive weights of eight
//! rows. Lanes are rows, as in `x86_i16`: results come token-major without a transpose.
//!
//! AVX2 has no `vpdpbusd`. Products are `vpmaddubsw` (u8 x i8 -> pairs summed in i16), then
//! `vpmaddwd` into i32 lanes. Unsigned levels below 16 (Q4_0, Q4_1, Q4_K) let a whole 32-weight
//! sub-block sum in i16 before one widening (8 x 2 x 15 x 128 < 2^15), 5-bit levels half of it,
//! Q6_K's 6-bit levels a quarter; the levels' offsets enter as integer start values or, for
//! K-quants, as float terms against the activations' sums. Levels that need eight bits (Q8_0;
//! the tables of IQ4_NL and NF4) would saturate as unsigned bytes: they are multiplied signed
//! with ggml's sign trick (|x| times sign(x) * w), one widening per four weights. K-quant
//! sub-block scales are applied in integers (`vpmaddwd` by the scale instead of by ones), so
//! the float work is once per super-block and token. Q5 types' fifth bits are read as bit
//! planes (`interleaved::fifth_planes`, how processes whose best kernels are these pack them):
//! a shift and a mask per register.
//!
//! A tile is one unit of 16 rows by T tokens. Decoding (T = 1) reads both 8-row halves in one
//! pass, streaming the unit once; prefill tiles take one half at a time, so that T tokens'
//! accumulators fit the 16 registers.

// Tiles index several arrays (accumulators, activation pointers) by the same token and half.
#![allow(clippy::needless_range_loop)]

use super::interleaved::{offset, Woven, ROWS};
use super::layout::PackedMatrix;
use super::{token_block, PackedActs};
use crate::formats::{KVALUES_IQ4NL, NF4_LEVELS_I8};
use crate::GgmlType;
use core::arch::x86_64::*;
use std::ops::Range;

use super::x86_i16::{prefetch_part, ActRows, Strides, PREFETCH};

/// How far ahead decoding prefetches (bytes), past the 4 KiB pages where the hardware
/// prefetchers stop. On the Zen 3 VM (one thread, `gemv_dram`) 4 KiB beat 1 KiB by 12-19% for
/// Q5_0, IQ4_NL and NF4; for the K-quants, whose 2.3 KiB super-blocks 1 KiB did not even clear,
/// spreading the prefetches over the sub-blocks ([`prefetch_part`]) gave 12-60% at 1 KiB, and
/// 4 KiB 40-100% over the old burst at 1 KiB (Q4_K 13.9 -> 20, Q5_K 9.2 -> 18, Q6_K 12.3 -> 20
/// GiB/s; 8 KiB no better). Q8_0 keeps 1 KiB ([`AHEAD_Q8`]).
const AHEAD: usize = 4096;

/// Q8_0's distance: its levels unpack cheapest, and 4 KiB made decoding slower end to end
/// (paired runs of the model, three rounds).
const AHEAD_Q8: usize = 1024;

/// Rows per half-unit: one register's lanes.
const HALF: usize = 8;

/// One interleaved 32-weight type, seen by the kernel.
trait Blocks32 {
    const TY: GgmlType;
    /// 8-bit levels (Q8_0, stored + 128); else nibbles.
    const BYTES: bool;
    /// Nibbles index this table of signed levels.
    const TABLE: Option<&'static [i8; 16]>;
    /// Factor of the stored scale (NF4's levels are int8 images: 1/127).
    const SCALE: f32;
    /// log2 of the level offset of unsigned levels (0: none, or signed levels).
    const LOG2_OFFSET: u32;
    /// Levels carry a fifth bit.
    const FIFTH: bool;
    /// Levels are multiplied signed (sign trick).
    const SIGNED: bool = Self::BYTES || Self::TABLE.is_some();
    /// 32-weight sub-blocks per block, all under the block's scale (NF4: 2).
    const SUBS: usize = Woven::of(Self::TY).subs();
}

macro_rules! woven {
    ($name:ident, $ty:ident, $bytes:expr, $table:expr, $scale:expr, $fifth:expr) => {
        struct $name;
        impl Blocks32 for $name {
            const TY: GgmlType = GgmlType::$ty;
            const BYTES: bool = $bytes;
            const TABLE: Option<&'static [i8; 16]> = $table;
            const SCALE: f32 = $scale;
            const LOG2_OFFSET: u32 = match offset(GgmlType::$ty) {
                0 | 128 => 0,
                o => o.trailing_zeros(),
            };
            const FIFTH: bool = $fifth;
        }
    };
}
woven!(WQ4_0, Q4_0, false, None, 1.0, false);
woven!(WQ4_1, Q4_1, false, None, 1.0, false);
woven!(WQ5_0, Q5_0, false, None, 1.0, true);
woven!(WQ5_1, Q5_1, false, None, 1.0, true);
woven!(WQ8_0, Q8_0, true, None, 1.0, false);
woven!(WIq4Nl, IQ4_NL, false, Some(&KVALUES_IQ4NL), 1.0, false);
woven!(WNf4, NF4, false, Some(&NF4_LEVELS_I8), 1.0 / 127.0, false);

/// Four activation bytes at `p`, broadcast to the 8 lanes.
#[inline(always)]
unsafe fn quad(p: *const i8) -> __m256i {
    _mm256_set1_epi32((p as *const i32).read_unaligned())
}

/// The 32 levels of half `h` of a pair of k-groups (4-bit part): low nibbles, high nibbles.
#[inline(always)]
unsafe fn nibble_pair(p: *const u8, h: usize) -> (__m256i, __m256i) {
    let v = _mm256_loadu_si256(p.add(32 * h) as *const __m256i);
    let m4 = _mm256_set1_epi8(0x0F);
    (
        _mm256_and_si256(v, m4),
        _mm256_and_si256(_mm256_srli_epi16(v, 4), m4),
    )
}

/// The fifth bits of k-group `k` (0..8) of a sub-block, as 0x10 in each level byte, from the
/// half's bit planes (bit k of each byte; `interleaved::fifth_planes`). 16-bit shifts by at
/// most 4 keep bit 4 of each byte within its own byte.
#[inline(always)]
unsafe fn fifth(planes: __m256i, k: usize) -> __m256i {
    let v = match k {
        0 => _mm256_slli_epi16(planes, 4),
        1 => _mm256_slli_epi16(planes, 3),
        2 => _mm256_slli_epi16(planes, 2),
        3 => _mm256_slli_epi16(planes, 1),
        4 => planes,
        5 => _mm256_srli_epi16(planes, 1),
        6 => _mm256_srli_epi16(planes, 2),
        _ => _mm256_srli_epi16(planes, 3),
    };
    _mm256_and_si256(v, _mm256_set1_epi8(0x10))
}

/// The bit planes of half `h` of a Q5 sub-block whose levels start at `lv`.
#[inline(always)]
unsafe fn planes(lv: *const u8, h: usize) -> __m256i {
    _mm256_loadu_si256(lv.add(256 + 32 * h) as *const __m256i)
}

/// Levels of k-group pair `p` of half `h` of a sub-block at `lv` (low nibbles, high nibbles),
/// with their fifth bits for Q5 types (`fifth_bits`, a constant of every caller).
#[inline(always)]
unsafe fn unsigned_levels(
    lv: *const u8,
    p: usize,
    h: usize,
    fifth_bits: bool,
) -> (__m256i, __m256i) {
    let (lo, hi) = nibble_pair(lv.add(64 * p), h);
    if !fifth_bits {
        return (lo, hi);
    }
    let f = planes(lv, h);
    (
        _mm256_or_si256(lo, fifth(f, 2 * p)),
        _mm256_or_si256(hi, fifth(f, 2 * p + 1)),
    )
}

/// One token's i16 sums of a k-group pair: levels `lo` times activations `x[0..4]` plus `hi`
/// times `x[4..8]`.
#[inline(always)]
unsafe fn pair_u(lo: __m256i, hi: __m256i, x: *const i8) -> __m256i {
    _mm256_add_epi16(mul_u(lo, quad(x)), mul_u(hi, quad(x.add(4))))
}

/// Sum of u8 levels `w` times i8 activations `x` in i16 pairs (no saturation for the callers'
/// level ranges).
#[inline(always)]
unsafe fn mul_u(w: __m256i, x: __m256i) -> __m256i {
    _mm256_maddubs_epi16(w, x)
}

/// Signed levels `w` (with `aw` = |w|) times i8 activations `x`, widened to i32 lanes: ggml's
/// sign trick with the roles turned, |w| * (sign(w) * x). |w| is computed once per register of
/// levels and serves every token of the tile; sign(w) * x cannot wrap, since the activations
/// of these types (ggml's Q8_0 blocks) lie in -127..=127, and a level of -128 (which ggml's
/// quantizers never write, but a file may hold) still multiplies exactly as |w| = 128.
#[inline(always)]
unsafe fn mul_s(aw: __m256i, w: __m256i, x: __m256i) -> __m256i {
    let p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(x, w));
    _mm256_madd_epi16(p, _mm256_set1_epi16(1))
}

/// i16 pairs summed into i32 lanes.
#[inline(always)]
unsafe fn widen(v: __m256i) -> __m256i {
    _mm256_madd_epi16(v, _mm256_set1_epi16(1))
}

/// Eight f16 header values at `p` (one half's) as floats.
#[inline(always)]
unsafe fn f16x8(p: *const u8) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
}

/// Eight u8 (or i8) header values at `p` as i32 lanes.
#[inline(always)]
unsafe fn bytes_i32<const SIGNED: bool>(p: *const u8) -> __m256i {
    let v = _mm_loadl_epi64(p as *const __m128i);
    if SIGNED {
        _mm256_cvtepi8_epi32(v)
    } else {
        _mm256_cvtepu8_epi32(v)
    }
}

/// An i32 lane value `v` (|v| < 2^15) in both i16 halves of its lane: `vpmaddwd` by the result
/// multiplies both i16 pairs of a lane by `v`.
#[inline(always)]
unsafe fn both_halves(v: __m256i) -> __m256i {
    _mm256_or_si256(
        _mm256_and_si256(v, _mm256_set1_epi32(0xFFFF)),
        _mm256_slli_epi32::<16>(v),
    )
}

/// One tile of a 32-weight type: halves `h0..h0+H` of the unit at `u` (`nb` blocks) times
/// activation rows `t0..t0+T`; lane i of result [t][h] is row 8 (h0 + h) + i's product with
/// token t0 + t.
#[inline(always)]
unsafe fn tile32<W: Blocks32, const T: usize, const H: usize>(
    u: *const u8,
    nb: usize,
    a: &PackedActs,
    t0: usize,
    h0: usize,
) -> [[__m256; H]; T] {
    let x = ActRows::<T>::new(a, t0);
    let mut acc = [[_mm256_setzero_ps(); H]; T];
    let table = match W::TABLE {
        Some(t) => _mm256_broadcastsi128_si256(_mm_loadu_si128(t.as_ptr() as *const __m128i)),
        None => _mm256_setzero_si256(),
    };
    let abs_table = _mm256_abs_epi8(table);
    let g = Woven::of(W::TY);
    let bb = g.block_bytes();
    for b in 0..nb {
        let blk = u.add(b * bb);
        if T == 1 {
            if W::BYTES {
                prefetch_part::<AHEAD_Q8>(blk, bb, 0, 1);
            } else {
                prefetch_part::<AHEAD>(blk, bb, 0, 1);
            }
        }
        for sub in 0..W::SUBS {
            // The sub-block's index among the row's 32-weight blocks (the activations' blocks).
            let sb = W::SUBS * b + sub;
            let lv = blk.add(g.header + sub * g.sub_bytes);
            let e = 32 * sb;
            // Lanes start at the offset term, -offset * sum(x) (the activations carry
            // -128 * sum(x)): the integer sum is then the product with the signed levels.
            let ia0 = |t: usize| {
                let v = _mm256_set1_epi32(*x.off32[t].add(sb));
                match W::LOG2_OFFSET {
                    0 => _mm256_setzero_si256(),
                    3 => _mm256_srai_epi32::<4>(v),
                    _ => {
                        debug_assert_eq!(W::LOG2_OFFSET, 4);
                        _mm256_srai_epi32::<3>(v)
                    }
                }
            };
            let mut ia: [[__m256i; H]; T] = std::array::from_fn(|t| [ia0(t); H]);
            if W::BYTES {
                for kg in 0..8 {
                    for hh in 0..H {
                        let w =
                            _mm256_loadu_si256(lv.add(64 * kg + 32 * (h0 + hh)) as *const __m256i);
                        let w = _mm256_xor_si256(w, _mm256_set1_epi8(-128));
                        let aw = _mm256_abs_epi8(w);
                        for t in 0..T {
                            let xq = quad(x.q[t].add(e + 4 * kg));
                            ia[t][hh] = _mm256_add_epi32(ia[t][hh], mul_s(aw, w, xq));
                        }
                    }
                }
            } else if W::SIGNED && T == 1 && H == 2 {
                // Decoding, both halves: |x| once per k-group for both, and sign(x) * w per
                // register (the tables hold no -128, so the sign cannot wrap).
                for p in 0..4 {
                    let ax = [0, 4].map(|o| quad(x.q[0].add(e + 8 * p + o)));
                    let abs_x = ax.map(|v| _mm256_abs_epi8(v));
                    for hh in 0..H {
                        let (lo, hi) = nibble_pair(lv.add(64 * p), h0 + hh);
                        let (lo, hi) = (
                            _mm256_shuffle_epi8(table, lo),
                            _mm256_shuffle_epi8(table, hi),
                        );
                        let v = _mm256_add_epi32(
                            widen(_mm256_maddubs_epi16(abs_x[0], _mm256_sign_epi8(lo, ax[0]))),
                            widen(_mm256_maddubs_epi16(abs_x[1], _mm256_sign_epi8(hi, ax[1]))),
                        );
                        ia[0][hh] = _mm256_add_epi32(ia[0][hh], v);
                    }
                }
            } else if W::SIGNED {
                for p in 0..4 {
                    for hh in 0..H {
                        let (lo, hi) = nibble_pair(lv.add(64 * p), h0 + hh);
                        let (alo, ahi) = (
                            _mm256_shuffle_epi8(abs_table, lo),
                            _mm256_shuffle_epi8(abs_table, hi),
                        );
                        let (lo, hi) = (
                            _mm256_shuffle_epi8(table, lo),
                            _mm256_shuffle_epi8(table, hi),
                        );
                        for t in 0..T {
                            let v = _mm256_add_epi32(
                                mul_s(alo, lo, quad(x.q[t].add(e + 8 * p))),
                                mul_s(ahi, hi, quad(x.q[t].add(e + 8 * p + 4))),
                            );
                            ia[t][hh] = _mm256_add_epi32(ia[t][hh], v);
                        }
                    }
                }
            } else {
                // Unsigned levels: 4-bit ones sum the whole block in i16, 5-bit ones two k-group
                // pairs at a time (at most 8 x 2 x 15 x 127, 4 x 2 x 31 x 127).
                let span = if W::FIFTH { 2 } else { 4 };
                for p0 in (0..4).step_by(span) {
                    let mut s16 = [[_mm256_setzero_si256(); H]; T];
                    for p in p0..p0 + span {
                        for hh in 0..H {
                            let h = h0 + hh;
                            let (lo, hi) = unsigned_levels(lv, p, h, W::FIFTH);
                            for t in 0..T {
                                let v = pair_u(lo, hi, x.q[t].add(e + 8 * p));
                                s16[t][hh] = _mm256_add_epi16(s16[t][hh], v);
                            }
                        }
                    }
                    for t in 0..T {
                        for hh in 0..H {
                            ia[t][hh] = _mm256_add_epi32(ia[t][hh], widen(s16[t][hh]));
                        }
                    }
                }
            }
            for hh in 0..H {
                let h = h0 + hh;
                let mut ws = f16x8(blk.add(16 * h));
                if W::SCALE != 1.0 {
                    ws = _mm256_mul_ps(ws, _mm256_set1_ps(W::SCALE));
                }
                for t in 0..T {
                    let scale = _mm256_mul_ps(ws, _mm256_set1_ps(*x.s32[t].add(sb)));
                    acc[t][hh] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ia[t][hh]), scale, acc[t][hh]);
                }
                if offset(W::TY) == 0 {
                    // w = d * u + m: the minimums meet the activations' scaled sums.
                    let m = f16x8(blk.add(32 + 16 * h));
                    for t in 0..T {
                        acc[t][hh] =
                            _mm256_fmadd_ps(m, _mm256_set1_ps(*x.c32[t].add(sb)), acc[t][hh]);
                    }
                }
            }
        }
    }
    acc
}

/// One tile of Q4_K (`Q5` false) or Q5_K: per super-block, sub-block sums times their integer
/// scales collect in i32 lanes, converted and scaled once; minimums go straight to `acc`
/// against the activations' per-32 sums (already scaled).
#[inline(always)]
unsafe fn tile_k<const Q5: bool, const T: usize, const H: usize>(
    u: *const u8,
    nb: usize,
    a: &PackedActs,
    t0: usize,
    h0: usize,
) -> [[__m256; H]; T] {
    let x = ActRows::<T>::new(a, t0);
    let g = Woven::of(if Q5 { GgmlType::Q5_K } else { GgmlType::Q4_K });
    let bb = g.block_bytes();
    let mut acc = [[_mm256_setzero_ps(); H]; T];
    for b in 0..nb {
        let blk = u.add(b * bb);
        let mut isum = [[_mm256_setzero_si256(); H]; T];
        for j in 0..8 {
            if T == 1 {
                prefetch_part::<AHEAD>(blk, bb, j, 8);
            }
            let lv = blk.add(g.header + j * g.sub_bytes);
            let e = 256 * b + 32 * j;
            for hh in 0..H {
                let h = h0 + hh;
                let sc = both_halves(bytes_i32::<false>(blk.add(64 + 16 * j + 8 * h)));
                let m = _mm256_mul_ps(
                    f16x8(blk.add(32 + 16 * h)),
                    _mm256_cvtepi32_ps(bytes_i32::<false>(blk.add(192 + 16 * j + 8 * h))),
                );
                // 4-bit levels: the sub-block in one i16 sum; 5-bit: two k-group pairs each.
                let span = if Q5 { 2 } else { 4 };
                for p0 in (0..4).step_by(span) {
                    let mut s16 = [_mm256_setzero_si256(); T];
                    for p in p0..p0 + span {
                        let (lo, hi) = unsigned_levels(lv, p, h, Q5);
                        for t in 0..T {
                            let v = pair_u(lo, hi, x.q[t].add(e + 8 * p));
                            s16[t] = _mm256_add_epi16(s16[t], v);
                        }
                    }
                    for t in 0..T {
                        isum[t][hh] = _mm256_add_epi32(isum[t][hh], _mm256_madd_epi16(s16[t], sc));
                    }
                }
                for t in 0..T {
                    let c = _mm256_set1_ps(*x.c32[t].add(e / 32));
                    acc[t][hh] = _mm256_fnmadd_ps(m, c, acc[t][hh]);
                }
            }
        }
        add_super_block(&mut acc, &isum, blk, h0, &x, b);
    }
    acc
}

/// Adds K-quant super-block `b`'s integer sums (already times their sub-block scales) to
/// `acc`: times each row's d (the header's first 16 f16) and each token's activation scale.
#[inline(always)]
unsafe fn add_super_block<const T: usize, const H: usize>(
    acc: &mut [[__m256; H]; T],
    isum: &[[__m256i; H]; T],
    blk: *const u8,
    h0: usize,
    x: &ActRows<T>,
    b: usize,
) {
    for hh in 0..H {
        let d = f16x8(blk.add(16 * (h0 + hh)));
        for t in 0..T {
            let scale = _mm256_mul_ps(d, _mm256_set1_ps(*x.s32[t].add(8 * b)));
            acc[t][hh] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t][hh]), scale, acc[t][hh]);
        }
    }
}

/// Two-bit tops of k-group `g` (0..4) of a Q6_K sub-block, moved to bits 4-5 of each byte.
#[inline(always)]
unsafe fn q6_tops(tops: __m256i, g: usize) -> __m256i {
    let v = match g {
        0 => _mm256_slli_epi16(tops, 4),
        1 => _mm256_slli_epi16(tops, 2),
        2 => tops,
        _ => _mm256_srli_epi16(tops, 2),
    };
    _mm256_and_si256(v, _mm256_set1_epi8(0x30))
}

/// One tile of Q6_K: 16-weight sub-blocks with signed integer scales; the levels' offset of
/// 32 is a float term per sub-block against the activations' per-16 sums.
#[inline(always)]
unsafe fn tile_q6<const T: usize, const H: usize>(
    u: *const u8,
    nb: usize,
    a: &PackedActs,
    t0: usize,
    h0: usize,
) -> [[__m256; H]; T] {
    let x = ActRows::<T>::new(a, t0);
    let g = Woven::of(GgmlType::Q6_K);
    let bb = g.block_bytes();
    let mut acc = [[_mm256_setzero_ps(); H]; T];
    for b in 0..nb {
        let blk = u.add(b * bb);
        let mut isum = [[_mm256_setzero_si256(); H]; T];
        for s in 0..16 {
            if T == 1 {
                prefetch_part::<AHEAD>(blk, bb, s, 16);
            }
            let lv = blk.add(g.header + s * g.sub_bytes);
            let e = 256 * b + 16 * s;
            for hh in 0..H {
                let h = h0 + hh;
                let sci = bytes_i32::<true>(blk.add(32 + 16 * s + 8 * h));
                let sc = both_halves(sci);
                // -32 * d * scale: the offset's factor against sum(x) per 16.
                let off = _mm256_mul_ps(
                    _mm256_mul_ps(f16x8(blk.add(16 * h)), _mm256_set1_ps(-32.0)),
                    _mm256_cvtepi32_ps(sci),
                );
                let tops = _mm256_loadu_si256(lv.add(128 + 32 * h) as *const __m256i);
                for p in 0..2 {
                    let (lo, hi) = nibble_pair(lv.add(64 * p), h);
                    let lo = _mm256_or_si256(lo, q6_tops(tops, 2 * p));
                    let hi = _mm256_or_si256(hi, q6_tops(tops, 2 * p + 1));
                    // Two products of 6-bit levels: at most 2 x 2 x 63 x 128 in i16.
                    for t in 0..T {
                        let v = pair_u(lo, hi, x.q[t].add(e + 8 * p));
                        isum[t][hh] = _mm256_add_epi32(isum[t][hh], _mm256_madd_epi16(v, sc));
                    }
                }
                for t in 0..T {
                    let c = _mm256_set1_ps(*x.c16[t].add(e / 16));
                    acc[t][hh] = _mm256_fmadd_ps(off, c, acc[t][hh]);
                }
            }
        }
        add_super_block(&mut acc, &isum, blk, h0, &x, b);
    }
    acc
}

/// One tile of F16 weights: per column, the half's 8 weights converted once and one fused
/// multiply-add per token with its activation broadcast.
#[inline(always)]
unsafe fn tile_f16<const T: usize, const H: usize>(
    u: *const u8,
    cols: usize,
    a: &PackedActs,
    t0: usize,
    h0: usize,
) -> [[__m256; H]; T] {
    let x: [*const f32; T] = std::array::from_fn(|t| a.xf.as_ptr().add((t0 + t) * a.kp));
    let mut acc = [[_mm256_setzero_ps(); H]; T];
    for k in 0..cols {
        if T == 1 && k % 2 == 0 {
            _mm_prefetch(u.wrapping_add(32 * k + PREFETCH) as *const i8, _MM_HINT_T0);
        }
        for hh in 0..H {
            let w = f16x8(u.add(32 * k + 16 * (h0 + hh)));
            for t in 0..T {
                acc[t][hh] = _mm256_fmadd_ps(w, _mm256_set1_ps(*x[t].add(k)), acc[t][hh]);
            }
        }
    }
    acc
}

/// A tile function of one interleaved type, for the driver.
trait WovenTile {
    const TY: GgmlType;
    unsafe fn tile<const T: usize, const H: usize>(
        u: *const u8,
        nb: usize,
        a: &PackedActs,
        t0: usize,
        h0: usize,
    ) -> [[__m256; H]; T];
}

/// Implements [`WovenTile`] for `$ty` (with generics `$g`) by calling `$tile::<.., T, H>`.
macro_rules! woven_tile {
    ($ty:ty, [$($g:tt)*], $gg:expr, $tile:path) => {
        impl<$($g)*> WovenTile for $ty {
            const TY: GgmlType = $gg;
            #[inline(always)]
            unsafe fn tile<const T: usize, const H: usize>(
                u: *const u8,
                nb: usize,
                a: &PackedActs,
                t0: usize,
                h0: usize,
            ) -> [[__m256; H]; T] {
                $tile(u, nb, a, t0, h0)
            }
        }
    };
}

struct B32<W>(std::marker::PhantomData<W>);
woven_tile!(B32<W>, [W: Blocks32], W::TY, tile32::<W, T, H>);
struct KQuant<const Q5: bool>;
woven_tile!(
    KQuant<Q5>,
    [const Q5: bool],
    if Q5 { GgmlType::Q5_K } else { GgmlType::Q4_K },
    tile_k::<Q5, T, H>
);
struct F16;
woven_tile!(F16, [], GgmlType::F16, tile_f16::<T, H>);
struct Q6;
woven_tile!(Q6, [], GgmlType::Q6_K, tile_q6::<T, H>);

/// Writes a tile's results: token `t0 + t`, rows `i0 + 8 h..` of the call's range (`valid`
/// rows of the unit from `i0` exist), for halves `h0..h0+H`.
#[inline(always)]
unsafe fn store<const T: usize, const H: usize>(
    acc: [[__m256; H]; T],
    out: &mut [f32],
    t0: usize,
    i0: usize,
    valid: usize,
    h0: usize,
    s: Strides,
) {
    for (t, halves) in acc.iter().enumerate() {
        for (hh, v) in halves.iter().enumerate() {
            let first = HALF * (h0 + hh);
            if first >= valid {
                continue;
            }
            let n = (valid - first).min(HALF);
            let at = (t0 + t - s.first) * s.tok + (i0 + first) * s.row;
            if s.row == 1 && n == HALF {
                debug_assert!(at + HALF <= out.len());
                _mm256_storeu_ps(out.as_mut_ptr().add(at), *v);
            } else {
                let mut lanes = [0f32; HALF];
                _mm256_storeu_ps(lanes.as_mut_ptr(), *v);
                for (i, &x) in lanes[..n].iter().enumerate() {
                    out[at + i * s.row] = x;
                }
            }
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemm_typed<W: WovenTile, const T: usize>(
    w: &PackedMatrix,
    rows: Range<usize>,
    a: &PackedActs,
    out: &mut [f32],
    s: Strides,
) {
    let n = s.end;
    debug_assert!(s.first <= s.end && s.end <= a.n);
    let (nb, act_bytes) = Woven::product_geometry(W::TY, w.cols(), a.kp);
    let block = token_block(act_bytes, T);
    let units = rows.start / ROWS..rows.end.div_ceil(ROWS);
    let mut t_lo = s.first;
    while t_lo < n {
        let t_hi = (t_lo + block).min(n);
        for ui in units.clone() {
            let u = w.unit(ui).as_ptr();
            let i0 = ui * ROWS - rows.start;
            let valid = (rows.end - ui * ROWS).min(ROWS);
            let halves = valid.div_ceil(HALF);
            let mut t = t_lo;
            while t + T <= t_hi {
                for h in 0..halves {
                    store(W::tile::<T, 1>(u, nb, a, t, h), out, t, i0, valid, h, s);
                }
                t += T;
            }
            while t < t_hi {
                store(W::tile::<1, 2>(u, nb, a, t, 0), out, t, i0, valid, 0, s);
                t += 1;
            }
        }
        t_lo = t_hi;
    }
}

/// # Safety
/// The CPU runs AVX2, FMA and F16C; `w` is interleaved, `rows.start` a multiple of 16, and
/// `w`, `rows`, `a`, `out` passed `super::check` (or, for a window of tokens, the same
/// assertions in `gemm_token_major_tokens`); `s` keeps every write inside `out`.
pub(super) unsafe fn gemm(
    w: &PackedMatrix,
    rows: Range<usize>,
    a: &PackedActs,
    out: &mut [f32],
    s: Strides,
) {
    // Tokens per tile when several come: 4 keeps a half-unit's accumulators (float and i16 /
    // i32 ones per token) in the 16 registers beside the levels.
    debug_assert!(rows.start.is_multiple_of(ROWS));
    match w.ty() {
        GgmlType::Q4_0 => gemm_typed::<B32<WQ4_0>, 4>(w, rows, a, out, s),
        GgmlType::Q4_1 => gemm_typed::<B32<WQ4_1>, 4>(w, rows, a, out, s),
        GgmlType::Q5_0 => gemm_typed::<B32<WQ5_0>, 4>(w, rows, a, out, s),
        GgmlType::Q5_1 => gemm_typed::<B32<WQ5_1>, 4>(w, rows, a, out, s),
        GgmlType::Q8_0 => gemm_typed::<B32<WQ8_0>, 3>(w, rows, a, out, s),
        GgmlType::IQ4_NL => gemm_typed::<B32<WIq4Nl>, 4>(w, rows, a, out, s),
        GgmlType::NF4 => gemm_typed::<B32<WNf4>, 4>(w, rows, a, out, s),
        GgmlType::Q4_K => gemm_typed::<KQuant<false>, 4>(w, rows, a, out, s),
        GgmlType::Q5_K => gemm_typed::<KQuant<true>, 4>(w, rows, a, out, s),
        GgmlType::Q6_K => gemm_typed::<Q6, 4>(w, rows, a, out, s),
        GgmlType::F16 => gemm_typed::<F16, 4>(w, rows, a, out, s),
        other => unreachable!("{other} has no interleaved layout"),
    }
}
