//! AVX-512 VNNI kernels over the interleaved layout (`super::interleaved`): a tile is one unit
//! of 16 rows by T tokens. Per four weights of the 16 rows (one register of levels) and per
//! token: one `vpdpbusd` with the token's four activation bytes broadcast from memory. Integer
//! lanes hold whole sub-block sums (32 weights; Q6_K 16), started at the levels' offset term
//! (`-offset * sum(x)`) where the type has one; per sub-block and token the float work is one
//! conversion and one or two fused operations, for all 16 rows. K-quant minimums are one fused
//! add per sub-block and token against the activations' sums. Lanes are rows, so a tile's
//! results are 16 consecutive outputs of a token: token-major output needs no transpose.

// Tiles index several arrays (accumulators, activation pointers) by the same token.
#![allow(clippy::needless_range_loop)]

use super::interleaved::{offset, Woven, ROWS};
use super::layout::{PackedMatrix, IQ4NL_U8, NF4_U8};
use super::{token_block, PackedActs};
use crate::GgmlType;
use core::arch::x86_64::*;
use std::ops::Range;

/// Which tokens, and where results go: token t (of `first..end`), row i of the call's range
/// at `out[(t - first) * tok + i * row]`.
#[derive(Clone, Copy)]
pub(super) struct Strides {
    pub tok: usize,
    pub row: usize,
    pub first: usize,
    pub end: usize,
}

/// One interleaved 32-weight type, seen by the kernel.
trait Blocks32 {
    const TY: GgmlType;
    /// 8-bit levels (Q8_0); else nibbles.
    const BYTES: bool;
    /// Nibbles index this table of levels.
    const TABLE: Option<&'static [u8; 16]>;
    /// Factor of the stored scale (NF4's levels are int8 images: 1/127).
    const SCALE: f32;
    /// log2 of the level offset (0: none; the type has minimums instead).
    const LOG2_OFFSET: u32;
    /// Levels carry a fifth bit.
    const FIFTH: bool;
    /// 32-weight sub-blocks per block, all under the block's scale (NF4: 2).
    const SUBS: usize = Woven::of(Self::TY).subs();
}

