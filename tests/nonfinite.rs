//! Model files whose weights hold NaN, infinities or absurd norms: each is refused at load,
//! naming the file and the tensor with its counts, on every path that loads weights (the CPU
//! packed and in place, `-ngl` with its CPU fallback, `qconvert` requantizing and exporting,
//! `qconvert info --check`), and loads with a warning under `--allow-nonfinite`. The clean file
//! they are made from passes every path. The GPU's own `-ngl` path is tested in tests/gpu.rs.

#[path = "support/broken_models.rs"]
mod broken_models;

use broken_models::{cases, write_model, Damage};
use qgguf::model::{LoadOptions, Model};
use std::path::Path;
use std::process::{Command, Output};

/// Every load path of qrun's library: packed for the SIMD kernels, in place, and `-ngl` (on a
/// machine without a usable GPU, its CPU fallback; with one, the GPU's upload).
fn load_paths() -> Vec<(&'static str, LoadOptions)> {
    vec![
        ("cpu", LoadOptions::default()),
        (
            "cpu in place",
            LoadOptions {
                pack: false,
                ..Default::default()
            },
        ),
        (
            "-ngl 1 with fallback",
            LoadOptions {
                ngl: 1,
                gpu_fallback: true,
                ..Default::default()
            },
        ),
    ]
}

fn load_error(path: &Path, opts: &LoadOptions) -> String {
    match Model::load_with(path, opts) {
        Ok(_) => panic!("{}: a broken file loaded", path.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn the_clean_file_loads_on_every_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_model(dir.path(), "clean.gguf", &[]);
    for (what, opts) in load_paths() {
        let m = Model::load_with(&path, &opts).unwrap_or_else(|e| panic!("{what}: {e:#}"));
        assert!(m.warnings.is_empty(), "{what}: {:?}", m.warnings);
    }
}

#[test]
fn every_broken_file_is_refused_naming_the_tensor_on_every_load_path() {
    let dir = tempfile::tempdir().unwrap();
    for case in cases() {
        let path = write_model(dir.path(), case.file, &case.damage);
        for (what, opts) in load_paths() {
            let msg = load_error(&path, &opts);
            assert!(msg.contains(case.file), "{what}: no file name in: {msg}");
            assert!(
                msg.contains("1 of 14 tensors hold non-finite or absurd values"),
                "{what}: {msg}"
            );
            let line = msg
                .lines()
                .find(|l| l.contains(case.tensor))
                .unwrap_or_else(|| panic!("{what}: '{}' not named in: {msg}", case.tensor));
            assert!(
                line.contains(case.says),
                "{what}: expected '{}' in: {line}",
                case.says
            );
            assert!(msg.contains("--allow-nonfinite"), "{what}: {msg}");
        }
    }
}

#[test]
fn allow_nonfinite_loads_with_a_warning_and_runs_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    for case in cases() {
        let path = write_model(dir.path(), case.file, &case.damage);
        let opts = LoadOptions {
            allow_nonfinite: true,
            ..Default::default()
        };
        let m = Model::load_with(&path, &opts).unwrap();
        assert_eq!(m.warnings.len(), 1, "{}", case.file);
        assert!(m.warnings[0].contains(case.tensor), "{}", m.warnings[0]);
        let qgguf::model::Arch::Qwen2(q) = &m.arch else {
            unreachable!()
        };
        let mut st = q.new_state(8).unwrap();
        q.forward(
            &m.file,
            &mut st,
            &[1, 2, 3],
            qgguf::model::qwen2::Output::LastLogits,
        )
        .unwrap();
        let _ = qgguf::sampling::argmax(&st.logits);
    }
}

#[test]
fn the_first_five_offenders_are_listed_and_all_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let damage: Vec<Damage> = cases().into_iter().flat_map(|c| c.damage).collect();
    let path = write_model(dir.path(), "all.gguf", &damage);
    let msg = load_error(&path, &LoadOptions::default());
    assert!(
        msg.contains("11 of 14 tensors hold non-finite or absurd values"),
        "{msg}"
    );
    assert!(msg.contains("and 6 more"), "{msg}");
    // In file order, whatever order the parallel load met them in.
    let named: Vec<&str> = msg
        .lines()
        .filter_map(|l| l.trim().split(' ').next().filter(|_| l.starts_with("  ")))
        .collect();
    assert_eq!(
        named,
        [
            "token_embd.weight",
            "blk.0.attn_norm.weight",
            "blk.0.attn_q.weight",
            "blk.0.attn_q.bias",
            "blk.0.attn_k.weight",
            "and"
        ]
    );
}

