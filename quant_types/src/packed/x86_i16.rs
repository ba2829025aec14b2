//! AVX-512 VNNI kernels over the interleaved layout (`super::interleaved`): a tile is one unit
//! of 16 rows by T tokens. Per four weights of the 16 rows (one register of levels) and per
//! token: one `vpdpbusd` with the token's four activation bytes broadcast from memory. Integer
//! lanes hold whole 32-weight block sums, started at the levels' offset term
//! (`-offset * sum(x)`); per block and token the float work is one conversion, one scale
//! product and one fused add, for all 16 rows. Lanes are rows, so a tile's results are 16
//! consecutive outputs of a token: token-major output needs no transpose.

use super::interleaved::{block_bytes, level_bytes, offset, ROWS};
use super::layout::{PackedMatrix, IQ4NL_U8, NF4_U8};
use super::{token_block, PackedActs};
use crate::GgmlType;
use core::arch::x86_64::*;
use std::ops::Range;

/// Where results go: token t, row i of the call's range at `out[t * tok + i * row]`.
#[derive(Clone, Copy)]
pub(super) struct Strides {
    pub tok: usize,
    pub row: usize,
}

/// One interleaved type, seen by the kernel.
trait Woven {
    const TY: GgmlType;
    /// 8-bit levels (Q8_0); else nibbles.
    const BYTES: bool;
    /// Nibbles index this table of levels.
    const TABLE: Option<&'static [u8; 16]>;
    /// Factor of the stored scale (NF4's levels are int8 images: 1/127).
    const SCALE: f32;
    /// log2 of the level offset.
    const LOG2_OFFSET: u32;
}

macro_rules! woven {
    ($name:ident, $ty:ident, $bytes:expr, $table:expr, $scale:expr) => {
        struct $name;
        impl Woven for $name {
            const TY: GgmlType = GgmlType::$ty;
            const BYTES: bool = $bytes;
            const TABLE: Option<&'static [u8; 16]> = $table;
            const SCALE: f32 = $scale;
            const LOG2_OFFSET: u32 = offset(GgmlType::$ty).trailing_zeros();
        }
    };
}
woven!(WQ4_0, Q4_0, false, None, 1.0);
woven!(WQ8_0, Q8_0, true, None, 1.0);
woven!(WIq4Nl, IQ4_NL, false, Some(&IQ4NL_U8), 1.0);
woven!(WNf4, NF4, false, Some(&NF4_U8), 1.0 / 127.0);

/// Four activation bytes at `p`, broadcast to the 16 lanes.
#[inline(always)]
unsafe fn quad(p: *const i8) -> __m512i {
    _mm512_set1_epi32((p as *const i32).read_unaligned())
}

/// One tile: the unit at `u` (`nb` blocks) times activation rows `t0..t0+T`; lane i of
/// result t is row i's product with token t0 + t.
#[inline(always)]
unsafe fn tile<W: Woven, const T: usize>(
    u: *const u8,
    nb: usize,
    a: &PackedActs,
    t0: usize,
) -> [__m512; T] {
    let kp = a.kp;
    let q: [*const i8; T] = std::array::from_fn(|t| a.q.as_ptr().add((t0 + t) * kp));
    let s32: [*const f32; T] = std::array::from_fn(|t| a.s32.as_ptr().add((t0 + t) * kp / 32));
    let off: [*const i32; T] = std::array::from_fn(|t| a.off32.as_ptr().add((t0 + t) * kp / 32));
    let mut acc = [_mm512_setzero_ps(); T];
    let m4 = _mm512_set1_epi8(0x0F);
    let table = match W::TABLE {
        Some(t) => _mm512_broadcast_i32x4(_mm_loadu_si128(t.as_ptr() as *const __m128i)),
        None => _mm512_setzero_si512(),
    };
    let lookup = |v: __m512i| match W::TABLE {
        Some(_) => _mm512_shuffle_epi8(table, v),
        None => v,
    };
    let bb = block_bytes(W::TY);
    let lb = level_bytes(W::TY);
    for b in 0..nb {
        let blk = u.add(b * bb);
        if T == 1 {
            prefetch(blk, bb);
        }
        let mut ws = _mm512_cvtph_ps(_mm256_loadu_si256(blk as *const __m256i));
        if W::SCALE != 1.0 {
            ws = _mm512_mul_ps(ws, _mm512_set1_ps(W::SCALE));
        }
        // Start every lane at the offset term, -offset * sum(x): the integer sum is then the
        // product with the signed levels, exactly. The activations carry -128 * sum(x).
        let ia0 = |t: usize| {
            let v = _mm512_set1_epi32(*off[t].add(b));
            if W::LOG2_OFFSET == 7 {
                v
            } else {
                debug_assert_eq!(W::LOG2_OFFSET, 3);
                _mm512_srai_epi32::<4>(v)
            }
        };
        let mut ia: [__m512i; T] = std::array::from_fn(ia0);
        let lv = blk.add(32);
        let e = 32 * b;
        if W::BYTES {
            for g in 0..8 {
                let w = _mm512_loadu_si512(lv.add(64 * g) as *const __m512i);
                for t in 0..T {
                    ia[t] = _mm512_dpbusd_epi32(ia[t], w, quad(q[t].add(e + 4 * g)));
                }
            }
        } else {
            for p in 0..4 {
                let v = _mm512_loadu_si512(lv.add(64 * p) as *const __m512i);
                let lo = lookup(_mm512_and_si512(v, m4));
                let hi = lookup(_mm512_and_si512(_mm512_srli_epi16(v, 4), m4));
                for t in 0..T {
                    ia[t] = _mm512_dpbusd_epi32(ia[t], lo, quad(q[t].add(e + 8 * p)));
                    ia[t] = _mm512_dpbusd_epi32(ia[t], hi, quad(q[t].add(e + 8 * p + 4)));
                }
            }
        }
        debug_assert!(lb == 512 || !W::BYTES);
        for t in 0..T {
            let scale = _mm512_mul_ps(ws, _mm512_set1_ps(*s32[t].add(b)));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ia[t]), scale, acc[t]);
        }
    }
    acc
}

