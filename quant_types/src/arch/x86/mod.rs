//! x86-64 kernels: AVX2 (256-bit) and AVX-512 (512-bit, with and without VNNI).

pub(crate) mod avx2;
pub(crate) mod avx512;