fn qconvert(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qconvert"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn qconvert_refuses_to_requantize_or_export_a_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    for case in cases() {
        let path = write_model(dir.path(), case.file, &case.damage);
        let p = path.to_str().unwrap();
        let out = dir.path().join("out.gguf");
        let o = qconvert(&[p, "-o", out.to_str().unwrap(), "--type", "q8_0"]);
        let t = text(&o);
        assert!(!o.status.success(), "requantized a broken file: {t}");
        assert!(t.contains(case.file) && t.contains(case.tensor), "{t}");
        assert!(t.contains(case.says), "{t}");
        assert!(!out.exists(), "{t}");

        let hf = dir.path().join("hf");
        let o = qconvert(&["export", p, "-o", hf.to_str().unwrap()]);
        let t = text(&o);
        assert!(!o.status.success(), "exported a broken file: {t}");
        assert!(t.contains(case.file) && t.contains(case.tensor), "{t}");
        assert!(!hf.join("model.safetensors").exists(), "{t}");
    }
}

#[test]
fn qconvert_passes_the_clean_file_and_keeps_a_broken_one_when_told() {
    let dir = tempfile::tempdir().unwrap();
    let clean = write_model(dir.path(), "clean.gguf", &[]);
    let out = dir.path().join("out.gguf");
    let o = qconvert(&[
        clean.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--type",
        "q8_0",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let hf = dir.path().join("hf");
    let o = qconvert(&[
        "export",
        clean.to_str().unwrap(),
        "-o",
        hf.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(hf.join("model.safetensors").exists());

    let c = &cases()[0];
    let broken = write_model(dir.path(), c.file, &c.damage);
    let o = qconvert(&[
        broken.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--type",
        "q8_0",
        "--force",
        "--allow-nonfinite",
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("warning") && t.contains(c.tensor), "{t}");
}

#[test]
fn info_check_reports_each_broken_file_and_passes_the_clean_one() {
    let dir = tempfile::tempdir().unwrap();
    let clean = write_model(dir.path(), "clean.gguf", &[]);
    let o = qconvert(&["info", clean.to_str().unwrap(), "--check"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("clean (14 tensors"), "{}", text(&o));

    for case in cases() {
        let path = write_model(dir.path(), case.file, &case.damage);
        let o = qconvert(&["info", path.to_str().unwrap(), "--check"]);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{t}");
        assert!(t.contains(case.tensor) && t.contains(case.says), "{t}");

        let o = qconvert(&["info", path.to_str().unwrap(), "--check", "--json"]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["clean"], false);
        assert_eq!(v["tensors"], 14);
        let f = &v["findings"].as_array().unwrap()[..];
        assert_eq!(f.len(), 1, "{v}");
        let name = case.tensor.split(' ').next().unwrap();
        assert_eq!(f[0]["tensor"], name);
        let blocks = !case.tensor.contains("(F");
        assert_eq!(f[0]["unit"], if blocks { "blocks" } else { "elements" });
        assert!(f[0]["message"].as_str().unwrap().contains(case.says), "{v}");
    }
}

#[test]
fn qrun_refuses_a_broken_file_and_runs_it_when_told() {
    let dir = tempfile::tempdir().unwrap();
    let c = &cases()[6];
    let path = write_model(dir.path(), c.file, &c.damage);
    let p = path.to_str().unwrap();
    let qrun = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_qrun"))
            .args(["generate", "-m", p, "-p", "Hello", "-n", "2", "-t", "1"])
            .args(extra)
            .output()
            .unwrap()
    };
    let o = qrun(&[]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains(c.file) && t.contains(c.tensor) && t.contains(c.says),
        "{t}"
    );
    assert!(!t.contains("panicked"), "{t}");
    let o = qrun(&["--allow-nonfinite"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("qrun: warning:") && t.contains(c.tensor), "{t}");
}
