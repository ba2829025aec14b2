//! Tensor-type mixes: which type each tensor gets under a preset. For q8_0, q4_k_m and q5_k_s
//! these are llama-quantize's rules (llama.cpp 0c1e570, `src/llama-quant.cpp`), reimplemented
//! from their documented behaviour and checked against llama-quantize's output on Qwen2, BERT and
//! ModernBERT shapes:
//!
//! - only tensors with at least two non-trivial dimensions, a name ending in `weight`, not a
//!   `_norm.weight`, and not `position_embd.weight` / `token_types.weight` are quantized; every
//!   other tensor keeps its source type and bytes;
//! - `output.weight`, and `token_embd.weight` when the model has no `output.weight` (tied
//!   embeddings: Qwen2.5-0.5B, BERT, ModernBERT), get Q6_K (Q8_0 under q8_0, or when the row does
//!   not divide into blocks of the preset's type);
//! - q4_k_m gives Q6_K to `attn_v` / `attn_qkv` and `ffn_down` of the layers `use_more_bits`
//!   picks (the first and last eighth, and every third layer between);
//! - a K-quant whose row is not a multiple of 256 falls back: Q4_K to Q5_0, Q5_K to Q5_1, Q6_K
//!   to Q8_0 (to F16 if even that does not fit).
//!
//! iq4_nl follows llama-quantize's IQ4_NL rules too (Q5_K for attn_v when n_head/n_head_kv >= 4
//! and for the first eighth of ffn_down). nf4 (qgguf's own) follows IQ4_NL's scheme with NF4 in
//! place of IQ4_NL: the same tensors get the same upgrades, since both are 4-bit non-uniform
//! codes with one scale per small block.

use super::plan::PlannedTensor;
use anyhow::{bail, Result};
use quant_types::GgmlType;
use regex::Regex;
use std::fmt;

/// The `--type` presets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum Preset {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_K_M,
    Q5_K_S,
    IQ4_NL,
    NF4,
}

impl Preset {
    pub const ALL: [Preset; 8] = [
        Preset::F32,
        Preset::F16,
        Preset::BF16,
        Preset::Q8_0,
        Preset::Q4_K_M,
        Preset::Q5_K_S,
        Preset::IQ4_NL,
        Preset::NF4,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Preset::F32 => "f32",
            Preset::F16 => "f16",
            Preset::BF16 => "bf16",
            Preset::Q8_0 => "q8_0",
            Preset::Q4_K_M => "q4_k_m",
            Preset::Q5_K_S => "q5_k_s",
            Preset::IQ4_NL => "iq4_nl",
            Preset::NF4 => "nf4",
        }
    }

    pub fn parse(s: &str) -> Result<Preset> {
        Preset::ALL
            .iter()
            .copied()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<_> = Preset::ALL.iter().map(|p| p.name()).collect();
                anyhow::anyhow!("unknown type '{s}'; expected one of {}", names.join(", "))
            })
    }

    /// The type most tensors get.
    pub fn default_type(self) -> GgmlType {
        match self {
            Preset::F32 => GgmlType::F32,
            Preset::F16 => GgmlType::F16,
            Preset::BF16 => GgmlType::BF16,
            Preset::Q8_0 => GgmlType::Q8_0,
            Preset::Q4_K_M => GgmlType::Q4_K,
            Preset::Q5_K_S => GgmlType::Q5_K,
            Preset::IQ4_NL => GgmlType::IQ4_NL,
            Preset::NF4 => GgmlType::NF4,
        }
    }

    /// `general.file_type`: llama.cpp's `llama_ftype` number; NF4, which llama.cpp lacks, gets
    /// [`NF4_FILE_TYPE`].
    pub fn file_type(self) -> u32 {
        match self {
            Preset::F32 => 0,
            Preset::F16 => 1,
            Preset::Q8_0 => 7,
            Preset::Q4_K_M => 15,
            Preset::Q5_K_S => 16,
            Preset::IQ4_NL => 25,
            Preset::BF16 => 32,
            Preset::NF4 => NF4_FILE_TYPE,
        }
    }

    pub fn is_quantized(self) -> bool {
        !matches!(self, Preset::F32 | Preset::F16 | Preset::BF16)
    }
}

/// `general.file_type` of a file made with `--type nf4`: not a `llama_ftype` value (those end
/// below 64), so tools that print it show it as unknown rather than as a wrong type.
pub const NF4_FILE_TYPE: u32 = 0x4E46;

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `--tensor-type REGEX=TYPE` override.
#[derive(Clone, Debug)]
pub struct Override {
    pub pattern: Regex,
    pub ty: GgmlType,
}

