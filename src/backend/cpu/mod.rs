//! The CPU backend: matrix products on quantized weights with the SIMD kernels of
//! `quant_types`, attention with fused softmax, and the element-wise operations, threaded with
//! rayon, and decoding's short products with a team of spinning threads ([`team`]).

pub mod attention;
pub mod backend;
pub mod kv_cache;
pub mod matmul;
pub mod ops;
pub mod simd_f32;
pub mod team;
pub mod weights;

pub use backend::{sized, Cpu, CpuWork, ENCODE_PART_TOKENS};
