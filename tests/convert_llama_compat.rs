//! qconvert against llama.cpp's own tools, on tiny checkpoints of every architecture: the F16
//! file equals what convert_hf_to_gguf.py writes, and the Q8_0 / Q4_K_M / Q5_K_S / IQ4_NL files
//! equal what llama-quantize makes of that F16 file, metadata and tensor bytes alike (compared
//! as manifests: `tests/fixtures/convert`, made by tools/make-convert-fixtures.sh).
//!
//! One deliberate difference: BertForSequenceClassification keeps its pooler as `cls.weight` /
//! `cls.bias`, which llama.cpp's converter drops (see src/convert/hf_arch.rs).

use qgguf::convert::hf_config::HfConfig;
use qgguf::convert::mix::Preset;
use qgguf::convert::pipeline::{self, WriteOptions};
use qgguf::convert::plan::Inputs;
use qgguf::convert::safetensors_in::Checkpoint;
use qgguf::convert::synth::{synthesize, SynthSpec};
use qgguf::convert::{plan_gguf, plan_hf};
use qgguf::gguf::manifest::manifest;
use qgguf::gguf::GgufFile;
use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/convert")
}

fn vocab_dir() -> Option<PathBuf> {
    let d = std::env::var_os("QGGUF_VOCAB_DIR").map(PathBuf::from);
    if d.is_none() {
        eprintln!("QGGUF_VOCAB_DIR is not set: skipping (tools/test.sh sets it)");
    }
    d
}

fn vocab_for(fixture: &str) -> &'static str {
    if fixture.contains("qwen2") {
        "ggml-vocab-qwen2.gguf"
    } else if fixture.contains("modernbert") {
        "ggml-vocab-gpt-neox.gguf"
    } else {
        "ggml-vocab-bert-bge.gguf"
    }
}

fn check_input(dir: &Path, fixture: &str) {
    let recorded = std::fs::read_to_string(fixtures().join(fixture).join("input.sha256")).unwrap();
    for line in recorded.lines() {
        let (hash, name) = line.split_once("  ").unwrap();
        let got = format!(
            "{:x}",
            Sha256::digest(std::fs::read(dir.join(name)).unwrap())
        );
        assert_eq!(got, hash, "{fixture}: qconvert synth wrote a different {name} than the one the references were made from");
    }
}

/// Differences allowed by design, as (fixture, tensor names only qgguf writes).
fn extra_tensors(fixture: &str) -> &'static [&'static str] {
    match fixture {
        "tiny-bert-cls" => &["cls.bias", "cls.weight"],
        _ => &[],
    }
}

fn compare(fixture: &str, variant: &str, ours: &Json, reference: &Json) {
    assert_eq!(
        ours["metadata"], reference["metadata"],
        "{fixture} {variant}: metadata differs"
    );
    let extra = extra_tensors(fixture);
    let ours_t: Vec<&Json> = ours["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| !extra.contains(&t[0].as_str().unwrap()))
        .collect();
    let ref_t: Vec<&Json> = reference["tensors"].as_array().unwrap().iter().collect();
    assert_eq!(
        ours_t.len(),
        ref_t.len(),
        "{fixture} {variant}: tensor count"
    );
    for (a, b) in ours_t.iter().zip(&ref_t) {
        assert_eq!(
            a, b,
            "{fixture} {variant}: tensor differs (name, type, dims, sha256)"
        );
    }
    let extras_found = ours["tensors"].as_array().unwrap().len() - ours_t.len();
    assert_eq!(
        extras_found,
        extra.len(),
        "{fixture} {variant}: expected extra tensors {extra:?}"
    );
}

fn convert_hf(dir: &Path, preset: Preset, out: &Path) -> Json {
    let cfg = HfConfig::load(dir).unwrap();
    let ck = Checkpoint::open(dir).unwrap();
    let plan = plan_hf(&cfg, &ck, preset, &[]).unwrap();
    pipeline::write(
        &plan,
        &Inputs::Checkpoint(&ck),
        out,
        WriteOptions::default(),
    )
    .unwrap();
    manifest(&GgufFile::open(out).unwrap())
}

#[test]
fn qconvert_matches_convert_hf_to_gguf_and_llama_quantize() {
    let Some(vocab) = vocab_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    for fixture in [
        "tiny-qwen2",
        "tiny-bert",
        "tiny-bert-cls",
        "tiny-modernbert",
        "tiny-modernbert-cls",
    ] {
        let dir = tmp.path().join(fixture);
        synthesize(
            &SynthSpec::preset(fixture).unwrap(),
            &vocab.join(vocab_for(fixture)),
            &dir,
            false,
        )
        .unwrap();
        check_input(&dir, fixture);
        for (variant, preset) in [
            ("F16", Preset::F16),
            ("Q8_0", Preset::Q8_0),
            ("Q4_K_M", Preset::Q4_K_M),
            ("Q5_K_S", Preset::Q5_K_S),
            ("IQ4_NL", Preset::IQ4_NL),
        ] {
            let reference: Json = serde_json::from_str(
                &std::fs::read_to_string(fixtures().join(fixture).join(format!("{variant}.json")))
                    .unwrap(),
            )
            .unwrap();
            let out = tmp.path().join(format!("{fixture}-{variant}.gguf"));
            let ours = convert_hf(&dir, preset, &out);
            compare(fixture, variant, &ours, &reference);
        }
    }
}

/// Requantizing an F16 GGUF (what llama-quantize does) gives llama-quantize's files exactly,
/// without exceptions: starting from qgguf's own F16 output of a fixture without deviations.
#[test]
fn requantize_matches_llama_quantize() {
    let Some(vocab) = vocab_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    for fixture in ["tiny-qwen2", "tiny-modernbert-cls"] {
        let dir = tmp.path().join(fixture);
        synthesize(
            &SynthSpec::preset(fixture).unwrap(),
            &vocab.join(vocab_for(fixture)),
            &dir,
            false,
        )
        .unwrap();
        let f16 = tmp.path().join(format!("{fixture}-f16.gguf"));
        convert_hf(&dir, Preset::F16, &f16);
        let src = GgufFile::open(&f16).unwrap();
        for (variant, preset) in [
            ("Q8_0", Preset::Q8_0),
            ("Q4_K_M", Preset::Q4_K_M),
            ("Q5_K_S", Preset::Q5_K_S),
            ("IQ4_NL", Preset::IQ4_NL),
        ] {
            let plan = plan_gguf(&src, preset, &[]).unwrap();
            let out = tmp.path().join(format!("{fixture}-re-{variant}.gguf"));
            pipeline::write(&plan, &Inputs::Gguf(&src), &out, WriteOptions::default()).unwrap();
            let reference: Json = serde_json::from_str(
                &std::fs::read_to_string(fixtures().join(fixture).join(format!("{variant}.json")))
                    .unwrap(),
            )
            .unwrap();
            compare(
                fixture,
                variant,
                &manifest(&GgufFile::open(&out).unwrap()),
                &reference,
            );
        }
    }
}
