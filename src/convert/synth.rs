//! `qconvert synth`: Hugging Face checkpoints with seeded random weights and real shapes, for
//! speed and memory work (the exact shapes of ModernBERT-base and Qwen2.5-0.5B with a 113-class
//! head) and for tests (tiny models of every supported architecture). The tokenizer is a real
//! one, rebuilt from a llama.cpp vocabulary GGUF.

use super::safetensors_out::{self, Entry, StDtype};
use crate::gguf::{Array, GgufFile, Value};
use crate::tokenizer::from_gguf::tokenizer_files;
use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value as Json};
use std::path::Path;

#[derive(Clone, Debug)]
pub struct SynthSpec {
    /// The Hugging Face architecture, e.g. `ModernBertForSequenceClassification`.
    pub architecture: String,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub ff: usize,
    pub vocab: usize,
    pub max_pos: usize,
    /// Classes of a sequence-classification head (0: no head).
    pub labels: usize,
    pub tie: bool,
    pub local_attention: usize,
    pub dtype: StDtype,
    pub std: f32,
    pub seed: u64,
}

impl SynthSpec {
    /// The named shapes `qconvert synth` knows.
    pub fn preset(name: &str) -> Result<SynthSpec> {
        let qwen = |arch: &str, labels| SynthSpec {
            architecture: arch.into(),
            hidden: 896,
            layers: 24,
            heads: 14,
            kv_heads: 2,
            ff: 4864,
            vocab: 151_936,
            max_pos: 32_768,
            labels,
            tie: true,
            local_attention: 0,
            dtype: StDtype::BF16,
            std: 0.02,
            seed: 0x5EED_0001,
        };
        let modernbert = |arch: &str, labels| SynthSpec {
            architecture: arch.into(),
            hidden: 768,
            layers: 22,
            heads: 12,
            kv_heads: 12,
            ff: 1152,
            vocab: 50_368,
            max_pos: 8192,
            labels,
            tie: true,
            local_attention: 128,
            dtype: StDtype::F32,
            std: 0.02,
            seed: 0x5EED_0002,
        };
        let tiny = |arch: &str, hidden, layers, heads, kv, ff, vocab, labels, seed| SynthSpec {
            architecture: String::from(arch),
            hidden,
            layers,
            heads,
            kv_heads: kv,
            ff,
            vocab,
            max_pos: 512,
            labels,
            tie: true,
            local_attention: 8,
            dtype: StDtype::F16,
            std: 0.08,
            seed,
        };
        Ok(match name {
            "qwen2.5-0.5b" => qwen("Qwen2ForCausalLM", 0),
            "qwen2.5-0.5b-cls113" => qwen("Qwen2ForSequenceClassification", 113),
            "modernbert-base" => modernbert("ModernBertModel", 0),
            "modernbert-base-cls113" => modernbert("ModernBertForSequenceClassification", 113),
            "tiny-qwen2" => tiny("Qwen2ForCausalLM", 64, 3, 4, 1, 256, 151_936, 0, 11),
            "tiny-qwen2-cls" => tiny("Qwen2ForSequenceClassification", 64, 3, 4, 1, 256, 151_936, 5, 12),
            "tiny-bert" => tiny("BertModel", 64, 2, 4, 4, 256, 30_522, 0, 13),
            "tiny-bert-cls" => tiny("BertForSequenceClassification", 64, 2, 4, 4, 256, 30_522, 3, 14),
            "tiny-modernbert" => tiny("ModernBertModel", 64, 4, 4, 4, 256, 50_368, 0, 15),
            "tiny-modernbert-cls" => tiny("ModernBertForSequenceClassification", 64, 4, 4, 4, 256, 50_368, 5, 16),
            other => bail!(
                "unknown synth preset '{other}' (qwen2.5-0.5b, qwen2.5-0.5b-cls113, modernbert-base, modernbert-base-cls113, tiny-qwen2, tiny-qwen2-cls, tiny-bert, tiny-bert-cls, tiny-modernbert, tiny-modernbert-cls)"
            ),
        })
    }

    fn family(&self) -> &'static str {
        if self.architecture.starts_with("Qwen2") {
            "qwen2"
        } else if self.architecture.starts_with("ModernBert") {
            "modernbert"
        } else {
            "bert"
        }
    }

    fn classifier(&self) -> bool {
        self.architecture.ends_with("ForSequenceClassification")
    }
}

