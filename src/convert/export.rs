//! `qconvert export`: a GGUF model back to a Hugging Face folder (config.json, model.safetensors
//! with dequantized F16/BF16/F32 weights under transformers' names, tokenizer.json and
//! tokenizer_config.json rebuilt from the GGUF's tokenizer metadata, generation_config.json), so
//! a model that exists only as GGUF can serve as an fp16 baseline, and round trips can be tested.

use super::safetensors_out::{self, Entry};
use crate::gguf::{Array, GgufFile, TensorInfo, Value};
use crate::tokenizer::from_gguf::tokenizer_files;
use anyhow::{bail, Context, Result};
use quant_types::dynamic;
use serde_json::{json, Map, Value as Json};
use std::path::Path;

pub use super::safetensors_out::StDtype as ExportDtype;

/// One exported tensor: its Hugging Face name and PyTorch shape.
struct Out<'a> {
    hf_name: String,
    shape: Vec<u64>,
    info: &'a TensorInfo,
}

fn hf_name(arch: &str, gguf: &str, classifier: bool) -> Result<String> {
    let (stem, suffix) = gguf
        .rsplit_once('.')
        .filter(|(_, s)| *s == "weight" || *s == "bias")
        .with_context(|| format!("tensor '{gguf}' has no .weight/.bias suffix"))?;
    let layer = |rest: &str| -> Option<(String, String)> {
        let r = rest.strip_prefix("blk.")?;
        let (i, part) = r.split_once('.')?;
        Some((i.to_string(), part.to_string()))
    };
    let name = match arch {
        "qwen2" => match stem {
            "token_embd" => "model.embed_tokens".to_string(),
            "output" => "lm_head".to_string(),
            "output_norm" => "model.norm".to_string(),
            "cls.output" => "score".to_string(),
            _ => {
                let (i, part) = layer(stem)
                    .with_context(|| format!("qwen2 tensor '{gguf}' has no Hugging Face name"))?;
                let hf = match part.as_str() {
                    "attn_norm" => "input_layernorm",
                    "attn_q" => "self_attn.q_proj",
                    "attn_k" => "self_attn.k_proj",
                    "attn_v" => "self_attn.v_proj",
                    "attn_output" => "self_attn.o_proj",
                    "ffn_norm" => "post_attention_layernorm",
                    "ffn_gate" => "mlp.gate_proj",
                    "ffn_up" => "mlp.up_proj",
                    "ffn_down" => "mlp.down_proj",
                    _ => bail!("qwen2 tensor '{gguf}' has no Hugging Face name"),
                };
                format!("model.layers.{i}.{hf}")
            }
        },
        "bert" => {
            let p = if classifier { "bert." } else { "" };
            match stem {
                "token_embd" => format!("{p}embeddings.word_embeddings"),
                "position_embd" => format!("{p}embeddings.position_embeddings"),
                "token_types" => format!("{p}embeddings.token_type_embeddings"),
                "token_embd_norm" => format!("{p}embeddings.LayerNorm"),
                "cls" => format!("{p}pooler.dense"),
                "cls.output" => "classifier".to_string(),
                _ => {
                    let (i, part) = layer(stem).with_context(|| {
                        format!("bert tensor '{gguf}' has no Hugging Face name")
                    })?;
                    let hf = match part.as_str() {
                        "attn_q" => "attention.self.query",
                        "attn_k" => "attention.self.key",
                        "attn_v" => "attention.self.value",
                        "attn_output" => "attention.output.dense",
                        "attn_output_norm" => "attention.output.LayerNorm",
                        "ffn_up" => "intermediate.dense",
                        "ffn_down" => "output.dense",
                        "layer_output_norm" => "output.LayerNorm",
                        _ => bail!("bert tensor '{gguf}' has no Hugging Face name"),
                    };
                    format!("{p}encoder.layer.{i}.{hf}")
                }
            }
        }
        "modern-bert" => {
            let p = if classifier { "model." } else { "" };
            match stem {
                "token_embd" => format!("{p}embeddings.tok_embeddings"),
                "token_embd_norm" => format!("{p}embeddings.norm"),
                "output_norm" => format!("{p}final_norm"),
                "cls" => "head.dense".to_string(),
                "cls.norm" => "head.norm".to_string(),
                "cls.output" => "classifier".to_string(),
                _ => {
                    let (i, part) = layer(stem).with_context(|| {
                        format!("modern-bert tensor '{gguf}' has no Hugging Face name")
                    })?;
                    let hf = match part.as_str() {
                        "attn_norm" => "attn_norm",
                        "attn_qkv" => "attn.Wqkv",
                        "attn_output" => "attn.Wo",
                        "ffn_norm" => "mlp_norm",
                        "ffn_up" => "mlp.Wi",
                        "ffn_down" => "mlp.Wo",
                        _ => bail!("modern-bert tensor '{gguf}' has no Hugging Face name"),
                    };
                    format!("{p}layers.{i}.{hf}")
                }
            }
        }
        other => bail!(
            "exporting architecture '{other}' is not supported (qwen2, bert and modern-bert are)"
        ),
    };
    Ok(format!("{name}.{suffix}"))
}