macro_rules! woven {
    ($name:ident, $ty:ident, $bytes:expr, $table:expr, $scale:expr, $fifth:expr) => {
        struct $name;
        impl Blocks32 for $name {
            const TY: GgmlType = GgmlType::$ty;
            const BYTES: bool = $bytes;
            const TABLE: Option<&'static [u8; 16]> = $table;
            const SCALE: f32 = $scale;
            const LOG2_OFFSET: u32 = match offset(GgmlType::$ty) {
                0 => 0,
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
woven!(WIq4Nl, IQ4_NL, false, Some(&IQ4NL_U8), 1.0, false);
woven!(WNf4, NF4, false, Some(&NF4_U8), 1.0 / 127.0, false);

/// Four activation bytes at `p`, broadcast to the 16 lanes.
#[inline(always)]
unsafe fn quad(p: *const i8) -> __m512i {
    _mm512_set1_epi32((p as *const i32).read_unaligned())
}

/// The 64 levels of a pair of k-groups (4-bit part): low nibbles, high nibbles.
#[inline(always)]
unsafe fn nibble_pair(p: *const u8) -> (__m512i, __m512i) {
    let v = _mm512_loadu_si512(p as *const __m512i);
    let m4 = _mm512_set1_epi8(0x0F);
    (
        _mm512_and_si512(v, m4),
        _mm512_and_si512(_mm512_srli_epi16(v, 4), m4),
    )
}

/// Per-token pointers into the activations of tokens `t0..t0+T` (both x86 woven kernel sets).
pub(super) struct ActRows<const T: usize> {
    pub q: [*const i8; T],
    pub s32: [*const f32; T],
    pub c32: [*const f32; T],
    pub c16: [*const f32; T],
    pub off32: [*const i32; T],
    pub off16: [*const i32; T],
}

impl<const T: usize> ActRows<T> {
    /// # Safety
    /// `t0 + T <= a.n`.
    #[inline(always)]
    pub unsafe fn new(a: &PackedActs, t0: usize) -> Self {
        let kp = a.kp;
        ActRows {
            q: std::array::from_fn(|t| a.q.as_ptr().add((t0 + t) * kp)),
            s32: std::array::from_fn(|t| a.s32.as_ptr().add((t0 + t) * kp / 32)),
            c32: std::array::from_fn(|t| a.c32.as_ptr().add((t0 + t) * kp / 32)),
            c16: std::array::from_fn(|t| a.c16.as_ptr().add((t0 + t) * kp / 16)),
            off32: std::array::from_fn(|t| a.off32.as_ptr().add((t0 + t) * kp / 32)),
            off16: std::array::from_fn(|t| a.off16.as_ptr().add((t0 + t) * kp / 16)),
        }
    }
}

/// One tile of a 32-weight type: the unit at `u` (`nb` blocks) times activation rows
/// `t0..t0+T`; lane i of result t is row i's product with token t0 + t.
#[inline(always)]
unsafe fn tile32<W: Blocks32, const T: usize>(
    u: *const u8,
    nb: usize,
    a: &PackedActs,
    t0: usize,
) -> [__m512; T] {
    let x = ActRows::<T>::new(a, t0);
    let fifth = _mm512_set1_epi8(0x10);
    let mut acc = [_mm512_setzero_ps(); T];
    let table = match W::TABLE {
        Some(t) => _mm512_broadcast_i32x4(_mm_loadu_si128(t.as_ptr() as *const __m128i)),
        None => _mm512_setzero_si512(),
    };
    let lookup = |v: __m512i| match W::TABLE {
        Some(_) => _mm512_shuffle_epi8(table, v),
        None => v,
    };
    let g = Woven::of(W::TY);
    let bb = g.block_bytes();
    for b in 0..nb {
        let blk = u.add(b * bb);
        if T == 1 {
            prefetch(blk, bb);
        }
        for sub in 0..W::SUBS {
            // The sub-block's index among the row's 32-weight blocks (the activations' blocks).
            let sb = W::SUBS * b + sub;
            // The rows' scales, read per sub-block as for one-sub-block types. Read once per
            // block for NF4's two, a Xeon's `gemm/NF4/packed` gave 78-95 Gelem/s against the
            // per-32 layout's 88-125 in alternating runs; read here, 88-105 against 90-108.
            let mut ws = _mm512_cvtph_ps(_mm256_loadu_si256(blk as *const __m256i));
            if W::SCALE != 1.0 {
                ws = _mm512_mul_ps(ws, _mm512_set1_ps(W::SCALE));
            }
            // Start every lane at the offset term, -offset * sum(x): the integer sum is then the
            // product with the signed levels, exactly. The activations carry -128 * sum(x).
            let ia0 = |t: usize| {
                let v = _mm512_set1_epi32(*x.off32[t].add(sb));
                match W::LOG2_OFFSET {
                    0 => _mm512_setzero_si512(),
                    3 => _mm512_srai_epi32::<4>(v),
                    4 => _mm512_srai_epi32::<3>(v),
                    _ => {
                        debug_assert_eq!(W::LOG2_OFFSET, 7);
                        v
                    }
                }
            };
            let mut ia: [__m512i; T] = std::array::from_fn(ia0);
            let lv = blk.add(g.header + sub * g.sub_bytes);
            let e = 32 * sb;
            if W::BYTES {
                for kg in 0..8 {
                    let w = _mm512_loadu_si512(lv.add(64 * kg) as *const __m512i);
                    for t in 0..T {
                        ia[t] = _mm512_dpbusd_epi32(ia[t], w, quad(x.q[t].add(e + 4 * kg)));
                    }
                }
            } else {
                for p in 0..4 {
                    let (mut lo, mut hi) = nibble_pair(lv.add(64 * p));
                    if W::FIFTH {
                        let bits = |k: usize| (lv.add(256 + 8 * k) as *const u64).read_unaligned();
                        lo = _mm512_or_si512(lo, _mm512_maskz_mov_epi8(bits(2 * p), fifth));
                        hi = _mm512_or_si512(hi, _mm512_maskz_mov_epi8(bits(2 * p + 1), fifth));
                    }
                    let (lo, hi) = (lookup(lo), lookup(hi));
                    for t in 0..T {
                        ia[t] = _mm512_dpbusd_epi32(ia[t], lo, quad(x.q[t].add(e + 8 * p)));
                        ia[t] = _mm512_dpbusd_epi32(ia[t], hi, quad(x.q[t].add(e + 8 * p + 4)));
                    }
                }
            }
            for t in 0..T {
                let scale = _mm512_mul_ps(ws, _mm512_set1_ps(*x.s32[t].add(sb)));
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ia[t]), scale, acc[t]);
            }
            if W::LOG2_OFFSET == 0 {
                // w = d * u + m: the minimums meet the activations' scaled sums.
                let m = _mm512_cvtph_ps(_mm256_loadu_si256(blk.add(32) as *const __m256i));
                for t in 0..T {
                    acc[t] = _mm512_fmadd_ps(m, _mm512_set1_ps(*x.c32[t].add(sb)), acc[t]);
                }
            }
        }
    }
    acc
}

/// 16 u8 (or i8 with `SIGNED`) header values as floats.
#[inline(always)]
unsafe fn bytes_f32<const SIGNED: bool>(p: *const u8) -> __m512 {
    let v = _mm_loadu_si128(p as *const __m128i);
    _mm512_cvtepi32_ps(if SIGNED {
        _mm512_cvtepi8_epi32(v)
    } else {
        _mm512_cvtepu8_epi32(v)
    })
}

/// One tile of Q4_K (`Q5` false) or Q5_K: per super-block, sub-block sums times d * scale
/// collect in `f` (the activation scale is the super-block's), minimums go straight to `acc`
/// against the activations' per-32 sums (already scaled).
#[inline(always)]
unsafe fn tile_k<const Q5: bool, const T: usize>(
    u: *const u8,
    nb: usize,
    a: &PackedActs,
    t0: usize,
) -> [__m512; T] {
    let x = ActRows::<T>::new(a, t0);
    let g = Woven::of(if Q5 { GgmlType::Q5_K } else { GgmlType::Q4_K });
    let bb = g.block_bytes();
    let mut acc = [_mm512_setzero_ps(); T];
    let fifth = _mm512_set1_epi8(0x10);
    for b in 0..nb {
        let blk = u.add(b * bb);
        if T == 1 {
            prefetch(blk, bb);
        }
        let d = _mm512_cvtph_ps(_mm256_loadu_si256(blk as *const __m256i));
        let dmin = _mm512_cvtph_ps(_mm256_loadu_si256(blk.add(32) as *const __m256i));
        let mut f = [_mm512_setzero_ps(); T];
        for j in 0..8 {
            let sc = _mm512_mul_ps(d, bytes_f32::<false>(blk.add(64 + 16 * j)));
            let m = _mm512_mul_ps(dmin, bytes_f32::<false>(blk.add(192 + 16 * j)));
            let lv = blk.add(g.header + j * g.sub_bytes);
            let e = 256 * b + 32 * j;
            let mut ia = [_mm512_setzero_si512(); T];
            for p in 0..4 {
                let (mut lo, mut hi) = nibble_pair(lv.add(64 * p));
                if Q5 {
                    let bits = |k: usize| (lv.add(256 + 8 * k) as *const u64).read_unaligned();
                    lo = _mm512_or_si512(lo, _mm512_maskz_mov_epi8(bits(2 * p), fifth));
                    hi = _mm512_or_si512(hi, _mm512_maskz_mov_epi8(bits(2 * p + 1), fifth));
                }
                for t in 0..T {
                    ia[t] = _mm512_dpbusd_epi32(ia[t], lo, quad(x.q[t].add(e + 8 * p)));
                    ia[t] = _mm512_dpbusd_epi32(ia[t], hi, quad(x.q[t].add(e + 8 * p + 4)));
                }
            }
            for t in 0..T {
                f[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ia[t]), sc, f[t]);
                let c = _mm512_set1_ps(*x.c32[t].add(e / 32));
                acc[t] = _mm512_fnmadd_ps(m, c, acc[t]);
            }
        }
        for t in 0..T {
            acc[t] = _mm512_fmadd_ps(f[t], _mm512_set1_ps(*x.s32[t].add(8 * b)), acc[t]);
        }
    }
    acc
}

/// Two-bit tops of k-group `g` (0..4) of a Q6_K sub-block, moved to bits 4-5 of each byte.
#[inline(always)]
unsafe fn q6_tops(tops: __m512i, g: usize) -> __m512i {
    let v = match g {
        0 => _mm512_slli_epi16(tops, 4),
        1 => _mm512_slli_epi16(tops, 2),
        2 => tops,
        _ => _mm512_srli_epi16(tops, 2),
    };
    _mm512_and_si512(v, _mm512_set1_epi8(0x30))
}

/// One tile of Q6_K: 16-weight sub-blocks with signed scales, levels offset by 32 (the integer
/// lanes start at -32 * sum(x) of the sub-block).
#[inline(always)]
unsafe fn tile_q6<const T: usize>(
    u: *const u8,
    nb: usize,
    a: &PackedActs,
    t0: usize,
) -> [__m512; T] {
    let x = ActRows::<T>::new(a, t0);
    let g = Woven::of(GgmlType::Q6_K);
    let bb = g.block_bytes();
    let mut acc = [_mm512_setzero_ps(); T];
    for b in 0..nb {
        let blk = u.add(b * bb);
        if T == 1 {
            prefetch(blk, bb);
        }
        let d = _mm512_cvtph_ps(_mm256_loadu_si256(blk as *const __m256i));
        let mut f = [_mm512_setzero_ps(); T];
        for s in 0..16 {
            let sc = _mm512_mul_ps(d, bytes_f32::<true>(blk.add(32 + 16 * s)));
            let lv = blk.add(g.header + s * g.sub_bytes);
            let tops = _mm512_loadu_si512(lv.add(128) as *const __m512i);
            let e = 256 * b + 16 * s;
            let mut ia: [__m512i; T] = std::array::from_fn(|t| {
                _mm512_slli_epi32::<5>(_mm512_set1_epi32(*x.off16[t].add(e / 16)))
            });
            for p in 0..2 {
                let (lo, hi) = nibble_pair(lv.add(64 * p));
                let lo = _mm512_or_si512(lo, q6_tops(tops, 2 * p));
                let hi = _mm512_or_si512(hi, q6_tops(tops, 2 * p + 1));
                for t in 0..T {
                    ia[t] = _mm512_dpbusd_epi32(ia[t], lo, quad(x.q[t].add(e + 8 * p)));
                    ia[t] = _mm512_dpbusd_epi32(ia[t], hi, quad(x.q[t].add(e + 8 * p + 4)));
                }
            }
            for t in 0..T {
                f[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ia[t]), sc, f[t]);
            }
        }
        for t in 0..T {
            acc[t] = _mm512_fmadd_ps(f[t], _mm512_set1_ps(*x.s32[t].add(8 * b)), acc[t]);
        }
    }
    acc
}

