//! The interleaved layout ([`Layout::Interleaved16`](super::Layout::Interleaved16)): sixteen rows woven together, so that one
//! 512-bit register holds four consecutive weights of each of 16 rows, and one `vpdpbusd` with a
//! broadcast of four activation bytes adds one product term to each of the 16 rows' dot
//! products at once. Sums then stay in integer lanes for a whole block (or sub-block), and the
//! float work (one conversion and one or two fused operations per block and token) is shared by
//! 16 rows instead of being paid per row. This is the layout of the row-wise VNNI GEMMs
//! (oneDNN's, llama.cpp's repacked Q4_0/Q4_K); the file keeps ggml's blocks.
//!
//! A unit is 16 rows (the last one of a matrix padded with zero rows), stored block after
//! block; a block is 32 weights (Q4_0, Q8_0, IQ4_NL), ggml's 64-weight block (NF4, one scale for
//! two sub-blocks of 32: the same bytes per weight as the file) or a 256-weight super-block
//! (Q4_K, Q5_K, Q6_K), with the 16 rows' header fields side by side, then the levels:
//!
//! | type | header | levels |
//! |---|---|---|
//! | Q4_0, IQ4_NL | 16 f16 scales | 256 B: 4-bit, one sub-block of 32 |
//! | NF4 | 16 f16 scales | 2 x 256 B: 4-bit, two sub-blocks of 32 |
//! | Q4_1 | 16 f16 scales, 16 f16 minimums | 256 B: 4-bit |
//! | Q5_0 | 16 f16 scales | 320 B: 4-bit, then 8 x u64 fifth bits |
//! | Q5_1 | 16 f16 scales, 16 f16 minimums | 320 B: 4-bit, then 8 x u64 fifth bits |
//! | Q8_0 | 16 f16 scales | 512 B: for k-group g: byte 4r + j = element 4g + j of row r, + 128 |
//! | Q4_K | 16 f16 d, 16 f16 dmin, 8 x 16 u8 scales, 8 x 16 u8 minimums | 8 sub-blocks of 32, 4-bit |
//! | Q5_K | as Q4_K | 8 sub-blocks of 32: 4-bit, then 8 x u64 fifth bits |
//! | Q6_K | 16 f16 d, 16 x 16 i8 scales | 16 sub-blocks of 16: 4-bit, then 64 B two-bit tops |
//!
//! | F16 | | for column k: the 16 rows' f16 weights (32 B) |
//!
//! 4-bit levels of a sub-block: for pair p of k-groups, 64 bytes, byte 4r + j holds element
//! 8p + j of row r in its low nibble and element 8p + 4 + j in its high one. Fifth bits, as
//! masks: bit 4r + j of u64 g is element 4g + j's; or, in processes whose fastest kernels are
//! AVX2 ([`fifth_planes`]), as bit planes: bit g of byte 4r + j is element 4g + j's (the same
//! 64 bytes, transposed). Q6_K tops: byte 4r + j holds the top two bits of
//! element 4g + j at bits 2g, g = 0..4. Levels are unsigned: Q4_0's nibbles (offset 8), indices
//! into IQ4_NL's and NF4's tables of levels + 128, Q5_0's (offset 16), Q8_0 + 128, K-quants'
//! own (Q6_K offset 32); Q4_1 and Q5_1 add their minimum instead of an offset.

use super::layout::{get16, row_levels_into, PackedMatrix, IQ4NL_U8, NF4_U8};
use crate::formats::{KVALUES_IQ4NL, NF4_LEVELS};
use crate::GgmlType;

/// Rows per unit.
pub const ROWS: usize = 16;

/// Whether `ty` has an interleaved layout.
pub fn supports(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | IQ4_NL | NF4 | Q4_K | Q5_K | Q6_K | F16
    )
}

/// Geometry of one type's interleaved blocks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Woven {
    /// Weights per block.
    pub block: usize,
    /// Header bytes per block.
    pub header: usize,
    /// Weights per sub-block (one scale).
    pub sub: usize,
    /// Level bytes per sub-block.
    pub sub_bytes: usize,
}

