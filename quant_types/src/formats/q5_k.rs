//! Q5_K: Q4_K's scales and nibbles plus a fifth bit per weight. `qh[i]` holds the fifth bits of
//! element i of each of the 8 sub-blocks (bit j for sub-block j); weight = d*sc*q - dmin*m.

use super::k_scale_min;
use super::q4_k::{k_finish_scales, k_subblock_search};
use crate::fp::f16_to_f32;
use crate::{check_dot, check_row, BlockFormat, BlockQ8K, GgmlType, SimdPath, QK_K};
use half::f16;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ5K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; 12],
    pub qh: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 2],
}

impl BlockQ5K {
    /// The 256 levels (0..31) in element order.
    #[inline(always)]
    pub fn levels(&self) -> [u8; QK_K] {
        let mut l = [0u8; QK_K];
        for g in 0..4 {
            for i in 0..32 {
                let b = self.qs[32 * g + i];
                let h = self.qh[i];
                l[64 * g + i] = (b & 0xF) | (((h >> (2 * g)) & 1) << 4);
                l[64 * g + 32 + i] = (b >> 4) | (((h >> (2 * g + 1)) & 1) << 4);
            }
        }
        l
    }
}

impl BlockFormat for BlockQ5K {
    const TYPE: GgmlType = GgmlType::Q5_K;
    const BLOCK_ELEMS: usize = QK_K;
    type Act = BlockQ8K;

    /// ggml's `quantize_row_q5_K_ref`.
    fn quantize_row(src: &[f32], dst: &mut [Self]) {
        check_row::<Self>(src.len(), dst.len());
        for (blk, x) in dst.iter_mut().zip(src.chunks_exact(QK_K)) {
            let mut levels = [0u8; QK_K];
            let mut scales = [0.0f32; 8];
            let mut mins = [0.0f32; 8];
            k_subblock_search(x, 31, -0.5, 15, &mut levels, &mut scales, &mut mins);
            let (packed, d, dmin) = k_finish_scales(x, 31, &mut levels, &scales, &mins);
            let mut qs = [0u8; QK_K / 2];
            let mut qh = [0u8; QK_K / 8];
            for g in 0..4 {
                for i in 0..32 {
                    let mut l1 = levels[64 * g + i];
                    let mut l2 = levels[64 * g + 32 + i];
                    if l1 > 15 {
                        l1 -= 16;
                        qh[i] |= 1 << (2 * g);
                    }
                    if l2 > 15 {
                        l2 -= 16;
                        qh[i] |= 2 << (2 * g);
                    }
                    qs[32 * g + i] = l1 | (l2 << 4);
                }
            }
            *blk = BlockQ5K {
                d,
                dmin,
                scales: packed,
                qh,
                qs,
            };
        }
    }

    fn dequantize_row(src: &[Self], dst: &mut [f32]) {
        check_row::<Self>(dst.len(), src.len());
        for (blk, y) in src.iter().zip(dst.chunks_exact_mut(QK_K)) {
            let d = f16_to_f32(blk.d);
            let min = f16_to_f32(blk.dmin);
            let levels = blk.levels();
            for j in 0..8 {
                let (sc, m) = k_scale_min(j, &blk.scales);
                let d1 = d * sc as f32;
                let m1 = min * m as f32;
                for i in 0..32 {
                    y[32 * j + i] = d1 * levels[32 * j + i] as f32 - m1;
                }
            }
        }
    }

    fn vec_dot_scalar(w: &[Self], a: &[BlockQ8K]) -> f32 {
        check_dot::<Self>(w.len(), a.len());
        let mut sum = 0.0f32;
        for (bw, ba) in w.iter().zip(a) {
            let levels = bw.levels();
            let mut sumi = 0i32;
            let mut summ = 0i32;
            for j in 0..8 {
                let (sc, m) = k_scale_min(j, &bw.scales);
                let s: i32 = levels[32 * j..32 * j + 32]
                    .iter()
                    .zip(&ba.qs[32 * j..32 * j + 32])
                    .map(|(&q, &y)| q as i32 * y as i32)
                    .sum();
                sumi += sc as i32 * s;
                summ += m as i32 * (ba.bsums[2 * j] as i32 + ba.bsums[2 * j + 1] as i32);
            }
            sum += ba.d * (f16_to_f32(bw.d) * sumi as f32 - f16_to_f32(bw.dmin) * summ as f32);
        }
        sum
    }

    fn vec_dot_on(path: SimdPath, w: &[Self], a: &[BlockQ8K]) -> f32 {
        check_dot::<Self>(w.len(), a.len());
        crate::arch::dispatch!(path, q5_k, w, a, Self::vec_dot_scalar(w, a))
    }
}
