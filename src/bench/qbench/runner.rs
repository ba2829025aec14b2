//! Runs the table: converts each model into every format with `qconvert`, measures each
//! (model, format, device) with one `qrun` child process per measurement, and derives the rows.
//! Rows come from the cache when their key matches.

use super::cache::{dir_identity, file_identity, key_of, RowCache};
use super::config::{
    qconvert_type, resolve_model, Device, Kind, ModelSpec, Settings, QBENCH_VERSION, SAMPLE_SEED,
};
use super::data::{self, Example};
use super::peers;
use super::rows::{self, Gold, Measured, Row};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The sibling binaries qbench drives.
pub struct Bins {
    pub qconvert: PathBuf,
    pub qrun: PathBuf,
}

impl Bins {
    /// The binaries in `dir`, or by default in the folder of the running qbench.
    pub fn locate(dir: Option<&Path>) -> Result<Bins> {
        let dir = match dir {
            Some(d) => d.to_path_buf(),
            None => std::env::current_exe()
                .context("locating qbench's own folder")?
                .parent()
                .context("qbench's executable has no folder")?
                .to_path_buf(),
        };
        let bins = Bins {
            qconvert: dir.join("qconvert"),
            qrun: dir.join("qrun"),
        };
        for b in [&bins.qconvert, &bins.qrun] {
            if !b.is_file() {
                bail!(
                    "{} not found: qbench runs qconvert and qrun from its own folder (build them with `cargo build --release`, or pass --bin-dir with their folder)",
                    b.display()
                );
            }
        }
        Ok(bins)
    }
}

pub struct Options {
    pub models: Vec<String>,
    pub formats: Vec<String>,
    pub devices: Vec<Device>,
    pub threads: usize,
    pub settings: Settings,
    pub models_dir: PathBuf,
    pub data_dir: PathBuf,
    /// Converted GGUF files.
    pub convert_dir: PathBuf,
    pub out_dir: PathBuf,
    pub fresh: bool,
    pub llama_cpp: Option<PathBuf>,
}

pub struct Outcome {
    pub rows: Vec<Row>,
    /// Models or parts left out, with the reason.
    pub skipped: Vec<String>,
}

/// Output of a finished child, or an error with the end of its stderr.
pub fn run_child(cmd: &mut Command, what: &str) -> Result<(String, String)> {
    let o = cmd
        .output()
        .with_context(|| format!("{what}: cannot start {:?}", cmd.get_program()))?;
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    if !o.status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(4).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!("{what}: {} ({})", tail.join(" / ").trim(), o.status);
    }
    Ok((stdout, stderr))
}

/// The last line of stdout that parses as a JSON object.
pub fn last_json(stdout: &str, what: &str) -> Result<Value> {
    stdout
        .lines()
        .rev()
        .find_map(|l| {
            serde_json::from_str::<Value>(l.trim())
                .ok()
                .filter(Value::is_object)
        })
        .with_context(|| format!("{what}: no JSON summary on stdout"))
}

fn f64_of(v: &Value, k: &str) -> Option<f64> {
    v.get(k).and_then(Value::as_f64)
}

/// Bits per weight over every tensor of the file (as llama.cpp's model size / parameters).
pub fn bits_per_weight(path: &Path) -> Option<f64> {
    let f = crate::gguf::GgufFile::open(path).ok()?;
    let (bytes, n) = f
        .tensors()
        .iter()
        .fold((0u64, 0u64), |(b, n), t| (b + t.nbytes, n + t.n_elements()));
    (n > 0).then(|| bytes as f64 * 8.0 / n as f64)
}

fn device_args(cmd: &mut Command, device: Device, threads: usize) {
    cmd.args(["-t", &threads.to_string()]);
    if device == Device::Gpu {
        cmd.args(["--ngl", "99"]);
    }
}

