//! What each fuzz target does with one input: the walk qrun and qconvert make over a file from a
//! stranger. Shared by the cargo-fuzz targets (`fuzz_targets/`) and by the stable test
//! `tests/fuzz_inputs.rs`, which includes this file by path and runs every committed seed (each
//! must get all the way through, so the fuzzers start deep) and every crasher found (each must
//! now end in a clean error or succeed).
//!
//! Every function returns `Ok(())` only when the input went through the whole walk; an error is
//! the expected end for most fuzzed inputs. Only a panic, an abort, a hang or running out of
//! memory is a finding.

use anyhow::{bail, Result};
use qgguf::chat::{self, Message};
use qgguf::convert::mix::Preset;
use qgguf::convert::pipeline::writer_for;
use qgguf::convert::plan_gguf;
use qgguf::convert::safetensors_in::Checkpoint;
use qgguf::gguf::manifest::manifest;
use qgguf::gguf::{parse_header, GgufFile};
use qgguf::model::encoder::{Batch, EncoderState};
use qgguf::model::qwen2::Output;
use qgguf::model::{Arch, LoadOptions, Model};
use qgguf::quant_types::dynamic;
use qgguf::tokenizer::Tokenizer;
use std::hint::black_box;
use std::path::Path;
use std::sync::OnceLock;

/// A folder of this process's own for the files the readers open (they take paths, as the
/// binaries do, so the memory-mapping path is fuzzed too).
pub fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("qgguf-fuzz.")
            .tempdir()
            .expect("a scratch folder")
    })
    .path()
}

/// Texts fed to rebuilt tokenizers: ASCII, accents, CJK, whitespace runs, special-token lookalikes.
pub const TEXTS: &[&str] = &[
    "Hello world",
    "  naïve café, 1234 x 5 = 6170!\n",
    "日本語のテキスト\t\ttabs\r\n",
    "<|im_start|>user\nhi<|im_end|>",
    "[CLS] a [SEP] b [MASK]",
    " ",
];

/// The most values one tensor is expanded to f32 (inputs are small; this only bounds the time a
/// single input can take).
const MAX_VALUES: u64 = 1 << 22;

/// GGUF bytes through the reader: the in-memory parser, then the file opened as qrun and qconvert
/// open it, printed as `qconvert info` does, hashed as `info --json` does, planned for
/// requantization, every tensor read as qconvert reads it, and the model loaded and run on a
/// token or two as qrun runs it.
pub fn gguf_reader(bytes: &[u8], dir: &Path) -> Result<()> {
    let in_memory = parse_header(bytes, bytes.len() as u64, "fuzz.gguf");
    let path = dir.join("model.gguf");
    std::fs::write(&path, bytes)?;
    let opened = GgufFile::open(&path);
    if in_memory.is_ok() != opened.is_ok() {
        bail!("the in-memory parse and the file disagree");
    }
    let f = opened?;
    for (k, v) in f.metadata() {
        black_box(format!("{k} = {v}"));
    }
    for t in f.tensors() {
        black_box(format!(
            "{:<40} {:<8} {:?}",
            t.name, t.type_info.name, t.dims
        ));
    }
    black_box(manifest(&f).to_string());
    if let Ok(plan) = plan_gguf(&f, Preset::Q4_K_M, &[]) {
        black_box(writer_for(&plan)?.file_size());
    }
    for t in f.tensors() {
        let Some(ty) = t.ggml_type() else { continue };
        if t.n_elements() > MAX_VALUES {
            continue;
        }
        let mut out = vec![0f32; t.n_elements() as usize];
        // A type qgguf knows but cannot dequantize is an error, not a finding.
        let _ = dynamic::dequantize(ty, f.tensor_data(t), &mut out);
        f.release(t);
    }
    drop(f);
    let model = load_even_nonfinite(&path)?;
    run_model(&model, &[0, 1])
}

/// Loads the model as qrun does by default, and if its weights are refused as non-finite, as
/// `--allow-nonfinite` does: computing with NaN and infinities must end in numbers or errors,
/// never in a panic.
fn load_even_nonfinite(path: &Path) -> Result<Model> {
    match Model::load(path) {
        Ok(m) => {
            assert!(
                m.warnings.is_empty(),
                "a default load warned: {:?}",
                m.warnings
            );
            Ok(m)
        }
        Err(e) if format!("{e:#}").contains("--allow-nonfinite") => {
            let opts = LoadOptions {
                allow_nonfinite: true,
                ..Default::default()
            };
            let m = Model::load_with(path, &opts)?;
            assert!(
                !m.warnings.is_empty(),
                "refused, then loaded without a warning: {e:#}"
            );
            Ok(m)
        }
        Err(e) => Err(e),
    }
}

