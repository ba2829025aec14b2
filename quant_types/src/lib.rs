//! Block formats of llama.cpp's ggml, plus NF4, with nothing else in the way: for every type its
//! block layout, a reference quantizer that writes the same bytes as ggml's reference path
//! (`ggml_quantize_chunk` without an importance matrix), a dequantizer, and dot products against
//! the activation block ggml pairs it with, as a scalar reference and as SIMD kernels.
//!
//! The crate does no I/O. Higher layers see two faces of it:
//! - [`BlockFormat`]: the typed trait, one implementation per block type (see [`formats`]);
//! - [`dynamic`]: the same operations keyed by a [`GgmlType`] over raw bytes, for code that reads
//!   the type from a file.
//!
//! Dimension convention, as in ggml: a row is the contiguous, innermost dimension (`ne[0]`), and
//! blocks run along it; a row's length must be a multiple of the type's block length.

pub mod dynamic;
pub mod formats;
pub mod fp;
mod ggml_search;
pub mod ggml_type;
pub mod packed;
pub mod scan;
pub mod simd;

mod arch;

pub use formats::{
    BlockBF16, BlockF16, BlockF32, BlockIQ4NL, BlockNF4, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K,
    BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K, BlockQ8_0, BlockQ8_1,
};
pub use ggml_type::{GgmlType, TypeInfo, NF4_TYPE_ID};
pub use simd::SimdPath;

/// Super-block length of the K-quants (ggml's `QK_K`).
pub const QK_K: usize = 256;

/// One block format: its geometry, its reference quantizer and dequantizer, and its dot product
/// against the activation format that ggml pairs with it (`vec_dot_type`).
///
/// Slices passed in must hold whole blocks: `src.len() == dst.len() * BLOCK_ELEMS` for
/// quantize and dequantize, and `w.len() * BLOCK_ELEMS == a.len() * Act::BLOCK_ELEMS` for dot
/// products. A mismatch is a programming error and panics before any memory is touched.
pub trait BlockFormat: bytemuck::Pod + Send + Sync + 'static {
    /// The ggml type id written in GGUF tensor infos.
    const TYPE: GgmlType;
    /// Weights per block.
    const BLOCK_ELEMS: usize;
    /// Bytes per block, as stored in a file.
    const BLOCK_BYTES: usize = std::mem::size_of::<Self>();

    /// The activation block this type's dot product consumes.
    type Act: BlockFormat;

    /// Quantizes whole blocks, writing exactly the bytes ggml's reference quantizer writes.
    fn quantize_row(src: &[f32], dst: &mut [Self]);

    /// Quantizes activations the way ggml's CPU backend does on this architecture before a dot
    /// product (its `from_float`, not the reference quantizer): the Q8 activation blocks round
    /// differently per architecture, and matching that keeps qrun's outputs on llama.cpp's.
    /// Weight formats, and activation formats whose CPU path is the reference, use
    /// [`BlockFormat::quantize_row`].
    fn quantize_act_row(src: &[f32], dst: &mut [Self]) {
        Self::quantize_row(src, dst)
    }

    /// Expands blocks back to floats.
    fn dequantize_row(src: &[Self], dst: &mut [f32]);

    /// The dot product written plainly: the reference every SIMD kernel is tested against.
    fn vec_dot_scalar(w: &[Self], a: &[Self::Act]) -> f32;

    /// The dot product on a given instruction-set path. A path the CPU lacks, or one this type
    /// has no kernel for, falls back to the best lower path this type has.
    fn vec_dot_on(path: SimdPath, w: &[Self], a: &[Self::Act]) -> f32;

    /// The dot product on the fastest path of this CPU.
    #[inline]
    fn vec_dot(w: &[Self], a: &[Self::Act]) -> f32 {
        Self::vec_dot_on(SimdPath::best(), w, a)
    }
}

/// Checks the block counts of a quantize/dequantize pair of slices.
#[inline]
#[track_caller]
pub(crate) fn check_row<B: BlockFormat>(n_floats: usize, n_blocks: usize) {
    assert_eq!(
        n_floats,
        n_blocks * B::BLOCK_ELEMS,
        "{}: {} floats do not fill {} blocks of {}",
        B::TYPE.name(),
        n_floats,
        n_blocks,
        B::BLOCK_ELEMS
    );
}

/// Checks that a weight row and an activation row cover the same number of elements.
#[inline]
#[track_caller]
pub(crate) fn check_dot<B: BlockFormat>(n_w: usize, n_a: usize) {
    assert_eq!(
        n_w * B::BLOCK_ELEMS,
        n_a * <B::Act as BlockFormat>::BLOCK_ELEMS,
        "{} dot: weight and activation rows differ in length",
        B::TYPE.name()
    );
}
