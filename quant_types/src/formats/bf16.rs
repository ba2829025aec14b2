//! BF16: brain floats (the top 16 bits of an f32). The dot product takes f32 activations.

use crate::fp::{bf16_to_f32, f32_to_bf16};
use crate::{check_dot, check_row, BlockF32, BlockFormat, GgmlType, SimdPath};
use half::bf16;

#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockBF16(pub bf16);

impl BlockFormat for BlockBF16 {
    const TYPE: GgmlType = GgmlType::BF16;
    const BLOCK_ELEMS: usize = 1;
    type Act = BlockF32;

    fn quantize_row(src: &[f32], dst: &mut [Self]) {
        check_row::<Self>(src.len(), dst.len());
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = BlockBF16(f32_to_bf16(s));
        }
    }

    fn dequantize_row(src: &[Self], dst: &mut [f32]) {
        check_row::<Self>(dst.len(), src.len());
        for (d, s) in dst.iter_mut().zip(src) {
            *d = bf16_to_f32(s.0);
        }
    }

    fn vec_dot_scalar(w: &[Self], a: &[BlockF32]) -> f32 {
        check_dot::<Self>(w.len(), a.len());
        w.iter().zip(a).map(|(x, y)| bf16_to_f32(x.0) * y.0).sum()
    }

    fn vec_dot_on(path: SimdPath, w: &[Self], a: &[BlockF32]) -> f32 {
        check_dot::<Self>(w.len(), a.len());
        crate::arch::dispatch!(path, bf16, w, a, Self::vec_dot_scalar(w, a))
    }
}
