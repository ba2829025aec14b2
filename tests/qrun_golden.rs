//! qrun's numerics against Hugging Face transformers (float32, CPU) on tiny checkpoints of every
//! architecture (tests/fixtures/hf_golden, made by tools/make-hf-golden.sh): token ids equal,
//! and hidden states, logits, pooled embeddings and class logits within 1e-4 of transformers'
//! (relative to the largest magnitude of the compared tensor) from F32 GGUF files, within 1e-2
//! from F16 files.

use qgguf::backend::cpu::kv_cache::KvType;
use qgguf::convert::hf_config::HfConfig;
use qgguf::convert::mix::Preset;
use qgguf::convert::pipeline::{self, WriteOptions};
use qgguf::convert::plan::Inputs;
use qgguf::convert::plan_hf;
use qgguf::convert::safetensors_in::Checkpoint;
use qgguf::convert::synth::{synthesize, SynthSpec};
use qgguf::model::encoder::{Batch, EncoderState};
use qgguf::model::qwen2::Output;
use qgguf::model::{Arch, Model};
use qgguf::tokenizer::Tokenizer;
use serde_json::Value as Json;
use std::path::{Path, PathBuf};

fn vocab_dir() -> Option<PathBuf> {
    let d = std::env::var_os("QGGUF_VOCAB_DIR").map(PathBuf::from);
    if d.is_none() {
        eprintln!("QGGUF_VOCAB_DIR is not set: skipping (tools/test.sh sets it)");
    }
    d
}

fn floats(v: &Json) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[track_caller]
fn close(what: &str, got: &[f32], want: &[f32], rel: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
    let (i, err) = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .enumerate()
        .fold(
            (0, 0.0f32),
            |best, (i, e)| if e > best.1 { (i, e) } else { best },
        );
    assert!(
        err <= rel * scale,
        "{what}: element {i}: {} vs {} (error {err}, allowed {})",
        got[i],
        want[i],
        rel * scale
    );
}

fn build(dir: &Path, fixture: &str, vocab: &Path, preset: Preset) -> PathBuf {
    let model_dir = dir.join(fixture);
    if !model_dir.exists() {
        let v = if fixture.contains("qwen2") {
            "ggml-vocab-qwen2.gguf"
        } else if fixture.contains("modernbert") {
            "ggml-vocab-gpt-neox.gguf"
        } else {
            "ggml-vocab-bert-bge.gguf"
        };
        synthesize(
            &SynthSpec::preset(fixture).unwrap(),
            &vocab.join(v),
            &model_dir,
            false,
        )
        .unwrap();
    }
    let out = dir.join(format!("{fixture}-{}.gguf", preset.name()));
    let cfg = HfConfig::load(&model_dir).unwrap();
    let ck = Checkpoint::open(&model_dir).unwrap();
    let plan = plan_hf(&cfg, &ck, preset, &[]).unwrap();
    pipeline::write(
        &plan,
        &Inputs::Checkpoint(&ck),
        &out,
        WriteOptions::default(),
    )
    .unwrap();
    out
}

/// The KV cache to compare with transformers: f32 for the f32 model (transformers keeps an f32
/// cache), llama.cpp's default f16 otherwise.
fn kv_type(preset: Preset) -> KvType {
    if preset == Preset::F32 {
        KvType::F32
    } else {
        KvType::F16
    }
}