/// Converts `spec`'s folder into `format` unless the file exists; returns its path.
fn convert(
    bins: &Bins,
    spec: &ModelSpec,
    format: &str,
    dir: &Path,
    threads: usize,
) -> Result<PathBuf> {
    let out = dir.join(format!("{format}.gguf"));
    if out.is_file() {
        return Ok(out);
    }
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    let mut cmd = Command::new(&bins.qconvert);
    cmd.arg(&spec.dir).arg("-o").arg(&out).args([
        "--type",
        &qconvert_type(format),
        "-t",
        &threads.to_string(),
    ]);
    run_child(&mut cmd, &format!("qconvert {} -> {format}", spec.name))?;
    Ok(out)
}

fn read_logits(path: &Path) -> Result<Vec<Vec<f32>>> {
    let s = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    s.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            let v: Value = serde_json::from_str(l)
                .with_context(|| format!("{}: line {}", path.display(), i + 1))?;
            let l = v
                .get("logits")
                .and_then(Value::as_array)
                .with_context(|| format!("{}: line {}: no logits", path.display(), i + 1))?;
            Ok(l.iter()
                .map(|x| x.as_f64().unwrap_or(f64::NAN) as f32)
                .collect())
        })
        .collect()
}

/// One `qrun classify` over a text file: logits and its JSON summary. `warmup`: one untimed
/// batch first (the timed pass).
#[allow(clippy::too_many_arguments)]
fn classify(
    bins: &Bins,
    gguf: &Path,
    texts: &Path,
    device: Device,
    threads: usize,
    s: &Settings,
    tmp: &Path,
    warmup: bool,
) -> Result<(Vec<Vec<f32>>, Value)> {
    let out = tmp.join("classify.jsonl");
    let mut cmd = Command::new(&bins.qrun);
    cmd.arg("classify")
        .arg("-m")
        .arg(gguf)
        .arg("--input")
        .arg(texts)
        .args(["--batch", &s.batch.to_string()])
        .args(["-c", &s.max_tokens.to_string()])
        .arg("-o")
        .arg(&out)
        .arg("--json");
    if warmup {
        cmd.arg("--warmup");
    }
    device_args(&mut cmd, device, threads);
    let (stdout, _) = run_child(&mut cmd, "qrun classify")?;
    let summary = last_json(&stdout, "qrun classify")?;
    Ok((read_logits(&out)?, summary))
}

fn peak_of(v: &Value, device: Device) -> Option<f64> {
    match device {
        Device::Cpu => f64_of(v, "peak_rss_mib"),
        Device::Gpu => f64_of(v, "vram_peak_mib"),
    }
}

#[allow(clippy::too_many_arguments)]
fn measure_classifier(
    bins: &Bins,
    m: &mut Measured,
    gguf: &Path,
    device: Device,
    s: &Settings,
    test: &Path,
    val: &Path,
) -> Result<()> {
    let tmp = tempfile::tempdir().context("a temporary folder")?;
    // The test pass is the timed one; the validation pass only feeds temperature scaling.
    let (logits, summary) = classify(bins, gguf, test, device, m.threads, s, tmp.path(), true)?;
    m.test_logits = logits;
    m.ms_per_example = f64_of(&summary, "ms_per_example");
    m.load_ms = f64_of(&summary, "load_ms");
    m.peak_mib = peak_of(&summary, device);
    let (logits, _) = classify(bins, gguf, val, device, m.threads, s, tmp.path(), false)?;
    m.val_logits = logits;
    Ok(())
}

