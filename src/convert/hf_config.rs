//! `config.json` with the defaults transformers fills in. llama.cpp's converter reads
//! hyper-parameters from `AutoConfig(...).to_dict()`, so a key absent from the file still has its
//! class default, and a key present with `null` suppresses the value; [`HfConfig::hp`] reproduces
//! that: the first listed key present in (defaults overlaid by the file) wins, even when null.

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value as Json};
use std::path::{Path, PathBuf};

/// The architectures qconvert reads, by their `architectures[0]` name.
pub const SUPPORTED: &[&str] = &[
    "Qwen2ForCausalLM",
    "Qwen2ForSequenceClassification",
    "BertModel",
    "BertForSequenceClassification",
    "ModernBertModel",
    "ModernBertForMaskedLM",
    "ModernBertForSequenceClassification",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Qwen2,
    Bert,
    ModernBert,
}

pub struct HfConfig {
    pub dir: PathBuf,
    /// `architectures[0]`.
    pub architecture: String,
    pub family: Family,
    /// The file's own keys, for the few rules that ask about the raw file.
    pub raw: Map<String, Json>,
    merged: Map<String, Json>,
}

fn defaults(family: Family) -> Json {
    // Class defaults of transformers' configs (4.5x), for the keys the converter reads.
    match family {
        Family::Qwen2 => json!({
            "vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 22016,
            "num_hidden_layers": 32, "num_attention_heads": 32, "hidden_act": "silu",
            "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
            "tie_word_embeddings": false, "rope_scaling": null, "use_sliding_window": false,
            "sliding_window": 4096, "max_window_layers": 28,
        }),
        Family::Bert => json!({
            "vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12,
            "num_attention_heads": 12, "intermediate_size": 3072, "hidden_act": "gelu",
            "max_position_embeddings": 512, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
            "pad_token_id": 0, "position_embedding_type": "absolute",
        }),
        Family::ModernBert => json!({
            "vocab_size": 50368, "hidden_size": 768, "intermediate_size": 1152,
            "num_hidden_layers": 22, "num_attention_heads": 12, "hidden_activation": "gelu",
            "max_position_embeddings": 8192, "norm_eps": 1e-5, "norm_bias": false,
            "pad_token_id": 50283, "eos_token_id": 50282, "bos_token_id": 50281,
            "cls_token_id": 50281, "sep_token_id": 50282, "global_rope_theta": 160000.0,
            "attention_bias": false, "global_attn_every_n_layers": 3, "local_attention": 128,
            "local_rope_theta": 10000.0, "mlp_bias": false, "decoder_bias": true,
            "classifier_pooling": "cls", "classifier_bias": false, "classifier_activation": "gelu",
        }),
    }
}

impl HfConfig {
    pub fn load(dir: &Path) -> Result<HfConfig> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "{}: cannot read (is this a Hugging Face model folder?)",
                path.display()
            )
        })?;
        let raw: Map<String, Json> = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a JSON object", path.display()))?;
        let architecture = raw
            .get("architectures")
            .and_then(|a| a.get(0))
            .and_then(|a| a.as_str())
            .with_context(|| format!("{}: no \"architectures\" list", path.display()))?
            .to_string();
        let family = match architecture.as_str() {
            "Qwen2ForCausalLM" | "Qwen2ForSequenceClassification" => Family::Qwen2,
            "BertModel" | "BertForSequenceClassification" => Family::Bert,
            "ModernBertModel" | "ModernBertForMaskedLM" | "ModernBertForSequenceClassification" => {
                Family::ModernBert
            }
            other => bail!(
                "{}: architecture '{other}' is not supported; qconvert reads {}",
                path.display(),
                SUPPORTED.join(", ")
            ),
        };
        let mut merged = match defaults(family) {
            Json::Object(m) => m,
            _ => unreachable!(),
        };
        for (k, v) in &raw {
            merged.insert(k.clone(), v.clone());
        }
        // Derived defaults of transformers' constructors.
        if family == Family::Qwen2 && merged.get("num_key_value_heads").is_none_or(Json::is_null) {
            let heads = merged["num_attention_heads"].clone();
            merged.insert("num_key_value_heads".into(), heads);
        }
        Ok(HfConfig {
            dir: dir.to_path_buf(),
            architecture,
            family,
            raw,
            merged,
        })
    }

    fn path(&self) -> String {
        self.dir.join("config.json").display().to_string()
    }

    /// The first of `keys` present (defaults included); `None` when none is, or when the first
    /// present one is null.
    pub fn hp(&self, keys: &[&str]) -> Option<&Json> {
        keys.iter()
            .find_map(|k| self.merged.get(*k))
            .filter(|v| !v.is_null())
    }

    pub fn get(&self, key: &str) -> Option<&Json> {
        self.hp(&[key])
    }

    pub fn u32_of(&self, keys: &[&str]) -> Result<Option<u32>> {
        match self.hp(keys) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .map(Some)
                .with_context(|| {
                    format!(
                        "{}: '{}' must be a non-negative integer, found {v}",
                        self.path(),
                        keys[0]
                    )
                }),
        }
    }

    pub fn require_u32(&self, keys: &[&str]) -> Result<u32> {
        self.u32_of(keys)?
            .with_context(|| format!("{}: required key '{}' is missing", self.path(), keys[0]))
    }

    pub fn f32_of(&self, keys: &[&str]) -> Result<Option<f32>> {
        match self.hp(keys) {
            None => Ok(None),
            Some(v) => v.as_f64().map(|x| Some(x as f32)).with_context(|| {
                format!("{}: '{}' must be a number, found {v}", self.path(), keys[0])
            }),
        }
    }

    pub fn str_of(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Json::as_str)
    }

    pub fn bool_of(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(Json::as_bool)
    }

    /// `id2label` in ascending id order, as transformers builds it (from `id2label`, else
    /// `num_labels`, else the two dummy labels).
    pub fn labels(&self) -> Result<Vec<String>> {
        if let Some(Json::Object(map)) = self.raw.get("id2label") {
            let mut pairs = Vec::with_capacity(map.len());
            for (k, v) in map {
                let id: usize = k.parse().with_context(|| {
                    format!("{}: id2label key '{k}' is not an integer", self.path())
                })?;
                let name = v
                    .as_str()
                    .with_context(|| format!("{}: id2label[{k}] is not a string", self.path()))?;
                pairs.push((id, name.to_string()));
            }
            pairs.sort();
            if pairs.iter().enumerate().any(|(i, (id, _))| *id != i) {
                bail!("{}: id2label ids are not 0..{}", self.path(), pairs.len());
            }
            return Ok(pairs.into_iter().map(|(_, n)| n).collect());
        }
        let n = self
            .raw
            .get("num_labels")
            .and_then(Json::as_u64)
            .unwrap_or(2);
        Ok((0..n).map(|i| format!("LABEL_{i}")).collect())
    }

    /// Cross-checks a tensor's shape against the config, naming both in the error.
    pub fn check_shape(&self, tensor: &str, got: &[usize], want: &[usize]) -> Result<()> {
        if got != want {
            bail!(
                "{}: tensor '{tensor}' has shape {got:?}, but config.json implies {want:?}",
                self.dir.display()
            );
        }
        Ok(())
    }
}