/// How a tensor is initialised.
#[derive(Clone, Copy)]
enum Init {
    /// Normal(0, std).
    Normal,
    /// 1 + Normal(0, 0.1): a norm's scale, perturbed so tests notice a misplaced norm.
    NormScale,
    /// Normal(0, 0.1 * std): biases.
    Bias,
}

struct Spec {
    name: String,
    shape: Vec<u64>,
    init: Init,
}

fn tensors(s: &SynthSpec) -> Vec<Spec> {
    let (h, f, v) = (s.hidden as u64, s.ff as u64, s.vocab as u64);
    let hd = h / s.heads as u64;
    let kv = s.kv_heads as u64 * hd;
    let mut out = Vec::new();
    let mut t = |name: String, shape: &[u64], init| {
        out.push(Spec {
            name,
            shape: shape.to_vec(),
            init,
        })
    };
    match s.family() {
        "qwen2" => {
            t("model.embed_tokens.weight".into(), &[v, h], Init::Normal);
            for i in 0..s.layers {
                let p = format!("model.layers.{i}");
                t(format!("{p}.input_layernorm.weight"), &[h], Init::NormScale);
                t(
                    format!("{p}.self_attn.q_proj.weight"),
                    &[h, h],
                    Init::Normal,
                );
                t(format!("{p}.self_attn.q_proj.bias"), &[h], Init::Bias);
                t(
                    format!("{p}.self_attn.k_proj.weight"),
                    &[kv, h],
                    Init::Normal,
                );
                t(format!("{p}.self_attn.k_proj.bias"), &[kv], Init::Bias);
                t(
                    format!("{p}.self_attn.v_proj.weight"),
                    &[kv, h],
                    Init::Normal,
                );
                t(format!("{p}.self_attn.v_proj.bias"), &[kv], Init::Bias);
                t(
                    format!("{p}.self_attn.o_proj.weight"),
                    &[h, h],
                    Init::Normal,
                );
                t(
                    format!("{p}.post_attention_layernorm.weight"),
                    &[h],
                    Init::NormScale,
                );
                t(format!("{p}.mlp.gate_proj.weight"), &[f, h], Init::Normal);
                t(format!("{p}.mlp.up_proj.weight"), &[f, h], Init::Normal);
                t(format!("{p}.mlp.down_proj.weight"), &[h, f], Init::Normal);
            }
            t("model.norm.weight".into(), &[h], Init::NormScale);
            if !s.tie && !s.classifier() {
                t("lm_head.weight".into(), &[v, h], Init::Normal);
            }
            if s.classifier() {
                t("score.weight".into(), &[s.labels as u64, h], Init::Normal);
            }
        }
        "bert" => {
            let p = if s.classifier() { "bert." } else { "" };
            t(
                format!("{p}embeddings.word_embeddings.weight"),
                &[v, h],
                Init::Normal,
            );
            t(
                format!("{p}embeddings.position_embeddings.weight"),
                &[s.max_pos as u64, h],
                Init::Normal,
            );
            t(
                format!("{p}embeddings.token_type_embeddings.weight"),
                &[2, h],
                Init::Normal,
            );
            t(
                format!("{p}embeddings.LayerNorm.weight"),
                &[h],
                Init::NormScale,
            );
            t(format!("{p}embeddings.LayerNorm.bias"), &[h], Init::Bias);
            for i in 0..s.layers {
                let l = format!("{p}encoder.layer.{i}");
                for m in [
                    "attention.self.query",
                    "attention.self.key",
                    "attention.self.value",
                    "attention.output.dense",
                ] {
                    t(format!("{l}.{m}.weight"), &[h, h], Init::Normal);
                    t(format!("{l}.{m}.bias"), &[h], Init::Bias);
                }
                t(
                    format!("{l}.attention.output.LayerNorm.weight"),
                    &[h],
                    Init::NormScale,
                );
                t(
                    format!("{l}.attention.output.LayerNorm.bias"),
                    &[h],
                    Init::Bias,
                );
                t(
                    format!("{l}.intermediate.dense.weight"),
                    &[f, h],
                    Init::Normal,
                );
                t(format!("{l}.intermediate.dense.bias"), &[f], Init::Bias);
                t(format!("{l}.output.dense.weight"), &[h, f], Init::Normal);
                t(format!("{l}.output.dense.bias"), &[h], Init::Bias);
                t(
                    format!("{l}.output.LayerNorm.weight"),
                    &[h],
                    Init::NormScale,
                );
                t(format!("{l}.output.LayerNorm.bias"), &[h], Init::Bias);
            }
            t(format!("{p}pooler.dense.weight"), &[h, h], Init::Normal);
            t(format!("{p}pooler.dense.bias"), &[h], Init::Bias);
            if s.classifier() {
                t(
                    "classifier.weight".into(),
                    &[s.labels as u64, h],
                    Init::Normal,
                );
                t("classifier.bias".into(), &[s.labels as u64], Init::Bias);
            }
        }
        _ => {
            let p = if s.classifier() { "model." } else { "" };
            t(
                format!("{p}embeddings.tok_embeddings.weight"),
                &[v, h],
                Init::Normal,
            );
            t(format!("{p}embeddings.norm.weight"), &[h], Init::NormScale);
            for i in 0..s.layers {
                let l = format!("{p}layers.{i}");
                // Layer 0's attention norm is an identity in ModernBERT: no tensor.
                if i > 0 {
                    t(format!("{l}.attn_norm.weight"), &[h], Init::NormScale);
                }
                t(format!("{l}.attn.Wqkv.weight"), &[3 * h, h], Init::Normal);
                t(format!("{l}.attn.Wo.weight"), &[h, h], Init::Normal);
                t(format!("{l}.mlp_norm.weight"), &[h], Init::NormScale);
                t(format!("{l}.mlp.Wi.weight"), &[2 * f, h], Init::Normal);
                t(format!("{l}.mlp.Wo.weight"), &[h, f], Init::Normal);
            }
            t(format!("{p}final_norm.weight"), &[h], Init::NormScale);
            if s.classifier() {
                t("head.dense.weight".into(), &[h, h], Init::Normal);
                t("head.norm.weight".into(), &[h], Init::NormScale);
                t(
                    "classifier.weight".into(),
                    &[s.labels as u64, h],
                    Init::Normal,
                );
                t("classifier.bias".into(), &[s.labels as u64], Init::Bias);
            }
        }
    }
    out
}

