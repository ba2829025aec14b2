//! Tokenizers rebuilt from GGUF metadata (what `qconvert export` writes and qrun falls back to)
//! against llama.cpp's tokenizer test vectors (`models/ggml-vocab-*.gguf.inp/.out`): same ids on
//! every test text.

use qgguf::gguf::GgufFile;
use qgguf::tokenizer::from_gguf::{tokenizer, tokenizer_files};
use std::path::PathBuf;

fn vocab_dir() -> Option<PathBuf> {
    let d = std::env::var_os("QGGUF_VOCAB_DIR").map(PathBuf::from);
    if d.is_none() {
        eprintln!("QGGUF_VOCAB_DIR is not set: skipping (tools/test.sh sets it)");
    }
    d
}

/// The test texts and expected ids of a vocabulary.
fn vectors(dir: &std::path::Path, name: &str) -> Vec<(String, Vec<u32>)> {
    let inp = std::fs::read_to_string(dir.join(format!("ggml-vocab-{name}.gguf.inp"))).unwrap();
    let out = std::fs::read_to_string(dir.join(format!("ggml-vocab-{name}.gguf.out"))).unwrap();
    let texts: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    let ids: Vec<&str> = out.split('\n').collect();
    assert!(
        texts.len() >= 40 && texts.len() == ids.len(),
        "{name}: {} texts, {} id lines",
        texts.len(),
        ids.len()
    );
    texts
        .iter()
        .zip(ids)
        .take(texts.len() - 1) // the files end with a separator / newline
        .map(|(t, l)| {
            (
                t.to_string(),
                l.split_whitespace().map(|x| x.parse().unwrap()).collect(),
            )
        })
        .collect()
}

fn check(name: &str) {
    let Some(dir) = vocab_dir() else { return };
    let f = GgufFile::open(dir.join(format!("ggml-vocab-{name}.gguf"))).unwrap();
    let (json, _) = tokenizer_files(&f).unwrap();
    let tok = tokenizers::Tokenizer::from_bytes(serde_json::to_vec(&json).unwrap()).unwrap();
    // qrun's tokenizer, built without the JSON text, must be the same tokenizer.
    let direct = tokenizer(&f).unwrap();
    assert_eq!(
        direct.get_vocab(true),
        tok.get_vocab(true),
        "{name}: vocabularies"
    );
    // Added tokens (specials and user-defined) split the text alike in both.
    let added: Vec<String> = tok
        .get_added_tokens_decoder()
        .values()
        .map(|t| t.content.clone())
        .collect();
    let text = format!("a{}b\n c", added.join(" x\n"));
    for special in [false, true] {
        let ids = |t: &tokenizers::Tokenizer| {
            t.encode(text.as_str(), special).unwrap().get_ids().to_vec()
        };
        assert_eq!(
            ids(&direct),
            ids(&tok),
            "{name}: text with {} added tokens",
            added.len()
        );
    }
    let mut failures = Vec::new();
    let cases = vectors(&dir, name);
    for (text, want) in &cases {
        for (how, t) in [("tokenizer.json", &tok), ("direct", &direct)] {
            let got = t.encode(text.as_str(), false).unwrap().get_ids().to_vec();
            if &got != want {
                failures.push(format!("{text:?} ({how}): got {got:?}, llama.cpp {want:?}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: {} of {} differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn qwen2_vocab_matches_llama_cpp() {
    check("qwen2");
}

#[test]
fn gpt2_vocab_matches_llama_cpp() {
    check("gpt-2");
}

#[test]
fn bert_vocab_matches_llama_cpp() {
    check("bert-bge");
}