impl Woven {
    pub(crate) const fn of(ty: GgmlType) -> Woven {
        const fn w(block: usize, header: usize, sub: usize, sub_bytes: usize) -> Woven {
            Woven {
                block,
                header,
                sub,
                sub_bytes,
            }
        }
        match ty {
            GgmlType::Q8_0 => w(32, 32, 32, 512),
            GgmlType::Q4_1 => w(32, 64, 32, 256),
            GgmlType::Q5_0 => w(32, 32, 32, 320),
            GgmlType::Q5_1 => w(32, 64, 32, 320),
            GgmlType::Q4_K => w(256, 320, 32, 256),
            GgmlType::Q5_K => w(256, 320, 32, 320),
            GgmlType::Q6_K => w(256, 288, 16, 192),
            GgmlType::NF4 => w(64, 32, 32, 256),
            _ => w(32, 32, 32, 256),
        }
    }

    /// Sub-blocks (one scale each in K-quants; NF4's two share the block's) per block.
    pub(crate) const fn subs(self) -> usize {
        self.block / self.sub
    }

    /// Bytes per block: header and levels.
    pub(crate) const fn block_bytes(self) -> usize {
        self.header + self.subs() * self.sub_bytes
    }

    /// The loop bounds of a product with rows of `cols` weights of `ty` against activations
    /// padded to `kp`: blocks per row (F16: columns), and activation bytes per token (int8
    /// levels; F16: floats), which size the kernels' token blocks.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // only the x86 kernels
    pub(crate) fn product_geometry(ty: GgmlType, cols: usize, kp: usize) -> (usize, usize) {
        if ty == GgmlType::F16 {
            (cols, 4 * kp)
        } else {
            (cols / Woven::of(ty).block, kp)
        }
    }
}

/// Bytes of one unit of rows of `cols` weights.
pub fn unit_bytes(ty: GgmlType, cols: usize) -> usize {
    if ty == GgmlType::F16 {
        return cols * 2 * ROWS;
    }
    let g = Woven::of(ty);
    cols / g.block * g.block_bytes()
}

/// The level offset of the 32-weight types without a minimum: w = d * (u - offset).
pub(crate) const fn offset(ty: GgmlType) -> i32 {
    match ty {
        GgmlType::Q4_0 => 8,
        GgmlType::Q5_0 => 16,
        GgmlType::Q4_1 | GgmlType::Q5_1 => 0,
        _ => 128,
    }
}

/// Whether a 32-weight type's header carries f16 minimums after its scales (w = d * u + m).
pub(crate) const fn has_min(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1)
}

/// Whether levels carry a fifth bit.
pub(crate) const fn has_fifth(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q5_K)
}

/// Whether this process packs fifth bits as bit planes rather than masks (see the module
/// notes): where the AVX2 kernels are the fastest, the only ones that read planes. AVX-512
/// turns a 64-bit mask into 64 bytes in one instruction; AVX2 needs five per 32 bytes, but
/// from a plane only a shift and a mask. Fixed for the process, so packing and reading agree.
pub(crate) fn fifth_planes() -> bool {
    super::Kernels::best() == super::Kernels::Avx2
}

