//! AVX-512 kernels (512-bit): two 32-element blocks, or one 64-element slice of a super-block,
//! per register. Each kernel body is written once, generic over `VNNI`: with VNNI the int8
//! products accumulate by vpdpbusd, without it by vpmaddubsw + vpmaddwd. The two modules at the
//! bottom instantiate every body under the matching `target_feature` set.

use super::avx2::{self, h2f, k_min_term, k_scales, q6_offset_term};
use crate::formats::{KVALUES_IQ4NL, NF4_LEVELS_I8};
use crate::{
    BlockBF16, BlockF16, BlockF32, BlockIQ4NL, BlockNF4, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K,
    BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K, BlockQ8_0, BlockQ8_1,
};
use core::arch::x86_64::*;

/// Unsigned bytes times signed bytes, summed in fours into 16 int32 lanes.
#[inline(always)]
unsafe fn mul_sum_us8<const VNNI: bool>(u: __m512i, s: __m512i) -> __m512i {
    if VNNI {
        _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, s)
    } else {
        _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1))
    }
}

/// Signed bytes times signed bytes (y != -128), summed in fours into 16 int32 lanes.
#[inline(always)]
unsafe fn mul_sum_i8<const VNNI: bool>(x: __m512i, y: __m512i) -> __m512i {
    let negative = _mm512_movepi8_mask(x);
    let y_signed = _mm512_mask_sub_epi8(y, negative, _mm512_setzero_si512(), y);
    mul_sum_us8::<VNNI>(_mm512_abs_epi8(x), y_signed)
}

/// Unsigned levels times activations, each group of 32 lanes (one sub-block) weighted by its
/// integer scale, summed into 16 int32 lanes.
#[inline(always)]
unsafe fn scaled_mul_sum_us8<const VNNI: bool>(
    q: __m512i,
    y: __m512i,
    s0: i32,
    s1: i32,
) -> __m512i {
    if VNNI {
        let p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, y);
        let sc = _mm512_mask_blend_epi32(0xFF00, _mm512_set1_epi32(s0), _mm512_set1_epi32(s1));
        _mm512_mullo_epi32(p, sc)
    } else {
        let p = _mm512_maddubs_epi16(q, y);
        let sc = _mm512_mask_blend_epi16(
            0xFFFF_0000,
            _mm512_set1_epi16(s0 as i16),
            _mm512_set1_epi16(s1 as i16),
        );
        _mm512_madd_epi16(p, sc)
    }
}

#[inline(always)]
unsafe fn hsum_ps(v: __m512) -> f32 {
    _mm512_reduce_add_ps(v)
}

#[inline(always)]
unsafe fn join(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1)
}

#[inline(always)]
unsafe fn load256(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

#[inline(always)]
unsafe fn load_q8_pair(a0: &BlockQ8_0, a1: &BlockQ8_0) -> __m512i {
    join(
        load256(a0.qs.as_ptr() as *const u8),
        load256(a1.qs.as_ptr() as *const u8),
    )
}

/// Two blocks' split-layout nibbles (16 bytes each) as 64 bytes in element order.
#[inline(always)]
unsafe fn nibbles_pair(q0: &[u8; 16], q1: &[u8; 16]) -> __m512i {
    let t = _mm256_set_m128i(
        _mm_loadu_si128(q1.as_ptr() as *const __m128i),
        _mm_loadu_si128(q0.as_ptr() as *const __m128i),
    );
    let low = _mm256_set1_epi8(0x0F);
    let lo = _mm256_and_si256(t, low);
    let hi = _mm256_and_si256(_mm256_srli_epi16(t, 4), low);
    // 128-bit lanes are [q0 low, q1 low, q0 high, q1 high]; put each block's halves together.
    let v = join(lo, hi);
    _mm512_shuffle_i64x2(v, v, 0b11_01_10_00)
}

/// 0x10 in the bytes of two Q5 blocks whose fifth bit is set.
#[inline(always)]
unsafe fn q5_high_pair(qh0: [u8; 4], qh1: [u8; 4]) -> __m512i {
    let bits = u32::from_le_bytes(qh0) as u64 | ((u32::from_le_bytes(qh1) as u64) << 32);
    _mm512_maskz_mov_epi8(bits, _mm512_set1_epi8(0x10))
}

/// Per-lane float scales for two blocks: lanes 0-7 get s0, lanes 8-15 get s1.
#[inline(always)]
unsafe fn scale_pair(s0: f32, s1: f32) -> __m512 {
    _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(s0), _mm512_set1_ps(s1))
}

