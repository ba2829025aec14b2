//! F32: plain floats, one per "block".

use crate::{check_dot, check_row, BlockFormat, GgmlType, SimdPath};

/// An f32 weight; a newtype so that the trait can name it a block.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockF32(pub f32);

impl BlockFormat for BlockF32 {
    const TYPE: GgmlType = GgmlType::F32;
    const BLOCK_ELEMS: usize = 1;
    type Act = BlockF32;

    fn quantize_row(src: &[f32], dst: &mut [Self]) {
        check_row::<Self>(src.len(), dst.len());
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = BlockF32(s);
        }
    }

    fn dequantize_row(src: &[Self], dst: &mut [f32]) {
        check_row::<Self>(dst.len(), src.len());
        for (d, s) in dst.iter_mut().zip(src) {
            *d = s.0;
        }
    }

    fn vec_dot_scalar(w: &[Self], a: &[BlockF32]) -> f32 {
        check_dot::<Self>(w.len(), a.len());
        w.iter().zip(a).map(|(x, y)| x.0 * y.0).sum()
    }

    fn vec_dot_on(path: SimdPath, w: &[Self], a: &[BlockF32]) -> f32 {
        check_dot::<Self>(w.len(), a.len());
        crate::arch::dispatch!(path, f32, w, a, Self::vec_dot_scalar(w, a))
    }
}
