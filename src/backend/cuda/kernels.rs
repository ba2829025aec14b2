//! The kernels' names (the per-type and per-head-size ones are instantiated by macros in
//! kernels/*.cu) and the per-type handles, resolved once so that a launch neither formats a
//! name nor looks one up.

use super::device::{Func, Gpu};
use anyhow::{bail, Result};
use quant_types::GgmlType;

/// Weight types the GPU computes with, in the order of [`type_index`].
pub const TYPES: [GgmlType; 13] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_NL,
    GgmlType::NF4,
];

const SUFFIXES: [&str; 13] = [
    "f32", "f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q4_k", "q5_k", "q6_k", "iq4_nl",
    "nf4",
];

/// Head sizes the attention kernels are instantiated for.
pub const HEAD_DIMS: [usize; 4] = [16, 32, 64, 128];

const SCALAR: [&str; 12] = [
    "rms_norm",
    "layer_norm",
    "bias_rope_store",
    "add_bias",
    "swiglu",
    "gelu_bias",
    "tanh_inplace",
    "geglu",
    "to_f16",
    "pool",
    "sample_argmax",
    "sample_topk",
];

pub fn type_index(ty: GgmlType) -> Result<usize> {
    match TYPES.iter().position(|&t| t == ty) {
        Some(i) => Ok(i),
        None => bail!("{ty} weights are not supported on the GPU"),
    }
}

/// Every kernel of the module.
pub fn names() -> Vec<String> {
    let mut v: Vec<String> = SCALAR.iter().map(|s| s.to_string()).collect();
    for s in SUFFIXES {
        for k in ["mv1", "mv8", "dequant", "embed"] {
            v.push(format!("{k}_{s}"));
        }
    }
    for hd in HEAD_DIMS {
        v.push(format!("attn_decode_hd{hd}"));
        v.push(format!("flash_hd{hd}"));
    }
    v
}

/// Kernels that may ask for more than 48 KiB of dynamic shared memory.
pub fn large_smem() -> Vec<String> {
    SUFFIXES
        .iter()
        .flat_map(|s| [format!("mv1_{s}"), format!("mv8_{s}")])
        .collect()
}

/// Per-type and per-head-size kernel handles.
pub struct Kernels {
    pub mv1: [Func; 13],
    pub mv8: [Func; 13],
    pub dequant: [Func; 13],
    pub embed: [Func; 13],
    pub attn_decode: [Func; 4],
    pub flash: [Func; 4],
}

impl Kernels {
    pub fn resolve(g: &Gpu) -> Result<Kernels> {
        let per_type = |k: &str| -> Result<[Func; 13]> {
            let v = SUFFIXES
                .iter()
                .map(|s| g.func(&format!("{k}_{s}")))
                .collect::<Result<Vec<_>>>()?;
            Ok(std::array::from_fn(|i| v[i]))
        };
        let per_head = |k: &str| -> Result<[Func; 4]> {
            let v = HEAD_DIMS
                .iter()
                .map(|hd| g.func(&format!("{k}_hd{hd}")))
                .collect::<Result<Vec<_>>>()?;
            Ok(std::array::from_fn(|i| v[i]))
        };
        Ok(Kernels {
            mv1: per_type("mv1")?,
            mv8: per_type("mv8")?,
            dequant: per_type("dequant")?,
            embed: per_type("embed")?,
            attn_decode: per_head("attn_decode")?,
            flash: per_head("flash")?,
        })
    }

    pub fn head_index(hd: usize) -> Result<usize> {
        match HEAD_DIMS.iter().position(|&h| h == hd) {
            Some(i) => Ok(i),
            None => bail!("head size {hd} is not supported on the GPU (head sizes {HEAD_DIMS:?})"),
        }
    }
}
