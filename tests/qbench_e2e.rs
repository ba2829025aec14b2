//! qbench end to end on tiny synthetic models (qconvert synth) and a tiny fake dataset: every
//! output file is written, the rows hold what each kind of model reports, a second run comes
//! from the cache, a missing model is skipped with a message naming its maker, and bad flags
//! fail clearly.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn run(cmd: &mut Command) -> Output {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{:?} failed:\n{}",
        cmd,
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// Tiny models under the default names, and a 4-class dataset with tiers, in `root`.
fn fixtures(root: &Path, vocab: &Path) {
    let models = root.join("models");
    let qconvert = env!("CARGO_BIN_EXE_qconvert");
    for (preset, name, v, labels) in [
        ("tiny-qwen2", "qwen-sotu-lm", "qwen2", None),
        ("tiny-bert-cls", "minilm-sotu-cls", "bert-bge", Some("4")),
        (
            "tiny-modernbert-cls",
            "modernbert-base-cls113",
            "gpt-neox",
            None,
        ),
    ] {
        let mut c = Command::new(qconvert);
        c.args(["synth", preset, "-o", s(&models.join(name)), "--vocab"])
            .arg(vocab.join(format!("ggml-vocab-{v}.gguf")));
        if let Some(l) = labels {
            c.args(["--labels", l]);
        }
        run(&mut c);
    }
    let data = root.join("data/sotu");
    std::fs::create_dir_all(&data).unwrap();
    let words = [
        "the", "nation", "economy", "war", "peace", "congress", "tax", "people", "union", "law",
    ];
    let tiers = ["head", "head", "mid", "tail"];
    let mut x: u64 = 12345;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for split in ["train", "val", "test"] {
        let mut lines = String::new();
        for _ in 0..24 {
            let label = (next() % 4) as usize;
            let n = 3 + next() % 30;
            let text: Vec<&str> = (0..n).map(|_| words[(next() % 10) as usize]).collect();
            lines.push_str(&format!(
                "{{\"text\": \"{}\", \"label\": {label}, \"tier\": \"{}\"}}\n",
                text.join(" "),
                tiers[label]
            ));
        }
        std::fs::write(data.join(format!("{split}.jsonl")), lines).unwrap();
    }
    std::fs::write(data.join("labels.json"), r#"["a", "b", "c", "d"]"#).unwrap();
    let mut moby = String::new();
    for i in 0..300 {
        moby.push_str(&format!(
            "Call me {} the {} of {}.\n",
            words[i % 10],
            words[(i * 7) % 10],
            words[(i * 3) % 10]
        ));
    }
    std::fs::write(root.join("data/moby.txt"), moby).unwrap();
}

fn qbench(root: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_qbench"));
    c.env("QGGUF_MODELS", root.join("models"))
        .env("QGGUF_DATA", root.join("data"))
        .env("QGGUF_CACHE", root.join("cache"))
        .env_remove("LLAMA_CPP_BIN")
        .args(["--out", s(out), "-t", "1"])
        .args(["--formats", "f16,q8_0,q4_k_m"])
        .args([
            "--ppl-ctx",
            "32",
            "--ppl-chunks",
            "2",
            "-p",
            "32",
            "-n",
            "4",
            "-r",
            "1",
        ])
        .args(extra);
    c
}

#[test]
fn qbench_end_to_end_and_cache() {
    let Some(vocab) = std::env::var_os("QGGUF_VOCAB_DIR").map(PathBuf::from) else {
        eprintln!("QGGUF_VOCAB_DIR is not set: skipping (tools/test.sh sets it)");
        return;
    };
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("qbench_e2e");
    let _ = std::fs::remove_dir_all(&root);
    fixtures(&root, &vocab);
    let out = root.join("out");
    let models = "qwen-sotu-lm,minilm-sotu-cls,modernbert-base-cls113,qwen-sotu-cls";
    let o = run(&mut qbench(
        &root,
        &out,
        &[
            "--models",
            models,
            "--envelope",
            "max_ms=1000,min_f1=0.0,max_kld=10",
        ],
    ));
    let md = String::from_utf8(o.stdout).unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    // The absent fine-tuned decoder classifier is skipped, naming where it was looked for.
    assert!(
        err.contains("qwen-sotu-cls: no model at") && md.contains("qwen-sotu-cls: no model"),
        "{err}"
    );
    for f in [
        "table.md",
        "results.csv",
        "results.json",
        "pareto-lm-latency.svg",
        "pareto-lm-memory.svg",
        "pareto-classifier-latency.svg",
        "pareto-classifier-agreement-memory.svg",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    assert_eq!(std::fs::read_to_string(out.join("table.md")).unwrap(), md);
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    let rows = j["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 9, "{md}");
    let row = |m: &str, f: &str| {
        rows.iter()
            .find(|r| r["model"] == m && r["format"] == f)
            .unwrap_or_else(|| panic!("no row {m} {f}"))
    };
    for r in rows {
        assert!(r["error"].is_null(), "{r}");
        assert!(r["file_mib"].as_f64().unwrap() > 0.0);
        assert!(r["peak_mib"].as_f64().unwrap() > 1.0, "{r}");
        assert!(r["envelope"]["pass"].is_boolean());
    }
    // LM: speed, perplexity, and KLD against F16 for the others.
    let f16 = row("qwen-sotu-lm", "F16");
    assert!(f16["pp_tps"].as_f64().unwrap() > 0.0 && f16["tg_tps"].as_f64().unwrap() > 0.0);
    assert!(f16["ppl"].as_f64().unwrap() > 1.0 && f16["kld_mean"].is_null());
    let q4 = row("qwen-sotu-lm", "Q4_K_M");
    assert!(q4["kld_mean"].as_f64().unwrap() >= 0.0);
    assert!((0.0..=1.0).contains(&q4["top1"].as_f64().unwrap()));
    assert!(q4["ppl_ratio"].as_f64().unwrap() > 0.0);
    // Classifier: 24 test examples, accuracy and calibration, deltas per tier against F16.
    let c = row("minilm-sotu-cls", "Q8_0");
    assert_eq!(c["n_test"], 24);
    for k in [
        "accuracy",
        "macro_f1",
        "agree",
        "ece",
        "ece_ts",
        "temperature",
    ] {
        assert!(c[k].as_f64().is_some(), "{k}: {c}");
    }
    let tiers: Vec<&str> = c["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tier"].as_str().unwrap())
        .collect();
    assert_eq!(tiers, ["head", "mid", "tail"]);
    assert!(c["delta"]["lo"].as_f64().unwrap() <= c["delta"]["hi"].as_f64().unwrap());
    // The synthetic model reports agreement only.
    let m = row("modernbert-base-cls113", "Q4_K_M");
    assert!(m["synthetic"].as_bool().unwrap() && m["accuracy"].is_null());
    assert!(m["agree"].as_f64().is_some());
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 10);
    assert!(csv.starts_with("model,kind,engine,format,device,threads,file_mib"));

    // Second run: every row from the cache, the same numbers.
    let cached: Vec<_> = std::fs::read_dir(out.join("cache"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .collect();
    assert_eq!(cached.len(), 9);
    let stamp = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let before: Vec<_> = cached.iter().map(|e| stamp(&e.path())).collect();
    let o2 = run(&mut qbench(&root, &out, &["--models", models, "--json"]));
    let j2: serde_json::Value = serde_json::from_slice(&o2.stdout).unwrap();
    assert!(String::from_utf8_lossy(&o2.stderr).contains("9 rows"));
    for (a, b) in rows.iter().zip(j2["rows"].as_array().unwrap()) {
        for k in [
            "tg_tps",
            "ms_per_example",
            "ppl",
            "kld_mean",
            "accuracy",
            "peak_mib",
        ] {
            assert_eq!(a[k], b[k], "{k} changed on a cached run");
        }
    }
    let after: Vec<_> = cached.iter().map(|e| stamp(&e.path())).collect();
    assert_eq!(before, after, "cached rows were rewritten");

    // --fresh measures again (one small model, one format beside F16): its cache files are
    // rewritten, the others are left alone.
    let minilm_q8 = cached
        .iter()
        .position(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("minilm-sotu-cls.Q8_0.")
        })
        .expect("a cached minilm Q8_0 row");
    let lm = cached
        .iter()
        .position(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("qwen-sotu-lm.Q8_0.")
        })
        .expect("a cached LM Q8_0 row");
    let o3 = run(&mut qbench(
        &root,
        &out,
        &[
            "--models",
            "minilm-sotu-cls",
            "--formats",
            "q8_0",
            "--fresh",
        ],
    ));
    assert!(String::from_utf8_lossy(&o3.stdout).contains("| minilm-sotu-cls | Q8_0 |"));
    assert_ne!(stamp(&cached[minilm_q8].path()), before[minilm_q8]);
    assert_eq!(stamp(&cached[lm].path()), before[lm]);
}

#[test]
fn qbench_bad_flags_fail_clearly() {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("qbench_flags");
    let out = root.join("out");
    let fails = |extra: &[&str], want: &str| {
        let o = qbench(&root, &out, extra).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{extra:?}: {err}");
        assert!(
            err.contains(want) && !err.contains("panicked"),
            "{extra:?}: {err}"
        );
    };
    fails(&["--envelope", "max_speed=1"], "unknown key 'max_speed'");
    fails(&["--formats", "q3_k"], "unknown format 'q3_k'");
    fails(&["--device", "tpu"], "unknown device 'tpu'");
    fails(&["--n-test", "0"], "--n-test 0");
    fails(
        &["--peer-rows", "/nonexistent/rows.jsonl"],
        "/nonexistent/rows.jsonl",
    );
    // No model present at all: nothing to measure, and each absence is named.
    fails(&["--models", "minilm-sotu-cls"], "nothing was measured");
}