/// SplitMix64, and approximately normal values as a scaled sum of four uniforms (Irwin-Hall):
/// integer and exactly rounded float arithmetic only, so the same seed gives the same bytes on
/// every platform (Box-Muller would depend on the C library's `log` and `cos`).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Mean 0, variance 1, bounded by ±2·sqrt(3).
    fn normal(&mut self) -> f64 {
        let s = self.uniform() + self.uniform() + self.uniform() + self.uniform();
        (s - 2.0) * 3f64.sqrt()
    }
}

fn fill(rng: &mut Rng, out: &mut [f32], init: Init, std: f32) {
    let (mean, sd) = match init {
        Init::Normal => (0.0, std as f64),
        Init::NormScale => (1.0, 0.1),
        Init::Bias => (0.0, 0.1 * std as f64),
    };
    for v in out.iter_mut() {
        *v = (mean + sd * rng.normal()) as f32;
    }
}

/// Where the tokenizer comes from: a llama.cpp vocabulary GGUF, rebuilt; for ModernBERT, the
/// GPT-NeoX vocabulary plus ModernBERT's added tokens.
pub fn tokenizer_from_vocab(vocab_gguf: &Path, modernbert: bool) -> Result<(Json, Json)> {
    let f = GgufFile::open(vocab_gguf)?;
    if !modernbert {
        return tokenizer_files(&f);
    }
    let mut meta: Vec<(String, Value)> = f.metadata().to_vec();
    let mut tokens = match f.get_array("tokenizer.ggml.tokens")? {
        Array::String(v) => v.clone(),
        _ => bail!("{}: tokens are not strings", vocab_gguf.display()),
    };
    if tokens.len() < 50_277 {
        bail!(
            "{}: expected GPT-NeoX's vocabulary of 50,277 tokens, found {}",
            vocab_gguf.display(),
            tokens.len()
        );
    }
    tokens.truncate(50_277);
    let mut types = vec![1i64; tokens.len()];
    // ModernBERT's added tokens (answerdotai/ModernBERT-base): PII placeholders, NeoX's runs of
    // spaces (ids 50254..=50276) as added tokens, then BERT-style specials and 83 unused slots up
    // to the padded vocabulary of 50,368.
    tokens[0] = "|||IP_ADDRESS|||".into();
    types[0] = 4;
    tokens[1] = "<|padding|>".into();
    types[1] = 3;
    for t in &mut types[50_254..50_277] {
        *t = 4;
    }
    for (t, ty) in [
        ("|||EMAIL_ADDRESS|||", 4),
        ("|||PHONE_NUMBER|||", 4),
        ("<|endoftext|>", 3),
        ("[UNK]", 3),
        ("[CLS]", 3),
        ("[SEP]", 3),
        ("[PAD]", 3),
        ("[MASK]", 3),
    ] {
        tokens.push(t.into());
        types.push(ty);
    }
    for i in 0..83 {
        tokens.push(format!("[unused{i}]"));
        types.push(3);
    }
    let set = |meta: &mut Vec<(String, Value)>, k: &str, v: Value| {
        meta.retain(|(key, _)| key != k);
        meta.push((k.into(), v));
    };
    set(
        &mut meta,
        "tokenizer.ggml.tokens",
        Value::Array(Array::String(tokens)),
    );
    set(
        &mut meta,
        "tokenizer.ggml.token_type",
        Value::Array(Array::I32(types.iter().map(|&t| t as i32).collect())),
    );
    set(&mut meta, "tokenizer.ggml.pre", Value::from("modern-bert"));
    for (k, id) in [
        ("bos", 50281u32),
        ("eos", 50282),
        ("unknown", 50280),
        ("seperator", 50282),
        ("padding", 50283),
        ("mask", 50284),
    ] {
        set(
            &mut meta,
            &format!("tokenizer.ggml.{k}_token_id"),
            Value::U32(id),
        );
    }
    set(&mut meta, "tokenizer.ggml.add_bos_token", Value::Bool(true));
    set(&mut meta, "tokenizer.ggml.add_eos_token", Value::Bool(true));
    tokenizer_files(meta.as_slice())
}

