//! qconvert as users meet it: errors that name the file and the field, refusals that protect
//! existing files, dry runs, and exports that round-trip.

use qgguf::convert::synth::{synthesize, SynthSpec};
use qgguf::gguf::GgufFile;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn qconvert(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qconvert"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn vocab_dir() -> Option<PathBuf> {
    let d = std::env::var_os("QGGUF_VOCAB_DIR").map(PathBuf::from);
    if d.is_none() {
        eprintln!("QGGUF_VOCAB_DIR is not set: skipping (tools/test.sh sets it)");
    }
    d
}

fn tiny(dir: &Path, preset: &str, vocab: &Path) -> PathBuf {
    let v = if preset.contains("qwen2") {
        "ggml-vocab-qwen2.gguf"
    } else if preset.contains("modernbert") {
        "ggml-vocab-gpt-neox.gguf"
    } else {
        "ggml-vocab-bert-bge.gguf"
    };
    let out = dir.join(preset);
    synthesize(
        &SynthSpec::preset(preset).unwrap(),
        &vocab.join(v),
        &out,
        false,
    )
    .unwrap();
    out
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn unsupported_architecture_lists_what_is() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"architectures": ["LlamaForCausalLM"]}"#,
    )
    .unwrap();
    let o = qconvert(&[s(dir.path()), "-o", "x.gguf", "--type", "f16"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("LlamaForCausalLM")
            && e.contains("Qwen2ForCausalLM")
            && e.contains("ModernBertForSequenceClassification"),
        "{e}"
    );
}

#[test]
fn bad_type_and_override_are_explained() {
    let o = qconvert(&["in", "-o", "x.gguf", "--type", "q3_k"]);
    assert!(stderr(&o).contains("unknown type 'q3_k'"), "{}", stderr(&o));
    let o = qconvert(&[
        "in",
        "-o",
        "x.gguf",
        "--type",
        "f16",
        "--tensor-type",
        "ffn_down",
    ]);
    assert!(stderr(&o).contains("expected REGEX=TYPE"), "{}", stderr(&o));
}

