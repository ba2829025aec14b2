//! AVX2 + FMA + F16C kernels (256-bit). One block of 32 int8 products per register; the int8
//! products use vpmaddubsw, which multiplies unsigned by signed bytes, so signed weights are
//! made unsigned by moving their sign onto the activations (|x| * (sign(x) * y) = x * y).

use crate::formats::{KVALUES_IQ4NL, NF4_LEVELS_I8};
use crate::{
    BlockBF16, BlockF16, BlockF32, BlockIQ4NL, BlockNF4, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K,
    BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K, BlockQ8_0, BlockQ8_1,
};
use core::arch::x86_64::*;
use half::f16;

/// f16 to f32 by the F16C instruction: the scalar conversion is a branchy software routine.
#[inline(always)]
pub(crate) unsafe fn h2f(h: f16) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h.to_bits() as i32)))
}

#[inline(always)]
pub(crate) unsafe fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Unsigned bytes times signed bytes, summed in fours into 8 int32 lanes.
#[inline(always)]
unsafe fn mul_sum_us8(u: __m256i, s: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
}

/// Signed bytes times signed bytes, summed in fours into 8 int32 lanes. Needs y != -128, which
/// holds for every Q8 activation (levels lie in -127..=127).
#[inline(always)]
unsafe fn mul_sum_i8(x: __m256i, y: __m256i) -> __m256i {
    mul_sum_us8(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))
}

