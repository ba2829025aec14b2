//! The block operations keyed by a [`GgmlType`] over raw bytes, for code that learns the type
//! from a file. Lengths are checked and reported as errors rather than panics.

use crate::formats::*;
use crate::{BlockFormat, GgmlType, SimdPath};
use std::fmt;

/// A length that does not fit the type's blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuantError {
    /// The element count is not a whole number of blocks.
    NotWholeBlocks {
        ty: GgmlType,
        elems: usize,
        block: usize,
    },
    /// A byte buffer's length disagrees with the element count.
    BufferSize {
        ty: GgmlType,
        elems: usize,
        expected: usize,
        got: usize,
    },
}

impl fmt::Display for QuantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuantError::NotWholeBlocks { ty, elems, block } => write!(
                f,
                "{elems} elements are not a whole number of {ty} blocks of {block}"
            ),
            QuantError::BufferSize {
                ty,
                elems,
                expected,
                got,
            } => write!(
                f,
                "{elems} elements of {ty} take {expected} bytes, the buffer has {got}"
            ),
        }
    }
}

impl std::error::Error for QuantError {}

/// Runs `$body` with `$B` bound to the block type of `$ty`.
macro_rules! with_block {
    ($ty:expr, $B:ident => $body:expr) => {
        match $ty {
            GgmlType::F32 => {
                type $B = BlockF32;
                $body
            }
            GgmlType::F16 => {
                type $B = BlockF16;
                $body
            }
            GgmlType::BF16 => {
                type $B = BlockBF16;
                $body
            }
            GgmlType::Q4_0 => {
                type $B = BlockQ4_0;
                $body
            }
            GgmlType::Q4_1 => {
                type $B = BlockQ4_1;
                $body
            }
            GgmlType::Q5_0 => {
                type $B = BlockQ5_0;
                $body
            }
            GgmlType::Q5_1 => {
                type $B = BlockQ5_1;
                $body
            }
            GgmlType::Q8_0 => {
                type $B = BlockQ8_0;
                $body
            }
            GgmlType::Q8_1 => {
                type $B = BlockQ8_1;
                $body
            }
            GgmlType::Q4_K => {
                type $B = BlockQ4K;
                $body
            }
            GgmlType::Q5_K => {
                type $B = BlockQ5K;
                $body
            }
            GgmlType::Q6_K => {
                type $B = BlockQ6K;
                $body
            }
            GgmlType::Q8_K => {
                type $B = BlockQ8K;
                $body
            }
            GgmlType::IQ4_NL => {
                type $B = BlockIQ4NL;
                $body
            }
            GgmlType::NF4 => {
                type $B = BlockNF4;
                $body
            }
        }
    };
}

/// Bytes of `elems` elements of `ty`, checking that they fill whole blocks.
pub fn bytes_for(ty: GgmlType, elems: usize) -> Result<usize, QuantError> {
    ty.row_bytes(elems).ok_or(QuantError::NotWholeBlocks {
        ty,
        elems,
        block: ty.block_elems(),
    })
}

fn check(ty: GgmlType, elems: usize, bytes: usize) -> Result<(), QuantError> {
    let expected = bytes_for(ty, elems)?;
    if expected != bytes {
        return Err(QuantError::BufferSize {
            ty,
            elems,
            expected,
            got: bytes,
        });
    }
    Ok(())
}

/// Quantizes `src` into `dst`, which must be exactly the size of `src.len()` elements of `ty`.
/// Any byte alignment of `dst` is accepted.
pub fn quantize(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    check(ty, src.len(), dst.len())?;
    with_block!(ty, B => {
        match bytemuck::try_cast_slice_mut::<u8, B>(dst) {
            Ok(blocks) => B::quantize_row(src, blocks),
            Err(_) => {
                let mut blocks = vec![<B as bytemuck::Zeroable>::zeroed(); src.len() / B::BLOCK_ELEMS];
                B::quantize_row(src, &mut blocks);
                dst.copy_from_slice(bytemuck::cast_slice(&blocks));
            }
        }
    });
    Ok(())
}