#[test]
fn dry_run_refusals_and_nonfinite_weights() {
    let Some(vocab) = vocab_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), "tiny-bert-cls", &vocab);
    let out = dir.path().join("out.gguf");

    let o = qconvert(&[s(&model), "-o", s(&out), "--type", "q4_k_m", "--dry-run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let plan = String::from_utf8_lossy(&o.stdout);
    assert!(
        plan.contains("blk.0.ffn_down.weight") && plan.contains("Q6_K"),
        "{plan}"
    );
    assert!(plan.contains("bits per weight"), "{plan}");
    assert!(!out.exists(), "a dry run wrote a file");

    // --tensor-type overrides the mix.
    let o = qconvert(&[
        s(&model),
        "-o",
        s(&out),
        "--type",
        "q4_k_m",
        "--dry-run",
        "--tensor-type",
        "ffn_down=Q8_0",
    ]);
    let plan = String::from_utf8_lossy(&o.stdout);
    let line = plan
        .lines()
        .find(|l| l.starts_with("blk.0.ffn_down.weight"))
        .unwrap();
    assert!(line.contains("Q8_0"), "{line}");

    std::fs::write(&out, b"precious").unwrap();
    let o = qconvert(&[s(&model), "-o", s(&out), "--type", "f16"]);
    assert!(
        !o.status.success() && stderr(&o).contains("pass --force"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    let o = qconvert(&[s(&model), "-o", s(&out), "--type", "f16", "--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    GgufFile::open(&out).unwrap();

    // A NaN in the weights is refused, naming tensor and position, unless allowed.
    let st = model.join("model.safetensors");
    let mut bytes = std::fs::read(&st).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let at = 8 + header + 2 * 70; // an F16 element in the first tensor
    bytes[at..at + 2].copy_from_slice(&0x7E00u16.to_le_bytes());
    std::fs::write(&st, &bytes).unwrap();
    let o = qconvert(&[s(&model), "-o", s(&out), "--type", "q8_0", "--force"]);
    let e = stderr(&o);
    assert!(
        !o.status.success() && e.contains("NaN") && e.contains("--allow-nonfinite"),
        "{e}"
    );
    let o = qconvert(&[
        s(&model),
        "-o",
        s(&out),
        "--type",
        "q8_0",
        "--force",
        "--allow-nonfinite",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn config_contradicting_tensors_is_an_error() {
    let Some(vocab) = vocab_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), "tiny-qwen2", &vocab);
    let cfg_path = model.join("config.json");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    std::fs::write(
        &cfg_path,
        cfg.replace("\"intermediate_size\": 256", "\"intermediate_size\": 300"),
    )
    .unwrap();
    let o = qconvert(&[
        s(&model),
        "-o",
        s(&dir.path().join("x.gguf")),
        "--type",
        "f16",
    ]);
    let e = stderr(&o);
    assert!(
        !o.status.success() && e.contains("ffn_gate") && e.contains("config.json implies"),
        "{e}"
    );
}

/// Files in `dir` (names only), sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The temporary files of `target` (`.NAME.XXXXXX.partial`) in its folder.
fn partials(target: &Path) -> Vec<PathBuf> {
    let prefix = format!(".{}.", target.file_name().unwrap().to_string_lossy());
    let dir = target.parent().unwrap();
    names_in(dir)
        .into_iter()
        .filter(|n| n.starts_with(&prefix) && n.ends_with(".partial"))
        .map(|n| dir.join(n))
        .collect()
}

#[test]
fn killed_conversion_leaves_no_output() {
    let Some(vocab) = vocab_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), "tiny-qwen2", &vocab);
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("killed.gguf");
    // IQ4_NL's search on one thread takes seconds for this model. Wait until the output is
    // being written (its temporary file has grown past the header), then SIGKILL: no
    // destructor or handler runs, as in a crash or an OOM kill.
    let mut child = Command::new(env!("CARGO_BIN_EXE_qconvert"))
        .args([s(&model), "-o", s(&out), "--type", "iq4_nl", "-t", "1"])
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut writing = false;
    while std::time::Instant::now() < deadline && child.try_wait().unwrap().is_none() {
        let grown = partials(&out)
            .iter()
            .any(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 1 << 20));
        if grown {
            writing = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        writing,
        "the conversion finished (or never wrote) before it could be interrupted"
    );
    assert!(
        !out.exists(),
        "an interrupted conversion left {}",
        out.display()
    );
    // What remains is one clearly temporary file, never a file readers would take for a model.
    let left = names_in(&out_dir);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        left[0].starts_with(".killed.gguf.") && left[0].ends_with(".partial"),
        "{left:?}"
    );

    // A later run is not disturbed by it, and removes it (it can be as large as the model).
    let o = qconvert(&[s(&model), "-o", s(&out), "--type", "q8_0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("left by an interrupted run"),
        "{}",
        stderr(&o)
    );
    assert_eq!(names_in(&out_dir), vec!["killed.gguf".to_string()]);
    GgufFile::open(&out).unwrap();
}

/// Sets element `index` of the first tensor (by offset) of an F16 safetensors file to `bits`.
fn poison_first_tensor(st: &Path, index: usize, bits: u16) {
    let mut bytes = std::fs::read(st).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let at = 8 + header_len + 2 * index;
    bytes[at..at + 2].copy_from_slice(&bits.to_le_bytes());
    std::fs::write(st, &bytes).unwrap();
}

/// The tensor an error message names (`tensor 'NAME'`).
fn named_tensor(msg: &str) -> &str {
    let start = msg.find("tensor '").expect("names a tensor") + "tensor '".len();
    let len = msg[start..].find('\'').unwrap();
    &msg[start..start + len]
}

#[test]
fn nonfinite_weights_copied_unchanged_are_refused_naming_the_tensor() {
    let Some(vocab) = vocab_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), "tiny-bert-cls", &vocab);
    poison_first_tensor(&model.join("model.safetensors"), 5, 0x7C00); // +Inf
    let out = dir.path().join("inf.gguf");
    // F16 to F16 copies the bytes as they are; the check must still see the Inf, and name the
    // tensor (in the GGUF's naming) and the element.
    let o = qconvert(&[s(&model), "-o", s(&out), "--type", "f16"]);
    let e = stderr(&o);
    assert!(!o.status.success(), "accepted an infinite weight: {e}");
    assert!(
        e.contains("element 5 of row 0 is inf") && e.contains("--allow-nonfinite"),
        "{e}"
    );
    assert!(!e.contains("panicked"), "{e}");
    assert!(!out.exists(), "a refused conversion left {}", out.display());
    let name = named_tensor(&e).to_string();

    // Kept, bit for bit, when allowed.
    let o = qconvert(&[
        s(&model),
        "-o",
        s(&out),
        "--type",
        "f16",
        "--allow-nonfinite",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The tensor the error named is the one holding the Inf.
    let f = GgufFile::open(&out).unwrap();
    let t = f
        .tensor(&name)
        .unwrap_or_else(|| panic!("the error named '{name}', not in the output"));
    assert_eq!(t.type_info.name, "F16");
    assert_eq!(
        &f.tensor_data(t)[10..12],
        &0x7C00u16.to_le_bytes(),
        "{name}"
    );

    // Requantizing that GGUF (its F16 tensors copied, others quantized) refuses it too: the
    // scan of a GGUF input (`gguf::scan`) names the tensor before anything is written.
    let again = dir.path().join("again.gguf");
    let o = qconvert(&[s(&out), "-o", s(&again), "--type", "f16"]);
    let e = stderr(&o);
    assert!(!o.status.success(), "{e}");
    assert!(e.contains(&format!("  {name} (F16): 1 Inf")), "{e}");
    assert!(!again.exists(), "{e}");
}

#[test]
fn export_round_trips() {
    let Some(vocab) = vocab_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    for preset in ["tiny-qwen2", "tiny-bert-cls", "tiny-modernbert-cls"] {
        let model = tiny(dir.path(), preset, &vocab);
        let a = dir.path().join(format!("{preset}-a.gguf"));
        let b = dir.path().join(format!("{preset}-b.gguf"));
        let hf = dir.path().join(format!("{preset}-exported"));
        assert!(qconvert(&[s(&model), "-o", s(&a), "--type", "f32"])
            .status
            .success());
        let o = qconvert(&["export", s(&a), "-o", s(&hf), "--dtype", "f32"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let o = qconvert(&[s(&hf), "-o", s(&b), "--type", "f32"]);
        assert!(o.status.success(), "{preset}: {}", stderr(&o));
        let (fa, fb) = (GgufFile::open(&a).unwrap(), GgufFile::open(&b).unwrap());
        assert_eq!(fa.tensors().len(), fb.tensors().len(), "{preset}");
        for t in fa.tensors() {
            let u = fb
                .tensor(&t.name)
                .unwrap_or_else(|| panic!("{preset}: {} lost", t.name));
            assert_eq!(
                (&t.dims, t.type_info),
                (&u.dims, u.type_info),
                "{preset}: {}",
                t.name
            );
            assert!(
                fa.tensor_data(t) == fb.tensor_data(u),
                "{preset}: {} data changed",
                t.name
            );
        }
        // Everything but the descriptive general.* names survives.
        for (k, v) in fa.metadata() {
            if k.starts_with("general.")
                && !k.starts_with("general.file_type")
                && k != "general.architecture"
            {
                continue;
            }
            assert_eq!(fb.get(k), Some(v), "{preset}: metadata {k}");
        }
    }
}
