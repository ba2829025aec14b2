//! NF4 (qgguf extension, type id [`crate::NF4_TYPE_ID`]): the NormalFloat-4 data type of QLoRA
//! (Dettmers et al. 2023) as bitsandbytes implements it. Blocks of 64 weights, bitsandbytes'
//! default block size: an f16 absmax `d` and 32 bytes of 4-bit indices into [`NF4_LEVELS`];
//! weight = d * NF4_LEVELS[q]. 34 bytes per block, 4.25 bits per weight.
//!
//! Nibble order: byte j holds element j in its low nibble and element j + 32 in its high nibble
//! (ggml's split layout, so one 32-byte load yields two activation blocks' worth of weights).
//! bitsandbytes packs consecutive pairs instead (element 2i high, 2i+1 low); converting between
//! the two is a permutation of nibbles, the levels and scale are the same.
//!
//! Quantization: d = absmax of the block rounded to f16 (saturating at 65504), each x/d mapped to
//! the nearest level by bitsandbytes' midpoints (a value exactly on a midpoint goes to the lower
//! level, as bitsandbytes' `x > threshold` tests do).
//!
//! Dot product: against Q8_0 activations, with the levels as the int8 values
//! [`NF4_LEVELS_I8`] = round(127 * level) and the product rescaled by 1/127. Rounding a level
//! moves it by at most 0.5/127 of the absmax, a tenth of the gap between the two closest levels;
//! dequantization (and so conversion and export) uses the exact f32 levels.

use crate::fp::{f16_to_f32, f32_to_f16};
use crate::{check_dot, check_row, BlockFormat, BlockQ8_0, GgmlType, SimdPath};
use half::f16;

/// The 16 NormalFloat-4 levels, as bitsandbytes defines them (`-1.0` to `1.0`, exact zero).
#[allow(clippy::excessive_precision)]
pub const NF4_LEVELS: [f32; 16] = [
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
];

/// Decision thresholds between neighbouring levels: bitsandbytes' midpoints.
#[allow(clippy::excessive_precision)]
const NF4_THRESHOLDS: [f32; 15] = [
    -0.8480964004993439,
    -0.6106329262256622,
    -0.4599952697753906,
    -0.33967943489551544,
    -0.23460740596055984,
    -0.13791173323988914,
    -0.045525018125772476,
    0.03979014977812767,
    0.1202552504837513,
    0.2035212516784668,
    0.2920137718319893,
    0.3893125355243683,
    0.5016634166240692,
    0.6427869200706482,
    0.8614784181118011,
];

/// The levels as int8 for the integer dot product: round(127 * level).
pub const NF4_LEVELS_I8: [i8; 16] = [
    -127, -88, -67, -50, -36, -23, -12, 0, 10, 20, 31, 43, 56, 71, 92, 127,
];

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockNF4 {
    pub d: f16,
    pub qs: [u8; 32],
}

impl BlockNF4 {
    /// The 64 level indices (0..15) in element order.
    #[inline(always)]
    pub fn indices(&self) -> [u8; 64] {
        let mut l = [0u8; 64];
        for j in 0..32 {
            l[j] = self.qs[j] & 0xF;
            l[j + 32] = self.qs[j] >> 4;
        }
        l
    }
}

/// Index of the level nearest to a normalised value, by the midpoint thresholds.
#[inline]
pub fn nf4_index(x: f32) -> u8 {
    NF4_THRESHOLDS.iter().filter(|&&t| x > t).count() as u8
}

impl BlockFormat for BlockNF4 {
    const TYPE: GgmlType = GgmlType::NF4;
    const BLOCK_ELEMS: usize = 64;
    type Act = BlockQ8_0;