/// Writes row `r`'s header fields of one block: for the 32-weight types the f16 scale bits of
/// block `b`; for K-quants their super-block `b`'s.
fn put_header(ty: GgmlType, src: &[u8], b: usize, r: usize, hdr: &mut [u8]) {
    use crate::formats::*;
    let put16 = |hdr: &mut [u8], i: usize, v: half::f16| {
        hdr[2 * i..2 * i + 2].copy_from_slice(&v.to_le_bytes())
    };
    fn d_of<B: bytemuck::Pod>(src: &[u8], b: usize, d: impl Fn(&B) -> half::f16) -> half::f16 {
        d(&bytemuck::cast_slice::<u8, B>(src)[b])
    }
    match ty {
        GgmlType::Q4_0 => put16(hdr, r, d_of::<BlockQ4_0>(src, b, |k| k.d)),
        GgmlType::Q5_0 => put16(hdr, r, d_of::<BlockQ5_0>(src, b, |k| k.d)),
        GgmlType::Q4_1 => {
            put16(hdr, r, d_of::<BlockQ4_1>(src, b, |k| k.d));
            put16(&mut hdr[32..], r, d_of::<BlockQ4_1>(src, b, |k| k.m));
        }
        GgmlType::Q5_1 => {
            put16(hdr, r, d_of::<BlockQ5_1>(src, b, |k| k.d));
            put16(&mut hdr[32..], r, d_of::<BlockQ5_1>(src, b, |k| k.m));
        }
        GgmlType::Q8_0 => put16(hdr, r, d_of::<BlockQ8_0>(src, b, |k| k.d)),
        GgmlType::IQ4_NL => put16(hdr, r, d_of::<BlockIQ4NL>(src, b, |k| k.d)),
        GgmlType::NF4 => put16(hdr, r, d_of::<BlockNF4>(src, b, |k| k.d)),
        GgmlType::Q4_K | GgmlType::Q5_K => {
            let (d, dmin, sc) = super::layout::k_super_block_header(ty, src, b);
            put16(hdr, r, d);
            put16(&mut hdr[32..], r, dmin);
            for j in 0..8 {
                let (s, m) = k_scale_min(j, &sc);
                hdr[64 + 16 * j + r] = s;
                hdr[192 + 16 * j + r] = m;
            }
        }
        GgmlType::Q6_K => {
            let k = &bytemuck::cast_slice::<u8, BlockQ6K>(src)[b];
            put16(hdr, r, k.d);
            for (s, &v) in k.scales.iter().enumerate() {
                hdr[32 + 16 * s + r] = v as u8;
            }
        }
        other => panic!("{other} has no interleaved layout"),
    }
}

/// Byte and bit of element `e` (of a sub-block) of row `r` in the 4-bit part of the levels.
fn nibble_at(e: usize, r: usize) -> (usize, u32) {
    (
        64 * (e / 8) + 4 * r + e % 4,
        if (e / 4) % 2 == 1 { 4 } else { 0 },
    )
}

/// Packs up to 16 rows of ggml blocks (`src`, `cols` weights each) into one unit (`dst`).
pub fn pack_unit(ty: GgmlType, cols: usize, src: &[u8], dst: &mut [u8]) {
    let src_row = ty.row_bytes(cols).expect("a block type");
    assert!(supports(ty), "{ty} has no interleaved layout");
    assert_eq!(dst.len(), unit_bytes(ty, cols), "interleaved unit length");
    assert!(
        src.len().is_multiple_of(src_row) && src.len() <= ROWS * src_row,
        "{ty} unit: {} source bytes for rows of {src_row}",
        src.len()
    );
    dst.fill(0);
    if ty == GgmlType::F16 {
        // Column k of the 16 rows: 16 f16 values side by side, one conversion to a register.
        // Written in order, column by column (a gather of 16 reads per 32-byte store).
        let rows: Vec<&[u8]> = src.chunks_exact(src_row).collect();
        for (k, col) in dst.chunks_exact_mut(2 * ROWS).enumerate() {
            for (r, row) in rows.iter().enumerate() {
                col[2 * r] = row[2 * k];
                col[2 * r + 1] = row[2 * k + 1];
            }
        }
        return;
    }
    let g = Woven::of(ty);
    let bb = g.block_bytes();
    let planes = fifth_planes();
    let mut u = Vec::new();
    for (r, row) in src.chunks_exact(src_row).enumerate() {
        row_levels_into(ty, row, cols, &mut u);
        for b in 0..cols / g.block {
            let blk = &mut dst[b * bb..(b + 1) * bb];
            put_header(ty, row, b, r, &mut blk[..g.header]);
            for (s, sub) in blk[g.header..].chunks_exact_mut(g.sub_bytes).enumerate() {
                let first = b * g.block + s * g.sub;
                weave_levels(ty, &u[first..first + g.sub], r, sub, planes);
            }
        }
    }
}

