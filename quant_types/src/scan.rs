//! Non-finite values in a tensor's stored bytes, found without dequantizing it: float types are
//! checked element by element on their bits, block types on their f16 scales (a NaN or infinite
//! scale poisons its whole block; the integer levels and K-quants' 6-bit sub-block scales are
//! always finite).

use crate::GgmlType;

/// What a scan found in some elements or blocks of one tensor.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Scan {
    /// Elements (float types) or blocks (block types) looked at.
    pub units: u64,
    /// Non-finite elements (float types) or non-finite scales (block types).
    pub nan: u64,
    pub inf: u64,
    /// Blocks with at least one non-finite scale (block types).
    pub bad_blocks: u64,
    /// Largest finite magnitude: of the values (float types) or of the scales (block types).
    pub max_abs: f32,
}

impl Scan {
    pub fn merge(&mut self, o: &Scan) {
        self.units += o.units;
        self.nan += o.nan;
        self.inf += o.inf;
        self.bad_blocks += o.bad_blocks;
        self.max_abs = self.max_abs.max(o.max_abs);
    }

    /// Whether anything non-finite was found.
    pub fn non_finite(&self) -> bool {
        self.nan > 0 || self.inf > 0 || self.bad_blocks > 0
    }
}

/// Byte offsets of a block's f16 scales (ggml-common.h's block structs; NF4's `d`).
pub fn f16_scale_offsets(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 | GgmlType::IQ4_NL | GgmlType::NF4 => &[0],
        // d and m (Q4_1, Q5_1), d and s (Q8_1), d and dmin (Q4_K, Q5_K).
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q8_1 | GgmlType::Q4_K | GgmlType::Q5_K => {
            &[0, 2]
        }
        // ql[128], qh[64], scales[16], then d.
        GgmlType::Q6_K => &[208],
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::Q8_K => &[],
    }
}

/// Scans whole elements or blocks of type `ty` (a trailing partial one is ignored).
pub fn scan(ty: GgmlType, bytes: &[u8]) -> Scan {
    match ty {
        GgmlType::F32 => scan_f32(bytes),
        GgmlType::F16 => scan_16(bytes, 0x7c00, |h| half::f16::from_bits(h).to_f32()),
        GgmlType::BF16 => scan_16(bytes, 0x7f80, |h| f32::from_bits((h as u32) << 16)),
        // Q8_K keeps an f32 scale (activations only; never in model files).
        GgmlType::Q8_K => {
            let mut s = Scan::default();
            for b in bytes.chunks_exact(ty.block_bytes()) {
                let v = scan_f32(&b[..4]);
                s.units += 1;
                s.nan += v.nan;
                s.inf += v.inf;
                s.bad_blocks += v.non_finite() as u64;
                s.max_abs = s.max_abs.max(v.max_abs);
            }
            s
        }
        _ => scan_blocks(ty, bytes),
    }
}

/// Lanes of the bit scans' inner loops: independent accumulators the compiler turns into
/// vector registers (one scan runs over every byte of a model at load, fused with packing).
const LANES: usize = 32;

/// Groups of lane words per flush of the lane counters (within u16 range).
const GROUPS_PER_FLUSH: usize = 1 << 15;

/// Over little-endian u32 words: the largest finite magnitude's bits and how many are not
/// finite (all-ones exponent). A finite float's magnitude orders as its bits do; the lanes
/// are signed (the magnitudes fit) because signed compares are in every x86-64 (SSE2).
fn bits_32(bytes: &[u8]) -> (u32, u64) {
    let (mut max_bits, mut bad) = (0u32, 0u64);
    let mut m = [0i32; LANES];
    for part in bytes.chunks(4 * LANES * GROUPS_PER_FLUSH) {
        let mut n = [0u16; LANES];
        let mut groups = part.chunks_exact(4 * LANES);
        for c in &mut groups {
            // One unaligned copy of the group, which vectorizes (byte-wise assembly does not).
            let w: [u32; LANES] = bytemuck::pod_read_unaligned(c);
            for i in 0..LANES {
                let a = (u32::from_le(w[i]) & 0x7fff_ffff) as i32;
                let finite = a < 0x7f80_0000;
                m[i] = m[i].max(if finite { a } else { 0 });
                n[i] += !finite as u16;
            }
        }
        bad += n.iter().map(|&x| x as u64).sum::<u64>();
        for w in groups.remainder().chunks_exact(4) {
            let a = u32::from_le_bytes([w[0], w[1], w[2], w[3]]) & 0x7fff_ffff;
            let finite = a < 0x7f80_0000;
            max_bits = max_bits.max(if finite { a } else { 0 });
            bad += !finite as u64;
        }
    }
    (
        max_bits.max(m.iter().copied().max().unwrap_or(0) as u32),
        bad,
    )
}

