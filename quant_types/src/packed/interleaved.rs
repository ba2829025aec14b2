//! The interleaved layout ([`Layout::Interleaved16`]): sixteen rows woven together, so that one
//! 512-bit register holds four consecutive weights of each of 16 rows, and one `vpdpbusd` with a
//! broadcast of four activation bytes adds one product term to each of the 16 rows' dot
//! products at once. Sums then stay in integer lanes for a whole 32-weight block, and the
//! float work (one conversion, one scale product, one fused add per block and token) is shared
//! by 16 rows instead of being paid per row. This is the layout of the row-wise VNNI GEMMs
//! (oneDNN's, llama.cpp's repacked Q4_0); the file keeps ggml's blocks.
//!
//! A unit is 16 rows (the last one of a matrix padded with zero rows). For every 32-weight
//! block of the rows, in order:
//!
//! | part | bytes | content |
//! |---|---|---|
//! | scales | 32 | the 16 rows' f16 block scales (NF4: the scale of the 64-block holding it) |
//! | levels, Q8_0 | 512 | for k-group g = 0..8: byte 4r + j = level of row r, element 4g + j, + 128 |
//! | levels, 4-bit | 256 | for pair p = 0..4: byte 4r + j = element 8p + j (low nibble) and element 8p + 4 + j (high nibble) of row r |
//!
//! 4-bit levels are Q4_0's nibbles (offset 8) or indices into IQ4_NL's and NF4's tables of
//! levels + 128; every level u stands for w = d * (u - offset) (NF4: d / 127 * (u - 128)).

use super::layout::{get16, row_levels, Layout, PackedMatrix, IQ4NL_U8, NF4_U8};
use crate::formats::{KVALUES_IQ4NL, NF4_LEVELS};
use crate::GgmlType;

/// Rows per unit.
pub const ROWS: usize = 16;

/// Whether `ty` has an interleaved layout.
pub fn supports(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(ty, Q4_0 | Q8_0 | IQ4_NL | NF4)
}

/// Bytes of levels per 32-weight block of a unit.
pub(crate) fn level_bytes(ty: GgmlType) -> usize {
    if ty == GgmlType::Q8_0 {
        512
    } else {
        256
    }
}

/// Bytes per 32-weight block of a unit: scales, then levels.
pub(crate) fn block_bytes(ty: GgmlType) -> usize {
    32 + level_bytes(ty)
}

/// Bytes of one unit of rows of `cols` weights.
pub fn unit_bytes(ty: GgmlType, cols: usize) -> usize {
    cols / 32 * block_bytes(ty)
}

/// The level offset: w = d * (u - offset).
pub(crate) const fn offset(ty: GgmlType) -> i32 {
    match ty {
        GgmlType::Q4_0 => 8,
        _ => 128,
    }
}

/// f16 scale bits of every 32-weight block of a ggml row.
fn block_scales(ty: GgmlType, src: &[u8]) -> Vec<u16> {
    use crate::formats::*;
    fn bits<B: bytemuck::Pod>(src: &[u8], d: impl Fn(&B) -> half::f16, per: usize) -> Vec<u16> {
        let blocks: &[B] = bytemuck::cast_slice(src);
        blocks
            .iter()
            .flat_map(|b| std::iter::repeat_n(d(b).to_bits(), per))
            .collect()
    }
    match ty {
        GgmlType::Q4_0 => bits::<BlockQ4_0>(src, |b| b.d, 1),
        GgmlType::Q8_0 => bits::<BlockQ8_0>(src, |b| b.d, 1),
        GgmlType::IQ4_NL => bits::<BlockIQ4NL>(src, |b| b.d, 1),
        GgmlType::NF4 => bits::<BlockNF4>(src, |b| b.d, 2),
        other => panic!("{other} has no interleaved layout"),
    }
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
    let (bb, lb) = (block_bytes(ty), level_bytes(ty));
    for (r, row) in src.chunks_exact(src_row).enumerate() {
        let u = row_levels(ty, row, cols);
        let scales = block_scales(ty, row);
        for (b, &d) in scales.iter().enumerate() {
            let blk = &mut dst[b * bb..(b + 1) * bb];
            blk[2 * r..2 * r + 2].copy_from_slice(&d.to_le_bytes());
            let levels = &mut blk[32..32 + lb];
            let u = &u[32 * b..32 * b + 32];
            for (e, &v) in u.iter().enumerate() {
                let j = e % 4;
                if ty == GgmlType::Q8_0 {
                    levels[64 * (e / 4) + 4 * r + j] = v;
                } else {
                    let (p, high) = (e / 8, (e / 4) % 2 == 1);
                    levels[64 * p + 4 * r + j] |= if high { v << 4 } else { v };
                }
            }
        }
    }
}