/// What the perplexity run does with F16's log-probabilities.
enum Kld<'a> {
    Save(&'a Path),
    Compare(&'a Path),
}

fn measure_lm(
    bins: &Bins,
    m: &mut Measured,
    gguf: &Path,
    device: Device,
    s: &Settings,
    text: Option<&Path>,
    kld: Option<Kld>,
) -> Result<()> {
    let mut cmd = Command::new(&bins.qrun);
    cmd.arg("bench").arg("-m").arg(gguf).args([
        "-p",
        &s.n_prompt.to_string(),
        "-n",
        &s.n_gen.to_string(),
        "-r",
        &s.reps.to_string(),
        "--json",
    ]);
    device_args(&mut cmd, device, m.threads);
    let (stdout, _) = run_child(&mut cmd, "qrun bench")?;
    let b = last_json(&stdout, "qrun bench")?;
    m.pp_tps = f64_of(&b, "pp_tps");
    m.tg_tps = f64_of(&b, "tg_tps");
    m.load_ms = f64_of(&b, "load_ms");
    // Memory of the speed run: the perplexity run also holds every position's logits (512 x
    // the vocabulary), which serving does not.
    m.peak_mib = peak_of(&b, device);
    let Some(text) = text else {
        return Ok(());
    };
    let mut cmd = Command::new(&bins.qrun);
    cmd.arg("perplexity")
        .arg("-m")
        .arg(gguf)
        .arg("-f")
        .arg(text)
        .args([
            "-c",
            &s.ppl_ctx.to_string(),
            "--chunks",
            &s.ppl_chunks.to_string(),
            "--json",
        ]);
    match kld {
        Some(Kld::Save(p)) => {
            cmd.arg("--kl-divergence-base").arg(p);
        }
        Some(Kld::Compare(p)) => {
            cmd.arg("--kl-divergence-base")
                .arg(p)
                .arg("--kl-divergence");
        }
        None => {}
    }
    device_args(&mut cmd, device, m.threads);
    let (stdout, _) = run_child(&mut cmd, "qrun perplexity")?;
    let p = last_json(&stdout, "qrun perplexity")?;
    m.ppl = f64_of(&p, "ppl");
    if let Some(k) = p.get("kld").filter(|k| k.is_object()) {
        m.kld_mean = f64_of(k, "mean");
        m.kld_p99 = f64_of(k, "p99");
        m.top1_pct = f64_of(k, "same_top_pct");
    }
    Ok(())
}

/// A classifier's data: the sampled test and validation examples, written as qrun inputs.
struct ClsData {
    test: Vec<Example>,
    val: Vec<Example>,
    test_file: PathBuf,
    val_file: PathBuf,
    identity: String,
}

fn load_cls_data(data_dir: &Path, dataset: &str, s: &Settings, work: &Path) -> Result<ClsData> {
    let dir = data_dir.join(dataset);
    let (tp, vp) = (dir.join("test.jsonl"), dir.join("val.jsonl"));
    if !tp.is_file() || !vp.is_file() {
        bail!(
            "no {dataset} data at {} (made by tools/fetch-data.sh)",
            dir.display()
        );
    }
    let test = data::sample(data::read_split(&tp)?, s.n_test, SAMPLE_SEED);
    let val = data::sample(data::read_split(&vp)?, s.n_val, SAMPLE_SEED);
    let test_file = work.join(format!("{dataset}-test-{}.jsonl", test.len()));
    let val_file = work.join(format!("{dataset}-val-{}.jsonl", val.len()));
    data::write_texts(&test, &test_file)?;
    data::write_texts(&val, &val_file)?;
    Ok(ClsData {
        identity: format!("{}|{}", file_identity(&tp), file_identity(&vp)),
        test,
        val,
        test_file,
        val_file,
    })
}

fn bar(len: u64) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} {wide_msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// Runs everything `o` asks for.
pub fn run(bins: &Bins, o: &Options) -> Result<Outcome> {
    let mut skipped = Vec::new();
    let mut specs = Vec::new();
    for name in &o.models {
        match resolve_model(name, &o.models_dir) {
            Ok(s) => specs.push(s),
            Err(e) => skipped.push(e),
        }
    }
    let cache = RowCache::new(o.out_dir.join("cache"), o.fresh);
    std::fs::create_dir_all(cache.dir()).with_context(|| cache.dir().display().to_string())?;
    let llama = o
        .llama_cpp
        .as_ref()
        .and_then(|d| match peers::LlamaCpp::locate(d) {
            Ok(l) => Some(l),
            Err(e) => {
                skipped.push(format!("llama.cpp rows: {e:#}"));
                None
            }
        });
    let per_model = o.formats.len() as u64 * (1 + o.devices.len() as u64);
    let pb = bar(per_model * specs.len() as u64);
    for s in &skipped {
        say(&pb, format!("qbench: {s}"));
    }
    let text = o.data_dir.join("moby.txt");
    let mut rows = Vec::new();
    for spec in &specs {
        let mut model_rows = run_model(
            bins,
            o,
            spec,
            &cache,
            &pb,
            &text,
            llama.as_ref(),
            &mut skipped,
        );
        match &mut model_rows {
            Ok(r) => rows.append(r),
            Err(e) => {
                let msg = format!("{}: {e:#}; skipped", spec.name);
                say(&pb, format!("qbench: {msg}"));
                skipped.push(msg);
            }
        }
    }
    pb.finish_and_clear();
    Ok(Outcome { rows, skipped })
}

#[allow(clippy::too_many_arguments)]
fn run_model(
    bins: &Bins,
    o: &Options,
    spec: &ModelSpec,
    cache: &RowCache,
    pb: &ProgressBar,
    text: &Path,
    llama: Option<&peers::LlamaCpp>,
    skipped: &mut Vec<String>,
) -> Result<Vec<Row>> {
    let cls = match (spec.kind, &spec.dataset) {
        (Kind::Classifier, Some(d)) => Some(load_cls_data(
            &o.data_dir,
            d,
            &o.settings,
            &cache.dir().join("data"),
        )?),
        _ => None,
    };
    let text = if spec.kind == Kind::Lm && !text.is_file() {
        let msg = format!(
            "{}: no perplexity text at {} (made by tools/fetch-data.sh): speed only",
            spec.name,
            text.display()
        );
        say(pb, format!("qbench: {msg}"));
        skipped.push(msg);
        None
    } else {
        Some(text)
    };
    // Conversions first: a format that fails to convert is reported and left out.
    let conv_dir = o.convert_dir.join(format!(
        "{}-{}",
        spec.name,
        key_of(&dir_identity(&spec.dir))
    ));
    let mut files = Vec::new();
    for f in &o.formats {
        step(pb, format!("converting {} to {f}", spec.name));
        match convert(bins, spec, f, &conv_dir, o.threads) {
            Ok(p) => files.push((f.clone(), p)),
            Err(e) => {
                let msg = format!("{e:#}");
                say(pb, format!("qbench: {msg}"));
                skipped.push(msg);
                pb.inc(o.devices.len() as u64);
            }
        }
        pb.inc(1);
    }
    let mut measured: Vec<Measured> = Vec::new();
    for &device in &o.devices {
        let mut f16_key: Option<String> = None;
        let mut base_file: Option<PathBuf> = None;
        for (format, gguf) in &files {
            let key = key_of(&json!({
                "v": QBENCH_VERSION, "model": spec.name, "file": file_identity(gguf),
                "format": format, "device": device, "threads": o.threads, "engine": "qgguf",
                // A rebuilt qrun measures again: its speed is what the row reports.
                "qrun": file_identity(&bins.qrun),
                "settings": o.settings, "data": cls.as_ref().map(|c| c.identity.clone()),
                "text": text.map(file_identity), "base": f16_key,
            }));
            let name = format!("{}.{format}.{}.qgguf", spec.name, device.name());
            let kld_path = cache.dir().join(format!("{name}.{key}.kld"));
            let is_base = format == "F16";
            let cached = cache.get(&name, &key).filter(|_| {
                !(is_base && text.is_some() && spec.kind == Kind::Lm && !kld_path.is_file())
            });
            let m = match cached {
                Some(m) => {
                    step(pb, format!("{name}: cached"));
                    m
                }
                None => {
                    step(pb, format!("measuring {name}"));
                    let mut m = Measured {
                        key: key.clone(),
                        model: spec.name.clone(),
                        engine: "qgguf".into(),
                        format: format.clone(),
                        device: Some(device),
                        threads: o.threads,
                        file_bytes: std::fs::metadata(gguf).map_or(0, |m| m.len()),
                        bpw: bits_per_weight(gguf),
                        ..Measured::default()
                    };
                    let r = match (&cls, spec.kind) {
                        (Some(c), _) => measure_classifier(
                            bins,
                            &mut m,
                            gguf,
                            device,
                            &o.settings,
                            &c.test_file,
                            &c.val_file,
                        ),
                        (None, _) => {
                            let kld = match (&base_file, is_base) {
                                (_, true) => Some(Kld::Save(&kld_path)),
                                (Some(b), false) => Some(Kld::Compare(b)),
                                (None, false) => None,
                            };
                            measure_lm(bins, &mut m, gguf, device, &o.settings, text, kld)
                        }
                    };
                    if let Err(e) = r {
                        let msg = format!("{name}: {e:#}");
                        say(pb, format!("qbench: {msg}"));
                        m.error = Some(msg);
                    }
                    if let Err(e) = cache.put(&name, &m) {
                        say(pb, format!("qbench: {name}: not cached: {e:#}"));
                    }
                    m
                }
            };
            if is_base && m.error.is_none() {
                f16_key = Some(key.clone());
                if kld_path.is_file() {
                    base_file = Some(kld_path.clone());
                }
            }
            measured.push(m);
            pb.inc(1);
        }
        if let (Some(l), Kind::Lm) = (llama, spec.kind) {
            for (format, gguf) in &files {
                step(
                    pb,
                    format!("llama.cpp {} {format} {}", spec.name, device.name()),
                );
                let key = key_of(&json!({
                    "v": QBENCH_VERSION, "file": file_identity(gguf), "format": format,
                    "device": device, "threads": o.threads, "engine": "llama.cpp",
                    "llama": l.identity(), "settings": o.settings, "text": text.map(file_identity),
                    "base": f16_key,
                }));
                let name = format!("{}.{format}.{}.llama.cpp", spec.name, device.name());
                let m = match cache.get(&name, &key) {
                    Some(m) => m,
                    None => {
                        let m = l.measure(
                            &key,
                            &spec.name,
                            format,
                            gguf,
                            device,
                            o.threads,
                            &o.settings,
                            text,
                            base_file.as_deref(),
                        );
                        if let Some(e) = &m.error {
                            say(pb, format!("qbench: {name}: {e}"));
                        }
                        let _ = cache.put(&name, &m);
                        m
                    }
                };
                measured.push(m);
            }
        }
    }
    // Rows, each compared with qgguf's F16 row of its device.
    let mut out = Vec::new();
    for m in &measured {
        let base = measured.iter().find(|b| {
            b.engine == "qgguf" && b.format == "F16" && b.device == m.device && b.error.is_none()
        });
        let row = match &cls {
            Some(c) => {
                let test: Vec<usize> = c.test.iter().map(|e| e.label).collect();
                let tiers: Vec<Option<String>> = c.test.iter().map(|e| e.tier.clone()).collect();
                let val: Vec<usize> = c.val.iter().map(|e| e.label).collect();
                let gold = Gold {
                    test: &test,
                    tiers: &tiers,
                    val: &val,
                };
                rows::classifier_row(m, base, &gold, spec.synthetic, spec.note.clone())
            }
            None => rows::lm_row(m, base, spec.note.clone()),
        };
        out.push(row);
    }
    Ok(out)
}

/// A message on stderr above the progress bar (`ProgressBar::println` prints nothing when the
/// bar is hidden, as it is when stderr is not a terminal).
fn say(pb: &ProgressBar, msg: String) {
    pb.suspend(|| eprintln!("{msg}"));
}

/// The current step: on the bar, or as a line of its own when the bar is hidden (stderr not a
/// terminal), so logs of long runs still show progress.
fn step(pb: &ProgressBar, msg: String) {
    if pb.is_hidden() {
        eprintln!(
            "qbench: [{}/{}] {msg}",
            pb.position() + 1,
            pb.length().unwrap_or(0)
        );
    }
    pb.set_message(msg);
}
