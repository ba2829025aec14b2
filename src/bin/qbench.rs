//! qbench: latency, memory and accuracy of every format against F16, for the reference models,
//! on CPU and GPU. Drives `qconvert` and `qrun` (its sibling binaries) one child process per
//! measurement; prints a Markdown table and writes CSV, JSON, the table and SVG plots to --out.

use anyhow::{bail, Context, Result};
use clap::Parser;
use qgguf::bench::qbench::config::{
    parse_format, Device, Settings, ALL_FORMATS, DEFAULT_MODELS, QBENCH_VERSION, QUICK_FORMATS,
    QUICK_MODELS,
};
use qgguf::bench::qbench::envelope::Envelope;
use qgguf::bench::qbench::runner::{self, Bins, Options};
use qgguf::bench::qbench::{peers, plots, report, write_atomic};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

/// Benchmark every format against F16: file size, latency, peak memory and accuracy (classifiers:
/// accuracy, macro F1, agreement, calibration, per-tier deltas; LMs: perplexity, KLD).
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// The reduced table on CPU (F16, Q8_0, Q4_K_M, Q5_K_S; 200 test examples; one perplexity
    /// chunk; tg32; the MiniLM classifier and the LM) in under 10 minutes on two cores.
    #[arg(long)]
    quick: bool,
    /// Models, comma-separated (default: qwen-sotu-cls, qwen-sotu-lm, minilm-sotu-cls,
    /// modernbert-base-cls113); looked up in $QGGUF_MODELS (~/.cache/qgguf/models).
    #[arg(long, value_delimiter = ',')]
    models: Vec<String>,
    /// Formats, comma-separated (default: F16, Q8_0, Q4_K_M, Q5_K_S, IQ4_NL, NF4). F16 is
    /// always measured: every other row is compared with it.
    #[arg(long, value_delimiter = ',')]
    formats: Vec<String>,
    /// Devices, comma-separated: cpu, gpu (default cpu).
    #[arg(long, value_delimiter = ',')]
    device: Vec<String>,
    /// Shorthand for --device gpu (qrun -ngl 99; needs a build with --features cuda).
    #[arg(long)]
    gpu: bool,
    /// Threads (default: all cores).
    #[arg(short, long)]
    threads: Option<usize>,
    /// Classifiers: test examples (a seeded sample; default 1000, --quick 200).
    #[arg(long)]
    n_test: Option<usize>,
    /// Classifiers: validation examples for temperature scaling (default 1000, --quick 100).
    #[arg(long)]
    n_val: Option<usize>,
    /// LM: prompt tokens of the pp test (default 512).
    #[arg(short = 'p', long = "n-prompt")]
    n_prompt: Option<usize>,
    /// LM: generated tokens of the tg test (default 128, --quick 32).
    #[arg(short = 'n', long = "n-gen")]
    n_gen: Option<usize>,
    /// LM: repetitions of each speed test (default 3, --quick 1).
    #[arg(short = 'r', long)]
    repetitions: Option<usize>,
    /// LM: perplexity chunks (default 8, --quick 1).
    #[arg(long)]
    ppl_chunks: Option<usize>,
    /// LM: tokens per perplexity chunk (default 512).
    #[arg(long)]
    ppl_ctx: Option<usize>,
    /// Output folder: table.md, results.csv, results.json, plots, cache/.
    #[arg(long, default_value = "qbench-out")]
    out: PathBuf,
    /// Constraints every acceptable row must meet, e.g. max_ms=10,min_f1=0.2,max_ece=0.05
    /// (also max_mib, max_file_mib, max_bpw, min_acc, min_agree, max_flips, max_ece_ts,
    /// min_delta_acc, max_ppl_ratio, max_kld, max_kld99, min_top1, min_tg_tps).
    #[arg(long)]
    envelope: Option<String>,
    /// Measure again, ignoring cached rows.
    #[arg(long)]
    fresh: bool,
    /// The folder of the qconvert and qrun binaries to drive (default: qbench's own folder),
    /// e.g. copies that a rebuild mid-run cannot replace.
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Extra rows to include (JSONL: tools/gpu_hf_speed.py output, or qbench rows); repeatable.
    #[arg(long)]
    peer_rows: Vec<PathBuf>,
    /// llama.cpp's binaries (llama-bench, llama-perplexity) for peer LM rows on the same files
    /// (default: $LLAMA_CPP_BIN).
    #[arg(long)]
    llama_cpp: Option<PathBuf>,
    /// Print the results as JSON on stdout instead of the Markdown table.
    #[arg(long)]
    json: bool,
}