/// Runs `pair` over block pairs and the AVX2 kernel over an odd last block.
macro_rules! pairs {
    ($w:ident, $a:ident, |$w0:ident, $w1:ident, $a0:ident, $a1:ident| $body:expr, $tail:path) => {{
        let mut acc = _mm512_setzero_ps();
        let n = $w.len() / 2 * 2;
        for i in (0..n).step_by(2) {
            let ($w0, $w1, $a0, $a1) = (&$w[i], &$w[i + 1], &$a[i], &$a[i + 1]);
            acc = _mm512_add_ps(acc, $body);
        }
        let mut sum = hsum_ps(acc);
        if n < $w.len() {
            sum += $tail(&$w[n..], &$a[n..]);
        }
        sum
    }};
}

#[inline(always)]
unsafe fn q8_0_body<const VNNI: bool>(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
    pairs!(
        w,
        a,
        |w0, w1, a0, a1| {
            let p = mul_sum_i8::<VNNI>(load_q8_pair(w0, w1), load_q8_pair(a0, a1));
            _mm512_mul_ps(
                _mm512_cvtepi32_ps(p),
                scale_pair(h2f(w0.d) * h2f(a0.d), h2f(w1.d) * h2f(a1.d)),
            )
        },
        avx2::q8_0
    )
}

#[inline(always)]
unsafe fn q4_0_body<const VNNI: bool>(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32 {
    let eight = _mm512_set1_epi8(8);
    pairs!(
        w,
        a,
        |w0, w1, a0, a1| {
            let x = _mm512_sub_epi8(nibbles_pair(&w0.qs, &w1.qs), eight);
            let p = mul_sum_i8::<VNNI>(x, load_q8_pair(a0, a1));
            _mm512_mul_ps(
                _mm512_cvtepi32_ps(p),
                scale_pair(h2f(w0.d) * h2f(a0.d), h2f(w1.d) * h2f(a1.d)),
            )
        },
        avx2::q4_0
    )
}

#[inline(always)]
unsafe fn q5_0_body<const VNNI: bool>(w: &[BlockQ5_0], a: &[BlockQ8_0]) -> f32 {
    let sixteen = _mm512_set1_epi8(16);
    pairs!(
        w,
        a,
        |w0, w1, a0, a1| {
            let q = _mm512_or_si512(nibbles_pair(&w0.qs, &w1.qs), q5_high_pair(w0.qh, w1.qh));
            let p = mul_sum_i8::<VNNI>(_mm512_sub_epi8(q, sixteen), load_q8_pair(a0, a1));
            _mm512_mul_ps(
                _mm512_cvtepi32_ps(p),
                scale_pair(h2f(w0.d) * h2f(a0.d), h2f(w1.d) * h2f(a1.d)),
            )
        },
        avx2::q5_0
    )
}

#[inline(always)]
unsafe fn iq4_nl_body<const VNNI: bool>(w: &[BlockIQ4NL], a: &[BlockQ8_0]) -> f32 {
    let table = _mm512_broadcast_i32x4(_mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i));
    pairs!(
        w,
        a,
        |w0, w1, a0, a1| {
            let x = _mm512_shuffle_epi8(table, nibbles_pair(&w0.qs, &w1.qs));
            let p = mul_sum_i8::<VNNI>(x, load_q8_pair(a0, a1));
            _mm512_mul_ps(
                _mm512_cvtepi32_ps(p),
                scale_pair(h2f(w0.d) * h2f(a0.d), h2f(w1.d) * h2f(a1.d)),
            )
        },
        avx2::iq4_nl
    )
}

#[inline(always)]
unsafe fn q8_1_pair(a0: &BlockQ8_1, a1: &BlockQ8_1) -> __m512i {
    join(
        load256(a0.qs.as_ptr() as *const u8),
        load256(a1.qs.as_ptr() as *const u8),
    )
}

#[inline(always)]
unsafe fn q4_1_body<const VNNI: bool>(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    let mut mins = 0.0f32;
    let sum = pairs!(
        w,
        a,
        |w0, w1, a0, a1| {
            mins += h2f(w0.m) * h2f(a0.s) + h2f(w1.m) * h2f(a1.s);
            let p = mul_sum_us8::<VNNI>(nibbles_pair(&w0.qs, &w1.qs), q8_1_pair(a0, a1));
            _mm512_mul_ps(
                _mm512_cvtepi32_ps(p),
                scale_pair(h2f(w0.d) * h2f(a0.d), h2f(w1.d) * h2f(a1.d)),
            )
        },
        avx2::q4_1
    );
    sum + mins
}

