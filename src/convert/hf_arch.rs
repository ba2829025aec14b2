//! Hugging Face architectures to GGUF: tensor names, hyper-parameter keys and their order, as
//! llama.cpp's converter writes them for Qwen2, BERT and ModernBERT, with four deliberate
//! differences, each because llama.cpp's converter produces a file that cannot work:
//!
//! 1. `Qwen2ForSequenceClassification` (which llama.cpp cannot convert) is written as qwen2 plus
//!    `cls.output.weight` (the score head), `qwen2.classifier.output_labels` and
//!    `qwen2.pooling_type = 3` (last token). llama.cpp refuses the extra tensor; qrun runs it.
//! 2. `BertForSequenceClassification` keeps its pooler as `cls.weight` / `cls.bias`. llama.cpp's
//!    converter drops it, so its scores differ from the model's; llama.cpp's BERT graph applies
//!    `cls` + tanh before `cls.output` when present, which is exactly BERT's pooler.
//! 3. Sequence classifiers keep their labels even when they are the two default names
//!    (llama.cpp's converter then writes an unloadable `cls.weight` [n_embd, 2] or fails).
//! 4. ModernBERT always gets `modern-bert.attention.layer_norm_epsilon` (from `norm_eps`), which
//!    llama.cpp's loader requires; its converter writes it only when config.json carries the
//!    legacy `layer_norm_eps`. ModernBERT MLM decoders (`decoder.*`), which llama.cpp cannot load,
//!    are dropped with a warning.

use super::general_meta::general_keys;
use super::hf_config::{Family, HfConfig};
use super::hf_tokenizer::{set_or_append, tokenizer_keys, VocabKind};
use super::plan::{Plan, PlannedTensor, Source};
use super::safetensors_in::{Checkpoint, SourceDtype, SourceTensor};
use crate::gguf::{Array, Value};
use anyhow::{bail, Context, Result};
use quant_types::GgmlType;
use regex::Regex;
use serde_json::Value as Json;
use std::sync::OnceLock;

/// What happens to a checkpoint tensor.
enum Mapped {
    To(String),
    Drop,
    Unknown,
}

fn layer_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^(?:model\.)?layers\.(\d+)\.(.+)$").expect("static regex"))
}

