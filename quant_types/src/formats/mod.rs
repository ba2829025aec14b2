//! One module per block format. Each defines the block struct exactly as ggml lays it out in
//! `ggml-common.h` (little-endian, no padding), its reference quantizer, its dequantizer and its
//! scalar dot product, and dispatches the dot product to the SIMD kernels in `crate::arch`.

mod bf16;
mod f16;
mod f32;
mod iq4_nl;
mod nf4;
mod q4_0;
mod q4_1;
mod q4_k;
mod q5_0;
mod q5_1;
mod q5_k;
mod q6_k;
mod q8_0;
mod q8_1;
mod q8_k;

pub use self::bf16::BlockBF16;
pub use self::f16::BlockF16;
pub use self::f32::BlockF32;
pub use iq4_nl::{BlockIQ4NL, KVALUES_IQ4NL};
pub use nf4::{BlockNF4, NF4_LEVELS, NF4_LEVELS_I8};
pub use q4_0::BlockQ4_0;
pub use q4_1::BlockQ4_1;
pub use q4_k::BlockQ4K;
pub use q5_0::BlockQ5_0;
pub use q5_1::BlockQ5_1;
pub use q5_k::BlockQ5K;
pub use q6_k::BlockQ6K;
pub use q8_0::BlockQ8_0;
pub use q8_1::BlockQ8_1;
pub use q8_k::BlockQ8K;

/// The 6-bit scale and min of sub-block `j` (0..8) from the 12 packed bytes of a Q4_K or Q5_K
/// super-block: sub-blocks 0-3 keep theirs in the low 6 bits of bytes 0-7, sub-blocks 4-7 split
/// theirs between a nibble of bytes 8-11 and the top two bits of bytes 0-7.
#[inline(always)]
pub(crate) fn k_scale_min(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Packs eight 6-bit scales and mins into the 12-byte layout [`k_scale_min`] reads.
#[inline]
pub(crate) fn pack_k_scales(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..8 {
        if j < 4 {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4);
            s[j - 4] |= (ls[j] >> 4) << 6;
            s[j] |= (lm[j] >> 4) << 6;
        }
    }
    s
}

/// Writes the 32 elements of a ggml "split" nibble layout (byte j holds element j in its low
/// nibble and element j + 16 in its high nibble) from levels 0..15.
#[inline(always)]
pub(crate) fn pack_nibbles_split16(levels: &[u8; 32]) -> [u8; 16] {
    let mut qs = [0u8; 16];
    for j in 0..16 {
        qs[j] = levels[j] | (levels[j + 16] << 4);
    }
    qs
}

/// Expands the split nibble layout of [`pack_nibbles_split16`].
#[inline(always)]
pub(crate) fn unpack_nibbles_split16(qs: &[u8; 16]) -> [u8; 32] {
    let mut l = [0u8; 32];
    for j in 0..16 {
        l[j] = qs[j] & 0xF;
        l[j + 16] = qs[j] >> 4;
    }
    l
}

/// The fifth bit of each of the 32 elements of a Q5_0/Q5_1 block, from its 32-bit `qh` word:
/// bit j belongs to element j.
#[inline(always)]
pub(crate) fn q5_high_bits(qh: [u8; 4]) -> u32 {
    u32::from_le_bytes(qh)
}