#[inline(always)]
unsafe fn q5_1_body<const VNNI: bool>(w: &[BlockQ5_1], a: &[BlockQ8_1]) -> f32 {
    let mut mins = 0.0f32;
    let sum = pairs!(
        w,
        a,
        |w0, w1, a0, a1| {
            mins += h2f(w0.m) * h2f(a0.s) + h2f(w1.m) * h2f(a1.s);
            let q = _mm512_or_si512(nibbles_pair(&w0.qs, &w1.qs), q5_high_pair(w0.qh, w1.qh));
            let p = mul_sum_us8::<VNNI>(q, q8_1_pair(a0, a1));
            _mm512_mul_ps(
                _mm512_cvtepi32_ps(p),
                scale_pair(h2f(w0.d) * h2f(a0.d), h2f(w1.d) * h2f(a1.d)),
            )
        },
        avx2::q5_1
    );
    sum + mins
}

#[inline(always)]
unsafe fn nf4_body<const VNNI: bool>(w: &[BlockNF4], a: &[BlockQ8_0]) -> f32 {
    let table = _mm512_broadcast_i32x4(_mm_loadu_si128(NF4_LEVELS_I8.as_ptr() as *const __m128i));
    let low = _mm256_set1_epi8(0x0F);
    let mut acc = _mm512_setzero_ps();
    for (bw, ba) in w.iter().zip(a.chunks_exact(2)) {
        let v = load256(bw.qs.as_ptr());
        let idx = join(
            _mm256_and_si256(v, low),
            _mm256_and_si256(_mm256_srli_epi16(v, 4), low),
        );
        let x = _mm512_shuffle_epi8(table, idx);
        let p = mul_sum_i8::<VNNI>(x, load_q8_pair(&ba[0], &ba[1]));
        let dw = h2f(bw.d) * (1.0 / 127.0);
        let scale = scale_pair(dw * h2f(ba[0].d), dw * h2f(ba[1].d));
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), scale, acc);
    }
    hsum_ps(acc)
}

/// The 64 levels (0..15 or 0..31) of sub-blocks 2g and 2g + 1 of a Q4_K/Q5_K super-block,
/// as bytes in element order.
#[inline(always)]
unsafe fn k_nibbles(qs: *const u8) -> __m512i {
    let low = _mm256_set1_epi8(0x0F);
    let v = load256(qs);
    join(
        _mm256_and_si256(v, low),
        _mm256_and_si256(_mm256_srli_epi16(v, 4), low),
    )
}

#[inline(always)]
unsafe fn load512(p: *const i8) -> __m512i {
    _mm512_loadu_si512(p as *const __m512i)
}

#[inline(always)]
unsafe fn q4_k_body<const VNNI: bool>(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
    let mut acc = _mm512_setzero_ps();
    let mut mins = 0.0f32;
    for (bw, ba) in w.iter().zip(a) {
        let (sc, m) = k_scales(&bw.scales);
        mins += ba.d * h2f(bw.dmin) * k_min_term(&m, &ba.bsums) as f32;
        let mut sumi = _mm512_setzero_si512();
        for g in 0..4 {
            let q = k_nibbles(bw.qs.as_ptr().add(32 * g));
            let y = load512(ba.qs.as_ptr().add(64 * g));
            let p = scaled_mul_sum_us8::<VNNI>(q, y, sc[2 * g] as i32, sc[2 * g + 1] as i32);
            sumi = _mm512_add_epi32(sumi, p);
        }
        acc = _mm512_fmadd_ps(
            _mm512_set1_ps(ba.d * h2f(bw.d)),
            _mm512_cvtepi32_ps(sumi),
            acc,
        );
    }
    hsum_ps(acc) - mins
}

