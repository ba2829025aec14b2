//! NEON kernels (aarch64, e.g. Raspberry Pi 4/5). Kept deliberately small: each block is
//! unpacked to int8 by the same helpers the scalar reference uses, and only the 32-element int8
//! dot product and the f32 accumulation run in NEON (vmull_s8 + vpadalq_s16, available on every
//! aarch64 core, no dotprod extension needed). Not compiled on the x86-64 development machine;
//! it mirrors the scalar code line for line so a reviewer can check one against the other.

use crate::formats::{KVALUES_IQ4NL, NF4_LEVELS_I8};
use crate::fp::{bf16_to_f32, f16_to_f32};
use crate::{
    BlockBF16, BlockF16, BlockF32, BlockIQ4NL, BlockNF4, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K,
    BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K, BlockQ8_0, BlockQ8_1,
};
use core::arch::aarch64::*;

/// sum of x[i] * y[i] over 32 int8 pairs.
#[inline(always)]
unsafe fn dot32(x: &[i8], y: &[i8]) -> i32 {
    let x0 = vld1q_s8(x.as_ptr());
    let x1 = vld1q_s8(x.as_ptr().add(16));
    let y0 = vld1q_s8(y.as_ptr());
    let y1 = vld1q_s8(y.as_ptr().add(16));
    let mut acc = vdupq_n_s32(0);
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(x0), vget_low_s8(y0)));
    acc = vpadalq_s16(acc, vmull_s8(vget_high_s8(x0), vget_high_s8(y0)));
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(x1), vget_low_s8(y1)));
    acc = vpadalq_s16(acc, vmull_s8(vget_high_s8(x1), vget_high_s8(y1)));
    vaddvq_s32(acc)
}

/// Levels 0..63 minus an offset, as int8.
#[inline(always)]
fn shifted<const N: usize>(levels: &[u8; N], offset: i32) -> [i8; N] {
    let mut out = [0i8; N];
    for (o, &l) in out.iter_mut().zip(levels) {
        *o = (l as i32 - offset) as i8;
    }
    out
}

#[inline(always)]
fn split16(qs: &[u8; 16]) -> [u8; 32] {
    crate::formats::unpack_nibbles_split16(qs)
}

#[target_feature(enable = "neon")]
pub(crate) unsafe fn q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
    let mut sum = 0.0f32;
    for (bw, ba) in w.iter().zip(a) {
        sum += dot32(&bw.qs, &ba.qs) as f32 * (f16_to_f32(bw.d) * f16_to_f32(ba.d));
    }
    sum
}