/// One tile of F16 weights: per column, the 16 rows' weights converted once and one fused
/// multiply-add per token with its activation broadcast (ggml's F16 product: f16 inputs, f32
/// sums).
#[inline(always)]
unsafe fn tile_f16<const T: usize>(
    u: *const u8,
    cols: usize,
    a: &PackedActs,
    t0: usize,
) -> [__m512; T] {
    let x: [*const f32; T] = std::array::from_fn(|t| a.xf.as_ptr().add((t0 + t) * a.kp));
    let mut acc = [_mm512_setzero_ps(); T];
    for k in 0..cols {
        let w = _mm512_cvtph_ps(_mm256_loadu_si256(u.add(32 * k) as *const __m256i));
        if T == 1 && k % 2 == 0 {
            _mm_prefetch(u.wrapping_add(32 * k + PREFETCH) as *const i8, _MM_HINT_T0);
        }
        for t in 0..T {
            acc[t] = _mm512_fmadd_ps(w, _mm512_set1_ps(*x[t].add(k)), acc[t]);
        }
    }
    acc
}

/// A tile function of one interleaved type, for the driver.
trait WovenTile {
    const TY: GgmlType;
    unsafe fn tile<const T: usize>(
        u: *const u8,
        nb: usize,
        a: &PackedActs,
        t0: usize,
    ) -> [__m512; T];
}

