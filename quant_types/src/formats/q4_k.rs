//! Q4_K: super-blocks of 256 weights in 8 sub-blocks of 32; each sub-block has a 6-bit scale and
//! a 6-bit min, themselves scaled by the f16 `d` and `dmin`; weight = d*sc*q - dmin*m.
//! `qs` holds 4 groups of 32 bytes: group g keeps sub-block 2g in its low nibbles and sub-block
//! 2g + 1 in its high nibbles.

use super::{k_scale_min, pack_k_scales};
use crate::fp::{f16_to_f32, f32_to_f16};
use crate::ggml_search::{make_qkx2_quants, nearest_int};
use crate::{check_dot, check_row, BlockFormat, BlockQ8K, GgmlType, SimdPath, QK_K};
use half::f16;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; 12],
    pub qs: [u8; QK_K / 2],
}

impl BlockQ4K {
    /// The 256 levels (0..15) in element order.
    #[inline(always)]
    pub fn levels(&self) -> [u8; QK_K] {
        let mut l = [0u8; QK_K];
        for g in 0..4 {
            for i in 0..32 {
                let b = self.qs[32 * g + i];
                l[64 * g + i] = b & 0xF;
                l[64 * g + 32 + i] = b >> 4;
            }
        }
        l
    }
}

/// The per-sub-block search shared by Q4_K and Q5_K: weights av_x + |x| (av_x the RMS of the
/// sub-block), then `make_qkx2_quants`. Fills the 8 scales and mins and the levels it chose.
pub(crate) fn k_subblock_search(
    x: &[f32],
    nmax: i32,
    rmin: f32,
    nstep: i32,
    levels: &mut [u8; QK_K],
    scales: &mut [f32; 8],
    mins: &mut [f32; 8],
) {
    let mut weights = [0.0f32; 32];
    let mut laux = [0u8; 32];
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        scales[j] = make_qkx2_quants(
            nmax,
            xs,
            &weights,
            &mut levels[32 * j..32 * j + 32],
            &mut mins[j],
            &mut laux,
            rmin,
            0.1,
            nstep,
        );
    }
}

/// Quantizes the 6-bit scales and mins of a Q4_K / Q5_K super-block and re-derives each
/// sub-block's levels from the stored (rounded) values, as ggml does. Returns the packed scale
/// bytes and the f16 `d` and `dmin`.
pub(crate) fn k_finish_scales(
    x: &[f32],
    nmax: i32,
    levels: &mut [u8; QK_K],
    scales: &[f32; 8],
    mins: &[f32; 8],
) -> ([u8; 12], f16, f16) {
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..8 {
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..8 {
        // ggml stores nearest_int's result in a uint8_t before clamping to 63.
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    let packed = pack_k_scales(&ls, &lm);
    let d = f32_to_f16(max_scale / 63.0);
    let dmin = f32_to_f16(max_min / 63.0);
    for j in 0..8 {
        let (sc, m) = k_scale_min(j, &packed);
        let dj = f16_to_f32(d) * sc as f32;
        if dj == 0.0 {
            continue;
        }
        let dm = f16_to_f32(dmin) * m as f32;
        for i in 0..32 {
            levels[32 * j + i] = nearest_int((x[32 * j + i] + dm) / dj).clamp(0, nmax) as u8;
        }
    }
    (packed, d, dmin)
}

impl BlockFormat for BlockQ4K {
    const TYPE: GgmlType = GgmlType::Q4_K;
    const BLOCK_ELEMS: usize = QK_K;
    type Act = BlockQ8K;

    /// ggml's `quantize_row_q4_K_ref` (what `ggml_quantize_chunk` runs without an imatrix).
    fn quantize_row(src: &[f32], dst: &mut [Self]) {
        check_row::<Self>(src.len(), dst.len());
        for (blk, x) in dst.iter_mut().zip(src.chunks_exact(QK_K)) {
            let mut levels = [0u8; QK_K];
            let mut scales = [0.0f32; 8];
            let mut mins = [0.0f32; 8];
            k_subblock_search(x, 15, -1.0, 20, &mut levels, &mut scales, &mut mins);
            let (packed, d, dmin) = k_finish_scales(x, 15, &mut levels, &scales, &mins);
            let mut qs = [0u8; QK_K / 2];
            for g in 0..4 {
                for i in 0..32 {
                    qs[32 * g + i] = levels[64 * g + i] | (levels[64 * g + 32 + i] << 4);
                }
            }
            *blk = BlockQ4K {
                d,
                dmin,
                scales: packed,
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
        crate::arch::dispatch!(path, q4_k, w, a, Self::vec_dot_scalar(w, a))
    }
}