/// [`bits_32`] for u16 words (f16, bf16) whose all-ones exponent is `exp`.
fn bits_16(bytes: &[u8], exp: u16) -> (u16, u64) {
    let (mut max_bits, mut bad) = (0u16, 0u64);
    let mut m = [0i16; LANES];
    let sexp = exp as i16;
    for part in bytes.chunks(2 * LANES * GROUPS_PER_FLUSH) {
        let mut n = [0u16; LANES];
        let mut groups = part.chunks_exact(2 * LANES);
        for c in &mut groups {
            let w: [u16; LANES] = bytemuck::pod_read_unaligned(c);
            for i in 0..LANES {
                let a = (u16::from_le(w[i]) & 0x7fff) as i16;
                let finite = a < sexp;
                m[i] = m[i].max(if finite { a } else { 0 });
                n[i] += !finite as u16;
            }
        }
        bad += n.iter().map(|&x| x as u64).sum::<u64>();
        for h in groups.remainder().chunks_exact(2) {
            let a = u16::from_le_bytes([h[0], h[1]]) & 0x7fff;
            let finite = a < exp;
            max_bits = max_bits.max(if finite { a } else { 0 });
            bad += !finite as u64;
        }
    }
    (
        max_bits.max(m.iter().copied().max().unwrap_or(0) as u16),
        bad,
    )
}

fn scan_f32(bytes: &[u8]) -> Scan {
    let (max_bits, bad) = bits_32(bytes);
    let mut s = Scan {
        units: (bytes.len() / 4) as u64,
        max_abs: f32::from_bits(max_bits),
        ..Default::default()
    };
    // Telling NaN from Inf only where something is wrong.
    if bad > 0 {
        for w in bytes.chunks_exact(4) {
            let a = u32::from_le_bytes([w[0], w[1], w[2], w[3]]) & 0x7fff_ffff;
            if a > 0x7f80_0000 {
                s.nan += 1;
            } else if a == 0x7f80_0000 {
                s.inf += 1;
            }
        }
    }
    s
}

fn scan_16(bytes: &[u8], exp: u16, to_f32: fn(u16) -> f32) -> Scan {
    let (max_bits, bad) = bits_16(bytes, exp);
    let mut s = Scan {
        units: (bytes.len() / 2) as u64,
        max_abs: to_f32(max_bits),
        ..Default::default()
    };
    if bad > 0 {
        for h in bytes.chunks_exact(2) {
            let a = u16::from_le_bytes([h[0], h[1]]) & 0x7fff;
            if a > exp {
                s.nan += 1;
            } else if a == exp {
                s.inf += 1;
            }
        }
    }
    s
}

/// Blocks per lane group of the block scans.
const BLOCK_LANES: usize = 16;

/// The f16 at byte `at` of `b`, its sign cleared, as a signed lane value.
#[inline(always)]
fn magnitude_16(b: &[u8], at: usize) -> i16 {
    (u16::from_le_bytes([b[at], b[at + 1]]) & 0x7fff) as i16
}