/// An f32 as the shortest decimal that reads back as the same f32 (1e-6, not
/// 9.999999974752427e-7), as config.json files write it.
fn short(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(x as f64)
}

fn meta_u64(f: &GgufFile, key: &str) -> Option<u64> {
    match f.get(key)? {
        Value::Array(a) => a.to_i64_vec()?.first().map(|&v| v as u64),
        v => v.as_u64(),
    }
}

/// config.json for the model, from the GGUF's hyper-parameters.
fn config_json(f: &GgufFile, arch: &str, classifier: bool, dtype: ExportDtype) -> Result<Json> {
    let k = |s: &str| format!("{arch}.{s}");
    let req = |s: &str| f.get_u64(&k(s));
    let embd = f
        .tensor("token_embd.weight")
        .context("no token_embd.weight tensor")?;
    let vocab = embd.dims[1];
    let mut c = Map::new();
    let labels: Vec<String> = match f.get(&k("classifier.output_labels")) {
        Some(Value::Array(Array::String(v))) => v.clone(),
        _ => Vec::new(),
    };
    let tok = |key: &str| f.get(key).and_then(Value::as_u64);
    match arch {
        "qwen2" => {
            let arch_name = if classifier {
                "Qwen2ForSequenceClassification"
            } else {
                "Qwen2ForCausalLM"
            };
            c.insert("architectures".into(), json!([arch_name]));
            c.insert("model_type".into(), json!("qwen2"));
            c.insert("hidden_act".into(), json!("silu"));
            c.insert("hidden_size".into(), json!(req("embedding_length")?));
            c.insert(
                "intermediate_size".into(),
                json!(req("feed_forward_length")?),
            );
            c.insert("num_hidden_layers".into(), json!(req("block_count")?));
            c.insert(
                "num_attention_heads".into(),
                json!(meta_u64(f, &k("attention.head_count")).context("no head_count")?),
            );
            c.insert(
                "num_key_value_heads".into(),
                json!(meta_u64(f, &k("attention.head_count_kv"))
                    .or(meta_u64(f, &k("attention.head_count")))),
            );
            c.insert(
                "max_position_embeddings".into(),
                json!(req("context_length")?),
            );
            c.insert(
                "rms_norm_eps".into(),
                json!(short(f.get_f32(&k("attention.layer_norm_rms_epsilon"))?)),
            );
            c.insert(
                "rope_theta".into(),
                json!(short(f.get_f32(&k("rope.freq_base")).unwrap_or(10000.0))),
            );
            if f.get_str(&k("rope.scaling.type")).ok() == Some("yarn") {
                c.insert("rope_scaling".into(), json!({
                    "type": "yarn",
                    "factor": short(f.get_f32(&k("rope.scaling.factor"))?),
                    "original_max_position_embeddings": f.get_u64(&k("rope.scaling.original_context_length"))?,
                }));
            }
            c.insert(
                "tie_word_embeddings".into(),
                json!(f.tensor("output.weight").is_none()),
            );
            c.insert("use_sliding_window".into(), json!(false));
        }
        "bert" => {
            let arch_name = if classifier {
                "BertForSequenceClassification"
            } else {
                "BertModel"
            };
            c.insert("architectures".into(), json!([arch_name]));
            c.insert("model_type".into(), json!("bert"));
            c.insert("hidden_act".into(), json!("gelu"));
            c.insert("hidden_size".into(), json!(req("embedding_length")?));
            c.insert(
                "intermediate_size".into(),
                json!(req("feed_forward_length")?),
            );
            c.insert("num_hidden_layers".into(), json!(req("block_count")?));
            c.insert(
                "num_attention_heads".into(),
                json!(meta_u64(f, &k("attention.head_count")).context("no head_count")?),
            );
            c.insert(
                "max_position_embeddings".into(),
                json!(req("context_length")?),
            );
            c.insert(
                "layer_norm_eps".into(),
                json!(short(f.get_f32(&k("attention.layer_norm_epsilon"))?)),
            );
            let types = f.tensor("token_types.weight").map_or(2, |t| t.dims[1]);
            c.insert("type_vocab_size".into(), json!(types));
            c.insert("position_embedding_type".into(), json!("absolute"));
        }
        "modern-bert" => {
            let arch_name = if classifier {
                "ModernBertForSequenceClassification"
            } else {
                "ModernBertModel"
            };
            c.insert("architectures".into(), json!([arch_name]));
            c.insert("model_type".into(), json!("modernbert"));
            c.insert("hidden_size".into(), json!(req("embedding_length")?));
            c.insert(
                "intermediate_size".into(),
                json!(req("feed_forward_length")?),
            );
            c.insert("num_hidden_layers".into(), json!(req("block_count")?));
            c.insert(
                "num_attention_heads".into(),
                json!(meta_u64(f, &k("attention.head_count")).context("no head_count")?),
            );
            c.insert(
                "max_position_embeddings".into(),
                json!(req("context_length")?),
            );
            let eps = f
                .get_f32(&k("attention.layer_norm_epsilon"))
                .or_else(|_| f.get_f32(&k("attention.layer_norm_rms_epsilon")))?;
            c.insert("norm_eps".into(), json!(short(eps)));
            c.insert("layer_norm_eps".into(), json!(short(eps)));
            c.insert(
                "norm_bias".into(),
                json!(f.tensor("token_embd_norm.bias").is_some()),
            );
            c.insert(
                "global_rope_theta".into(),
                json!(short(f.get_f32(&k("rope.freq_base")).unwrap_or(160000.0))),
            );
            c.insert(
                "local_rope_theta".into(),
                json!(short(
                    f.get_f32(&k("rope.freq_base_swa")).unwrap_or(10000.0)
                )),
            );
            c.insert(
                "local_attention".into(),
                json!(req("attention.sliding_window")?),
            );
            c.insert(
                "global_attn_every_n_layers".into(),
                json!(req("attention.sliding_window_pattern").unwrap_or(3)),
            );
            let pooling = match f.get_u64(&k("classifier.pooling_type")).unwrap_or(1) {
                2 => "cls",
                _ => "mean",
            };
            c.insert("classifier_pooling".into(), json!(pooling));
            c.insert(
                "classifier_bias".into(),
                json!(f.tensor("cls.bias").is_some()),
            );
            c.insert(
                "hidden_activation".into(),
                json!(f.get_str(&k("hidden_activation")).unwrap_or("gelu")),
            );
            for key in ["attention_bias", "mlp_bias", "decoder_bias"] {
                c.insert(key.into(), json!(false));
            }
            if let Some(b) = tok("tokenizer.ggml.bos_token_id") {
                c.insert("cls_token_id".into(), json!(b));
            }
            if let Some(s) =
                tok("tokenizer.ggml.seperator_token_id").or(tok("tokenizer.ggml.eos_token_id"))
            {
                c.insert("sep_token_id".into(), json!(s));
            }
        }
        other => bail!("exporting architecture '{other}' is not supported"),
    }
    c.insert("vocab_size".into(), json!(vocab));
    for (cfg_key, meta_key) in [
        ("bos_token_id", "tokenizer.ggml.bos_token_id"),
        ("eos_token_id", "tokenizer.ggml.eos_token_id"),
        ("pad_token_id", "tokenizer.ggml.padding_token_id"),
    ] {
        if let Some(v) = tok(meta_key) {
            c.insert(cfg_key.into(), json!(v));
        }
    }
    if !labels.is_empty() {
        let id2label: Map<String, Json> = labels
            .iter()
            .enumerate()
            .map(|(i, l)| (i.to_string(), json!(l)))
            .collect();
        let label2id: Map<String, Json> = labels
            .iter()
            .enumerate()
            .map(|(i, l)| (l.clone(), json!(i)))
            .collect();
        c.insert("id2label".into(), Json::Object(id2label));
        c.insert("label2id".into(), Json::Object(label2id));
    }
    c.insert("torch_dtype".into(), json!(dtype.torch_name()));
    Ok(Json::Object(c))
}

