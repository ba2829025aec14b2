//! Q5_1: blocks of 32 weights, f16 scale d and minimum m, 32 fifth bits and 16 bytes of low
//! nibbles; weight = d * q + m. Bit layout as Q5_0's.

use super::q5_0::pack_q5;
use super::q5_high_bits;
use crate::fp::{f16_to_f32, f32_to_f16};
use crate::ggml_search::c_float_to_u8;
use crate::{check_dot, check_row, BlockFormat, BlockQ8_1, GgmlType, SimdPath};
use half::f16;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ5_1 {
    pub d: f16,
    pub m: f16,
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}

impl BlockQ5_1 {
    /// The 32 levels (0..31) of the block, in element order.
    #[inline(always)]
    pub fn levels(&self) -> [u8; 32] {
        let qh = q5_high_bits(self.qh);
        let mut l = [0u8; 32];
        for j in 0..16 {
            l[j] = (self.qs[j] & 0xF) | ((((qh >> j) & 1) as u8) << 4);
            l[j + 16] = (self.qs[j] >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
        }
        l
    }
}

impl BlockFormat for BlockQ5_1 {
    const TYPE: GgmlType = GgmlType::Q5_1;
    const BLOCK_ELEMS: usize = 32;
    type Act = BlockQ8_1;

    /// ggml's `quantize_row_q5_1_ref`: d = (max - min) / 31, levels truncated after adding 0.5
    /// (without the clamp the other legacy types apply).
    fn quantize_row(src: &[f32], dst: &mut [Self]) {
        check_row::<Self>(src.len(), dst.len());
        for (blk, x) in dst.iter_mut().zip(src.chunks_exact(32)) {
            let mut min = f32::MAX;
            let mut max = -f32::MAX;
            for &v in x {
                if v < min {
                    min = v;
                }
                if v > max {
                    max = v;
                }
            }
            let d = (max - min) / 31.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let mut levels = [0u8; 32];
            for (l, &v) in levels.iter_mut().zip(x) {
                *l = c_float_to_u8((v - min) * id + 0.5) as u8;
            }
            let (qh, qs) = pack_q5(&levels);
            *blk = BlockQ5_1 {
                d: f32_to_f16(d),
                m: f32_to_f16(min),
                qh,
                qs,
            };
        }
    }

    fn dequantize_row(src: &[Self], dst: &mut [f32]) {
        check_row::<Self>(dst.len(), src.len());
        for (blk, y) in src.iter().zip(dst.chunks_exact_mut(32)) {
            let d = f16_to_f32(blk.d);
            let m = f16_to_f32(blk.m);
            for (o, q) in y.iter_mut().zip(blk.levels()) {
                *o = q as f32 * d + m;
            }
        }
    }

    fn vec_dot_scalar(w: &[Self], a: &[BlockQ8_1]) -> f32 {
        check_dot::<Self>(w.len(), a.len());
        let mut sum = 0.0f32;
        for (bw, ba) in w.iter().zip(a) {
            let sumi: i32 = bw
                .levels()
                .iter()
                .zip(&ba.qs)
                .map(|(&q, &y)| q as i32 * y as i32)
                .sum();
            sum += sumi as f32 * (f16_to_f32(bw.d) * f16_to_f32(ba.d))
                + f16_to_f32(bw.m) * f16_to_f32(ba.s);
        }
        sum
    }

    fn vec_dot_on(path: SimdPath, w: &[Self], a: &[BlockQ8_1]) -> f32 {
        check_dot::<Self>(w.len(), a.len());
        crate::arch::dispatch!(path, q5_1, w, a, Self::vec_dot_scalar(w, a))
    }
}