impl Override {
    pub fn parse(s: &str) -> Result<Override> {
        let Some((re, ty)) = s.rsplit_once('=') else {
            bail!("--tensor-type '{s}': expected REGEX=TYPE");
        };
        let pattern =
            Regex::new(re).map_err(|e| anyhow::anyhow!("--tensor-type '{s}': bad regex: {e}"))?;
        let ty = GgmlType::from_name(ty).filter(|t| !matches!(t, GgmlType::Q8_1 | GgmlType::Q8_K));
        let Some(ty) = ty else {
            bail!("--tensor-type '{s}': unknown tensor type (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, IQ4_NL, NF4)");
        };
        Ok(Override { pattern, ty })
    }
}

/// Model facts the rules consult.
#[derive(Clone, Copy, Debug)]
pub struct ModelShape {
    /// `<arch>.block_count`.
    pub n_layer: usize,
    /// n_head / n_head_kv of layer 0 (1 when the model has no grouped-query attention).
    pub n_gqa: usize,
}

/// ggml's `ggml_n_dims`: dimensions up to the last one larger than 1.
pub fn effective_dims(dims: &[u64]) -> usize {
    dims.iter().rposition(|&d| d > 1).map_or(1, |i| i + 1)
}

/// Whether llama-quantize would change this tensor's type at all.
pub fn is_quantizable(name: &str, dims: &[u64]) -> bool {
    effective_dims(dims) >= 2
        && name.ends_with("weight")
        && !name.contains("_norm.weight")
        && name != "position_embd.weight"
        && name != "token_types.weight"
}

fn use_more_bits(i: usize, n: usize) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i as i64 - (n / 8) as i64) % 3 == 2
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Category {
    Output,
    TokenEmbd,
    AttnVLike,
    FfnDown,
    Other,
}

fn category(name: &str) -> Category {
    if name == "output.weight" {
        Category::Output
    } else if name == "token_embd.weight" {
        Category::TokenEmbd
    } else if name.contains("attn_qkv.weight")
        || name.contains("attn_kv_b.weight")
        || name.contains("attn_v.weight")
    {
        Category::AttnVLike
    } else if name.contains("attn_k.weight")
        || name.contains("attn_q.weight")
        || name.contains("attn_output.weight")
        || name.contains("ffn_up")
        || name.contains("ffn_gate")
    {
        Category::Other
    } else if name.contains("ffn_down") {
        Category::FfnDown
    } else {
        Category::Other
    }
}

/// The layer of a `blk.N.` name, or -1: llama.cpp orders tensors by this, then by name.
pub fn layer_of(name: &str) -> i64 {
    name.strip_prefix("blk.")
        .and_then(|rest| rest.split('.').next())
        .and_then(|n| n.parse::<i64>().ok())
        .unwrap_or(-1)
}

/// Sorts tensors as llama-quantize processes and writes them: by layer (non-block tensors
/// first), then by name, bytewise.
pub fn sort_like_llama_quantize(tensors: &mut [PlannedTensor]) {
    tensors.sort_by(|a, b| {
        (layer_of(&a.name), a.name.as_bytes()).cmp(&(layer_of(&b.name), b.name.as_bytes()))
    });
}

/// Block-size fallback for a type whose block does not divide the row.
fn fallback(row: u64, ty: GgmlType) -> GgmlType {
    if row.is_multiple_of(ty.block_elems() as u64) {
        return ty;
    }
    let r = match ty {
        GgmlType::Q4_K => GgmlType::Q5_0,
        GgmlType::Q5_K => GgmlType::Q5_1,
        GgmlType::Q6_K => GgmlType::Q8_0,
        other => other,
    };
    if row.is_multiple_of(r.block_elems() as u64) {
        r
    } else {
        GgmlType::F16
    }
}