#[target_feature(enable = "neon")]
pub(crate) unsafe fn q4_0(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32 {
    let mut sum = 0.0f32;
    for (bw, ba) in w.iter().zip(a) {
        let x = shifted(&split16(&bw.qs), 8);
        sum += dot32(&x, &ba.qs) as f32 * (f16_to_f32(bw.d) * f16_to_f32(ba.d));
    }
    sum
}

#[target_feature(enable = "neon")]
pub(crate) unsafe fn q4_1(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    let mut sum = 0.0f32;
    for (bw, ba) in w.iter().zip(a) {
        let x = shifted(&split16(&bw.qs), 0);
        sum += dot32(&x, &ba.qs) as f32 * (f16_to_f32(bw.d) * f16_to_f32(ba.d))
            + f16_to_f32(bw.m) * f16_to_f32(ba.s);
    }
    sum
}

#[target_feature(enable = "neon")]
pub(crate) unsafe fn q5_0(w: &[BlockQ5_0], a: &[BlockQ8_0]) -> f32 {
    let mut sum = 0.0f32;
    for (bw, ba) in w.iter().zip(a) {
        let x = shifted(&bw.levels(), 16);
        sum += dot32(&x, &ba.qs) as f32 * (f16_to_f32(bw.d) * f16_to_f32(ba.d));
    }
    sum
}

#[target_feature(enable = "neon")]
pub(crate) unsafe fn q5_1(w: &[BlockQ5_1], a: &[BlockQ8_1]) -> f32 {
    let mut sum = 0.0f32;
    for (bw, ba) in w.iter().zip(a) {
        let x = shifted(&bw.levels(), 0);
        sum += dot32(&x, &ba.qs) as f32 * (f16_to_f32(bw.d) * f16_to_f32(ba.d))
            + f16_to_f32(bw.m) * f16_to_f32(ba.s);
    }
    sum
}

#[target_feature(enable = "neon")]
pub(crate) unsafe fn iq4_nl(w: &[BlockIQ4NL], a: &[BlockQ8_0]) -> f32 {
    let mut sum = 0.0f32;
    for (bw, ba) in w.iter().zip(a) {
        let idx = split16(&bw.qs);
        let mut x = [0i8; 32];
        for (o, &q) in x.iter_mut().zip(&idx) {
            *o = KVALUES_IQ4NL[q as usize];
        }
        sum += dot32(&x, &ba.qs) as f32 * (f16_to_f32(bw.d) * f16_to_f32(ba.d));
    }
    sum
}

#[target_feature(enable = "neon")]
pub(crate) unsafe fn nf4(w: &[BlockNF4], a: &[BlockQ8_0]) -> f32 {
    let mut sum = 0.0f32;
    for (bw, ba) in w.iter().zip(a.chunks_exact(2)) {
        let idx = bw.indices();
        let mut x = [0i8; 64];
        for (o, &q) in x.iter_mut().zip(&idx) {
            *o = NF4_LEVELS_I8[q as usize];
        }
        let part = dot32(&x[..32], &ba[0].qs) as f32 * f16_to_f32(ba[0].d)
            + dot32(&x[32..], &ba[1].qs) as f32 * f16_to_f32(ba[1].d);
        sum += part * (f16_to_f32(bw.d) * (1.0 / 127.0));
    }
    sum
}

/// Shared by Q4_K and Q5_K: levels 0..31 with 8 (scale, min) pairs per super-block.
#[inline(always)]
unsafe fn k_dot(levels: &[u8; 256], scales: &[u8; 12], ba: &BlockQ8K) -> (i32, i32) {
    let x = shifted(levels, 0);
    let mut sumi = 0i32;
    let mut summ = 0i32;
    for j in 0..8 {
        let (sc, m) = crate::formats::k_scale_min(j, scales);
        sumi += sc as i32 * dot32(&x[32 * j..32 * j + 32], &ba.qs[32 * j..32 * j + 32]);
        summ += m as i32 * (ba.bsums[2 * j] as i32 + ba.bsums[2 * j + 1] as i32);
    }
    (sumi, summ)
}

#[target_feature(enable = "neon")]
pub(crate) unsafe fn q4_k(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0.0f32;
    for (bw, ba) in w.iter().zip(a) {
        let (sumi, summ) = k_dot(&bw.levels(), &bw.scales, ba);
        sum += ba.d * (f16_to_f32(bw.d) * sumi as f32 - f16_to_f32(bw.dmin) * summ as f32);
    }
    sum
}

#[target_feature(enable = "neon")]
pub(crate) unsafe fn q5_k(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0.0f32;
    for (bw, ba) in w.iter().zip(a) {
        let (sumi, summ) = k_dot(&bw.levels(), &bw.scales, ba);
        sum += ba.d * (f16_to_f32(bw.d) * sumi as f32 - f16_to_f32(bw.dmin) * summ as f32);
    }
    sum
}

#[target_feature(enable = "neon")]
pub(crate) unsafe fn q6_k(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0.0f32;
    for (bw, ba) in w.iter().zip(a) {
        let x = shifted(&bw.levels(), 32);
        let mut sumi = 0i32;
        for j in 0..8 {
            // dot32 covers two 16-element sub-blocks; split it to apply both scales.
            let lo = dot16(&x[32 * j..32 * j + 16], &ba.qs[32 * j..32 * j + 16]);
            let hi = dot16(
                &x[32 * j + 16..32 * j + 32],
                &ba.qs[32 * j + 16..32 * j + 32],
            );
            sumi += bw.scales[2 * j] as i32 * lo + bw.scales[2 * j + 1] as i32 * hi;
        }
        sum += ba.d * f16_to_f32(bw.d) * sumi as f32;
    }
    sum
}

#[inline(always)]
unsafe fn dot16(x: &[i8], y: &[i8]) -> i32 {
    let x0 = vld1q_s8(x.as_ptr());
    let y0 = vld1q_s8(y.as_ptr());
    let mut acc = vdupq_n_s32(0);
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(x0), vget_low_s8(y0)));
    acc = vpadalq_s16(acc, vmull_s8(vget_high_s8(x0), vget_high_s8(y0)));
    vaddvq_s32(acc)
}

/// f32 dot product over 4-lane chunks; `load` widens 4 weights to f32.
#[inline(always)]
unsafe fn dot_f32_with<F: Fn(usize) -> [f32; 4], G: Fn(usize) -> f32>(
    n: usize,
    load: F,
    scalar: G,
    a: &[BlockF32],
) -> f32 {
    let ap = a.as_ptr() as *const f32;
    let mut acc = vdupq_n_f32(0.0);
    let mut i = 0;
    while i + 4 <= n {
        let wv = load(i);
        acc = vfmaq_f32(acc, vld1q_f32(wv.as_ptr()), vld1q_f32(ap.add(i)));
        i += 4;
    }
    let mut sum = vaddvq_f32(acc);
    while i < n {
        sum += scalar(i) * a[i].0;
        i += 1;
    }
    sum
}

#[target_feature(enable = "neon")]
pub(crate) unsafe fn f32(w: &[BlockF32], a: &[BlockF32]) -> f32 {
    dot_f32_with(
        w.len(),
        |i| [w[i].0, w[i + 1].0, w[i + 2].0, w[i + 3].0],
        |i| w[i].0,
        a,
    )
}

#[target_feature(enable = "neon")]
pub(crate) unsafe fn f16(w: &[BlockF16], a: &[BlockF32]) -> f32 {
    let f = |i: usize| f16_to_f32(w[i].0);
    dot_f32_with(w.len(), |i| [f(i), f(i + 1), f(i + 2), f(i + 3)], f, a)
}

#[target_feature(enable = "neon")]
pub(crate) unsafe fn bf16(w: &[BlockBF16], a: &[BlockF32]) -> f32 {
    let f = |i: usize| bf16_to_f32(w[i].0);
    dot_f32_with(w.len(), |i| [f(i), f(i + 1), f(i + 2), f(i + 3)], f, a)
}
