//! SIMD kernels of the dot products, one file per instruction set. Every kernel computes what
//! the scalar reference of its format computes (`vec_dot_scalar` in `crate::formats`), up to the
//! order of floating-point additions, and is tested against it on random data.
//!
//! Kernels are `unsafe` because they use instructions the CPU may lack; they are reached only
//! through [`dispatch!`], which enters a path only after [`crate::SimdPath::effective`] confirmed
//! the CPU supports it, and only with slices whose lengths the caller already checked.

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86;

#[cfg(target_arch = "aarch64")]
pub(crate) mod aarch64;

/// Calls kernel `$k` of the path `$path` resolves to, or evaluates `$scalar`.
macro_rules! dispatch {
    ($path:expr, $k:ident, $w:expr, $a:expr, $scalar:expr) => {{
        match $path.effective() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `effective` returned a path the CPU supports; lengths were checked.
            $crate::SimdPath::Avx512Vnni => unsafe { $crate::arch::x86::avx512::vnni::$k($w, $a) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            $crate::SimdPath::Avx512 => unsafe { $crate::arch::x86::avx512::plain::$k($w, $a) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            $crate::SimdPath::Avx2 => unsafe { $crate::arch::x86::avx2::$k($w, $a) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: as above.
            $crate::SimdPath::Neon => unsafe { $crate::arch::aarch64::neon::$k($w, $a) },
            _ => $scalar,
        }
    }};
}
pub(crate) use dispatch;