#[inline(always)]
unsafe fn load256(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

#[inline(always)]
unsafe fn load256i(p: *const i8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

/// The 32 nibbles of ggml's split layout (byte j: element j low, element j + 16 high) as bytes
/// in element order.
#[inline(always)]
pub(crate) unsafe fn nibbles_split16(qs: &[u8; 16]) -> __m256i {
    let t = _mm_loadu_si128(qs.as_ptr() as *const __m128i);
    let v = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
    _mm256_and_si256(v, _mm256_set1_epi8(0x0F))
}

/// Bytes that are 0xFF where bit j of `bits` is set (byte j for bit j).
#[inline(always)]
pub(crate) unsafe fn bit_mask_bytes(bits: u32) -> __m256i {
    let v = _mm256_set1_epi32(bits as i32);
    let shuf = _mm256_setr_epi64x(
        0,
        0x0101_0101_0101_0101,
        0x0202_0202_0202_0202,
        0x0303_0303_0303_0303,
    );
    let b = _mm256_shuffle_epi8(v, shuf);
    let m = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    _mm256_cmpeq_epi8(_mm256_and_si256(b, m), m)
}

/// The 32 five-bit levels of a Q5_0 / Q5_1 block as bytes 0..31.
#[inline(always)]
unsafe fn q5_levels(qs: &[u8; 16], qh: [u8; 4]) -> __m256i {
    let hi = _mm256_and_si256(
        bit_mask_bytes(u32::from_le_bytes(qh)),
        _mm256_set1_epi8(0x10),
    );
    _mm256_or_si256(nibbles_split16(qs), hi)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (bw, ba) in w.iter().zip(a) {
        let d = _mm256_set1_ps(h2f(bw.d) * h2f(ba.d));
        let p = mul_sum_i8(load256i(bw.qs.as_ptr()), load256i(ba.qs.as_ptr()));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
    }
    hsum_ps(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q4_0(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let eight = _mm256_set1_epi8(8);
    for (bw, ba) in w.iter().zip(a) {
        let d = _mm256_set1_ps(h2f(bw.d) * h2f(ba.d));
        let x = _mm256_sub_epi8(nibbles_split16(&bw.qs), eight);
        let p = mul_sum_i8(x, load256i(ba.qs.as_ptr()));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
    }
    hsum_ps(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q4_1(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut mins = 0.0f32;
    for (bw, ba) in w.iter().zip(a) {
        let d = _mm256_set1_ps(h2f(bw.d) * h2f(ba.d));
        mins += h2f(bw.m) * h2f(ba.s);
        let p = mul_sum_us8(nibbles_split16(&bw.qs), load256i(ba.qs.as_ptr()));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
    }
    hsum_ps(acc) + mins
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q5_0(w: &[BlockQ5_0], a: &[BlockQ8_0]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let sixteen = _mm256_set1_epi8(16);
    for (bw, ba) in w.iter().zip(a) {
        let d = _mm256_set1_ps(h2f(bw.d) * h2f(ba.d));
        let x = _mm256_sub_epi8(q5_levels(&bw.qs, bw.qh), sixteen);
        let p = mul_sum_i8(x, load256i(ba.qs.as_ptr()));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
    }
    hsum_ps(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q5_1(w: &[BlockQ5_1], a: &[BlockQ8_1]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut mins = 0.0f32;
    for (bw, ba) in w.iter().zip(a) {
        let d = _mm256_set1_ps(h2f(bw.d) * h2f(ba.d));
        mins += h2f(bw.m) * h2f(ba.s);
        let p = mul_sum_us8(q5_levels(&bw.qs, bw.qh), load256i(ba.qs.as_ptr()));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
    }
    hsum_ps(acc) + mins
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn iq4_nl(w: &[BlockIQ4NL], a: &[BlockQ8_0]) -> f32 {
    let table =
        _mm256_broadcastsi128_si256(_mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i));
    let mut acc = _mm256_setzero_ps();
    for (bw, ba) in w.iter().zip(a) {
        let d = _mm256_set1_ps(h2f(bw.d) * h2f(ba.d));
        let x = _mm256_shuffle_epi8(table, nibbles_split16(&bw.qs));
        let p = mul_sum_i8(x, load256i(ba.qs.as_ptr()));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
    }
    hsum_ps(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn nf4(w: &[BlockNF4], a: &[BlockQ8_0]) -> f32 {
    let table =
        _mm256_broadcastsi128_si256(_mm_loadu_si128(NF4_LEVELS_I8.as_ptr() as *const __m128i));
    let low = _mm256_set1_epi8(0x0F);
    let mut acc = _mm256_setzero_ps();
    for (bw, ba) in w.iter().zip(a.chunks_exact(2)) {
        let dw = h2f(bw.d) * (1.0 / 127.0);
        let v = load256(bw.qs.as_ptr());
        let x0 = _mm256_shuffle_epi8(table, _mm256_and_si256(v, low));
        let x1 = _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(v, 4), low));
        let p0 = mul_sum_i8(x0, load256i(ba[0].qs.as_ptr()));
        let p1 = mul_sum_i8(x1, load256i(ba[1].qs.as_ptr()));
        acc = _mm256_fmadd_ps(
            _mm256_set1_ps(dw * h2f(ba[0].d)),
            _mm256_cvtepi32_ps(p0),
            acc,
        );
        acc = _mm256_fmadd_ps(
            _mm256_set1_ps(dw * h2f(ba[1].d)),
            _mm256_cvtepi32_ps(p1),
            acc,
        );
    }
    hsum_ps(acc)
}

/// The 8 (scale, min) pairs of a Q4_K / Q5_K super-block.
#[inline(always)]
pub(crate) fn k_scales(scales: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut m = [0u8; 8];
    for j in 0..8 {
        (sc[j], m[j]) = crate::formats::k_scale_min(j, scales);
    }
    (sc, m)
}

/// sum_j m[j] * (sum of the 32 activations of sub-block j), from Q8_K's per-16 sums.
#[inline(always)]
pub(crate) fn k_min_term(m: &[u8; 8], bsums: &[i16; 16]) -> i32 {
    (0..8)
        .map(|j| m[j] as i32 * (bsums[2 * j] as i32 + bsums[2 * j + 1] as i32))
        .sum()
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q4_k(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
    let low = _mm256_set1_epi8(0x0F);
    let mut acc = _mm256_setzero_ps();
    let mut mins = 0.0f32;
    for (bw, ba) in w.iter().zip(a) {
        let (sc, m) = k_scales(&bw.scales);
        mins += ba.d * h2f(bw.dmin) * k_min_term(&m, &ba.bsums) as f32;
        let mut sumi = _mm256_setzero_si256();
        for g in 0..4 {
            let q = load256(bw.qs.as_ptr().add(32 * g));
            let lo = _mm256_and_si256(q, low);
            let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low);
            let ylo = load256i(ba.qs.as_ptr().add(64 * g));
            let yhi = load256i(ba.qs.as_ptr().add(64 * g + 32));
            let plo = _mm256_madd_epi16(
                _mm256_maddubs_epi16(lo, ylo),
                _mm256_set1_epi16(sc[2 * g] as i16),
            );
            let phi = _mm256_madd_epi16(
                _mm256_maddubs_epi16(hi, yhi),
                _mm256_set1_epi16(sc[2 * g + 1] as i16),
            );
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(plo, phi));
        }
        let d = _mm256_set1_ps(ba.d * h2f(bw.d));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc) - mins
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q5_k(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 {
    let low = _mm256_set1_epi8(0x0F);
    let one = _mm256_set1_epi8(1);
    let mut acc = _mm256_setzero_ps();
    let mut mins = 0.0f32;
    for (bw, ba) in w.iter().zip(a) {
        let (sc, m) = k_scales(&bw.scales);
        mins += ba.d * h2f(bw.dmin) * k_min_term(&m, &ba.bsums) as f32;
        let hb = load256(bw.qh.as_ptr());
        let mut sumi = _mm256_setzero_si256();
        for g in 0..4 {
            let q = load256(bw.qs.as_ptr().add(32 * g));
            // Fifth bits: bit 2g of qh[i] for the low half, bit 2g + 1 for the high half. The
            // 16-bit shift spills neighbouring bits, which the mask with 1 drops.
            let hlo = _mm256_and_si256(_mm256_srl_epi16(hb, _mm_cvtsi32_si128(2 * g as i32)), one);
            let hhi = _mm256_and_si256(
                _mm256_srl_epi16(hb, _mm_cvtsi32_si128(2 * g as i32 + 1)),
                one,
            );
            let lo = _mm256_or_si256(_mm256_and_si256(q, low), _mm256_slli_epi16(hlo, 4));
            let hi = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(q, 4), low),
                _mm256_slli_epi16(hhi, 4),
            );
            let ylo = load256i(ba.qs.as_ptr().add(64 * g));
            let yhi = load256i(ba.qs.as_ptr().add(64 * g + 32));
            let plo = _mm256_madd_epi16(
                _mm256_maddubs_epi16(lo, ylo),
                _mm256_set1_epi16(sc[2 * g] as i16),
            );
            let phi = _mm256_madd_epi16(
                _mm256_maddubs_epi16(hi, yhi),
                _mm256_set1_epi16(sc[2 * g + 1] as i16),
            );
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(plo, phi));
        }
        let d = _mm256_set1_ps(ba.d * h2f(bw.d));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc) - mins
}

/// sum_j sc[j] * bsums[j]: Q6_K's offset of 32 per level, times the scales.
#[inline(always)]
pub(crate) fn q6_offset_term(sc: &[i8; 16], bsums: &[i16; 16]) -> i32 {
    sc.iter()
        .zip(bsums)
        .map(|(&s, &b)| s as i32 * b as i32)
        .sum()
}

/// Q6_K's 6-bit levels 0..63 of one 128-element half: four registers of 32 elements each
/// (elements 0-31, 32-63, 64-95, 96-127 of the half).
#[inline(always)]
unsafe fn q6_half_levels(ql: *const u8, qh: *const u8) -> [__m256i; 4] {
    let low = _mm256_set1_epi8(0x0F);
    let three = _mm256_set1_epi8(3);
    let l0 = load256(ql);
    let l1 = load256(ql.add(32));
    let h = load256(qh);
    let hbits = |shift: i32| {
        let b = _mm256_and_si256(_mm256_srl_epi16(h, _mm_cvtsi32_si128(shift)), three);
        _mm256_slli_epi16(b, 4)
    };
    [
        _mm256_or_si256(_mm256_and_si256(l0, low), hbits(0)),
        _mm256_or_si256(_mm256_and_si256(l1, low), hbits(2)),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), low), hbits(4)),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), low), hbits(6)),
    ]
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q6_k(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut offsets = 0.0f32;
    for (bw, ba) in w.iter().zip(a) {
        let d = ba.d * h2f(bw.d);
        offsets += d * (32 * q6_offset_term(&bw.scales, &ba.bsums)) as f32;
        let mut sumi = _mm256_setzero_si256();
        for half in 0..2 {
            let q = q6_half_levels(bw.ql.as_ptr().add(64 * half), bw.qh.as_ptr().add(32 * half));
            for (k, qk) in q.iter().enumerate() {
                let e = 128 * half + 32 * k;
                let y = load256i(ba.qs.as_ptr().add(e));
                let s0 = bw.scales[e / 16] as i16;
                let s1 = bw.scales[e / 16 + 1] as i16;
                let scale = _mm256_set_m128i(_mm_set1_epi16(s1), _mm_set1_epi16(s0));
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(*qk, y), scale);
                sumi = _mm256_add_epi32(sumi, p);
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc) - offsets
}

/// f32 dot product over 8-lane chunks with four accumulators, scalar tail.
#[inline(always)]
unsafe fn dot_f32_with<F: Fn(usize) -> __m256>(
    n: usize,
    load_w: F,
    a: &[BlockF32],
) -> (f32, usize) {
    let ap = a.as_ptr() as *const f32;
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, acc_k) in acc.iter_mut().enumerate() {
            let j = i + 8 * k;
            *acc_k = _mm256_fmadd_ps(load_w(j), _mm256_loadu_ps(ap.add(j)), *acc_k);
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(load_w(i), _mm256_loadu_ps(ap.add(i)), acc[0]);
        i += 8;
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    (hsum_ps(s), i)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn f32(w: &[BlockF32], a: &[BlockF32]) -> f32 {
    let wp = w.as_ptr() as *const f32;
    let (mut sum, done) = dot_f32_with(w.len(), |j| _mm256_loadu_ps(wp.add(j)), a);
    for j in done..w.len() {
        sum += w[j].0 * a[j].0;
    }
    sum
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn f16(w: &[BlockF16], a: &[BlockF32]) -> f32 {
    let wp = w.as_ptr() as *const u8;
    let (mut sum, done) = dot_f32_with(
        w.len(),
        |j| _mm256_cvtph_ps(_mm_loadu_si128(wp.add(2 * j) as *const __m128i)),
        a,
    );
    for j in done..w.len() {
        sum += h2f(w[j].0) * a[j].0;
    }
    sum
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn bf16(w: &[BlockBF16], a: &[BlockF32]) -> f32 {
    let wp = w.as_ptr() as *const u8;
    let (mut sum, done) = dot_f32_with(
        w.len(),
        |j| {
            let h = _mm256_cvtepu16_epi32(_mm_loadu_si128(wp.add(2 * j) as *const __m128i));
            _mm256_castsi256_ps(_mm256_slli_epi32(h, 16))
        },
        a,
    );
    for j in done..w.len() {
        sum += crate::fp::bf16_to_f32(w[j].0) * a[j].0;
    }
    sum
}