/// Dequantizes `src` (bytes of `dst.len()` elements of `ty`) into `dst`.
pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    check(ty, dst.len(), src.len())?;
    with_block!(ty, B => {
        match bytemuck::try_cast_slice::<u8, B>(src) {
            Ok(blocks) => B::dequantize_row(blocks, dst),
            Err(_) => {
                let blocks: Vec<B> = bytemuck::pod_collect_to_vec(src);
                B::dequantize_row(&blocks, dst);
            }
        }
    });
    Ok(())
}

/// The activation type a weight type's dot product consumes.
pub fn activation_type(ty: GgmlType) -> GgmlType {
    with_block!(ty, B => <<B as BlockFormat>::Act as BlockFormat>::TYPE)
}

/// Quantizes an activation row for products with weights of `ty`: blocks of
/// [`activation_type`]`(ty)`, rounded as ggml's CPU backend rounds activations
/// ([`BlockFormat::quantize_act_row`]).
pub fn quantize_acts_for(ty: GgmlType, src: &[f32]) -> Result<Vec<u8>, QuantError> {
    let act = activation_type(ty);
    let mut out = vec![0u8; bytes_for(act, src.len())?];
    with_block!(act, A => {
        let mut blocks = vec![<A as bytemuck::Zeroable>::zeroed(); src.len() / A::BLOCK_ELEMS];
        A::quantize_act_row(src, &mut blocks);
        out.copy_from_slice(bytemuck::cast_slice(&blocks));
    });
    Ok(out)
}

/// Dot product of a weight row (`w`, bytes of `ty`) with an activation row already quantized to
/// [`activation_type`]`(ty)` (`a`), over `n` elements, on `path`.
pub fn vec_dot(
    ty: GgmlType,
    path: SimdPath,
    n: usize,
    w: &[u8],
    a: &[u8],
) -> Result<f32, QuantError> {
    check(ty, n, w.len())?;
    check(activation_type(ty), n, a.len())?;
    Ok(with_block!(ty, B => {
        type A = <B as BlockFormat>::Act;
        let wb: std::borrow::Cow<[B]> = match bytemuck::try_cast_slice::<u8, B>(w) {
            Ok(s) => s.into(),
            Err(_) => bytemuck::pod_collect_to_vec::<u8, B>(w).into(),
        };
        let ab: std::borrow::Cow<[A]> = match bytemuck::try_cast_slice::<u8, A>(a) {
            Ok(s) => s.into(),
            Err(_) => bytemuck::pod_collect_to_vec::<u8, A>(a).into(),
        };
        B::vec_dot_on(path, &wb, &ab)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_checked() {
        let src = [0.5f32; 48];
        let mut dst = vec![0u8; 100];
        assert!(matches!(
            quantize(GgmlType::Q8_0, &src, &mut dst),
            Err(QuantError::NotWholeBlocks { .. })
        ));
        let src = [0.5f32; 64];
        assert!(matches!(
            quantize(GgmlType::Q8_0, &src, &mut dst),
            Err(QuantError::BufferSize { expected: 68, .. })
        ));
    }

    #[test]
    fn misaligned_buffers_give_the_same_bytes() {
        let src: Vec<f32> = (0..256).map(|i| (i as f32 * 0.37).sin()).collect();
        for ty in GgmlType::ALL {
            let n = bytes_for(ty, 256).unwrap();
            let mut aligned = vec![0u8; n];
            quantize(ty, &src, &mut aligned).unwrap();
            let mut storage = vec![0u8; n + 1];
            quantize(ty, &src, &mut storage[1..]).unwrap();
            assert_eq!(aligned, &storage[1..], "{ty}");
            let mut y0 = vec![0.0; 256];
            let mut y1 = vec![0.0; 256];
            dequantize(ty, &aligned, &mut y0).unwrap();
            dequantize(ty, &storage[1..], &mut y1).unwrap();
            assert_eq!(y0, y1, "{ty}");
        }
    }
}