/// Writes row `r`'s levels `lv` of one sub-block into its woven bytes `sub` (whose other rows'
/// bits are left alone; fifth bits as planes or masks, [`fifth_planes`]): a loop per k-group
/// rather than per weight, since packing runs over every weight of the model at load.
fn weave_levels(ty: GgmlType, lv: &[u8], r: usize, sub: &mut [u8], planes: bool) {
    if ty == GgmlType::Q8_0 {
        for (kg, q) in lv.chunks_exact(4).enumerate() {
            sub[64 * kg + 4 * r..64 * kg + 4 * r + 4].copy_from_slice(q);
        }
        return;
    }
    // Four levels as one little-endian word: byte j is level at + j. The bit fields below are
    // built four bytes at a time (no field crosses a byte).
    let word = |at: usize| u32::from_le_bytes([lv[at], lv[at + 1], lv[at + 2], lv[at + 3]]);
    for p in 0..lv.len() / 8 {
        // Byte j: level 8p + j low, level 8p + 4 + j high.
        let v = (word(8 * p) & 0x0F0F_0F0F) | (word(8 * p + 4) & 0x0F0F_0F0F) << 4;
        sub[64 * p + 4 * r..64 * p + 4 * r + 4].copy_from_slice(&v.to_le_bytes());
    }
    if has_fifth(ty) && planes {
        // Byte 4r + j, bit kg: the fifth bit of level 4kg + j.
        let bits =
            (0..lv.len() / 4).fold(0u32, |m, kg| m | ((word(4 * kg) >> 4) & 0x0101_0101) << kg);
        sub[256 + 4 * r..256 + 4 * r + 4].copy_from_slice(&bits.to_le_bytes());
    } else if has_fifth(ty) {
        // Bits 4r..4r+4 of u64 kg: half of byte r / 2. The multiply gathers bit 0 of each of
        // the four bytes into bits 24..28 (the other partial products fall elsewhere).
        for kg in 0..lv.len() / 4 {
            let bits = (word(4 * kg) >> 4) & 0x0101_0101;
            let nib = (bits.wrapping_mul(0x0102_0408) >> 24) as u8 & 15;
            sub[256 + 8 * kg + r / 2] |= nib << (4 * (r % 2));
        }
    } else if ty == GgmlType::Q6_K {
        // Byte j: the tops of levels j, 4 + j, 8 + j, 12 + j at bits 0, 2, 4, 6.
        let tops = (0..4).fold(0u32, |m, kg| {
            m | ((word(4 * kg) >> 4) & 0x0303_0303) << (2 * kg)
        });
        sub[128 + 4 * r..128 + 4 * r + 4].copy_from_slice(&tops.to_le_bytes());
    }
}

/// Row `r`'s levels as stored (indices for the table types), in element order.
fn stored_levels(w: &PackedMatrix, r: usize) -> Vec<u8> {
    let ty = w.ty();
    assert!(r < w.rows(), "row {r} of {}", w.rows());
    let unit = w.unit(r / ROWS);
    let i = r % ROWS;
    let g = Woven::of(ty);
    let planes = fifth_planes();
    let mut u = vec![0u8; w.cols()];
    for (b, blk) in unit.chunks_exact(g.block_bytes()).enumerate() {
        for (s, sub) in blk[g.header..].chunks_exact(g.sub_bytes).enumerate() {
            let first = b * g.block + s * g.sub;
            for (e, v) in u[first..first + g.sub].iter_mut().enumerate() {
                if ty == GgmlType::Q8_0 {
                    *v = sub[64 * (e / 4) + 4 * i + e % 4];
                    continue;
                }
                let (at, shift) = nibble_at(e, i);
                *v = (sub[at] >> shift) & 15;
                let bit = 4 * i + e % 4;
                if has_fifth(ty) && planes {
                    *v |= ((sub[256 + bit] >> (e / 4)) & 1) << 4;
                } else if has_fifth(ty) {
                    *v |= ((sub[256 + 8 * (e / 4) + bit / 8] >> (bit % 8)) & 1) << 4;
                } else if ty == GgmlType::Q6_K {
                    *v |= ((sub[128 + bit] >> (2 * (e / 4))) & 3) << 4;
                }
            }
        }
    }
    u
}