/// Row `r`'s stored levels (indices for the table types) and f16 scale of every 32 weights.
fn stored_row(w: &PackedMatrix, r: usize) -> (Vec<u8>, Vec<f32>) {
    let ty = w.ty();
    assert!(r < w.rows(), "row {r} of {}", w.rows());
    let unit = w.unit(r / ROWS);
    let (i, bb) = (r % ROWS, block_bytes(ty));
    let mut u = vec![0u8; w.cols()];
    let mut d = vec![0f32; w.cols() / 32];
    for (b, blk) in unit.chunks_exact(bb).enumerate() {
        d[b] = get16(blk, i);
        let levels = &blk[32..];
        for e in 0..32 {
            let j = e % 4;
            u[32 * b + e] = if ty == GgmlType::Q8_0 {
                levels[64 * (e / 4) + 4 * i + j]
            } else {
                let v = levels[64 * (e / 8) + 4 * i + j];
                if (e / 4) % 2 == 1 {
                    v >> 4
                } else {
                    v & 15
                }
            };
        }
    }
    (u, d)
}

/// Row `r` as floats: exactly ggml's dequantization of the original blocks.
pub(crate) fn dequantize_row(w: &PackedMatrix, r: usize, out: &mut [f32]) {
    let (u, d) = stored_row(w, r);
    for (i, o) in out.iter_mut().enumerate() {
        let d = d[i / 32];
        *o = match w.ty() {
            GgmlType::Q8_0 => (u[i] as i32 - 128) as f32 * d,
            GgmlType::Q4_0 => (u[i] as i32 - 8) as f32 * d,
            GgmlType::IQ4_NL => d * KVALUES_IQ4NL[u[i] as usize] as f32,
            GgmlType::NF4 => d * NF4_LEVELS[u[i] as usize],
            other => panic!("{other} has no interleaved layout"),
        };
    }
}

/// Row `r` as the kernels multiply it (see `layout::unpack_row`): levels, the scale of every
/// 16 weights, the bias of every 32 (`-offset * scale`); zeros past the row.
pub(crate) fn unpack_row(
    w: &PackedMatrix,
    r: usize,
    u: &mut [u8],
    scale: &mut [f32],
    bias: &mut [f32],
) {
    let ty = w.ty();
    u.fill(0);
    scale.fill(0.0);
    bias.fill(0.0);
    let (levels, d) = stored_row(w, r);
    for (o, &v) in u.iter_mut().zip(&levels) {
        *o = match ty {
            GgmlType::IQ4_NL => IQ4NL_U8[v as usize],
            GgmlType::NF4 => NF4_U8[v as usize],
            _ => v,
        };
    }
    let off = offset(ty) as f32;
    for (b, &d) in d.iter().enumerate() {
        let a = if ty == GgmlType::NF4 {
            d * (1.0 / 127.0)
        } else {
            d
        };
        scale[2 * b] = a;
        scale[2 * b + 1] = a;
        bias[b] = -off * a;
    }
}

impl Layout {
    /// Whether products on this layout come out token-major natively (see
    /// `super::gemm_token_major`).
    pub fn token_major(self) -> bool {
        self == Layout::Interleaved16
    }
}