fn config(s: &SynthSpec, tok_cfg: &Json, tokenizer: &Json) -> Json {
    let id_of = |key: &str| -> Option<u64> {
        let t = tok_cfg.get(key)?.as_str()?;
        tokenizer["added_tokens"]
            .as_array()?
            .iter()
            .find(|a| a["content"] == t)?
            .get("id")?
            .as_u64()
    };
    let mut c = Map::new();
    c.insert("architectures".into(), json!([s.architecture]));
    c.insert(
        "_name_or_path".into(),
        json!(format!("qgguf-synth/{}", s.architecture)),
    );
    c.insert("hidden_size".into(), json!(s.hidden));
    c.insert("intermediate_size".into(), json!(s.ff));
    c.insert("num_hidden_layers".into(), json!(s.layers));
    c.insert("num_attention_heads".into(), json!(s.heads));
    c.insert("max_position_embeddings".into(), json!(s.max_pos));
    c.insert("vocab_size".into(), json!(s.vocab));
    c.insert("initializer_range".into(), json!(s.std));
    match s.family() {
        "qwen2" => {
            c.insert("model_type".into(), json!("qwen2"));
            c.insert("num_key_value_heads".into(), json!(s.kv_heads));
            c.insert("hidden_act".into(), json!("silu"));
            c.insert("rms_norm_eps".into(), json!(1e-6));
            c.insert("rope_theta".into(), json!(1_000_000.0));
            c.insert("tie_word_embeddings".into(), json!(s.tie));
            c.insert("use_sliding_window".into(), json!(false));
            c.insert("sliding_window".into(), json!(s.max_pos));
            c.insert("max_window_layers".into(), json!(s.layers));
            c.insert("attention_dropout".into(), json!(0.0));
            c.insert("bos_token_id".into(), json!(151_643));
            c.insert("eos_token_id".into(), json!(151_643));
            c.insert("pad_token_id".into(), json!(151_643));
        }
        "bert" => {
            c.insert("model_type".into(), json!("bert"));
            c.insert("hidden_act".into(), json!("gelu"));
            c.insert("layer_norm_eps".into(), json!(1e-12));
            c.insert("type_vocab_size".into(), json!(2));
            c.insert(
                "pad_token_id".into(),
                json!(id_of("pad_token").unwrap_or(0)),
            );
            c.insert("position_embedding_type".into(), json!("absolute"));
        }
        _ => {
            c.insert("model_type".into(), json!("modernbert"));
            c.insert("hidden_activation".into(), json!("gelu"));
            c.insert("norm_eps".into(), json!(1e-5));
            // Official ModernBERT configs carry this legacy key too; llama.cpp needs it.
            c.insert("layer_norm_eps".into(), json!(1e-5));
            c.insert("norm_bias".into(), json!(false));
            c.insert("global_rope_theta".into(), json!(160_000.0));
            c.insert("local_rope_theta".into(), json!(10_000.0));
            c.insert("local_attention".into(), json!(s.local_attention));
            c.insert("global_attn_every_n_layers".into(), json!(3));
            c.insert("classifier_pooling".into(), json!("mean"));
            c.insert("classifier_bias".into(), json!(false));
            c.insert("classifier_activation".into(), json!("gelu"));
            for k in ["attention_bias", "mlp_bias", "decoder_bias"] {
                c.insert(k.into(), json!(false));
            }
            for (k, t) in [
                ("pad_token_id", "pad_token"),
                ("bos_token_id", "cls_token"),
                ("cls_token_id", "cls_token"),
                ("eos_token_id", "sep_token"),
                ("sep_token_id", "sep_token"),
            ] {
                if let Some(id) = id_of(t) {
                    c.insert(k.into(), json!(id));
                }
            }
        }
    }
    if s.classifier() {
        let names: Vec<String> = (0..s.labels).map(|i| format!("class_{i:03}")).collect();
        c.insert(
            "id2label".into(),
            Json::Object(
                names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (i.to_string(), json!(n)))
                    .collect(),
            ),
        );
        c.insert(
            "label2id".into(),
            Json::Object(
                names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (n.clone(), json!(i)))
                    .collect(),
            ),
        );
    }
    c.insert("torch_dtype".into(), json!(s.dtype.torch_name()));
    Json::Object(c)
}