/// Chooses `out_type` for every tensor. `tensors` must be in llama-quantize's order
/// ([`sort_like_llama_quantize`]) for the per-layer counters to match it.
pub fn assign_types(
    tensors: &mut [PlannedTensor],
    preset: Preset,
    shape: ModelShape,
    overrides: &[Override],
) -> Result<()> {
    let default = preset.default_type();
    let tied = !tensors.iter().any(|t| t.name == "output.weight");
    let n_attention_wv = tensors
        .iter()
        .filter(|t| category(&t.name) == Category::AttnVLike)
        .count();
    let mut i_wv = 0usize;
    let mut i_ffn_down = 0usize;
    for t in tensors.iter_mut() {
        if !is_quantizable(&t.name, &t.dims) {
            t.out_type = t.source_type;
            continue;
        }
        if !preset.is_quantized() {
            t.out_type = match overrides.iter().find(|o| o.pattern.is_match(&t.name)) {
                Some(o) => fallback(t.dims[0], o.ty),
                None => default,
            };
            continue;
        }
        if let Some(o) = overrides.iter().find(|o| o.pattern.is_match(&t.name)) {
            t.out_type = fallback(t.dims[0], o.ty);
            continue;
        }
        let row = t.dims[0];
        let cat = category(&t.name);
        let mut ty = default;
        match cat {
            Category::Output | Category::TokenEmbd if cat == Category::Output || tied => {
                // Q8_0 when the preset is Q8_0 or the row does not divide into its blocks.
                ty = if default == GgmlType::Q8_0
                    || !row.is_multiple_of(default.block_elems() as u64)
                {
                    GgmlType::Q8_0
                } else {
                    GgmlType::Q6_K
                };
            }
            Category::AttnVLike => {
                match preset {
                    Preset::IQ4_NL | Preset::NF4 if shape.n_gqa >= 4 => ty = GgmlType::Q5_K,
                    Preset::Q4_K_M if use_more_bits(i_wv, n_attention_wv) => ty = GgmlType::Q6_K,
                    _ => {}
                }
                i_wv += 1;
            }
            Category::FfnDown => {
                match preset {
                    Preset::Q4_K_M if use_more_bits(i_ffn_down, shape.n_layer) => {
                        ty = GgmlType::Q6_K
                    }
                    Preset::IQ4_NL | Preset::NF4 if i_ffn_down < shape.n_layer / 8 => {
                        ty = GgmlType::Q5_K
                    }
                    _ => {}
                }
                i_ffn_down += 1;
            }
            _ => {}
        }
        t.out_type = fallback(row, ty);
    }
    Ok(())
}

/// The name of a `general.file_type` value, as llama.cpp prints it.
pub fn file_type_name(ftype: u32) -> String {
    match ftype {
        0 => "F32".into(),
        1 => "F16".into(),
        2 => "Q4_0".into(),
        3 => "Q4_1".into(),
        7 => "Q8_0".into(),
        8 => "Q5_0".into(),
        9 => "Q5_1".into(),
        10 => "Q2_K".into(),
        11 => "Q3_K_S".into(),
        12 => "Q3_K_M".into(),
        13 => "Q3_K_L".into(),
        14 => "Q4_K_S".into(),
        15 => "Q4_K_M".into(),
        16 => "Q5_K_S".into(),
        17 => "Q5_K_M".into(),
        18 => "Q6_K".into(),
        25 => "IQ4_NL".into(),
        32 => "BF16".into(),
        NF4_FILE_TYPE => "NF4".into(),
        other => format!("ftype {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_more_bits_sets() {
        let set = |n| (0..n).filter(|&i| use_more_bits(i, n)).collect::<Vec<_>>();
        assert_eq!(set(1), vec![0]);
        assert_eq!(set(6), vec![2, 5]);
        assert_eq!(set(8), vec![0, 3, 6, 7]);
        assert_eq!(set(22), vec![0, 1, 4, 7, 10, 13, 16, 19, 20, 21]);
        assert_eq!(set(24), vec![0, 1, 2, 5, 8, 11, 14, 17, 20, 21, 22, 23]);
    }

    #[test]
    fn quantizable_and_dims() {
        assert!(!is_quantizable("cls.output.weight", &[768, 1]));
        assert!(is_quantizable("cls.output.weight", &[768, 113]));
        assert!(!is_quantizable("token_embd_norm.weight", &[768]));
        assert!(!is_quantizable("position_embd.weight", &[384, 512]));
        assert!(!is_quantizable("blk.0.attn_q.bias", &[896]));
        assert_eq!(effective_dims(&[768, 1, 1]), 1);
    }

    #[test]
    fn layer_order() {
        assert_eq!(layer_of("blk.12.ffn_down.weight"), 12);
        assert_eq!(layer_of("token_embd.weight"), -1);
        assert_eq!(layer_of("blk.x.y"), -1);
    }
}
