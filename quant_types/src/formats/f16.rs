//! F16: IEEE half floats. The dot product takes f32 activations (ggml converts activations to
//! f16 instead; keeping them in f32 costs nothing measurable at matrix-vector sizes and avoids a
//! rounding).

use crate::fp::{f16_to_f32, f32_to_f16};
use crate::{check_dot, check_row, BlockF32, BlockFormat, GgmlType, SimdPath};
use half::f16;

#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockF16(pub f16);

impl BlockFormat for BlockF16 {
    const TYPE: GgmlType = GgmlType::F16;
    const BLOCK_ELEMS: usize = 1;
    type Act = BlockF32;

    fn quantize_row(src: &[f32], dst: &mut [Self]) {
        check_row::<Self>(src.len(), dst.len());
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = BlockF16(f32_to_f16(s));
        }
    }

    fn dequantize_row(src: &[Self], dst: &mut [f32]) {
        check_row::<Self>(dst.len(), src.len());
        for (d, s) in dst.iter_mut().zip(src) {
            *d = f16_to_f32(s.0);
        }
    }

    fn vec_dot_scalar(w: &[Self], a: &[BlockF32]) -> f32 {
        check_dot::<Self>(w.len(), a.len());
        w.iter().zip(a).map(|(x, y)| f16_to_f32(x.0) * y.0).sum()
    }

    fn vec_dot_on(path: SimdPath, w: &[Self], a: &[BlockF32]) -> f32 {
        check_dot::<Self>(w.len(), a.len());
        crate::arch::dispatch!(path, f16, w, a, Self::vec_dot_scalar(w, a))
    }
}