fn qwen2_name(name: &str, classifier: bool) -> Mapped {
    // Checkpoints of the bare Qwen2Model lack the "model." prefix.
    let n =
        if name.starts_with("model.") || name.starts_with("lm_head") || name.starts_with("score") {
            name.to_string()
        } else {
            format!("model.{name}")
        };
    if n.ends_with(".rotary_emb.inv_freq") {
        return Mapped::Drop;
    }
    let fixed = match n.as_str() {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "lm_head.weight" => Some("output.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "score.weight" if classifier => Some("cls.output.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Mapped::To(f.to_string());
    }
    let Some(c) = layer_re().captures(&n) else {
        return Mapped::Unknown;
    };
    let (i, rest) = (&c[1], &c[2]);
    let base = match rest {
        "input_layernorm.weight" => "attn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.q_proj.bias" => "attn_q.bias",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.k_proj.bias" => "attn_k.bias",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.v_proj.bias" => "attn_v.bias",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        _ => return Mapped::Unknown,
    };
    Mapped::To(format!("blk.{i}.{base}"))
}

fn bert_name(name: &str, keep_pooler: bool) -> Mapped {
    let mut n = name.strip_prefix("bert.").unwrap_or(name).to_string();
    if let Some(s) = n.strip_suffix(".gamma") {
        n = format!("{s}.weight");
    } else if let Some(s) = n.strip_suffix(".beta") {
        n = format!("{s}.bias");
    }
    if n == "embeddings.position_ids"
        || n.starts_with("cls.predictions")
        || n.starts_with("cls.seq_relationship")
    {
        return Mapped::Drop;
    }
    let (stem, suffix) = match n.rsplit_once('.') {
        Some((s, x @ ("weight" | "bias"))) => (s.to_string(), x),
        _ => return Mapped::Unknown,
    };
    let fixed = match stem.as_str() {
        "embeddings.word_embeddings" => Some("token_embd"),
        "embeddings.position_embeddings" => Some("position_embd"),
        "embeddings.token_type_embeddings" => Some("token_types"),
        "embeddings.LayerNorm" => Some("token_embd_norm"),
        "classifier" => Some("cls.output"),
        "pooler.dense" if keep_pooler => Some("cls"),
        "pooler.dense" => return Mapped::Drop,
        _ => None,
    };
    if let Some(f) = fixed {
        return Mapped::To(format!("{f}.{suffix}"));
    }
    let Some(rest) = stem.strip_prefix("encoder.layer.") else {
        return Mapped::Unknown;
    };
    let Some((i, part)) = rest.split_once('.') else {
        return Mapped::Unknown;
    };
    if i.parse::<u32>().is_err() {
        return Mapped::Unknown;
    }
    let base = match part {
        "attention.self.query" => "attn_q",
        "attention.self.key" => "attn_k",
        "attention.self.value" => "attn_v",
        "attention.output.dense" => "attn_output",
        "attention.output.LayerNorm" => "attn_output_norm",
        "intermediate.dense" => "ffn_up",
        "output.dense" => "ffn_down",
        "output.LayerNorm" => "layer_output_norm",
        _ => return Mapped::Unknown,
    };
    Mapped::To(format!("blk.{i}.{base}.{suffix}"))
}

fn modern_bert_name(name: &str) -> Mapped {
    let n = name.strip_prefix("model.").unwrap_or(name);
    if n.starts_with("decoder.") {
        return Mapped::Drop;
    }
    let (stem, suffix) = match n.rsplit_once('.') {
        Some((s, x @ ("weight" | "bias"))) => (s, x),
        _ => return Mapped::Unknown,
    };
    let fixed = match stem {
        "embeddings.tok_embeddings" => Some("token_embd"),
        "embeddings.norm" => Some("token_embd_norm"),
        "final_norm" => Some("output_norm"),
        "head.dense" => Some("cls"),
        "head.norm" => Some("cls.norm"),
        "classifier" => Some("cls.output"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Mapped::To(format!("{f}.{suffix}"));
    }
    let Some(rest) = stem.strip_prefix("layers.") else {
        return Mapped::Unknown;
    };
    let Some((i, part)) = rest.split_once('.') else {
        return Mapped::Unknown;
    };
    if i.parse::<u32>().is_err() {
        return Mapped::Unknown;
    }
    let base = match part {
        "attn_norm" => "attn_norm",
        "attn.Wqkv" => "attn_qkv",
        "attn.Wo" => "attn_output",
        "mlp_norm" => "ffn_norm",
        "mlp.Wi" => "ffn_up",
        "mlp.Wo" => "ffn_down",
        _ => return Mapped::Unknown,
    };
    Mapped::To(format!("blk.{i}.{base}.{suffix}"))
}

/// The storage type llama.cpp's converter gives a tensor for an `--outtype`: F32 for 1-D
/// tensors, norms, biases and position/token-type embeddings, the out type otherwise.
fn converter_type(gguf_name: &str, n_dims: usize, outtype: GgmlType) -> GgmlType {
    let force_f32 = n_dims <= 1
        || gguf_name.ends_with("_norm.weight")
        || gguf_name == "position_embd.weight"
        || gguf_name == "token_types.weight"
        || !gguf_name.ends_with(".weight");
    if force_f32 {
        GgmlType::F32
    } else {
        outtype
    }
}

fn dtype_type(d: SourceDtype) -> GgmlType {
    match d {
        SourceDtype::F32 => GgmlType::F32,
        SourceDtype::F16 => GgmlType::F16,
        SourceDtype::BF16 => GgmlType::BF16,
    }
}

/// Model facts the type rules need, read from config.json.
pub struct HfShape {
    pub n_layer: usize,
    pub n_gqa: usize,
}

/// Builds the plan for a Hugging Face folder, with every tensor typed as llama.cpp's converter
/// types it for `outtype` (F32, F16 or BF16). Quantized presets start from the F16 plan.
pub fn plan_from_hf(cfg: &HfConfig, ck: &Checkpoint, outtype: GgmlType) -> Result<(Plan, HfShape)> {
    let arch_name = match cfg.family {
        Family::Qwen2 => "qwen2",
        Family::Bert => "bert",
        Family::ModernBert => "modern-bert",
    };
    let is_classifier = cfg.architecture.ends_with("ForSequenceClassification");
    let labels = if is_classifier {
        cfg.labels()?
    } else {
        let l = cfg.labels()?;
        if l.len() == 2 && l[0] == "LABEL_0" {
            Vec::new()
        } else {
            l
        }
    };

    // Tensors, in llama.cpp's converter order.
    let mut tensors = Vec::new();
    let mut dropped = Vec::new();
    for st in ck.in_file_order() {
        let mapped = match cfg.family {
            Family::Qwen2 => qwen2_name(&st.name, is_classifier),
            Family::Bert => bert_name(&st.name, is_classifier),
            Family::ModernBert => modern_bert_name(&st.name),
        };
        let gguf_name = match mapped {
            Mapped::To(n) => n,
            Mapped::Drop => {
                dropped.push(st.name.clone());
                continue;
            }
            Mapped::Unknown => bail!(
                "{}: tensor '{}' is not part of a {} checkpoint qconvert understands",
                cfg.dir.display(),
                st.name,
                cfg.architecture
            ),
        };
        if tensors.iter().any(|t: &PlannedTensor| t.name == gguf_name) {
            bail!("{}: two tensors map to '{gguf_name}'", cfg.dir.display());
        }
        let dims: Vec<u64> = st.shape.iter().rev().map(|&d| d as u64).collect();
        if dims.is_empty() || dims.contains(&0) {
            bail!(
                "{}: tensor '{}' has shape {:?}",
                cfg.dir.display(),
                st.name,
                st.shape
            );
        }
        let ty = converter_type(&gguf_name, dims.len(), outtype);
        tensors.push(PlannedTensor {
            name: gguf_name,
            dims,
            source: Source::Checkpoint(st.clone()),
            source_type: ty,
            out_type: ty,
        });
    }
    if cfg.family == Family::ModernBert && dropped.iter().any(|n| n.starts_with("decoder.")) {
        eprintln!(
            "qconvert: warning: dropping the masked-LM decoder ({}): llama.cpp's modern-bert has no MLM head; the file serves embeddings and the classifier head",
            dropped.iter().filter(|n| n.starts_with("decoder.")).cloned().collect::<Vec<_>>().join(", ")
        );
    }
    check_shapes(cfg, &tensors, &labels)?;

    let total_params: u64 = tensors.iter().map(PlannedTensor::n_elements).sum();
    let mut meta: Vec<(String, Value)> =
        vec![("general.architecture".into(), Value::from(arch_name))];
    meta.extend(general_keys(&cfg.dir, &cfg.raw, total_params));
    let a = arch_name;
    let mut put = |k: &str, v: Value| meta.push((k.to_string(), v));
    let u32v = |x: u32| Value::U32(x);

    let n_layer = cfg.require_u32(&["n_layers", "num_hidden_layers", "n_layer", "num_layers"])?;
    put(&format!("{a}.block_count"), u32v(n_layer));
    let opt = |v: Option<u32>| v.map(Value::U32);
    let ctx = cfg.u32_of(&[
        "max_position_embeddings",
        "n_ctx",
        "n_positions",
        "max_length",
        "max_sequence_length",
        "model_max_length",
    ])?;
    let embd = cfg.u32_of(&["hidden_size", "n_embd", "dim"])?;
    let ff = cfg.u32_of(&[
        "prefix_dense_intermediate_size",
        "dense_intermediate_size",
        "intermediate_size",
        "n_inner",
        "hidden_dim",
    ])?;
    let heads = cfg.u32_of(&["num_attention_heads", "n_head", "n_heads"])?;
    let heads_kv = cfg.u32_of(&["num_key_value_heads", "n_kv_heads"])?;
    for (k, v) in [
        ("context_length", opt(ctx)),
        ("embedding_length", opt(embd)),
        ("feed_forward_length", opt(ff)),
        ("attention.head_count", opt(heads)),
        ("attention.head_count_kv", opt(heads_kv)),
    ] {
        if let Some(v) = v {
            put(&format!("{a}.{k}"), v);
        }
    }
    if cfg.get("is_causal").and_then(Json::as_bool) == Some(false) {
        put(&format!("{a}.attention.causal"), Value::Bool(false));
    }
    rope_keys(cfg, a, &mut meta)?;
    let mut put = |k: &str, v: Value| meta.push((k.to_string(), v));
    if let Some(eps) = cfg.f32_of(&["rms_norm_eps", "norm_eps"])? {
        put(
            &format!("{a}.attention.layer_norm_rms_epsilon"),
            Value::F32(eps),
        );
    }
    let ln_eps = cfg.f32_of(&["layer_norm_eps", "layer_norm_epsilon", "norm_epsilon"])?;
    let ln_eps = match (ln_eps, cfg.family) {
        (None, Family::ModernBert) => cfg.f32_of(&["norm_eps"])?,
        (v, _) => v,
    };
    if let Some(eps) = ln_eps {
        put(
            &format!("{a}.attention.layer_norm_epsilon"),
            Value::F32(eps),
        );
    }
    let file_type = match outtype {
        GgmlType::F32 => 0,
        GgmlType::BF16 => 32,
        _ => 1,
    };
    put("general.file_type", Value::U32(file_type));

    match cfg.family {
        Family::Qwen2 => {
            pooling_keys(cfg, a, &mut meta)?;
            if is_classifier {
                set_or_append(&mut meta, &format!("{a}.pooling_type"), Value::U32(3));
                meta.push((
                    format!("{a}.classifier.output_labels"),
                    Value::Array(Array::String(labels.clone())),
                ));
            }
        }
        Family::Bert | Family::ModernBert => {
            meta.push((format!("{a}.attention.causal"), Value::Bool(false)));
            pooling_keys(cfg, a, &mut meta)?;
            if !labels.is_empty() {
                meta.push((
                    format!("{a}.classifier.output_labels"),
                    Value::Array(Array::String(labels.clone())),
                ));
            }
            if cfg.family == Family::ModernBert {
                let window = cfg.require_u32(&["local_attention"])?;
                meta.push((format!("{a}.attention.sliding_window"), Value::U32(window)));
                if let Some(p) = cfg.u32_of(&["global_attn_every_n_layers"])? {
                    meta.push((
                        format!("{a}.attention.sliding_window_pattern"),
                        Value::U32(p),
                    ));
                }
                meta.push((format!("{a}.rope.scaling.type"), Value::from("none")));
                meta.push((
                    format!("{a}.vocab_size"),
                    Value::U32(cfg.require_u32(&["vocab_size"])?),
                ));
                if let Some(act) = cfg.str_of("hidden_activation").filter(|s| !s.is_empty()) {
                    meta.push((format!("{a}.hidden_activation"), Value::from(act)));
                }
            }
        }
    }
    meta.push(("general.quantization_version".into(), Value::U32(2)));

    let vocab_size = cfg.require_u32(&["vocab_size"])? as usize;
    match cfg.family {
        Family::Qwen2 => meta.extend(tokenizer_keys(
            &cfg.dir,
            VocabKind::Gpt2,
            vocab_size,
            &cfg.raw,
        )?),
        Family::ModernBert => {
            for k in [
                "tokenizer.ggml.add_bos_token",
                "tokenizer.ggml.add_eos_token",
                "tokenizer.ggml.add_sep_token",
            ] {
                meta.push((k.into(), Value::Bool(true)));
            }
            for (k, v) in tokenizer_keys(&cfg.dir, VocabKind::Gpt2, vocab_size, &cfg.raw)? {
                set_or_append(&mut meta, &k, v);
            }
        }
        Family::Bert => {
            let types = cfg.u32_of(&["type_vocab_size"])?.unwrap_or(1);
            meta.push(("tokenizer.ggml.token_type_count".into(), Value::U32(types)));
            meta.extend(tokenizer_keys(
                &cfg.dir,
                VocabKind::Bert,
                vocab_size,
                &cfg.raw,
            )?);
        }
    }

    let n_gqa = match (heads, heads_kv) {
        (Some(h), Some(kv)) if kv > 0 => (h / kv) as usize,
        _ => 1,
    };
    Ok((
        Plan {
            metadata: meta,
            tensors,
        },
        HfShape {
            n_layer: n_layer as usize,
            n_gqa,
        },
    ))
}

/// RoPE keys: scaling (linear or YaRN) before the base frequencies, as llama.cpp writes them.
fn rope_keys(cfg: &HfConfig, a: &str, meta: &mut Vec<(String, Value)>) -> Result<()> {
    let params = cfg
        .get("rope_parameters")
        .or_else(|| cfg.get("rope_scaling"));
    if let Some(Json::Object(p)) = params {
        let p = p
            .get("full_attention")
            .and_then(Json::as_object)
            .unwrap_or(p);
        let kind = p
            .get("rope_type")
            .or_else(|| p.get("type"))
            .and_then(Json::as_str);
        let factor = p.get("factor").and_then(Json::as_f64);
        match (kind, factor) {
            (Some("linear"), Some(f)) => {
                meta.push((format!("{a}.rope.scaling.type"), Value::from("linear")));
                meta.push((format!("{a}.rope.scaling.factor"), Value::F32(f as f32)));
            }
            (Some("yarn"), Some(f)) => {
                meta.push((format!("{a}.rope.scaling.type"), Value::from("yarn")));
                meta.push((format!("{a}.rope.scaling.factor"), Value::F32(f as f32)));
                if let Some(n) = p
                    .get("original_max_position_embeddings")
                    .and_then(Json::as_u64)
                {
                    meta.push((
                        format!("{a}.rope.scaling.original_context_length"),
                        Value::U32(n as u32),
                    ));
                }
            }
            _ => {}
        }
    }
    // transformers >= 5 keeps rope_theta inside rope_parameters.
    let nested_theta = cfg
        .get("rope_parameters")
        .and_then(|p| p.get("rope_theta"))
        .and_then(Json::as_f64)
        .map(|x| x as f32);
    let theta = match cfg
        .raw
        .get("rope_theta")
        .or_else(|| cfg.raw.get("global_rope_theta"))
    {
        None if nested_theta.is_some() => nested_theta,
        _ => cfg.f32_of(&[
            "global_rope_theta",
            "rope_global_theta",
            "rope_theta_global",
            "rope_theta",
            "rotary_emb_base",
        ])?,
    };
    if let Some(t) = theta {
        meta.push((format!("{a}.rope.freq_base"), Value::F32(t)));
    }
    if let Some(t) = cfg.f32_of(&[
        "local_rope_theta",
        "rope_local_theta",
        "rope_theta_local",
        "swa_rope_theta",
        "rope_local_base_freq",
    ])? {
        meta.push((format!("{a}.rope.freq_base_swa"), Value::F32(t)));
    }
    Ok(())
}

/// `{arch}.pooling_type` from a sentence-transformers `modules.json`, and
/// `{arch}.classifier.pooling_type` from `classifier_pooling`.
fn pooling_keys(cfg: &HfConfig, a: &str, meta: &mut Vec<(String, Value)>) -> Result<()> {
    let modules = cfg.dir.join("modules.json");
    if modules.is_file() {
        let text =
            std::fs::read_to_string(&modules).with_context(|| modules.display().to_string())?;
        let list: Json = serde_json::from_str(&text)
            .with_context(|| format!("{}: not JSON", modules.display()))?;
        let pooling_dir = list.as_array().into_iter().flatten().find_map(|m| {
            let ty = m.get("type")?.as_str()?;
            ty.ends_with("Pooling")
                .then(|| m.get("path")?.as_str().map(str::to_string))?
        });
        if let Some(p) = pooling_dir {
            let path = cfg.dir.join(&p).join("config.json");
            let text =
                std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
            let pc: Json = serde_json::from_str(&text)
                .with_context(|| format!("{}: not JSON", path.display()))?;
            let flag = |k: &str| pc.get(k).and_then(Json::as_bool).unwrap_or(false);
            let ty = if flag("pooling_mode_mean_tokens") {
                1
            } else if flag("pooling_mode_cls_token") {
                2
            } else if flag("pooling_mode_lasttoken") {
                3
            } else {
                match pc.get("pooling_mode").and_then(Json::as_str) {
                    Some("mean") => 1,
                    Some("cls") => 2,
                    Some("lasttoken") => 3,
                    _ => bail!(
                        "{}: only mean, cls and last-token pooling are supported",
                        path.display()
                    ),
                }
            };
            meta.push((format!("{a}.pooling_type"), Value::U32(ty)));
        }
    }
    if let Some(p) = cfg.get("classifier_pooling") {
        let ty = match p.as_str() {
            Some("mean") => 1,
            Some("cls") => 2,
            _ => bail!(
                "{}: classifier_pooling {p} is not cls or mean",
                cfg.dir.display()
            ),
        };
        meta.push((format!("{a}.classifier.pooling_type"), Value::U32(ty)));
    }
    Ok(())
}

/// Cross-checks tensor shapes against config.json, so a contradicting config is an error naming
/// both rather than a broken file.
fn check_shapes(cfg: &HfConfig, tensors: &[PlannedTensor], labels: &[String]) -> Result<()> {
    let get = |name: &str| tensors.iter().find(|t| t.name == name);
    let shape_of = |t: &PlannedTensor| -> Vec<usize> {
        match &t.source {
            Source::Checkpoint(st) => st.shape.clone(),
            _ => t.dims.iter().rev().map(|&d| d as usize).collect(),
        }
    };
    let hidden = cfg.require_u32(&["hidden_size"])? as usize;
    let vocab = cfg.require_u32(&["vocab_size"])? as usize;
    let n_layer = cfg.require_u32(&["num_hidden_layers"])? as usize;
    let heads = cfg.require_u32(&["num_attention_heads"])? as usize;
    if heads == 0 || !hidden.is_multiple_of(heads) {
        bail!(
            "{}: hidden_size {hidden} is not a multiple of num_attention_heads {heads}",
            cfg.dir.display()
        );
    }
    let emb = get("token_embd.weight")
        .with_context(|| format!("{}: no token embedding tensor", cfg.dir.display()))?;
    cfg.check_shape("token_embd.weight", &shape_of(emb), &[vocab, hidden])?;
    let ff = cfg.u32_of(&["intermediate_size"])?.unwrap_or(0) as usize;
    for i in 0..n_layer {
        let l = |s: &str| format!("blk.{i}.{s}.weight");
        let check = |name: String, want: Vec<usize>| -> Result<()> {
            match get(&name) {
                Some(t) => cfg.check_shape(&name, &shape_of(t), &want),
                None => bail!(
                    "{}: tensor for '{name}' is missing (num_hidden_layers is {n_layer})",
                    cfg.dir.display()
                ),
            }
        };
        match cfg.family {
            Family::Qwen2 => {
                let kv = cfg.require_u32(&["num_key_value_heads"])? as usize;
                let hd = hidden / heads;
                check(l("attn_q"), vec![heads * hd, hidden])?;
                check(l("attn_k"), vec![kv * hd, hidden])?;
                check(l("attn_v"), vec![kv * hd, hidden])?;
                check(l("attn_output"), vec![hidden, heads * hd])?;
                check(l("ffn_gate"), vec![ff, hidden])?;
                check(l("ffn_up"), vec![ff, hidden])?;
                check(l("ffn_down"), vec![hidden, ff])?;
            }
            Family::Bert => {
                check(l("attn_q"), vec![hidden, hidden])?;
                check(l("attn_output"), vec![hidden, hidden])?;
                check(l("ffn_up"), vec![ff, hidden])?;
                check(l("ffn_down"), vec![hidden, ff])?;
            }
            Family::ModernBert => {
                check(l("attn_qkv"), vec![3 * hidden, hidden])?;
                check(l("attn_output"), vec![hidden, hidden])?;
                check(l("ffn_up"), vec![2 * ff, hidden])?;
                check(l("ffn_down"), vec![hidden, ff])?;
            }
        }
    }
    if tensors
        .iter()
        .any(|t| t.name.starts_with(&format!("blk.{n_layer}.")))
    {
        bail!(
            "{}: the checkpoint has more layers than num_hidden_layers ({n_layer})",
            cfg.dir.display()
        );
    }
    if let Some(t) = get("cls.output.weight") {
        cfg.check_shape("cls.output.weight", &shape_of(t), &[labels.len(), hidden])?;
    }
    Ok(())
}

/// The source type of a checkpoint tensor (used when a tensor is copied unchanged).
pub fn checkpoint_type(st: &SourceTensor) -> GgmlType {
    dtype_type(st.dtype)
}
