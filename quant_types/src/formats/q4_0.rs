//! Q4_0: blocks of 32 weights, an f16 scale and 16 bytes of 4-bit levels; weight = d * (q - 8).
//! Byte j holds element j in its low nibble and element j + 16 in its high nibble.

use super::{pack_nibbles_split16, unpack_nibbles_split16};
use crate::fp::{f16_to_f32, f32_to_f16};
use crate::ggml_search::c_float_to_i8;
use crate::{check_dot, check_row, BlockFormat, BlockQ8_0, GgmlType, SimdPath};
use half::f16;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_0 {
    pub d: f16,
    pub qs: [u8; 16],
}

impl BlockFormat for BlockQ4_0 {
    const TYPE: GgmlType = GgmlType::Q4_0;
    const BLOCK_ELEMS: usize = 32;
    type Act = BlockQ8_0;

    /// ggml's `quantize_row_q4_0_ref`: the element of largest magnitude maps to level 0
    /// (d = max / -8), and levels are truncated after adding 8.5.
    fn quantize_row(src: &[f32], dst: &mut [Self]) {
        check_row::<Self>(src.len(), dst.len());
        for (blk, x) in dst.iter_mut().zip(src.chunks_exact(32)) {
            let mut amax = 0.0f32;
            let mut max = 0.0f32;
            for &v in x {
                if amax < v.abs() {
                    amax = v.abs();
                    max = v;
                }
            }
            let d = max / -8.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let mut levels = [0u8; 32];
            for (l, &v) in levels.iter_mut().zip(x) {
                *l = c_float_to_i8(v * id + 8.5).min(15) as u8;
            }
            *blk = BlockQ4_0 {
                d: f32_to_f16(d),
                qs: pack_nibbles_split16(&levels),
            };
        }
    }

    fn dequantize_row(src: &[Self], dst: &mut [f32]) {
        check_row::<Self>(dst.len(), src.len());
        for (blk, y) in src.iter().zip(dst.chunks_exact_mut(32)) {
            let d = f16_to_f32(blk.d);
            for (o, q) in y.iter_mut().zip(unpack_nibbles_split16(&blk.qs)) {
                *o = (q as i32 - 8) as f32 * d;
            }
        }
    }

    fn vec_dot_scalar(w: &[Self], a: &[BlockQ8_0]) -> f32 {
        check_dot::<Self>(w.len(), a.len());
        let mut sum = 0.0f32;
        for (bw, ba) in w.iter().zip(a) {
            let levels = unpack_nibbles_split16(&bw.qs);
            let sumi: i32 = levels
                .iter()
                .zip(&ba.qs)
                .map(|(&q, &y)| (q as i32 - 8) * y as i32)
                .sum();
            sum += sumi as f32 * (f16_to_f32(bw.d) * f16_to_f32(ba.d));
        }
        sum
    }

    fn vec_dot_on(path: SimdPath, w: &[Self], a: &[BlockQ8_0]) -> f32 {
        check_dot::<Self>(w.len(), a.len());
        crate::arch::dispatch!(path, q4_0, w, a, Self::vec_dot_scalar(w, a))
    }
}