/// Row `r` of a 32-weight type or F16 as floats: exactly ggml's dequantization of the original
/// blocks (K-quants go through `unpack_row`, as in the row layout).
pub(crate) fn dequantize_row(w: &PackedMatrix, r: usize, out: &mut [f32]) {
    let ty = w.ty();
    if ty == GgmlType::F16 {
        let unit = w.unit(r / ROWS);
        for (k, o) in out.iter_mut().enumerate() {
            *o = get16(&unit[32 * k..], r % ROWS);
        }
        return;
    }
    let u = stored_levels(w, r);
    let unit = w.unit(r / ROWS);
    let g = Woven::of(ty);
    let bb = g.block_bytes();
    for (i, o) in out.iter_mut().enumerate() {
        let d = get16(&unit[i / g.block * bb..], r % ROWS);
        *o = match ty {
            GgmlType::Q8_0 => (u[i] as i32 - 128) as f32 * d,
            GgmlType::Q4_0 => (u[i] as i32 - 8) as f32 * d,
            GgmlType::Q5_0 => (u[i] as i32 - 16) as f32 * d,
            GgmlType::Q4_1 | GgmlType::Q5_1 => {
                u[i] as f32 * d + get16(&unit[i / g.block * bb + 32..], r % ROWS)
            }
            GgmlType::IQ4_NL => d * KVALUES_IQ4NL[u[i] as usize] as f32,
            GgmlType::NF4 => d * NF4_LEVELS[u[i] as usize],
            other => panic!("{other} has no interleaved layout"),
        };
    }
}

/// Row `r` as the kernels multiply it (see `layout::unpack_row`): levels, the scale of every
/// 16 weights, the bias of every 32 (Q6_K: of every 16); zeros past the row.
pub(crate) fn unpack_row(
    w: &PackedMatrix,
    r: usize,
    u: &mut [u8],
    scale: &mut [f32],
    bias: &mut [f32],
) {
    let ty = w.ty();
    assert!(ty != GgmlType::F16, "F16 has no levels");
    u.fill(0);
    scale.fill(0.0);
    bias.fill(0.0);
    for (o, &v) in u.iter_mut().zip(&stored_levels(w, r)) {
        *o = match ty {
            GgmlType::IQ4_NL => IQ4NL_U8[v as usize],
            GgmlType::NF4 => NF4_U8[v as usize],
            _ => v,
        };
    }
    let unit = w.unit(r / ROWS);
    let i = r % ROWS;
    let g = Woven::of(ty);
    for (b, blk) in unit.chunks_exact(g.block_bytes()).enumerate() {
        match ty {
            GgmlType::Q4_K | GgmlType::Q5_K => {
                let (d, dmin) = (get16(blk, i), get16(&blk[32..], i));
                for j in 0..8 {
                    let a = d * blk[64 + 16 * j + i] as f32;
                    scale[16 * b + 2 * j] = a;
                    scale[16 * b + 2 * j + 1] = a;
                    bias[8 * b + j] = -dmin * blk[192 + 16 * j + i] as f32;
                }
            }
            GgmlType::Q6_K => {
                let d = get16(blk, i);
                for s in 0..16 {
                    let a = d * (blk[32 + 16 * s + i] as i8) as f32;
                    scale[16 * b + s] = a;
                    bias[16 * b + s] = -32.0 * a;
                }
            }
            _ => {
                let d = get16(blk, i);
                let a = if ty == GgmlType::NF4 {
                    d * (1.0 / 127.0)
                } else {
                    d
                };
                let bias_b = if has_min(ty) {
                    get16(&blk[32..], i)
                } else {
                    -offset(ty) as f32 * a
                };
                // Every 32-weight sub-block of the block (NF4: two) has the block's scale.
                let subs = g.subs();
                for s in subs * b..subs * (b + 1) {
                    scale[2 * s] = a;
                    scale[2 * s + 1] = a;
                    bias[s] = bias_b;
                }
            }
        }
    }
}