    fn quantize_row(src: &[f32], dst: &mut [Self]) {
        check_row::<Self>(src.len(), dst.len());
        for (blk, x) in dst.iter_mut().zip(src.chunks_exact(64)) {
            let amax = x.iter().fold(0.0f32, |m, &v| m.max(v.abs()));
            let d = f32_to_f16(amax.min(f16::MAX.to_f32()));
            let df = f16_to_f32(d);
            let id = if df > 0.0 { 1.0 / df } else { 0.0 };
            let mut qs = [0u8; 32];
            for j in 0..32 {
                qs[j] = nf4_index(x[j] * id) | (nf4_index(x[j + 32] * id) << 4);
            }
            *blk = BlockNF4 { d, qs };
        }
    }

    fn dequantize_row(src: &[Self], dst: &mut [f32]) {
        check_row::<Self>(dst.len(), src.len());
        for (blk, y) in src.iter().zip(dst.chunks_exact_mut(64)) {
            let d = f16_to_f32(blk.d);
            for (o, q) in y.iter_mut().zip(blk.indices()) {
                *o = d * NF4_LEVELS[q as usize];
            }
        }
    }

    fn vec_dot_scalar(w: &[Self], a: &[BlockQ8_0]) -> f32 {
        check_dot::<Self>(w.len(), a.len());
        let mut sum = 0.0f32;
        for (bw, ba) in w.iter().zip(a.chunks_exact(2)) {
            let idx = bw.indices();
            let mut part = 0.0f32;
            for (h, act) in ba.iter().enumerate() {
                let sumi: i32 = idx[32 * h..32 * h + 32]
                    .iter()
                    .zip(&act.qs)
                    .map(|(&q, &y)| NF4_LEVELS_I8[q as usize] as i32 * y as i32)
                    .sum();
                part += sumi as f32 * f16_to_f32(act.d);
            }
            sum += part * (f16_to_f32(bw.d) * (1.0 / 127.0));
        }
        sum
    }

    fn vec_dot_on(path: SimdPath, w: &[Self], a: &[BlockQ8_0]) -> f32 {
        check_dot::<Self>(w.len(), a.len());
        crate::arch::dispatch!(path, nf4, w, a, Self::vec_dot_scalar(w, a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_levels_are_the_rounded_levels() {
        for (l, q) in NF4_LEVELS.iter().zip(NF4_LEVELS_I8) {
            assert_eq!((l * 127.0).round() as i8, q);
        }
    }

    #[test]
    fn thresholds_are_midpoints_and_pick_the_nearest_level() {
        for i in 0..15 {
            let mid = (NF4_LEVELS[i] as f64 + NF4_LEVELS[i + 1] as f64) / 2.0;
            assert!(
                (NF4_THRESHOLDS[i] as f64 - mid).abs() < 1e-6,
                "threshold {i}"
            );
        }
        for &v in &NF4_LEVELS {
            assert_eq!(NF4_LEVELS[nf4_index(v) as usize], v);
        }
        // Exhaustive check on a fine grid: the chosen level is a nearest one.
        for k in -1100..=1100 {
            let x = k as f32 / 1000.0;
            let chosen = NF4_LEVELS[nf4_index(x) as usize];
            let best = NF4_LEVELS
                .iter()
                .map(|l| (l - x).abs())
                .fold(f32::INFINITY, f32::min);
            assert!((chosen - x).abs() <= best + 1e-6, "x = {x}");
        }
    }

    #[test]
    fn block_round_trip_keeps_extremes_exact() {
        let mut x = [0.0f32; 64];
        for (i, v) in x.iter_mut().enumerate() {
            *v = (i as f32 - 31.5) / 8.0;
        }
        x[5] = -4.0; // the absmax, exactly representable in f16
        let mut b = [BlockNF4 {
            d: f16::ZERO,
            qs: [0; 32],
        }];
        BlockNF4::quantize_row(&x, &mut b);
        let mut y = [0.0f32; 64];
        BlockNF4::dequantize_row(&b, &mut y);
        assert_eq!(y[5], -4.0);
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() <= 4.0 * 0.16, "{a} vs {b}");
        }
    }
}
