//! qrun on bad input, as users meet it: a prompt longer than the context, empty or invalid UTF-8
//! input, -ngl on a CPU-only build, and model files that are missing, empty, folders or garbage.
//! Each ends with a clear message on stderr and a non-zero exit, never a panic.

use qgguf::gguf::GgufWriter;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn qrun(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qrun"))
        .args(args)
        .output()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs qrun, expects a failure without a panic, and returns stderr.
#[track_caller]
fn fails(args: &[&str]) -> String {
    let o = qrun(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "qrun {args:?} succeeded:\n{err}");
    assert_eq!(o.status.code(), Some(1), "qrun {args:?}: {err}");
    assert!(!err.contains("panicked"), "qrun {args:?} panicked:\n{err}");
    assert!(err.starts_with("qrun: error: "), "{err}");
    err
}

/// A tiny Qwen2 GGUF (synth preset tiny-qwen2, converted to Q8_0 by qconvert), made once per
/// test run; `None` without llama.cpp's vocabularies (QGGUF_VOCAB_DIR).
fn tiny_qwen2() -> Option<&'static Path> {
    static MODEL: OnceLock<Option<PathBuf>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let Some(vocab) = std::env::var_os("QGGUF_VOCAB_DIR").map(PathBuf::from) else {
                eprintln!("QGGUF_VOCAB_DIR is not set: skipping (tools/test.sh sets it)");
                return None;
            };
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("qrun_cli");
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let hf = dir.join("tiny-qwen2");
            let gguf = dir.join("tiny-qwen2.gguf");
            let qconvert = env!("CARGO_BIN_EXE_qconvert");
            let vocab = vocab.join("ggml-vocab-qwen2.gguf");
            let o = Command::new(qconvert)
                .args(["synth", "tiny-qwen2", "-o", s(&hf), "--vocab", s(&vocab)])
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let o = Command::new(qconvert)
                .args([s(&hf), "-o", s(&gguf), "--type", "q8_0"])
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            Some(gguf)
        })
        .as_deref()
}

#[test]
fn the_tiny_model_generates() {
    // Control for the tests below: the same model and flags, with good input, succeed.
    let Some(m) = tiny_qwen2() else { return };
    let o = qrun(&[
        "-m",
        s(m),
        "-p",
        "Hello",
        "-n",
        "3",
        "--temp",
        "0",
        "-c",
        "16",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("Hello"));
}

#[test]
fn the_decode_team_can_be_turned_off_and_changes_no_token() {
    // `--no-team` sends decoding's products through rayon: a different schedule over the same
    // rows, so the same greedy tokens.
    let Some(m) = tiny_qwen2() else { return };
    let run = |extra: &[&str]| {
        let mut args = vec![
            "-m",
            s(m),
            "-p",
            "Hello",
            "-n",
            "12",
            "--temp",
            "0",
            "-t",
            "2",
        ];
        args.extend_from_slice(extra);
        let o = qrun(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert_eq!(run(&[]), run(&["--no-team"]));
}

#[test]
fn prompt_longer_than_the_context() {
    let Some(m) = tiny_qwen2() else { return };
    let long = "word ".repeat(40);
    let e = fails(&["-m", s(m), "-p", &long, "-c", "16"]);
    assert!(
        e.contains("the prompt has") && e.contains("the context holds 16"),
        "{e}"
    );
}

#[test]
fn context_larger_than_the_model_was_trained_for() {
    let Some(m) = tiny_qwen2() else { return };
    // Refused before a KV cache of that size is allocated.
    let e = fails(&["-m", s(m), "-p", "hi", "-c", "1000000000000"]);
    assert!(
        e.contains("-c 1000000000000 exceeds the model's training context"),
        "{e}"
    );
    let e = fails(&["-m", s(m), "-p", "hi", "-c", "0"]);
    assert!(e.contains("-c 0"), "{e}");
}

#[test]
fn empty_input() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, b"").unwrap();
    // Prompts are read before the model: these need no model file.
    let e = fails(&["-m", "absent.gguf", "-p", ""]);
    assert!(e.contains("the prompt is empty"), "{e}");
    let e = fails(&["-m", "absent.gguf", "-f", s(&empty)]);
    assert!(e.contains("the prompt is empty"), "{e}");
    let e = fails(&["-m", "absent.gguf"]);
    assert!(e.contains("no prompt: give -p TEXT or -f FILE"), "{e}");
    let e = fails(&["perplexity", "-m", "absent.gguf", "-f", s(&empty)]);
    assert!(e.contains("the prompt is empty"), "{e}");
    let blank = dir.path().join("blank.txt");
    std::fs::write(&blank, b"\n  \n").unwrap();
    let e = fails(&["classify", "-m", "absent.gguf", "--input", s(&blank)]);
    assert!(e.contains("blank.txt: no texts"), "{e}");
    let e = fails(&["embed", "-m", "absent.gguf"]);
    assert!(e.contains("no input: give -p TEXT or --input FILE"), "{e}");
}

#[test]
fn invalid_utf8_prompt_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("latin1.txt");
    std::fs::write(&bad, b"caf\xe9 au lait").unwrap();
    let e = fails(&["-m", "absent.gguf", "-f", s(&bad)]);
    assert!(e.contains("latin1.txt: not valid UTF-8 (byte 3)"), "{e}");
    let e = fails(&["perplexity", "-m", "absent.gguf", "-f", s(&bad)]);
    assert!(e.contains("latin1.txt: not valid UTF-8"), "{e}");
    let e = fails(&["classify", "-m", "absent.gguf", "--input", s(&bad)]);
    assert!(e.contains("latin1.txt: line 1: not valid UTF-8"), "{e}");
    let e = fails(&["-m", "absent.gguf", "-f", s(&dir.path().join("none.txt"))]);
    assert!(e.contains("none.txt"), "{e}");
}

