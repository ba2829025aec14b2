//! Q8_0: blocks of 32 weights, an f16 scale and 32 int8 levels; weight = d * q. Both a weight
//! type and the activation block of Q4_0, Q5_0, Q8_0, IQ4_NL and NF4.

use crate::fp::{f16_to_f32, f32_to_f16};
use crate::ggml_search::c_float_to_i8;
use crate::{check_dot, check_row, BlockFormat, GgmlType, SimdPath};
use half::f16;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; 32],
}

impl BlockFormat for BlockQ8_0 {
    const TYPE: GgmlType = GgmlType::Q8_0;
    const BLOCK_ELEMS: usize = 32;
    type Act = BlockQ8_0;

    /// ggml's `quantize_row_q8_0_ref`: d = amax / 127, levels rounded half away from zero.
    fn quantize_row(src: &[f32], dst: &mut [Self]) {
        check_row::<Self>(src.len(), dst.len());
        for (blk, x) in dst.iter_mut().zip(src.chunks_exact(32)) {
            let amax = x
                .iter()
                .fold(0.0f32, |m, &v| if m > v.abs() { m } else { v.abs() });
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            blk.d = f32_to_f16(d);
            for (q, &v) in blk.qs.iter_mut().zip(x) {
                *q = c_float_to_i8((v * id).round()) as i8;
            }
        }
    }

    fn quantize_act_row(src: &[f32], dst: &mut [Self]) {
        check_row::<Self>(src.len(), dst.len());
        #[cfg(target_arch = "x86_64")]
        if crate::SimdPath::best() >= crate::SimdPath::Avx2 {
            // SAFETY: the CPU has AVX2 (SimdPath detected it); lengths were checked.
            return unsafe { quantize_act_row_avx2(src, dst) };
        }
        quantize_act_row_scalar(src, dst)
    }

    fn dequantize_row(src: &[Self], dst: &mut [f32]) {
        check_row::<Self>(dst.len(), src.len());
        for (blk, y) in src.iter().zip(dst.chunks_exact_mut(32)) {
            let d = f16_to_f32(blk.d);
            for (o, &q) in y.iter_mut().zip(&blk.qs) {
                *o = q as f32 * d;
            }
        }
    }

    fn vec_dot_scalar(w: &[Self], a: &[BlockQ8_0]) -> f32 {
        check_dot::<Self>(w.len(), a.len());
        let mut sum = 0.0f32;
        for (bw, ba) in w.iter().zip(a) {
            let sumi: i32 = bw
                .qs
                .iter()
                .zip(&ba.qs)
                .map(|(&x, &y)| x as i32 * y as i32)
                .sum();
            sum += sumi as f32 * (f16_to_f32(bw.d) * f16_to_f32(ba.d));
        }
        sum
    }

    fn vec_dot_on(path: SimdPath, w: &[Self], a: &[BlockQ8_0]) -> f32 {
        check_dot::<Self>(w.len(), a.len());
        crate::arch::dispatch!(path, q8_0, w, a, Self::vec_dot_scalar(w, a))
    }
}

/// Scale and inverse scale of one activation block as ggml's CPU `quantize_row_q8_0/1` computes
/// them: x86 multiplies by 127/amax, ARM and the reference by 1/(amax/127); the two differ in
/// the last bit often enough to flip a level.
/// ggml's rounding of activations to Q8_0 (`quantize_row_q8_0_ref`), one block at a time.
pub(crate) fn quantize_act_row_scalar(src: &[f32], dst: &mut [BlockQ8_0]) {
    for (blk, x) in dst.iter_mut().zip(src.chunks_exact(32)) {
        let (d, id) = act_scale(x);
        blk.d = f32_to_f16(d);
        for (q, &v) in blk.qs.iter_mut().zip(x) {
            *q = act_level(v * id);
        }
    }
}

/// [`quantize_act_row_scalar`] with AVX2, to the same bits: the same maximum, the same scale
/// and inverse, the same product, rounded half to even (`cvtps` under the default rounding
/// mode, as the scalar version's magic-number trick rounds) and clamped by saturating packs.
/// A prompt's activations are megabytes: the scalar loop was 7% of a Qwen prefill.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_act_row_avx2(src: &[f32], dst: &mut [BlockQ8_0]) {
    use core::arch::x86_64::*;
    let sign = _mm256_set1_ps(-0.0);
    for (blk, x) in dst.iter_mut().zip(src.chunks_exact(32)) {
        let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(x.as_ptr().add(8 * i)));
        let a = v.map(|v| _mm256_andnot_ps(sign, v));
        let m = _mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3]));
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_max_ss(m, _mm_shuffle_ps::<1>(m, m));
        let amax = _mm_cvtss_f32(m);
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        blk.d = f32_to_f16(d);
        let idv = _mm256_set1_ps(id);
        let q = v.map(|v| _mm256_cvtps_epi32(_mm256_mul_ps(v, idv)));
        // packs work within 128-bit lanes: the permute puts the 32 bytes back in order.
        let w01 = _mm256_packs_epi32(q[0], q[1]);
        let w23 = _mm256_packs_epi32(q[2], q[3]);
        let b = _mm256_packs_epi16(w01, w23);
        let b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(blk.qs.as_mut_ptr() as *mut __m256i, b);
    }
}

pub(crate) fn act_scale(x: &[f32]) -> (f32, f32) {
    let amax = x
        .iter()
        .fold(0.0f32, |m, &v| if m > v.abs() { m } else { v.abs() });
    let d = amax / 127.0;
    let id = if cfg!(target_arch = "x86_64") {
        if amax != 0.0 {
            127.0 / amax
        } else {
            0.0
        }
    } else if d != 0.0 {
        1.0 / d
    } else {
        0.0
    };
    (d, id)
}

/// One activation level: SIMD paths round half to even (the reference rounds half away).
pub(crate) fn act_level(v: f32) -> i8 {
    if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
        // Half to even without a libm call (|v| <= 128 here, well inside the trick's range).
        crate::ggml_search::nearest_int(v).clamp(-128, 127) as i8
    } else {
        c_float_to_i8(v.round()) as i8
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod act_tests {
    use super::*;

    /// The AVX2 activation rounding equals ggml's scalar one to the bit, ties and zero blocks
    /// included.
    #[test]
    fn avx2_activation_rounding_equals_scalar() {
        if crate::SimdPath::best() < crate::SimdPath::Avx2 {
            return;
        }
        let mut s = 7u64;
        let mut x: Vec<f32> = (0..32 * 64)
            .map(|i| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = ((s >> 40) as f32) / (1u64 << 24) as f32 - 0.5;
                if i % 41 == 0 {
                    u * 300.0
                } else {
                    u
                }
            })
            .collect();
        // Exact halves after scaling: a block whose maximum is 127 keeps x * 1.0.
        for (i, v) in x[32..64].iter_mut().enumerate() {
            *v = if i == 0 { 127.0 } else { (i as f32) - 16.5 };
        }
        x[64..96].fill(0.0);
        let mut a = vec![<BlockQ8_0 as bytemuck::Zeroable>::zeroed(); 64];
        let mut b = vec![<BlockQ8_0 as bytemuck::Zeroable>::zeroed(); 64];
        quantize_act_row_scalar(&x, &mut a);
        // SAFETY: AVX2 checked above.
        unsafe { quantize_act_row_avx2(&x, &mut b) };
        for (i, (p, q)) in a.iter().zip(&b).enumerate() {
            assert_eq!(p.d.to_bits(), q.d.to_bits(), "block {i} scale");
            assert_eq!(p.qs, q.qs, "block {i} levels");
        }
    }
}
