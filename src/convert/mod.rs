//! qconvert's engine: Hugging Face folders and GGUF files in, GGUF files out.
//!
//! A conversion is planned first (metadata, and every tensor's name, shape, source and type;
//! no tensor data is read), then streamed to disk by [`pipeline::write`].

pub mod export;
pub mod general_meta;
pub mod hf_arch;
pub mod hf_config;
pub mod hf_tokenizer;
pub mod mix;
pub mod pipeline;
pub mod plan;
mod pre_hashes;
pub mod safetensors_in;
pub mod safetensors_out;
pub mod synth;

use crate::gguf::{GgufFile, Value};
use anyhow::{bail, Result};
use mix::{assign_types, effective_dims, sort_like_llama_quantize, ModelShape, Override, Preset};
use plan::{Plan, PlannedTensor, Source};
use quant_types::GgmlType;
use std::path::Path;

/// Metadata key marking files that hold NF4 tensors (a qgguf extension type).
pub const KEY_NF4: &str = "qgguf.nf4";

/// Plans the conversion of a Hugging Face folder.
pub fn plan_hf(
    cfg: &hf_config::HfConfig,
    ck: &safetensors_in::Checkpoint,
    preset: Preset,
    overrides: &[Override],
) -> Result<Plan> {
    let base = match preset {
        Preset::F32 => GgmlType::F32,
        Preset::BF16 => GgmlType::BF16,
        _ => GgmlType::F16,
    };
    let (mut plan, shape) = hf_arch::plan_from_hf(cfg, ck, base)?;
    let shape = ModelShape {
        n_layer: shape.n_layer,
        n_gqa: shape.n_gqa,
    };
    if preset.is_quantized() {
        requantize_plan(&mut plan, preset, shape, overrides)?;
    } else if !overrides.is_empty() {
        // F32/F16/BF16 keep llama.cpp's converter layout; overrides retype matching tensors.
        for t in &mut plan.tensors {
            if !mix::is_quantizable(&t.name, &t.dims) {
                continue;
            }
            if let Some(o) = overrides.iter().find(|o| o.pattern.is_match(&t.name)) {
                t.out_type = if t.dims[0] % o.ty.block_elems() as u64 == 0 {
                    o.ty
                } else {
                    GgmlType::F16
                };
            }
        }
    }
    mark_nf4(&mut plan);
    Ok(plan)
}

/// What llama-quantize does to an F16 file's plan: its tensor order, its per-tensor types, and
/// its metadata (file type and quantization version moved to the end, trailing unit dimensions
/// dropped).
fn requantize_plan(
    plan: &mut Plan,
    preset: Preset,
    shape: ModelShape,
    overrides: &[Override],
) -> Result<()> {
    sort_like_llama_quantize(&mut plan.tensors);
    for t in &mut plan.tensors {
        t.dims.truncate(effective_dims(&t.dims));
    }
    assign_types(&mut plan.tensors, preset, shape, overrides)?;
    plan.metadata.retain(|(k, _)| {
        k != "general.quantization_version" && k != "general.file_type" && !k.starts_with("split.")
    });
    plan.metadata
        .push(("general.quantization_version".into(), Value::U32(2)));
    plan.metadata
        .push(("general.file_type".into(), Value::U32(preset.file_type())));
    Ok(())
}

fn mark_nf4(plan: &mut Plan) {
    plan.metadata.retain(|(k, _)| k != KEY_NF4);
    if plan.tensors.iter().any(|t| t.out_type == GgmlType::NF4) {
        plan.metadata.push((KEY_NF4.into(), Value::Bool(true)));
    }
}

/// Plans the requantization of a GGUF file (what llama-quantize does).
pub fn plan_gguf(file: &GgufFile, preset: Preset, overrides: &[Override]) -> Result<Plan> {
    let arch = file.architecture()?.to_string();
    let n_layer = file.get_usize(&format!("{arch}.block_count"))?;
    let head = |k: &str| -> Option<u64> {
        match file.get(&format!("{arch}.{k}"))? {
            Value::Array(a) => a.to_i64_vec()?.first().map(|&x| x as u64),
            v => v.as_u64(),
        }
    };
    let n_gqa = match (
        head("attention.head_count"),
        head("attention.head_count_kv"),
    ) {
        (Some(h), Some(kv)) if kv > 0 => (h / kv) as usize,
        _ => 1,
    };
    let mut tensors = Vec::with_capacity(file.tensors().len());
    for info in file.tensors() {
        let Some(ty) = info.ggml_type() else {
            bail!(
                "{}: tensor '{}' has type {}, which qgguf cannot convert",
                file.path().display(),
                info.name,
                info.type_info.name
            );
        };
        tensors.push(PlannedTensor {
            name: info.name.clone(),
            dims: info.dims.clone(),
            source: Source::Gguf(info.clone()),
            source_type: ty,
            out_type: ty,
        });
    }
    let mut plan = Plan {
        metadata: file.metadata().to_vec(),
        tensors,
    };
    requantize_plan(&mut plan, preset, ModelShape { n_layer, n_gqa }, overrides)?;
    mark_nf4(&mut plan);
    Ok(plan)
}

/// How many tensors of a GGUF plan are already quantized and will be quantized again (quality
/// suffers; qconvert warns). The caller reports it: the library prints nothing.
pub fn requantized_count(plan: &Plan) -> usize {
    plan.tensors
        .iter()
        .filter(|t| {
            t.out_type != t.source_type
                && !matches!(
                    t.source_type,
                    GgmlType::F32 | GgmlType::F16 | GgmlType::BF16
                )
        })
        .count()
}

/// Whether a path is a Hugging Face folder (rather than a GGUF file).
pub fn is_hf_dir(p: &Path) -> bool {
    p.is_dir()
}