/// Decoding streams each unit once from DRAM: asks for the block `PREFETCH` bytes ahead of
/// `blk` (`bb` bytes), past the 4 KiB pages where the hardware prefetcher stops.
#[inline(always)]
unsafe fn prefetch(blk: *const u8, bb: usize) {
    let mut at = 0;
    while at < bb {
        _mm_prefetch(blk.wrapping_add(PREFETCH + at) as *const i8, _MM_HINT_T0);
        at += 64;
    }
}

const PREFETCH: usize = 1024;

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
        let at = (t0 + t) * s.tok + i0 * s.row;
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

/// Tokens per tile when several come: 8 tiles keep 16 accumulators (8 integer, 8 float) in
/// registers beside the levels.
const T: usize = 8;

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
unsafe fn gemm_typed<W: Woven>(
    w: &PackedMatrix,
    rows: Range<usize>,
    a: &PackedActs,
    out: &mut [f32],
    s: Strides,
) {
    let n = a.n;
    let nb = w.cols() / 32;
    let block = token_block(a.kp, T);
    let units = rows.start / ROWS..rows.end.div_ceil(ROWS);
    let mut t_lo = 0;
    while t_lo < n {
        let t_hi = (t_lo + block).min(n);
        for ui in units.clone() {
            let u = w.unit(ui).as_ptr();
            let i0 = ui * ROWS - rows.start;
            let valid = (rows.end - ui * ROWS).min(ROWS);
            let mut t = t_lo;
            while t + T <= t_hi {
                store(tile::<W, T>(u, nb, a, t), out, t, i0, valid, s);
                t += T;
            }
            if t + 4 <= t_hi {
                store(tile::<W, 4>(u, nb, a, t), out, t, i0, valid, s);
                t += 4;
            }
            while t < t_hi {
                store(tile::<W, 1>(u, nb, a, t), out, t, i0, valid, s);
                t += 1;
            }
        }
        t_lo = t_hi;
    }
}

/// # Safety
/// The CPU runs `super::x86`'s instructions; `w` is interleaved, `rows.start` a multiple of
/// 16, and `w`, `rows`, `a`, `out` passed `super::check`; `s` keeps every write inside `out`.
pub(super) unsafe fn gemm(
    w: &PackedMatrix,
    rows: Range<usize>,
    a: &PackedActs,
    out: &mut [f32],
    s: Strides,
) {
    debug_assert!(rows.start.is_multiple_of(ROWS));
    match w.ty() {
        GgmlType::Q4_0 => gemm_typed::<WQ4_0>(w, rows, a, out, s),
        GgmlType::Q8_0 => gemm_typed::<WQ8_0>(w, rows, a, out, s),
        GgmlType::IQ4_NL => gemm_typed::<WIq4Nl>(w, rows, a, out, s),
        GgmlType::NF4 => gemm_typed::<WNf4>(w, rows, a, out, s),
        other => unreachable!("{other} has no interleaved layout"),
    }
}
