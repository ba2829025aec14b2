//! Q8_1: Q8_0 plus `s = d * sum(q)`, the activation block of Q4_1 and Q5_1, whose minimum term
//! needs the sum of the activations.

use crate::fp::{f16_to_f32, f32_to_f16};
use crate::ggml_search::c_float_to_i8;
use crate::{check_dot, check_row, BlockFormat, GgmlType, SimdPath};
use half::f16;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_1 {
    pub d: f16,
    pub s: f16,
    pub qs: [i8; 32],
}

impl BlockFormat for BlockQ8_1 {
    const TYPE: GgmlType = GgmlType::Q8_1;
    const BLOCK_ELEMS: usize = 32;
    type Act = BlockQ8_1;

    /// ggml's `quantize_row_q8_1_ref`.
    fn quantize_row(src: &[f32], dst: &mut [Self]) {
        check_row::<Self>(src.len(), dst.len());
        for (blk, x) in dst.iter_mut().zip(src.chunks_exact(32)) {
            let amax = x
                .iter()
                .fold(0.0f32, |m, &v| if m > v.abs() { m } else { v.abs() });
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let mut sum = 0i32;
            for (q, &v) in blk.qs.iter_mut().zip(x) {
                *q = c_float_to_i8((v * id).round()) as i8;
                sum += *q as i32;
            }
            blk.d = f32_to_f16(d);
            blk.s = f32_to_f16(sum as f32 * d);
        }
    }

    fn quantize_act_row(src: &[f32], dst: &mut [Self]) {
        check_row::<Self>(src.len(), dst.len());
        for (blk, x) in dst.iter_mut().zip(src.chunks_exact(32)) {
            let (d, id) = crate::formats::q8_0::act_scale(x);
            let mut sum = 0i32;
            for (q, &v) in blk.qs.iter_mut().zip(x) {
                *q = crate::formats::q8_0::act_level(v * id);
                sum += *q as i32;
            }
            blk.d = f32_to_f16(d);
            blk.s = f32_to_f16(sum as f32 * d);
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

    fn vec_dot_scalar(w: &[Self], a: &[BlockQ8_1]) -> f32 {
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

    /// Q8_1 is an activation format; its own dot product exists for completeness only.
    fn vec_dot_on(_path: SimdPath, w: &[Self], a: &[BlockQ8_1]) -> f32 {
        Self::vec_dot_scalar(w, a)
    }
}