fn home_cache() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".cache/qgguf")
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("qbench: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(a: Args) -> Result<()> {
    let start = Instant::now();
    let envelope = a.envelope.as_deref().map(Envelope::parse).transpose()?;
    let mut settings = if a.quick {
        Settings::quick()
    } else {
        Settings::full()
    };
    let set = |dst: &mut usize, v: Option<usize>, name: &str| -> Result<()> {
        if let Some(v) = v {
            if v == 0 {
                bail!("--{name} 0: must be at least 1");
            }
            *dst = v;
        }
        Ok(())
    };
    set(&mut settings.n_test, a.n_test, "n-test")?;
    set(&mut settings.n_val, a.n_val, "n-val")?;
    set(&mut settings.n_prompt, a.n_prompt, "n-prompt")?;
    set(&mut settings.n_gen, a.n_gen, "n-gen")?;
    set(&mut settings.reps, a.repetitions, "repetitions")?;
    set(&mut settings.ppl_chunks, a.ppl_chunks, "ppl-chunks")?;
    set(&mut settings.ppl_ctx, a.ppl_ctx, "ppl-ctx")?;
    let mut formats: Vec<String> = if a.formats.is_empty() {
        let d: &[&str] = if a.quick {
            &QUICK_FORMATS
        } else {
            &ALL_FORMATS
        };
        d.iter().map(|s| s.to_string()).collect()
    } else {
        a.formats
            .iter()
            .map(|f| parse_format(f))
            .collect::<Result<_>>()?
    };
    formats.dedup();
    if !formats.iter().any(|f| f == "F16") {
        formats.insert(0, "F16".into());
    }
    // F16 first: the others are compared with it.
    formats.sort_by_key(|f| f != "F16");
    let mut devices: Vec<Device> = a
        .device
        .iter()
        .map(|d| Device::parse(d))
        .collect::<Result<_>>()?;
    if a.gpu && !devices.contains(&Device::Gpu) {
        devices.push(Device::Gpu);
    }
    if devices.is_empty() {
        devices.push(Device::Cpu);
    }
    devices.dedup();
    if a.quick && devices.contains(&Device::Gpu) {
        eprintln!("qbench: note: --quick is meant for the CPU; measuring on the GPU as asked");
    }
    let models: Vec<String> = if a.models.is_empty() {
        let d: &[&str] = if a.quick {
            &QUICK_MODELS
        } else {
            &DEFAULT_MODELS
        };
        d.iter().map(|s| s.to_string()).collect()
    } else {
        a.models.clone()
    };
    let threads = match a.threads {
        Some(0) => bail!("-t 0: at least one thread"),
        Some(t) => t,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let cache_root = std::env::var_os("QGGUF_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(home_cache);
    let opts = Options {
        models,
        formats,
        devices,
        threads,
        settings: settings.clone(),
        models_dir: std::env::var_os("QGGUF_MODELS")
            .map(PathBuf::from)
            .unwrap_or_else(|| home_cache().join("models")),
        data_dir: std::env::var_os("QGGUF_DATA")
            .map(PathBuf::from)
            .unwrap_or_else(|| home_cache().join("data")),
        convert_dir: cache_root.join("qbench"),
        out_dir: a.out.clone(),
        fresh: a.fresh,
        llama_cpp: a
            .llama_cpp
            .clone()
            .or_else(|| std::env::var_os("LLAMA_CPP_BIN").map(PathBuf::from)),
    };
    // Peer files are read first: a bad one should not wait for the measurements.
    let mut imported = Vec::new();
    for p in &a.peer_rows {
        imported.extend(peers::import_rows(p)?);
    }
    let bins = Bins::locate(a.bin_dir.as_deref())?;
    let outcome = runner::run(&bins, &opts)?;
    let mut rows = outcome.rows;
    rows.extend(imported);
    if rows.is_empty() {
        bail!("nothing was measured:\n  {}", outcome.skipped.join("\n  "));
    }
    if let Some(e) = &envelope {
        for r in &mut rows {
            r.envelope = Some(e.judge(r));
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut md = report::markdown(&rows, envelope.as_ref());
    if !outcome.skipped.is_empty() {
        md.push_str("\nLeft out:\n\n");
        for s in &outcome.skipped {
            md.push_str(&format!("- {s}\n"));
        }
    }
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|x| x.trim().to_string())
    });
    let command: Vec<String> = std::env::args().collect();
    let meta = json!({
        "version": QBENCH_VERSION, "command": command.join(" "), "threads": threads,
        "settings": settings, "elapsed_s": elapsed, "cpu": cpu, "skipped": outcome.skipped,
    });
    let out = &a.out;
    write_atomic(&out.join("table.md"), md.as_bytes())?;
    write_atomic(&out.join("results.csv"), &report::csv(&rows)?)?;
    let js = report::json(&rows, envelope.as_ref(), meta)?;
    write_atomic(&out.join("results.json"), &js)?;
    let plots = plots::write_plots(&rows, out).context("writing the plots")?;
    if a.json {
        println!("{}", String::from_utf8_lossy(&js));
    } else {
        print!("{md}");
    }
    eprintln!(
        "qbench: {} rows in {elapsed:.0} s; wrote {}/table.md, results.csv, results.json and {} plots",
        rows.len(),
        out.display(),
        plots.len()
    );
    Ok(())
}
