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
        for (blk, x) in dst.iter_mut().zip(src.chunks_exact(32)) {
            let (d, id) = act_scale(x);
            blk.d = f32_to_f16(d);
            for (q, &v) in blk.qs.iter_mut().zip(x) {
                *q = act_level(v * id);
            }
        }
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
