//! Half-precision conversions with ggml's rounding and NaN rules.
//!
//! Both directions round to nearest, ties to even, as IEEE 754 does; ggml differs only in what
//! it writes for NaN (a canonical quiet NaN for f16, the payload with the quiet bit forced for
//! bf16), and the block scales of every format pass through these functions, so they must agree
//! bit for bit.

use half::{bf16, f16};

/// f32 to f16 bits: IEEE round-to-nearest-even; NaN becomes the quiet NaN 0x7E00 with its sign.
#[inline]
pub fn f32_to_f16_bits(x: f32) -> u16 {
    if x.is_nan() {
        ((x.to_bits() >> 16) as u16 & 0x8000) | 0x7E00
    } else {
        f16::from_f32(x).to_bits()
    }
}

#[inline]
pub fn f32_to_f16(x: f32) -> f16 {
    f16::from_bits(f32_to_f16_bits(x))
}

/// f16 to f32 is exact.
#[inline]
pub fn f16_to_f32(h: f16) -> f32 {
    h.to_f32()
}

/// f32 to bf16 bits: round to nearest even on the dropped 16 bits; a NaN keeps its top bits and
/// is made quiet.
#[inline]
pub fn f32_to_bf16_bits(x: f32) -> u16 {
    let u = x.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        return ((u >> 16) | 0x40) as u16;
    }
    let rounding = 0x7fff + ((u >> 16) & 1);
    (u.wrapping_add(rounding) >> 16) as u16
}

#[inline]
pub fn f32_to_bf16(x: f32) -> bf16 {
    bf16::from_bits(f32_to_bf16_bits(x))
}

/// bf16 to f32 is exact: the bits move up by 16.
#[inline]
pub fn bf16_to_f32(h: bf16) -> f32 {
    f32::from_bits((h.to_bits() as u32) << 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_rounds_ties_to_even_and_saturates_to_inf() {
        // 1 + 2^-11 lies halfway between 1 and the next f16 (1 + 2^-10): ties to even -> 1.
        assert_eq!(f32_to_f16_bits(1.0 + f32::powi(2.0, -11)), 0x3C00);
        // 1 + 3*2^-11 is halfway between 1+2^-10 (odd) and 1+2^-9 (even) -> 1+2^-9.
        assert_eq!(f32_to_f16_bits(1.0 + 3.0 * f32::powi(2.0, -11)), 0x3C02);
        assert_eq!(f32_to_f16_bits(1e30), 0x7C00);
        assert_eq!(f32_to_f16_bits(-1e30), 0xFC00);
        assert_eq!(f32_to_f16_bits(f32::NAN), 0x7E00);
        assert_eq!(f32_to_f16_bits(-f32::NAN), 0xFE00);
        assert_eq!(f32_to_f16_bits(1e-30), 0x0000);
        assert_eq!(f32_to_f16_bits(-1e-30), 0x8000);
        // Smallest f16 subnormal is 2^-24.
        assert_eq!(f32_to_f16_bits(f32::powi(2.0, -24)), 0x0001);
    }

    #[test]
    fn bf16_rounds_ties_to_even_and_quiets_nan() {
        assert_eq!(f32_to_bf16_bits(1.0), 0x3F80);
        // 1 + 2^-8 is halfway between bf16 1.0 and 1 + 2^-7: ties to even -> 1.0.
        assert_eq!(f32_to_bf16_bits(1.0 + f32::powi(2.0, -8)), 0x3F80);
        assert_eq!(f32_to_bf16_bits(1.0 + 3.0 * f32::powi(2.0, -8)), 0x3F82);
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x7F80_0001)), 0x7FC0);
        assert_eq!(bf16_to_f32(bf16::from_bits(0x3F80)), 1.0);
    }
}