/// generation_config.json from `general.sampling.*` (when any is present).
fn generation_config(f: &GgufFile) -> Option<Json> {
    let mut g = Map::new();
    for (k, hf) in [
        ("top_k", "top_k"),
        ("top_p", "top_p"),
        ("min_p", "min_p"),
        ("temp", "temperature"),
        ("penalty_repeat", "repetition_penalty"),
    ] {
        match f.get(&format!("general.sampling.{k}")) {
            Some(Value::F32(v)) => {
                g.insert(hf.into(), json!(short(*v)));
            }
            Some(v) => {
                if let Some(i) = v.as_i64() {
                    g.insert(hf.into(), json!(i));
                }
            }
            None => {}
        }
    }
    if g.is_empty() {
        return None;
    }
    for (k, meta) in [
        ("bos_token_id", "tokenizer.ggml.bos_token_id"),
        ("eos_token_id", "tokenizer.ggml.eos_token_id"),
    ] {
        if let Some(v) = f.get(meta).and_then(Value::as_u64) {
            g.insert(k.into(), json!(v));
        }
    }
    Some(Json::Object(g))
}

fn write_json(dir: &Path, name: &str, v: &Json) -> Result<()> {
    let path = dir.join(name);
    let text = serde_json::to_string_pretty(v)?;
    std::fs::write(&path, text + "\n").with_context(|| path.display().to_string())
}