/// Implements [`WovenTile`] for `$ty` (with generics `$g`) by calling `$tile::<T>`.
macro_rules! woven_tile {
    ($ty:ty, [$($g:tt)*], $gg:expr, $tile:path) => {
        impl<$($g)*> WovenTile for $ty {
            const TY: GgmlType = $gg;
            #[inline(always)]
            unsafe fn tile<const T: usize>(
                u: *const u8,
                nb: usize,
                a: &PackedActs,
                t0: usize,
            ) -> [__m512; T] {
                $tile(u, nb, a, t0)
            }
        }
    };
}

struct B32<W>(std::marker::PhantomData<W>);
woven_tile!(B32<W>, [W: Blocks32], W::TY, tile32::<W, T>);
struct KQuant<const Q5: bool>;
woven_tile!(
    KQuant<Q5>,
    [const Q5: bool],
    if Q5 { GgmlType::Q5_K } else { GgmlType::Q4_K },
    tile_k::<Q5, T>
);
struct F16;
woven_tile!(F16, [], GgmlType::F16, tile_f16::<T>);
struct Q6;
woven_tile!(Q6, [], GgmlType::Q6_K, tile_q6::<T>);

/// Decoding streams each unit once from DRAM: asks for the block `PREFETCH` bytes ahead of
/// `blk` (`bb` bytes), past the 4 KiB pages where the hardware prefetcher stops.
#[inline(always)]
unsafe fn prefetch(blk: *const u8, bb: usize) {
    prefetch_part::<PREFETCH>(blk, bb, 0, 1)
}