#[test]
fn gpu_layers_on_a_cpu_only_build() {
    let Some(m) = tiny_qwen2() else { return };
    // More layers than the model has (3), and fewer: neither is silently run on the CPU.
    for ngl in ["99", "1"] {
        let e = fails(&["-m", s(m), "-p", "hi", "--ngl", ngl]);
        assert!(
            e.contains(&format!(
                "-ngl {ngl}: this qrun was built without GPU support"
            )) && e.contains("model's 3 layers"),
            "{e}"
        );
    }
    let e = fails(&["bench", "-m", s(m), "--ngl", "1000"]);
    assert!(e.contains("-ngl 1000"), "{e}");
}

#[test]
fn missing_empty_folder_and_garbage_model_files() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("absent.gguf");
    let e = fails(&["-m", s(&absent), "-p", "hi"]);
    assert!(
        e.contains("absent.gguf") && e.contains("No such file"),
        "{e}"
    );

    let empty = dir.path().join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    let e = fails(&["-m", s(&empty), "-p", "hi"]);
    assert!(
        e.contains("empty.gguf: malformed GGUF: magic: needs 4 bytes"),
        "{e}"
    );

    let e = fails(&["-m", s(dir.path()), "-p", "hi"]);
    assert!(e.contains("is a folder, not a file"), "{e}");

    let garbage = dir.path().join("garbage.gguf");
    let bytes: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    std::fs::write(&garbage, bytes).unwrap();
    let e = fails(&["-m", s(&garbage), "-p", "hi"]);
    assert!(
        e.contains("garbage.gguf: malformed GGUF: not a GGUF file"),
        "{e}"
    );

    // A safetensors file is not a GGUF file either.
    let st = dir.path().join("model.safetensors");
    std::fs::write(&st, b"\x02\x00\x00\x00\x00\x00\x00\x00{}").unwrap();
    let e = fails(&["embed", "-m", s(&st), "-p", "hi"]);
    assert!(e.contains("model.safetensors: malformed GGUF"), "{e}");

    // Truncated in the middle of the header.
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, b"GGUF\x03\x00\x00\x00\x01\x00\x00\x00").unwrap();
    let e = fails(&["-m", s(&cut), "-p", "hi"]);
    assert!(e.contains("cut.gguf: malformed GGUF: tensor count"), "{e}");
}

#[test]
fn gguf_files_that_are_not_runnable_models() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, w: &GgufWriter| {
        let p = dir.path().join(name);
        w.write_file(&p, |_, _, _| Ok(())).unwrap();
        p
    };
    let mut w = GgufWriter::new();
    w.set("general.architecture", "llama").unwrap();
    let p = write("llama.gguf", &w);
    let e = fails(&["-m", s(&p), "-p", "hi"]);
    assert!(
        e.contains("llama.gguf: architecture 'llama' is not supported"),
        "{e}"
    );

    let p = write("no-arch.gguf", &GgufWriter::new());
    let e = fails(&["-m", s(&p), "-p", "hi"]);
    assert!(
        e.contains("no-arch.gguf: metadata key 'general.architecture' is missing"),
        "{e}"
    );

    // Hyper-parameters but no weights (like llama.cpp's vocabulary-only files).
    let mut w = GgufWriter::new();
    for (k, v) in [
        ("general.architecture", "qwen2"),
        ("qwen2.attention.layer_norm_rms_epsilon", ""),
    ] {
        if v.is_empty() {
            w.set(k, 1e-6f32).unwrap();
        } else {
            w.set(k, v).unwrap();
        }
    }
    for k in [
        "embedding_length",
        "attention.head_count",
        "block_count",
        "feed_forward_length",
        "context_length",
    ] {
        w.set(&format!("qwen2.{k}"), 8u32).unwrap();
    }
    let p = write("no-weights.gguf", &w);
    let e = fails(&["-m", s(&p), "-p", "hi"]);
    assert!(
        e.contains("no-weights.gguf: the model has no tensor 'token_embd.weight'"),
        "{e}"
    );
}

#[test]
fn classify_json_summary_needs_an_output_file() {
    // The rows and the summary would share stdout.
    let err = fails(&["classify", "-m", "/nonexistent.gguf", "-p", "hi", "--json"]);
    assert!(err.contains("give -o FILE"), "{err}");
}
