//! Q8_K: the activation block of the K-quants: 256 int8 levels, an f32 scale, and the sums of
//! each 16 levels (`bsums`) that the K-quants' minimum and offset terms need.

use crate::ggml_search::nearest_int;
use crate::{check_dot, check_row, BlockFormat, GgmlType, SimdPath, QK_K};

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; QK_K],
    pub bsums: [i16; QK_K / 16],
}

impl BlockFormat for BlockQ8K {
    const TYPE: GgmlType = GgmlType::Q8_K;
    const BLOCK_ELEMS: usize = QK_K;
    type Act = BlockQ8K;

    /// ggml's `quantize_row_q8_K_ref`: the element of largest magnitude maps to -127
    /// (iscale = -127 / max), levels round to nearest even.
    fn quantize_row(src: &[f32], dst: &mut [Self]) {
        check_row::<Self>(src.len(), dst.len());
        for (blk, x) in dst.iter_mut().zip(src.chunks_exact(QK_K)) {
            let mut max = 0.0f32;
            let mut amax = 0.0f32;
            for &v in x {
                if v.abs() > amax {
                    amax = v.abs();
                    max = v;
                }
            }
            if amax == 0.0 {
                blk.d = 0.0;
                blk.qs = [0; QK_K];
                // ggml leaves bsums untouched here; a fresh block of zeros is what it reads.
                blk.bsums = [0; QK_K / 16];
                continue;
            }
            let iscale = -127.0f32 / max;
            for (q, &v) in blk.qs.iter_mut().zip(x) {
                *q = nearest_int(iscale * v).min(127) as i8;
            }
            for (s, q) in blk.bsums.iter_mut().zip(blk.qs.chunks_exact(16)) {
                *s = q.iter().map(|&v| v as i32).sum::<i32>() as i16;
            }
            blk.d = 1.0 / iscale;
        }
    }

    fn dequantize_row(src: &[Self], dst: &mut [f32]) {
        check_row::<Self>(dst.len(), src.len());
        for (blk, y) in src.iter().zip(dst.chunks_exact_mut(QK_K)) {
            for (o, &q) in y.iter_mut().zip(&blk.qs) {
                *o = blk.d * q as f32;
            }
        }
    }

    fn vec_dot_scalar(w: &[Self], a: &[BlockQ8K]) -> f32 {
        check_dot::<Self>(w.len(), a.len());
        let mut sum = 0.0f32;
        for (bw, ba) in w.iter().zip(a) {
            let sumi: i32 = bw
                .qs
                .iter()
                .zip(&ba.qs)
                .map(|(&x, &y)| x as i32 * y as i32)
                .sum();
            sum += sumi as f32 * (bw.d * ba.d);
        }
        sum
    }

    /// Q8_K is an activation format; its own dot product exists for completeness only.
    fn vec_dot_on(_path: SimdPath, w: &[Self], a: &[BlockQ8K]) -> f32 {
        Self::vec_dot_scalar(w, a)
    }
}
