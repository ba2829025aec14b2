//! What a qbench run measures: the models it knows, the formats, the devices and the settings
//! that enter every row's cache key.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Bumped when a measurement changes meaning, so older cached rows are not mixed in.
pub const QBENCH_VERSION: &str = "qbench-1";

/// The formats of the table, F16 first (every other row is compared with it).
pub const ALL_FORMATS: [&str; 6] = ["F16", "Q8_0", "Q4_K_M", "Q5_K_S", "IQ4_NL", "NF4"];
pub const QUICK_FORMATS: [&str; 4] = ["F16", "Q8_0", "Q4_K_M", "Q5_K_S"];

/// qconvert's spelling of a format.
pub fn qconvert_type(format: &str) -> String {
    format.to_ascii_lowercase()
}

/// The canonical spelling of a user-given format (`q4_k_m` -> `Q4_K_M`), or an error listing
/// the known ones.
pub fn parse_format(s: &str) -> Result<String> {
    let up = s.trim().to_ascii_uppercase();
    match ALL_FORMATS.iter().find(|f| **f == up) {
        Some(f) => Ok(f.to_string()),
        None => bail!("unknown format '{s}' (known: {})", ALL_FORMATS.join(", ")),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Sequence classifier: accuracy, F1, calibration on a labelled dataset.
    Classifier,
    /// Causal LM: speed, perplexity, KL divergence.
    Lm,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    Cpu,
    Gpu,
}

impl Device {
    pub fn name(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Gpu => "gpu",
        }
    }
    pub fn parse(s: &str) -> Result<Device> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(Device::Cpu),
            "gpu" | "cuda" => Ok(Device::Gpu),
            other => bail!("unknown device '{other}' (cpu or gpu)"),
        }
    }
}

/// A model of the table.
#[derive(Clone, Debug)]
pub struct ModelSpec {
    pub name: String,
    pub kind: Kind,
    /// The Hugging Face folder converted into every format.
    pub dir: PathBuf,
    /// Dataset folder name under the data directory (classifiers).
    pub dataset: Option<String>,
    /// Random weights: only agreement with F16 means anything.
    pub synthetic: bool,
    /// Shown in the table's note column (e.g. a fallback model).
    pub note: Option<String>,
}

/// What makes each default model, for the message when it is absent.
fn maker(name: &str) -> &'static str {
    match name {
        "qwen-sotu-cls" | "qwen-sotu-lm" | "minilm-sotu-cls" | "minilm-bbc-cls" => {
            "tools/finetune/: trained on the GPU machine, then `kit.py collect`; see tools/finetune/README.md"
        }
        _ => "tools/fetch-models.sh",
    }
}

pub const DEFAULT_MODELS: [&str; 4] = [
    "qwen-sotu-cls",
    "qwen-sotu-lm",
    "minilm-sotu-cls",
    "modernbert-base-cls113",
];
/// `--quick`: the small classifier and the LM; the decoder classifier takes seconds per example
/// on two cores, far over the quick run's budget.
pub const QUICK_MODELS: [&str; 2] = ["minilm-sotu-cls", "qwen-sotu-lm"];

fn has_weights(dir: &Path) -> bool {
    dir.join("config.json").is_file()
        && (dir.join("model.safetensors").is_file()
            || dir.join("model.safetensors.index.json").is_file())
}