#[inline(always)]
unsafe fn q5_k_body<const VNNI: bool>(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 {
    let mut acc = _mm512_setzero_ps();
    let mut mins = 0.0f32;
    let sixteen = _mm512_set1_epi8(0x10);
    for (bw, ba) in w.iter().zip(a) {
        let (sc, m) = k_scales(&bw.scales);
        mins += ba.d * h2f(bw.dmin) * k_min_term(&m, &ba.bsums) as f32;
        let hb = load256(bw.qh.as_ptr());
        let mut sumi = _mm512_setzero_si512();
        for g in 0..4 {
            // Bit 2g of qh[i] is the fifth bit of element i of sub-block 2g, bit 2g+1 of 2g+1.
            let m_lo = _mm256_test_epi8_mask(hb, _mm256_set1_epi8(1 << (2 * g)));
            let m_hi = _mm256_test_epi8_mask(hb, _mm256_set1_epi8((2 << (2 * g)) as u8 as i8));
            let high = _mm512_maskz_mov_epi8((m_lo as u64) | ((m_hi as u64) << 32), sixteen);
            let q = _mm512_or_si512(k_nibbles(bw.qs.as_ptr().add(32 * g)), high);
            let y = load512(ba.qs.as_ptr().add(64 * g));
            let p = scaled_mul_sum_us8::<VNNI>(q, y, sc[2 * g] as i32, sc[2 * g + 1] as i32);
            sumi = _mm512_add_epi32(sumi, p);
        }
        acc = _mm512_fmadd_ps(
            _mm512_set1_ps(ba.d * h2f(bw.d)),
            _mm512_cvtepi32_ps(sumi),
            acc,
        );
    }
    hsum_ps(acc) - mins
}

/// Levels of Q6_K elements [64c, 64c + 64) of one 128-element half (c = 0 or 1).
#[inline(always)]
unsafe fn q6_quarter_pair(ql: *const u8, qh: *const u8) -> [__m512i; 2] {
    let low = _mm256_set1_epi8(0x0F);
    let three = _mm256_set1_epi8(3);
    let l0 = load256(ql);
    let l1 = load256(ql.add(32));
    let h = load256(qh);
    let hbits = |shift: i32| {
        let b = _mm256_and_si256(_mm256_srl_epi16(h, _mm_cvtsi32_si128(shift)), three);
        _mm256_slli_epi16(b, 4)
    };
    let q0 = _mm256_or_si256(_mm256_and_si256(l0, low), hbits(0));
    let q1 = _mm256_or_si256(_mm256_and_si256(l1, low), hbits(2));
    let q2 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), low), hbits(4));
    let q3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), low), hbits(6));
    [join(q0, q1), join(q2, q3)]
}

/// Products of 64 unsigned Q6_K levels and activations, each 16 weighted by its int8 scale.
#[inline(always)]
unsafe fn q6_scaled<const VNNI: bool>(q: __m512i, y: __m512i, s: &[i8]) -> __m512i {
    if VNNI {
        let p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, y);
        let sc = join(
            _mm256_set_m128i(_mm_set1_epi32(s[1] as i32), _mm_set1_epi32(s[0] as i32)),
            _mm256_set_m128i(_mm_set1_epi32(s[3] as i32), _mm_set1_epi32(s[2] as i32)),
        );
        _mm512_mullo_epi32(p, sc)
    } else {
        let p = _mm512_maddubs_epi16(q, y);
        let sc = join(
            _mm256_set_m128i(_mm_set1_epi16(s[1] as i16), _mm_set1_epi16(s[0] as i16)),
            _mm256_set_m128i(_mm_set1_epi16(s[3] as i16), _mm_set1_epi16(s[2] as i16)),
        );
        _mm512_madd_epi16(p, sc)
    }
}

#[inline(always)]
unsafe fn q6_k_body<const VNNI: bool>(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
    let mut acc = _mm512_setzero_ps();
    let mut offsets = 0.0f32;
    for (bw, ba) in w.iter().zip(a) {
        let d = ba.d * h2f(bw.d);
        offsets += d * (32 * q6_offset_term(&bw.scales, &ba.bsums)) as f32;
        let mut sumi = _mm512_setzero_si512();
        for half in 0..2 {
            let q = q6_quarter_pair(bw.ql.as_ptr().add(64 * half), bw.qh.as_ptr().add(32 * half));
            for (c, qc) in q.iter().enumerate() {
                let e = 128 * half + 64 * c;
                let y = load512(ba.qs.as_ptr().add(e));
                let p = q6_scaled::<VNNI>(*qc, y, &bw.scales[e / 16..e / 16 + 4]);
                sumi = _mm512_add_epi32(sumi, p);
            }
        }
        acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc) - offsets
}