/// Runs a loaded model on `ids` (token ids, possibly out of range) the way qrun does.
fn run_model(model: &Model, ids: &[u32]) -> Result<()> {
    let ids: Vec<u32> = ids.iter().copied().take(8).collect();
    if ids.is_empty() {
        bail!("no tokens");
    }
    black_box((
        model.labels(),
        model.has_classifier(),
        model.max_positions(),
    ));
    match &model.arch {
        Arch::Qwen2(m) => {
            let mut st = m.new_state(ids.len() + 1)?;
            m.forward(&model.file, &mut st, &ids, Output::LastLogits)?;
            black_box(qgguf::sampling::argmax(&st.logits));
            m.forward(&model.file, &mut st, &ids[..1], Output::LastLogits)?;
            if m.has_cls {
                black_box(m.classify(&model.file, &mut st, &ids)?);
            }
        }
        _ => {
            let max = model.max_positions().max(1);
            let ids = &ids[..ids.len().min(max)];
            let batch = Batch::new(&[ids.to_vec(), ids[..1].to_vec()])?;
            let mut st = EncoderState::default();
            black_box(model.encode(&batch, &mut st)?);
        }
    }
    Ok(())
}

/// Safetensors bytes as `model.safetensors` of a checkpoint folder: the header and every
/// tensor's data range validated by the reader, then every value read as f32 row by row (what
/// qconvert's pipeline does) and the pages released.
pub fn safetensors(bytes: &[u8], dir: &Path) -> Result<()> {
    let path = dir.join("model.safetensors");
    std::fs::write(&path, bytes)?;
    let ck = Checkpoint::open(dir)?;
    for t in ck.in_file_order() {
        black_box((ck.get(&t.name).is_some(), ck.raw(t).len()));
        let n = t.n_elements();
        if n as u64 > MAX_VALUES {
            continue;
        }
        let row = t.shape.last().copied().unwrap_or(1).max(1);
        let mut out = vec![0f32; row];
        let mut first = 0;
        while first < n {
            let len = row.min(n - first);
            ck.read_f32(t, first, &mut out[..len]);
            black_box(&out);
            first += len;
        }
        ck.release_part(t, 0, ck.raw(t).len() / 2);
        ck.release(t);
    }
    black_box(ck.names().count());
    Ok(())
}

/// GGUF bytes to a tokenizer rebuilt from the file's metadata (as qrun does when no
/// tokenizer.json sits beside a model, and `qconvert export` does to write one), texts encoded
/// and decoded, the file's chat template rendered (qrun --chat), and the ids run through the
/// model if the file holds one.
pub fn tokenizer_from_gguf(bytes: &[u8], dir: &Path) -> Result<()> {
    let path = dir.join("model.gguf");
    std::fs::write(&path, bytes)?;
    let f = GgufFile::open(&path)?;
    let tok = Tokenizer::for_model(&path, &f)?;
    let mut all = Vec::new();
    for text in TEXTS {
        let ids = tok.encode(text, true)?;
        black_box(tok.decode(&ids, true)?);
        black_box(tok.decode(&ids, false)?);
        black_box(tok.encode(text, false)?);
        all.extend_from_slice(&ids);
    }
    // Ids a sampler could produce, valid or not.
    let _ = tok.decode(&[0, 1, 2, 1000, u32::MAX], false);
    for t in ["<|im_end|>", "<|endoftext|>", "[SEP]"] {
        black_box(tok.token_to_id(t));
    }
    // qrun --chat: the file's own template rendered (errors are the template's), then encoded.
    if let Ok(template) = f.get_str("tokenizer.chat_template") {
        let msgs = [("system", TEXTS[1]), ("user", TEXTS[0])].map(|(role, content)| Message {
            role: role.into(),
            content: content.into(),
        });
        if let Ok(text) = chat::render(template, &msgs, "", "") {
            all.extend(tok.encode(&text, true)?);
        }
    }
    drop(f);
    if let Ok(model) = load_even_nonfinite(&path) {
        run_model(&model, &all)?;
    }
    Ok(())
}