/// Writes the checkpoint folder. Returns the safetensors size.
pub fn synthesize(spec: &SynthSpec, vocab_gguf: &Path, out: &Path, progress: bool) -> Result<u64> {
    let (tokenizer, tok_cfg) = tokenizer_from_vocab(vocab_gguf, spec.family() == "modernbert")
        .with_context(|| format!("building the tokenizer from {}", vocab_gguf.display()))?;
    let n_tok = tokenizer["model"]["vocab"]
        .as_object()
        .map_or(0, |v| v.len());
    if n_tok > spec.vocab {
        bail!(
            "the tokenizer has {n_tok} tokens, more than the model's vocabulary of {}",
            spec.vocab
        );
    }
    std::fs::create_dir_all(out).with_context(|| out.display().to_string())?;
    let write = |name: &str, v: &Json| -> Result<()> {
        let p = out.join(name);
        std::fs::write(&p, serde_json::to_string_pretty(v)? + "\n")
            .with_context(|| p.display().to_string())
    };
    write("config.json", &config(spec, &tok_cfg, &tokenizer))?;
    write("tokenizer.json", &tokenizer)?;
    write("tokenizer_config.json", &tok_cfg)?;
    let specs = tensors(spec);
    let entries: Vec<Entry> = specs
        .iter()
        .map(|t| Entry {
            name: t.name.clone(),
            shape: t.shape.clone(),
        })
        .collect();
    let mut rng = Rng(spec.seed);
    let mut buf = vec![0.0f32; 1 << 20];
    safetensors_out::write(
        &out.join("model.safetensors"),
        &entries,
        spec.dtype,
        progress,
        |i, sink| {
            let mut left = specs[i].shape.iter().product::<u64>() as usize;
            while left > 0 {
                let n = left.min(buf.len());
                fill(&mut rng, &mut buf[..n], specs[i].init, spec.std);
                sink(&buf[..n])?;
                left -= n;
            }
            Ok(())
        },
    )
}