/// The fast pass over blocks of `BYTES` bytes with one f16 scale at byte `O`: the largest
/// finite scale's bits and the blocks whose scale is not finite. Constant geometry and a group
/// of independent lanes (u32 counters: no tensor has 2^32 groups) let the loop unroll and
/// vectorize; small changes to its shape undo that, so the two-scale pass is its own copy.
fn one_scale<const BYTES: usize, const O: usize>(bytes: &[u8]) -> (u16, u64) {
    let (mut m, mut n) = ([0i16; BLOCK_LANES], [0u32; BLOCK_LANES]);
    for g in bytes.chunks_exact(BYTES * BLOCK_LANES) {
        for i in 0..BLOCK_LANES {
            let a = magnitude_16(g, i * BYTES + O);
            let finite = a < 0x7c00;
            m[i] = m[i].max(if finite { a } else { 0 });
            n[i] += !finite as u32;
        }
    }
    let whole = bytes.len() / (BYTES * BLOCK_LANES) * (BYTES * BLOCK_LANES);
    let mut bad = n.iter().map(|&x| x as u64).sum::<u64>();
    for b in bytes[whole..].chunks_exact(BYTES) {
        let a = magnitude_16(b, O);
        let finite = a < 0x7c00;
        m[0] = m[0].max(if finite { a } else { 0 });
        bad += !finite as u64;
    }
    (m.iter().copied().max().unwrap_or(0) as u16, bad)
}

/// [`one_scale`] for blocks with two f16 scales, at bytes 0 and 2 (a block counts once).
fn two_scales<const BYTES: usize>(bytes: &[u8]) -> (u16, u64) {
    let (mut m, mut n) = ([0i16; BLOCK_LANES], [0u32; BLOCK_LANES]);
    for g in bytes.chunks_exact(BYTES * BLOCK_LANES) {
        for i in 0..BLOCK_LANES {
            let a = magnitude_16(g, i * BYTES);
            let c = magnitude_16(g, i * BYTES + 2);
            let (fa, fc) = (a < 0x7c00, c < 0x7c00);
            m[i] = m[i].max(if fa { a } else { 0 }).max(if fc { c } else { 0 });
            n[i] += !(fa & fc) as u32;
        }
    }
    let whole = bytes.len() / (BYTES * BLOCK_LANES) * (BYTES * BLOCK_LANES);
    let mut bad = n.iter().map(|&x| x as u64).sum::<u64>();
    for b in bytes[whole..].chunks_exact(BYTES) {
        let (a, c) = (magnitude_16(b, 0), magnitude_16(b, 2));
        let (fa, fc) = (a < 0x7c00, c < 0x7c00);
        m[0] = m[0].max(if fa { a } else { 0 }).max(if fc { c } else { 0 });
        bad += !(fa & fc) as u64;
    }
    (m.iter().copied().max().unwrap_or(0) as u16, bad)
}