/// Exports `f` into `dir` (created if absent; existing files there are replaced).
pub fn export(f: &GgufFile, dir: &Path, dtype: ExportDtype, progress: bool) -> Result<u64> {
    let arch = f.architecture()?.to_string();
    let classifier = f.tensor("cls.output.weight").is_some();
    let mut outs = Vec::new();
    for info in f.tensors() {
        if info.ggml_type().is_none() {
            bail!(
                "{}: tensor '{}' has type {}, which qgguf cannot dequantize",
                f.path().display(),
                info.name,
                info.type_info.name
            );
        }
        outs.push(Out {
            hf_name: hf_name(&arch, &info.name, classifier)?,
            shape: info.dims.iter().rev().copied().collect(),
            info,
        });
    }
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    write_json(
        dir,
        "config.json",
        &config_json(f, &arch, classifier, dtype)?,
    )?;
    let (tokenizer, tokenizer_config) = tokenizer_files(f)
        .with_context(|| format!("{}: rebuilding tokenizer.json", f.path().display()))?;
    write_json(dir, "tokenizer.json", &tokenizer)?;
    write_json(dir, "tokenizer_config.json", &tokenizer_config)?;
    if let Some(g) = generation_config(f) {
        write_json(dir, "generation_config.json", &g)?;
    }
    write_safetensors(&dir.join("model.safetensors"), f, &outs, dtype, progress)
}

/// Streams the dequantized tensors into a safetensors file.
fn write_safetensors(
    path: &Path,
    f: &GgufFile,
    outs: &[Out],
    dtype: ExportDtype,
    progress: bool,
) -> Result<u64> {
    let entries: Vec<Entry> = outs
        .iter()
        .map(|o| Entry {
            name: o.hf_name.clone(),
            shape: o.shape.clone(),
        })
        .collect();
    safetensors_out::write(path, &entries, dtype, progress, |i, sink| {
        let info = outs[i].info;
        let ty = info.ggml_type().expect("checked by export");
        let (row, rows) = info.rows();
        let data = f.tensor_data(info);
        let row_bytes = ty.row_bytes(row).expect("validated");
        let chunk_rows = ((1 << 22) / row).max(1);
        let mut vals = vec![0.0f32; chunk_rows * row];
        let mut r = 0;
        while r < rows {
            let n = chunk_rows.min(rows - r);
            let v = &mut vals[..n * row];
            dynamic::dequantize(ty, &data[r * row_bytes..(r + n) * row_bytes], v)?;
            sink(v)?;
            r += n;
        }
        f.release(info);
        Ok(())
    })
}
