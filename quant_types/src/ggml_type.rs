//! Type ids as ggml numbers them (`enum ggml_type`), with their block geometry.

use std::fmt;

/// qgguf's type id for NF4. ggml's ids end below 64 (`GGML_TYPE_COUNT` is 43 in the llama.cpp
/// this project tracks); 0x4E46 ("NF" in ASCII, 20038) is far above, so llama.cpp refuses a file
/// holding NF4 with its own "invalid ggml type" error instead of misreading the bytes.
pub const NF4_TYPE_ID: u32 = 0x4E46;

/// The tensor types qgguf can quantize, dequantize and compute with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ4_NL,
    BF16,
    /// qgguf extension: QLoRA/bitsandbytes NormalFloat-4, 64 weights per block.
    NF4,
}

/// Geometry and name of a type id, also for ggml types qgguf cannot compute with, so that a
/// reader can check sizes and name the type in an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypeInfo {
    pub id: u32,
    pub name: &'static str,
    pub block_elems: usize,
    pub block_bytes: usize,
}

/// Every type id ggml defines (commit 0c1e570), with the sizes of gguf-py's GGML_QUANT_SIZES,
/// plus NF4. Ids 4, 5 and 31-33, 36-38 were removed from ggml and are not listed.
const KNOWN: &[TypeInfo] = &[
    ti(0, "F32", 1, 4),
    ti(1, "F16", 1, 2),
    ti(2, "Q4_0", 32, 18),
    ti(3, "Q4_1", 32, 20),
    ti(6, "Q5_0", 32, 22),
    ti(7, "Q5_1", 32, 24),
    ti(8, "Q8_0", 32, 34),
    ti(9, "Q8_1", 32, 36),
    ti(10, "Q2_K", 256, 84),
    ti(11, "Q3_K", 256, 110),
    ti(12, "Q4_K", 256, 144),
    ti(13, "Q5_K", 256, 176),
    ti(14, "Q6_K", 256, 210),
    ti(15, "Q8_K", 256, 292),
    ti(16, "IQ2_XXS", 256, 66),
    ti(17, "IQ2_XS", 256, 74),
    ti(18, "IQ3_XXS", 256, 98),
    ti(19, "IQ1_S", 256, 50),
    ti(20, "IQ4_NL", 32, 18),
    ti(21, "IQ3_S", 256, 110),
    ti(22, "IQ2_S", 256, 82),
    ti(23, "IQ4_XS", 256, 136),
    ti(24, "I8", 1, 1),
    ti(25, "I16", 1, 2),
    ti(26, "I32", 1, 4),
    ti(27, "I64", 1, 8),
    ti(28, "F64", 1, 8),
    ti(29, "IQ1_M", 256, 56),
    ti(30, "BF16", 1, 2),
    ti(34, "TQ1_0", 256, 54),
    ti(35, "TQ2_0", 256, 66),
    ti(39, "MXFP4", 32, 17),
    ti(40, "NVFP4", 64, 36),
    ti(41, "Q1_0", 128, 18),
    ti(42, "Q2_0", 64, 18),
    ti(NF4_TYPE_ID, "NF4", 64, 34),
];

const fn ti(id: u32, name: &'static str, block_elems: usize, block_bytes: usize) -> TypeInfo {
    TypeInfo {
        id,
        name,
        block_elems,
        block_bytes,
    }
}

impl TypeInfo {
    /// Looks up any type id ggml or qgguf defines.
    pub fn of_id(id: u32) -> Option<TypeInfo> {
        KNOWN.iter().copied().find(|t| t.id == id)
    }

    /// Bytes taken by `n` elements, or `None` when `n` is not a whole number of blocks or the
    /// size overflows.
    pub fn bytes_for(&self, n: u64) -> Option<u64> {
        if !n.is_multiple_of(self.block_elems as u64) {
            return None;
        }
        (n / self.block_elems as u64).checked_mul(self.block_bytes as u64)
    }
}

impl GgmlType {
    pub const ALL: [GgmlType; 15] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q8_K,
        GgmlType::IQ4_NL,
        GgmlType::BF16,
        GgmlType::NF4,
    ];

    /// The number written in a GGUF tensor info.
    pub const fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q8_1 => 9,
            GgmlType::Q4_K => 12,
            GgmlType::Q5_K => 13,
            GgmlType::Q6_K => 14,
            GgmlType::Q8_K => 15,
            GgmlType::IQ4_NL => 20,
            GgmlType::BF16 => 30,
            GgmlType::NF4 => NF4_TYPE_ID,
        }
    }

    pub fn from_id(id: u32) -> Option<GgmlType> {
        GgmlType::ALL.iter().copied().find(|t| t.id() == id)
    }

    /// Parses a name as llama.cpp prints it (case-insensitive): "q4_K", "Q8_0", "iq4_nl", "nf4".
    pub fn from_name(name: &str) -> Option<GgmlType> {
        GgmlType::ALL
            .iter()
            .copied()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    pub fn info(self) -> TypeInfo {
        TypeInfo::of_id(self.id()).expect("every GgmlType is in the table")
    }

    pub fn name(self) -> &'static str {
        self.info().name
    }

    pub fn block_elems(self) -> usize {
        self.info().block_elems
    }

    pub fn block_bytes(self) -> usize {
        self.info().block_bytes
    }

    /// Bytes of one row of `n` elements, if `n` is a whole number of blocks.
    pub fn row_bytes(self, n: usize) -> Option<usize> {
        let info = self.info();
        n.is_multiple_of(info.block_elems)
            .then(|| n / info.block_elems * info.block_bytes)
    }

    /// Bits stored per weight.
    pub fn bits_per_weight(self) -> f64 {
        self.block_bytes() as f64 * 8.0 / self.block_elems() as f64
    }

    /// True for types that are not a llama.cpp type: files holding them load only in qgguf.
    pub fn is_extension(self) -> bool {
        self == GgmlType::NF4
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_names_parse() {
        for t in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
            assert_eq!(GgmlType::from_name(&t.name().to_lowercase()), Some(t));
        }
        assert_eq!(GgmlType::from_id(4), None);
        assert_eq!(TypeInfo::of_id(16).unwrap().name, "IQ2_XXS");
    }

    #[test]
    fn block_sizes_match_the_structs() {
        use crate::formats::*;
        use crate::BlockFormat;
        fn check<B: BlockFormat>() {
            assert_eq!(B::BLOCK_BYTES, B::TYPE.block_bytes(), "{}", B::TYPE);
            assert_eq!(B::BLOCK_ELEMS, B::TYPE.block_elems(), "{}", B::TYPE);
        }
        check::<BlockF32>();
        check::<BlockF16>();
        check::<BlockBF16>();
        check::<BlockQ4_0>();
        check::<BlockQ4_1>();
        check::<BlockQ5_0>();
        check::<BlockQ5_1>();
        check::<BlockQ8_0>();
        check::<BlockQ8_1>();
        check::<BlockQ4K>();
        check::<BlockQ5K>();
        check::<BlockQ6K>();
        check::<BlockQ8K>();
        check::<BlockIQ4NL>();
        check::<BlockNF4>();
    }
}