fn check_fixture(fixture: &str) {
    let Some(vocab) = vocab_dir() else { return };
    let golden: Json = serde_json::from_str(
        &std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join(format!("tests/fixtures/hf_golden/{fixture}.json")),
        )
        .unwrap(),
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for (preset, rel) in [(Preset::F32, 1e-4), (Preset::F16, 1e-2)] {
        let path = build(tmp.path(), fixture, &vocab, preset);
        let model = Model::load(&path).unwrap();
        // The tokenizer rebuilt from GGUF metadata: no tokenizer.json sits beside the file.
        let tok = Tokenizer::for_model(&path, &model.file).unwrap();
        let what = |c: usize, s: &str| format!("{fixture} {} case {c} {s}", preset.name());
        let cases = golden["cases"].as_array().unwrap();
        let mut all_ids = Vec::new();
        for (c, case) in cases.iter().enumerate() {
            let ids = tok.encode(case["text"].as_str().unwrap(), true).unwrap();
            let want: Vec<u32> = case["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(ids, want, "{}", what(c, "token ids"));
            all_ids.push(ids);
        }
        match &model.arch {
            Arch::Qwen2(m) => {
                let mut st = m.new_state_with(256, kv_type(preset)).unwrap();
                for (c, (case, ids)) in cases.iter().zip(&all_ids).enumerate() {
                    if m.has_cls {
                        let logits = m.classify(&model.file, &mut st, ids).unwrap();
                        close(
                            &what(c, "class logits"),
                            &logits,
                            &floats(&case["class_logits"]),
                            rel,
                        );
                        continue;
                    }
                    st.reset();
                    m.forward(&model.file, &mut st, ids, Output::AllHidden)
                        .unwrap();
                    close(
                        &what(c, "hidden"),
                        &st.hidden[..ids.len() * m.hp.n_embd],
                        &floats(&case["hidden"]),
                        rel,
                    );
                    st.reset();
                    m.forward(&model.file, &mut st, ids, Output::AllLogits)
                        .unwrap();
                    let sample: Vec<usize> = case["logit_ids"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_u64().unwrap() as usize)
                        .collect();
                    let got: Vec<f32> = (0..ids.len())
                        .flat_map(|t| sample.iter().map(move |&v| (t, v)))
                        .map(|(t, v)| st.logits[t * m.hp.n_vocab + v])
                        .collect();
                    close(&what(c, "logits"), &got, &floats(&case["logits"]), rel);
                    // Decoding token by token through the KV cache gives the same last logits.
                    st.reset();
                    for &id in ids {
                        m.forward(&model.file, &mut st, &[id], Output::LastLogits)
                            .unwrap();
                    }
                    let last: Vec<f32> = sample.iter().map(|&v| st.logits[v]).collect();
                    let want = floats(&case["logits"]);
                    close(
                        &what(c, "cached decode"),
                        &last,
                        &want[want.len() - sample.len()..],
                        rel,
                    );
                }
            }
            _ => {
                // All texts in one packed batch, as qrun's batch mode runs them.
                let batch = Batch::new(&all_ids).unwrap();
                let out = model.encode(&batch, &mut EncoderState::default()).unwrap();
                // In parts of one or two sequences (as big batches run): the same to the bit.
                let mut st = EncoderState::default();
                let longest = batch.seqs.iter().map(|s| s.len()).max().unwrap();
                for budget in [1, 2 * longest] {
                    let parts = model.encode_in_parts(&batch, &mut st, budget).unwrap();
                    assert_eq!(
                        parts.hidden, out.hidden,
                        "{fixture}: hidden, parts of {budget}"
                    );
                    assert_eq!(
                        parts.pooled, out.pooled,
                        "{fixture}: pooled, parts of {budget}"
                    );
                    assert_eq!(
                        parts.logits, out.logits,
                        "{fixture}: logits, parts of {budget}"
                    );
                }
                for (c, (case, seq)) in cases.iter().zip(&batch.seqs).enumerate() {
                    if let Some(h) = case.get("hidden") {
                        close(
                            &what(c, "hidden"),
                            &out.hidden[seq.start * out.dim..seq.end * out.dim],
                            &floats(h),
                            rel,
                        );
                    }
                    if let Some(p) = case.get("mean_pooled") {
                        close(
                            &what(c, "pooled"),
                            &out.pooled[c * out.dim..(c + 1) * out.dim],
                            &floats(p),
                            rel,
                        );
                    }
                    if let Some(l) = case.get("class_logits") {
                        close(
                            &what(c, "class logits"),
                            &out.logits[c * out.n_labels..(c + 1) * out.n_labels],
                            &floats(l),
                            rel,
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn qwen2_causal_lm() {
    check_fixture("tiny-qwen2");
}

#[test]
fn qwen2_sequence_classifier() {
    check_fixture("tiny-qwen2-cls");
}

#[test]
fn bert_encoder() {
    check_fixture("tiny-bert");
}

#[test]
fn bert_sequence_classifier() {
    check_fixture("tiny-bert-cls");
}

#[test]
fn modernbert_encoder() {
    check_fixture("tiny-modernbert");
}

#[test]
fn modernbert_sequence_classifier() {
    check_fixture("tiny-modernbert-cls");
}

/// The packed kernels (weights re-laid out at load, where the CPU has AVX-512 VNNI) against
/// the per-row kernels on ggml's blocks in place: the same quantized model must give the same
/// logits up to the order of float additions, which int8 activation rounding can amplify a
/// little.
#[test]
fn packed_and_in_place_weights_agree() {
    if !quant_types::packed::available() {
        eprintln!("this CPU has no packed kernels: skipping");
        return;
    }
    let Some(vocab) = vocab_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let tokens: Vec<u32> = (0..40u32).map(|i| (i * 7919 + 13) % 151_000).collect();
    for preset in [
        Preset::Q8_0,
        Preset::Q4_K_M,
        Preset::Q5_K_S,
        Preset::IQ4_NL,
        Preset::NF4,
    ] {
        let path = build(tmp.path(), "tiny-qwen2", &vocab, preset);
        let logits = |pack: bool| {
            let opts = qgguf::model::LoadOptions {
                pack,
                ..Default::default()
            };
            let model = Model::load_with(&path, &opts).unwrap();
            let Arch::Qwen2(m) = &model.arch else {
                unreachable!()
            };
            let mut st = m.new_state(64).unwrap();
            m.forward(&model.file, &mut st, &tokens, Output::AllLogits)
                .unwrap();
            st.logits[..tokens.len() * m.hp.n_vocab].to_vec()
        };
        let (a, b) = (logits(true), logits(false));
        let max = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(
            worst <= 2e-2 * max,
            "{}: packed and in-place logits differ by {worst} (largest logit {max})",
            preset.name()
        );
        let n_vocab = b.len() / tokens.len();
        let argmax = |v: &[f32]| {
            v.chunks(n_vocab)
                .map(|r| (0..r.len()).fold(0, |best, i| if r[i] > r[best] { i } else { best }))
                .collect::<Vec<_>>()
        };
        let same = argmax(&a)
            .iter()
            .zip(argmax(&b))
            .filter(|(x, y)| **x == *y)
            .count();
        assert!(
            same * 10 >= tokens.len() * 9,
            "{}: same top token at {same} of {} positions",
            preset.name(),
            tokens.len()
        );
    }
}