fn scan_blocks(ty: GgmlType, bytes: &[u8]) -> Scan {
    let offs = f16_scale_offsets(ty);
    let size = ty.block_bytes();
    use GgmlType::*;
    let (max_bits, bad) = match ty {
        Q4_0 | IQ4_NL => one_scale::<18, 0>(bytes),
        Q5_0 => one_scale::<22, 0>(bytes),
        Q8_0 | NF4 => one_scale::<34, 0>(bytes),
        Q4_1 => two_scales::<20>(bytes),
        Q5_1 => two_scales::<24>(bytes),
        Q8_1 => two_scales::<36>(bytes),
        Q4_K => two_scales::<144>(bytes),
        Q5_K => two_scales::<176>(bytes),
        Q6_K => one_scale::<210, 208>(bytes),
        F32 | F16 | BF16 | Q8_K => unreachable!("{ty} has no f16 block scales"),
    };
    let mut s = Scan {
        units: (bytes.len() / size) as u64,
        bad_blocks: bad,
        max_abs: half::f16::from_bits(max_bits).to_f32(),
        ..Default::default()
    };
    if bad > 0 {
        for b in bytes.chunks_exact(size) {
            for &o in offs {
                let a = u16::from_le_bytes([b[o], b[o + 1]]) & 0x7fff;
                if a > 0x7c00 {
                    s.nan += 1;
                } else if a == 0x7c00 {
                    s.inf += 1;
                }
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dynamic;

    fn q(ty: GgmlType, x: &[f32]) -> Vec<u8> {
        let mut out = vec![0u8; ty.row_bytes(x.len()).unwrap()];
        dynamic::quantize(ty, x, &mut out).unwrap();
        out
    }

    #[test]
    fn float_types_count_nan_and_inf_and_the_largest_finite_value() {
        let mut x: Vec<f32> = (0..100).map(|i| i as f32 - 50.0).collect();
        x[3] = f32::NAN;
        x[7] = f32::INFINITY;
        x[8] = f32::NEG_INFINITY;
        x[9] = -3e38;
        let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        let s = scan(GgmlType::F32, &bytes);
        assert_eq!((s.units, s.nan, s.inf), (100, 1, 2));
        assert_eq!(s.max_abs, 3e38);
        let h: Vec<u8> = x
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_bits().to_le_bytes())
            .collect();
        let s = scan(GgmlType::F16, &h);
        // -3e38 is -Inf in f16.
        assert_eq!((s.units, s.nan, s.inf, s.max_abs), (100, 1, 3, 50.0));
        let b: Vec<u8> = x
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_bits().to_le_bytes())
            .collect();
        let s = scan(GgmlType::BF16, &b);
        assert_eq!((s.nan, s.inf), (1, 2));
        assert!(s.max_abs > 2.9e38);
        let clean: Vec<u8> = [1.0f32, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert!(!scan(GgmlType::F32, &clean).non_finite());
    }

    #[test]
    fn a_non_finite_scale_poisons_its_block_in_every_block_type() {
        let x: Vec<f32> = (0..1024)
            .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
            .collect();
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q8_0,
            GgmlType::Q4_K,
            GgmlType::Q5_K,
            GgmlType::Q6_K,
            GgmlType::IQ4_NL,
            GgmlType::NF4,
        ] {
            let mut bytes = q(ty, &x);
            let blocks = bytes.len() / ty.block_bytes();
            let clean = scan(ty, &bytes);
            assert_eq!((clean.units, clean.bad_blocks), (blocks as u64, 0), "{ty}");
            assert!(clean.max_abs > 0.0, "{ty}");
            // NaN in the first scale of block 1, +Inf in the last scale of the last block.
            let offs = f16_scale_offsets(ty);
            let bb = ty.block_bytes();
            let o = bb + offs[0];
            bytes[o..o + 2].copy_from_slice(&0x7e00u16.to_le_bytes());
            let o = (blocks - 1) * bb + offs[offs.len() - 1];
            bytes[o..o + 2].copy_from_slice(&0x7c00u16.to_le_bytes());
            let s = scan(ty, &bytes);
            assert_eq!((s.bad_blocks, s.nan, s.inf), (2, 1, 1), "{ty}");
            // The scan agrees with dequantization: the poisoned blocks dequantize to non-finite
            // values.
            let mut out = vec![0f32; x.len()];
            dynamic::dequantize(ty, &bytes, &mut out).unwrap();
            assert!(out.iter().any(|v| !v.is_finite()), "{ty}");
        }
    }

    #[test]
    fn the_lane_scans_agree_with_a_plain_count_at_every_position() {
        // Lengths around the lane groups, the bad value in the groups and in the remainder.
        for n in [1usize, 31, 32, 33, 64, 100, 1000] {
            for at in [0, n / 2, n - 1] {
                for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 3e38] {
                    let mut x: Vec<f32> = (0..n).map(|i| (i as f32 - 7.0) * 0.25).collect();
                    x[at] = bad;
                    let finite_max = |v: &[f32]| {
                        v.iter()
                            .filter(|v| v.is_finite())
                            .fold(0f32, |m, v| m.max(v.abs()))
                    };
                    let count = |v: &[f32]| {
                        (
                            v.iter().filter(|v| v.is_nan()).count() as u64,
                            v.iter().filter(|v| v.is_infinite()).count() as u64,
                        )
                    };
                    let b: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
                    let s = scan(GgmlType::F32, &b);
                    assert_eq!((s.nan, s.inf), count(&x), "f32 n={n} at={at} {bad}");
                    assert_eq!(s.max_abs, finite_max(&x), "f32 n={n} at={at} {bad}");
                    let h: Vec<half::f16> = x.iter().map(|v| half::f16::from_f32(*v)).collect();
                    let hb: Vec<u8> = h.iter().flat_map(|v| v.to_bits().to_le_bytes()).collect();
                    let hx: Vec<f32> = h.iter().map(|v| v.to_f32()).collect();
                    let s = scan(GgmlType::F16, &hb);
                    assert_eq!((s.nan, s.inf), count(&hx), "f16 n={n} at={at} {bad}");
                    assert_eq!(s.max_abs, finite_max(&hx), "f16 n={n} at={at} {bad}");
                    assert_eq!(s.units, n as u64);
                }
            }
        }
    }
}
