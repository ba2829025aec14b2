//! Q6_K: super-blocks of 256 weights in 16 sub-blocks of 16, each with an int8 scale; an f16 `d`;
//! weight = d * sc * (q - 32) with 6-bit q. Within each half of 128 elements, `ql` keeps the low
//! nibbles (elements l and l + 64 share byte l, elements l + 32 and l + 96 share byte l + 32) and
//! `qh` byte l keeps the top two bits of elements l, l + 32, l + 64 and l + 96.

use crate::fp::{f16_to_f32, f32_to_f16};
use crate::ggml_search::{make_qx_quants_rmse1, nearest_int, GROUP_MAX_EPS};
use crate::{check_dot, check_row, BlockFormat, BlockQ8K, GgmlType, SimdPath, QK_K};
use half::f16;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ6K {
    pub ql: [u8; QK_K / 2],
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    pub d: f16,
}

impl BlockQ6K {
    /// The 256 levels (0..63, offset by 32) in element order.
    #[inline(always)]
    pub fn levels(&self) -> [u8; QK_K] {
        let mut out = [0u8; QK_K];
        for half in 0..2 {
            let ql = &self.ql[64 * half..64 * half + 64];
            let qh = &self.qh[32 * half..32 * half + 32];
            let y = &mut out[128 * half..128 * half + 128];
            for l in 0..32 {
                y[l] = (ql[l] & 0xF) | ((qh[l] & 3) << 4);
                y[l + 32] = (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4);
                y[l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
                y[l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
            }
        }
        out
    }
}

impl BlockFormat for BlockQ6K {
    const TYPE: GgmlType = GgmlType::Q6_K;
    const BLOCK_ELEMS: usize = QK_K;
    type Act = BlockQ8K;

    /// ggml's `quantize_row_q6_K_ref`: `make_qx_quants` per sub-block of 16, then the 16 scales
    /// quantized to int8 against the one of largest magnitude, then levels re-derived.
    fn quantize_row(src: &[f32], dst: &mut [Self]) {
        check_row::<Self>(src.len(), dst.len());
        for (blk, x) in dst.iter_mut().zip(src.chunks_exact(QK_K)) {
            let mut l = [0i8; QK_K];
            let mut scales = [0.0f32; 16];
            let mut max_scale = 0.0f32;
            let mut max_abs_scale = 0.0f32;
            for ib in 0..16 {
                let scale = make_qx_quants_rmse1(
                    32,
                    &x[16 * ib..16 * ib + 16],
                    &mut l[16 * ib..16 * ib + 16],
                );
                scales[ib] = scale;
                if scale.abs() > max_abs_scale {
                    max_abs_scale = scale.abs();
                    max_scale = scale;
                }
            }
            if max_abs_scale < GROUP_MAX_EPS {
                *blk = bytemuck::Zeroable::zeroed();
                continue;
            }
            let iscale = -128.0f32 / max_scale;
            let d = f32_to_f16(1.0 / iscale);
            let mut sc = [0i8; 16];
            for ib in 0..16 {
                sc[ib] = nearest_int(iscale * scales[ib]).min(127) as i8;
            }
            for j in 0..16 {
                let dj = f16_to_f32(d) * sc[j] as f32;
                if dj == 0.0 {
                    continue;
                }
                for ii in 0..16 {
                    let q = nearest_int(x[16 * j + ii] / dj).clamp(-32, 31);
                    l[16 * j + ii] = (q + 32) as i8;
                }
            }
            let mut ql = [0u8; QK_K / 2];
            let mut qh = [0u8; QK_K / 4];
            for half in 0..2 {
                let lv = &l[128 * half..128 * half + 128];
                for i in 0..32 {
                    let q = |k: usize| lv[i + 32 * k] as u8;
                    ql[64 * half + i] = (q(0) & 0xF) | ((q(2) & 0xF) << 4);
                    ql[64 * half + i + 32] = (q(1) & 0xF) | ((q(3) & 0xF) << 4);
                    qh[32 * half + i] =
                        (q(0) >> 4) | ((q(1) >> 4) << 2) | ((q(2) >> 4) << 4) | ((q(3) >> 4) << 6);
                }
            }
            *blk = BlockQ6K {
                ql,
                qh,
                scales: sc,
                d,
            };
        }
    }

    fn dequantize_row(src: &[Self], dst: &mut [f32]) {
        check_row::<Self>(dst.len(), src.len());
        for (blk, y) in src.iter().zip(dst.chunks_exact_mut(QK_K)) {
            let d = f16_to_f32(blk.d);
            let levels = blk.levels();
            for (j, (ys, ls)) in y
                .chunks_exact_mut(16)
                .zip(levels.chunks_exact(16))
                .enumerate()
            {
                let dj = d * blk.scales[j] as f32;
                for (o, &q) in ys.iter_mut().zip(ls) {
                    *o = dj * (q as i32 - 32) as f32;
                }
            }
        }
    }

    /// sum d*sc*(q-32)*a = da*d*(sum sc*sum(q*a) - 32*sum sc*bsum): the offset uses Q8_K's bsums.
    fn vec_dot_scalar(w: &[Self], a: &[BlockQ8K]) -> f32 {
        check_dot::<Self>(w.len(), a.len());
        let mut sum = 0.0f32;
        for (bw, ba) in w.iter().zip(a) {
            let levels = bw.levels();
            let mut sumi = 0i32;
            for j in 0..16 {
                let s: i32 = levels[16 * j..16 * j + 16]
                    .iter()
                    .zip(&ba.qs[16 * j..16 * j + 16])
                    .map(|(&q, &y)| q as i32 * y as i32)
                    .sum();
                sumi += bw.scales[j] as i32 * (s - 32 * ba.bsums[j] as i32);
            }
            sum += ba.d * f16_to_f32(bw.d) * sumi as f32;
        }
        sum
    }

    fn vec_dot_on(path: SimdPath, w: &[Self], a: &[BlockQ8K]) -> f32 {
        check_dot::<Self>(w.len(), a.len());
        crate::arch::dispatch!(path, q6_k, w, a, Self::vec_dot_scalar(w, a))
    }
}