/// f32 dot product over 16-lane chunks with four accumulators and a masked tail.
#[inline(always)]
unsafe fn dot_f32_with<F: Fn(usize, __mmask16) -> __m512>(
    n: usize,
    load_w: F,
    a: &[BlockF32],
) -> f32 {
    let ap = a.as_ptr() as *const f32;
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i + 64 <= n {
        for (k, acc_k) in acc.iter_mut().enumerate() {
            let j = i + 16 * k;
            *acc_k = _mm512_fmadd_ps(load_w(j, 0xFFFF), _mm512_loadu_ps(ap.add(j)), *acc_k);
        }
        i += 64;
    }
    while i < n {
        let mask: __mmask16 = if n - i >= 16 {
            0xFFFF
        } else {
            (1u16 << (n - i)) - 1
        };
        acc[0] = _mm512_fmadd_ps(
            load_w(i, mask),
            _mm512_maskz_loadu_ps(mask, ap.add(i)),
            acc[0],
        );
        i += 16;
    }
    hsum_ps(_mm512_add_ps(
        _mm512_add_ps(acc[0], acc[1]),
        _mm512_add_ps(acc[2], acc[3]),
    ))
}

#[inline(always)]
unsafe fn f32_body<const VNNI: bool>(w: &[BlockF32], a: &[BlockF32]) -> f32 {
    let wp = w.as_ptr() as *const f32;
    dot_f32_with(w.len(), |j, m| _mm512_maskz_loadu_ps(m, wp.add(j)), a)
}

#[inline(always)]
unsafe fn f16_body<const VNNI: bool>(w: &[BlockF16], a: &[BlockF32]) -> f32 {
    let wp = w.as_ptr() as *const i16;
    dot_f32_with(
        w.len(),
        |j, m| _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, wp.add(j))),
        a,
    )
}

#[inline(always)]
unsafe fn bf16_body<const VNNI: bool>(w: &[BlockBF16], a: &[BlockF32]) -> f32 {
    let wp = w.as_ptr() as *const i16;
    dot_f32_with(
        w.len(),
        |j, m| {
            let h = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, wp.add(j)));
            _mm512_castsi512_ps(_mm512_slli_epi32(h, 16))
        },
        a,
    )
}

/// Instantiates every kernel body under one `target_feature` set.
macro_rules! instantiate {
    ($features:literal, $vnni:literal) => {
        use super::*;
        instantiate!(@one $features, $vnni, q8_0, q8_0_body, BlockQ8_0, BlockQ8_0);
        instantiate!(@one $features, $vnni, q4_0, q4_0_body, BlockQ4_0, BlockQ8_0);
        instantiate!(@one $features, $vnni, q4_1, q4_1_body, BlockQ4_1, BlockQ8_1);
        instantiate!(@one $features, $vnni, q5_0, q5_0_body, BlockQ5_0, BlockQ8_0);
        instantiate!(@one $features, $vnni, q5_1, q5_1_body, BlockQ5_1, BlockQ8_1);
        instantiate!(@one $features, $vnni, iq4_nl, iq4_nl_body, BlockIQ4NL, BlockQ8_0);
        instantiate!(@one $features, $vnni, nf4, nf4_body, BlockNF4, BlockQ8_0);
        instantiate!(@one $features, $vnni, q4_k, q4_k_body, BlockQ4K, BlockQ8K);
        instantiate!(@one $features, $vnni, q5_k, q5_k_body, BlockQ5K, BlockQ8K);
        instantiate!(@one $features, $vnni, q6_k, q6_k_body, BlockQ6K, BlockQ8K);
        instantiate!(@one $features, $vnni, f32, f32_body, BlockF32, BlockF32);
        instantiate!(@one $features, $vnni, f16, f16_body, BlockF16, BlockF32);
        instantiate!(@one $features, $vnni, bf16, bf16_body, BlockBF16, BlockF32);
    };
    (@one $features:literal, $vnni:literal, $name:ident, $body:ident, $w:ty, $a:ty) => {
        #[target_feature(enable = $features)]
        pub(crate) unsafe fn $name(w: &[$w], a: &[$a]) -> f32 {
            $body::<$vnni>(w, a)
        }
    };
}

pub(crate) mod plain {
    instantiate!("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq", false);
}

pub(crate) mod vnni {
    instantiate!(
        "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni",
        true
    );
}
