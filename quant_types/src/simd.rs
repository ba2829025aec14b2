//! Which SIMD kernels this CPU can run, detected once at run time.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};

/// An instruction-set path for the dot products. Paths are ordered: each x86 path needs what the
/// one before it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SimdPath {
    /// Portable Rust, the reference.
    Scalar,
    /// AVX2 + FMA + F16C (x86-64, 256-bit).
    Avx2,
    /// AVX-512 F/BW/VL/DQ (x86-64, 512-bit) without VNNI: int8 products by vpmaddubsw.
    Avx512,
    /// AVX-512 with VNNI: int8 products accumulated by vpdpbusd.
    Avx512Vnni,
    /// NEON (aarch64, 128-bit).
    Neon,
}

impl SimdPath {
    pub const ALL: [SimdPath; 5] = [
        SimdPath::Scalar,
        SimdPath::Avx2,
        SimdPath::Avx512,
        SimdPath::Avx512Vnni,
        SimdPath::Neon,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SimdPath::Scalar => "scalar",
            SimdPath::Avx2 => "avx2",
            SimdPath::Avx512 => "avx512",
            SimdPath::Avx512Vnni => "avx512vnni",
            SimdPath::Neon => "neon",
        }
    }

    pub fn from_name(name: &str) -> Option<SimdPath> {
        SimdPath::ALL
            .iter()
            .copied()
            .find(|p| p.name().eq_ignore_ascii_case(name))
    }

    /// Whether this CPU can run the path (detected once, then a load and a bit test).
    #[inline]
    pub fn is_supported(self) -> bool {
        static MASK: AtomicU8 = AtomicU8::new(0);
        let mut mask = MASK.load(Ordering::Relaxed);
        if mask == 0 {
            // Bit 7 marks the mask as computed; scalar (bit 0) is always there.
            mask = 0x80
                | SimdPath::ALL
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.detect())
                    .fold(0u8, |m, (i, _)| m | (1 << i));
            MASK.store(mask, Ordering::Relaxed);
        }
        mask & (1 << self as u8) != 0
    }

    fn detect(self) -> bool {
        match self {
            SimdPath::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            SimdPath::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                    && std::arch::is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            SimdPath::Avx512 => {
                SimdPath::Avx2.detect()
                    && std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512dq")
            }
            #[cfg(target_arch = "x86_64")]
            SimdPath::Avx512Vnni => {
                SimdPath::Avx512.detect() && std::arch::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "aarch64")]
            SimdPath::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every path this CPU supports, slowest first.
    pub fn available() -> Vec<SimdPath> {
        SimdPath::ALL
            .iter()
            .copied()
            .filter(|p| p.is_supported())
            .collect()
    }

    /// The fastest path this CPU supports (detected once).
    pub fn best() -> SimdPath {
        static BEST: AtomicU8 = AtomicU8::new(u8::MAX);
        let cached = BEST.load(Ordering::Relaxed);
        if cached != u8::MAX {
            return SimdPath::ALL[cached as usize];
        }
        let best = SimdPath::available()
            .into_iter()
            .max()
            .unwrap_or(SimdPath::Scalar);
        let index = SimdPath::ALL.iter().position(|&p| p == best).unwrap_or(0);
        BEST.store(index as u8, Ordering::Relaxed);
        best
    }

    /// The path actually taken when `self` is asked for: itself if supported, else the best
    /// supported path below it on the same architecture, else scalar. Kernels are only ever
    /// entered through this, which is what makes calling them sound.
    #[inline]
    pub fn effective(self) -> SimdPath {
        if self.is_supported() {
            return self;
        }
        match self {
            SimdPath::Avx512Vnni => SimdPath::Avx512.effective(),
            SimdPath::Avx512 => SimdPath::Avx2.effective(),
            _ => SimdPath::Scalar,
        }
    }
}

impl fmt::Display for SimdPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
