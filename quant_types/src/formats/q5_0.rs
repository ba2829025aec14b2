//! Q5_0: blocks of 32 weights, an f16 scale, 32 fifth bits and 16 bytes of low nibbles;
//! weight = d * (q - 16). Bit j of `qh` is the fifth bit of element j; nibbles as in Q4_0.

use super::q5_high_bits;
use crate::fp::{f16_to_f32, f32_to_f16};
use crate::ggml_search::c_float_to_i8;
use crate::{check_dot, check_row, BlockFormat, BlockQ8_0, GgmlType, SimdPath};
use half::f16;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ5_0 {
    pub d: f16,
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}

impl BlockQ5_0 {
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

/// Packs 32 five-bit levels into the low-nibble bytes and the high-bit word of Q5_0 and Q5_1.
#[inline]
pub(crate) fn pack_q5(levels: &[u8; 32]) -> ([u8; 4], [u8; 16]) {
    let mut qs = [0u8; 16];
    let mut qh = 0u32;
    for j in 0..16 {
        let (x0, x1) = (levels[j], levels[j + 16]);
        qs[j] = (x0 & 0x0F) | ((x1 & 0x0F) << 4);
        qh |= (((x0 & 0x10) >> 4) as u32) << j;
        qh |= (((x1 & 0x10) >> 4) as u32) << (j + 16);
    }
    (qh.to_le_bytes(), qs)
}

impl BlockFormat for BlockQ5_0 {
    const TYPE: GgmlType = GgmlType::Q5_0;
    const BLOCK_ELEMS: usize = 32;
    type Act = BlockQ8_0;

    /// ggml's `quantize_row_q5_0_ref`: d = max / -16, levels truncated after adding 16.5.
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
            let d = max / -16.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let mut levels = [0u8; 32];
            for (l, &v) in levels.iter_mut().zip(x) {
                *l = c_float_to_i8(v * id + 16.5).min(31) as u8;
            }
            let (qh, qs) = pack_q5(&levels);
            *blk = BlockQ5_0 {
                d: f32_to_f16(d),
                qh,
                qs,
            };
        }
    }

    fn dequantize_row(src: &[Self], dst: &mut [f32]) {
        check_row::<Self>(dst.len(), src.len());
        for (blk, y) in src.iter().zip(dst.chunks_exact_mut(32)) {
            let d = f16_to_f32(blk.d);
            for (o, q) in y.iter_mut().zip(blk.levels()) {
                *o = (q as i32 - 16) as f32 * d;
            }
        }
    }

    fn vec_dot_scalar(w: &[Self], a: &[BlockQ8_0]) -> f32 {
        check_dot::<Self>(w.len(), a.len());
        let mut sum = 0.0f32;
        for (bw, ba) in w.iter().zip(a) {
            let sumi: i32 = bw
                .levels()
                .iter()
                .zip(&ba.qs)
                .map(|(&q, &y)| (q as i32 - 16) * y as i32)
                .sum();
            sum += sumi as f32 * (f16_to_f32(bw.d) * f16_to_f32(ba.d));
        }
        sum
    }

    fn vec_dot_on(path: SimdPath, w: &[Self], a: &[BlockQ8_0]) -> f32 {
        check_dot::<Self>(w.len(), a.len());
        crate::arch::dispatch!(path, q5_0, w, a, Self::vec_dot_scalar(w, a))
    }
}
