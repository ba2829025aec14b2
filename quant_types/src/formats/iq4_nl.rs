//! IQ4_NL: blocks of 32 weights, an f16 scale and 16 bytes of 4-bit indices into a fixed
//! non-uniform table of 16 int8 levels; weight = d * KVALUES_IQ4NL[q]. Nibbles as in Q4_0.

use super::{pack_nibbles_split16, unpack_nibbles_split16};
use crate::fp::{f16_to_f32, f32_to_f16};
use crate::ggml_search::{best_index_int8, GROUP_MAX_EPS};
use crate::{check_dot, check_row, BlockFormat, BlockQ8_0, GgmlType, SimdPath};
use half::f16;

/// ggml's `kvalues_iq4nl`.
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIQ4NL {
    pub d: f16,
    pub qs: [u8; 16],
}

/// Sums of w*q*x and w*q*q for the levels chosen at inverse scale `id`, the quantities of the
/// least-squares scale d = sum(w q x) / sum(w q q).
fn fit(x: &[f32], weight: &[f32; 32], id: f32, levels: Option<&mut [u8; 32]>) -> (f32, f32) {
    let mut sumqx = 0.0f32;
    let mut sumq2 = 0.0f32;
    let mut chosen = [0u8; 32];
    for j in 0..32 {
        let l = best_index_int8(&KVALUES_IQ4NL, id * x[j]);
        chosen[j] = l as u8;
        let q = KVALUES_IQ4NL[l] as f32;
        let w = weight[j];
        sumqx += w * q * x[j];
        sumq2 += w * q * q;
    }
    if let Some(out) = levels {
        *out = chosen;
    }
    (sumqx, sumq2)
}

impl BlockFormat for BlockIQ4NL {
    const TYPE: GgmlType = GgmlType::IQ4_NL;
    const BLOCK_ELEMS: usize = 32;
    type Act = BlockQ8_0;

    /// What `ggml_quantize_chunk` runs for IQ4_NL without an importance matrix
    /// (`quantize_iq4_nl`, 7 trial scales each side): weights x^2, the scale that maps the
    /// largest magnitude to the table's end, 15 neighbouring trial scales kept if they lower the
    /// weighted error, then every level re-chosen for the final f16 scale.
    fn quantize_row(src: &[f32], dst: &mut [Self]) {
        check_row::<Self>(src.len(), dst.len());
        const NTRY: i32 = 7;
        let values0 = KVALUES_IQ4NL[0] as f32;
        for (blk, x) in dst.iter_mut().zip(src.chunks_exact(32)) {
            let mut weight = [0.0f32; 32];
            for (w, &v) in weight.iter_mut().zip(x) {
                *w = v * v;
            }
            let mut amax = 0.0f32;
            let mut max = 0.0f32;
            for &v in x {
                if v.abs() > amax {
                    amax = v.abs();
                    max = v;
                }
            }
            let scale = if amax < GROUP_MAX_EPS {
                0.0
            } else {
                let d0 = -max / values0;
                let (sumqx, sumq2) = fit(x, &weight, 1.0 / d0, None);
                let mut d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
                let mut best = d * sumqx;
                for itry in -NTRY..=NTRY {
                    let id = (itry + KVALUES_IQ4NL[0] as i32) as f32 / max;
                    let (sumqx, sumq2) = fit(x, &weight, id, None);
                    if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
                        d = sumqx / sumq2;
                        best = d * sumqx;
                    }
                }
                d
            };
            let d = f32_to_f16(scale);
            // Levels are chosen for the scale before its rounding to f16, as ggml does.
            let id = if scale != 0.0 { 1.0 / scale } else { 0.0 };
            let mut levels = [0u8; 32];
            for (l, &v) in levels.iter_mut().zip(x) {
                *l = best_index_int8(&KVALUES_IQ4NL, id * v) as u8;
            }
            *blk = BlockIQ4NL {
                d,
                qs: pack_nibbles_split16(&levels),
            };
        }
    }

    fn dequantize_row(src: &[Self], dst: &mut [f32]) {
        check_row::<Self>(dst.len(), src.len());
        for (blk, y) in src.iter().zip(dst.chunks_exact_mut(32)) {
            let d = f16_to_f32(blk.d);
            for (o, q) in y.iter_mut().zip(unpack_nibbles_split16(&blk.qs)) {
                *o = d * KVALUES_IQ4NL[q as usize] as f32;
            }
        }
    }

    fn vec_dot_scalar(w: &[Self], a: &[BlockQ8_0]) -> f32 {
        check_dot::<Self>(w.len(), a.len());
        let mut sum = 0.0f32;
        for (bw, ba) in w.iter().zip(a) {
            let sumi: i32 = unpack_nibbles_split16(&bw.qs)
                .iter()
                .zip(&ba.qs)
                .map(|(&q, &y)| KVALUES_IQ4NL[q as usize] as i32 * y as i32)
                .sum();
            sum += sumi as f32 * (f16_to_f32(bw.d) * f16_to_f32(ba.d));
        }
        sum
    }

    fn vec_dot_on(path: SimdPath, w: &[Self], a: &[BlockQ8_0]) -> f32 {
        check_dot::<Self>(w.len(), a.len());
        crate::arch::dispatch!(path, iq4_nl, w, a, Self::vec_dot_scalar(w, a))
    }
}