/// Part `j` of `parts` of the prefetches of a block of `bb` bytes at `blk`, `D` bytes ahead:
/// the AVX2 kernels spread a K-quant super-block's 36 lines over its sub-blocks rather than
/// asking for them in one burst.
#[inline(always)]
pub(super) unsafe fn prefetch_part<const D: usize>(
    blk: *const u8,
    bb: usize,
    j: usize,
    parts: usize,
) {
    let lines = bb.div_ceil(64);
    for l in lines * j / parts..lines * (j + 1) / parts {
        _mm_prefetch(blk.wrapping_add(D + 64 * l) as *const i8, _MM_HINT_T0);
    }
}

pub(super) const PREFETCH: usize = 1024;

/// Writes a tile's results: token `t0 + t`, rows `i0..i0 + valid` of the call's range.
#[inline(always)]
unsafe fn store<const T: usize>(
    acc: [__m512; T],
    out: &mut [f32],
    t0: usize,
    i0: usize,
    valid: usize,
    s: Strides,
) {
    let mask: __mmask16 = if valid >= 16 {
        0xFFFF
    } else {
        (1u16 << valid) - 1
    };
    for (t, v) in acc.iter().enumerate() {
        let at = (t0 + t - s.first) * s.tok + i0 * s.row;
        if s.row == 1 {
            debug_assert!(at + valid <= out.len());
            _mm512_mask_storeu_ps(out.as_mut_ptr().add(at), mask, *v);
        } else {
            let mut lanes = [0f32; 16];
            _mm512_storeu_ps(lanes.as_mut_ptr(), *v);
            for (i, &x) in lanes[..valid].iter().enumerate() {
                out[at + i * s.row] = x;
            }
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
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
            let mut t = t_lo;
            while t + T <= t_hi {
                store(W::tile::<T>(u, nb, a, t), out, t, i0, valid, s);
                t += T;
            }
            if t + 4 <= t_hi {
                store(W::tile::<4>(u, nb, a, t), out, t, i0, valid, s);
                t += 4;
            }
            while t < t_hi {
                store(W::tile::<1>(u, nb, a, t), out, t, i0, valid, s);
                t += 1;
            }
        }
        t_lo = t_hi;
    }
}

/// # Safety
/// The CPU runs `super::x86`'s instructions; `w` is interleaved, `rows.start` a multiple of
/// 16, and `w`, `rows`, `a`, `out` passed `super::check` (or, for a window of tokens, the same
/// assertions in `gemm_token_major_tokens`); `s` keeps every write inside `out`.
pub(super) unsafe fn gemm(
    w: &PackedMatrix,
    rows: Range<usize>,
    a: &PackedActs,
    out: &mut [f32],
    s: Strides,
) {
    // Tokens per tile when several come: 8 keeps 16 accumulators of the 32-weight types (8
    // integer, 8 float) in registers beside the levels; K-quants hold a third set (the
    // super-block's sums), hence 6.
    debug_assert!(rows.start.is_multiple_of(ROWS));
    match w.ty() {
        GgmlType::Q4_0 => gemm_typed::<B32<WQ4_0>, 8>(w, rows, a, out, s),
        GgmlType::Q4_1 => gemm_typed::<B32<WQ4_1>, 8>(w, rows, a, out, s),
        GgmlType::Q5_0 => gemm_typed::<B32<WQ5_0>, 8>(w, rows, a, out, s),
        GgmlType::Q5_1 => gemm_typed::<B32<WQ5_1>, 8>(w, rows, a, out, s),
        GgmlType::Q8_0 => gemm_typed::<B32<WQ8_0>, 8>(w, rows, a, out, s),
        GgmlType::IQ4_NL => gemm_typed::<B32<WIq4Nl>, 8>(w, rows, a, out, s),
        GgmlType::NF4 => gemm_typed::<B32<WNf4>, 8>(w, rows, a, out, s),
        GgmlType::Q4_K => gemm_typed::<KQuant<false>, 6>(w, rows, a, out, s),
        GgmlType::Q5_K => gemm_typed::<KQuant<true>, 6>(w, rows, a, out, s),
        GgmlType::Q6_K => gemm_typed::<Q6, 6>(w, rows, a, out, s),
        GgmlType::F16 => gemm_typed::<F16, 8>(w, rows, a, out, s),
        other => unreachable!("{other} has no interleaved layout"),
    }
}