/// Resolves a default model's name to its folder under `models`, or says why it is skipped.
pub fn resolve_model(name: &str, models: &Path) -> Result<ModelSpec, String> {
    let spec =
        |kind, dir: PathBuf, dataset: Option<&str>, synthetic, note: Option<String>| ModelSpec {
            name: name.to_string(),
            kind,
            dir,
            dataset: dataset.map(str::to_string),
            synthetic,
            note,
        };
    let (kind, dataset, synthetic) = match name {
        "qwen-sotu-cls" | "minilm-sotu-cls" => (Kind::Classifier, Some("sotu"), false),
        "minilm-bbc-cls" => (Kind::Classifier, Some("bbc"), false),
        "qwen-sotu-lm" => (Kind::Lm, None, false),
        "modernbert-base-cls113" => (Kind::Classifier, Some("sotu"), true),
        "qwen2.5-coder-0.5b" => (Kind::Lm, None, false),
        "qwen2.5-0.5b-cls113" => (Kind::Classifier, Some("sotu"), true),
        other => {
            return Err(format!(
                "unknown model '{other}' (known: {}, minilm-bbc-cls, qwen2.5-coder-0.5b, qwen2.5-0.5b-cls113)",
                DEFAULT_MODELS.join(", ")
            ))
        }
    };
    let dir = models.join(name);
    if has_weights(&dir) {
        return Ok(spec(kind, dir, dataset, synthetic, None));
    }
    if name == "qwen-sotu-lm" {
        let fallback = models.join("qwen2.5-coder-0.5b");
        if has_weights(&fallback) {
            return Ok(spec(
                kind,
                fallback,
                dataset,
                synthetic,
                Some("qwen-sotu-lm absent: Qwen2.5-Coder-0.5B instead".into()),
            ));
        }
    }
    Err(format!(
        "{name}: no model at {}; skipped. Made by {}",
        dir.display(),
        maker(name)
    ))
}

/// Settings that change what a row measures (they enter the cache key).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Settings {
    /// Classifiers: test and validation examples (a seeded sample; all when larger).
    pub n_test: usize,
    pub n_val: usize,
    /// Classifiers: tokens kept per text, texts per batch.
    pub max_tokens: usize,
    pub batch: usize,
    /// LM: llama-bench's tests and repetitions.
    pub n_prompt: usize,
    pub n_gen: usize,
    pub reps: usize,
    /// LM: perplexity context and chunks.
    pub ppl_ctx: usize,
    pub ppl_chunks: usize,
}

impl Settings {
    pub fn full() -> Settings {
        Settings {
            n_test: 1000,
            n_val: 1000,
            max_tokens: 128,
            batch: 32,
            n_prompt: 512,
            n_gen: 128,
            reps: 3,
            ppl_ctx: 512,
            ppl_chunks: 8,
        }
    }
    pub fn quick() -> Settings {
        Settings {
            n_test: 200,
            n_val: 100,
            n_prompt: 512,
            n_gen: 32,
            reps: 1,
            ppl_chunks: 1,
            ..Settings::full()
        }
    }
}

/// Bootstrap of per-tier accuracy deltas: fixed, so reruns give the same intervals.
pub const BOOTSTRAP_SEED: u64 = 20_240_607;
pub const BOOTSTRAP_RESAMPLES: usize = 1000;
/// ECE bins.
pub const ECE_BINS: usize = 15;
/// Seed of the test/validation samples and of the validation halves.
pub const SAMPLE_SEED: u64 = 7;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_in_any_case() {
        assert_eq!(parse_format("q4_k_m").unwrap(), "Q4_K_M");
        assert_eq!(parse_format(" nf4 ").unwrap(), "NF4");
        let e = parse_format("q3_k").unwrap_err().to_string();
        assert!(e.contains("q3_k") && e.contains("IQ4_NL"), "{e}");
        assert_eq!(qconvert_type("Q5_K_S"), "q5_k_s");
    }

    #[test]
    fn absent_models_name_their_maker() {
        let e = resolve_model("minilm-sotu-cls", Path::new("/nonexistent")).unwrap_err();
        assert!(
            e.contains("/nonexistent/minilm-sotu-cls") && e.contains("tools/"),
            "{e}"
        );
        let e = resolve_model("modernbert-base-cls113", Path::new("/nonexistent")).unwrap_err();
        assert!(e.contains("tools/fetch-models.sh"), "{e}");
        assert!(resolve_model("gpt-9", Path::new("/x"))
            .unwrap_err()
            .contains("unknown"));
    }
}
