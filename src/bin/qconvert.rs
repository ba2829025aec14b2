//! qconvert: Hugging Face checkpoints (and GGUF files) to GGUF, GGUF back to Hugging Face, and
//! synthetic checkpoints of known shapes.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use qgguf::convert::{
    self,
    export::{export, ExportDtype},
    hf_config::HfConfig,
    mix::{Override, Preset},
    pipeline::{self, WriteOptions},
    plan::{Inputs, Plan},
    safetensors_in::Checkpoint,
    synth::{synthesize, SynthSpec},
};
use qgguf::gguf::{manifest::manifest, GgufFile};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Convert Hugging Face checkpoints (config.json + safetensors + tokenizer.json) to GGUF files
/// llama.cpp reads, requantize GGUF files, or export GGUF back to Hugging Face.
#[derive(Parser)]
#[command(
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    convert: ConvertArgs,
}

#[derive(Args)]
struct ConvertArgs {
    /// A Hugging Face model folder, or a .gguf file to requantize.
    #[arg(required = true)]
    input: Option<PathBuf>,
    /// The GGUF file to write.
    #[arg(short, long, required = true)]
    output: Option<PathBuf>,
    /// f32, f16, bf16, q8_0, q4_k_m, q5_k_s, iq4_nl or nf4.
    #[arg(long = "type", required = true, value_name = "TYPE")]
    preset: Option<String>,
    /// Per-tensor override, REGEX=TYPE (e.g. 'ffn_down=Q6_K'); repeatable, first match wins.
    #[arg(long = "tensor-type", value_name = "REGEX=TYPE")]
    tensor_type: Vec<String>,
    /// Print the plan (tensor, shape, type, bytes) and the resulting size; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Replace OUTPUT if it exists.
    #[arg(long)]
    force: bool,
    /// Keep NaN and infinite weights instead of refusing the model.
    #[arg(long)]
    allow_nonfinite: bool,
    /// Threads (default: all cores).
    #[arg(short = 't', long)]
    threads: Option<usize>,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Export a GGUF model to a Hugging Face folder (config.json, model.safetensors,
    /// tokenizer.json), dequantizing its weights.
    Export {
        input: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        /// f16, bf16 or f32.
        #[arg(long, default_value = "f16")]
        dtype: String,
        /// Write into OUTPUT even if it holds files.
        #[arg(long)]
        force: bool,
        /// Export a file whose weights hold NaN, infinities or absurd norm values (refused by
        /// default, naming the tensors).
        #[arg(long)]
        allow_nonfinite: bool,
    },
    /// Write a checkpoint with seeded random weights and a real shape (for speed and memory
    /// work and tests): qwen2.5-0.5b[-cls113], modernbert-base[-cls113], tiny-*.
    Synth {
        preset: String,
        #[arg(short, long)]
        output: PathBuf,
        /// llama.cpp vocabulary GGUF for the tokenizer (ggml-vocab-qwen2.gguf for Qwen2,
        /// ggml-vocab-bert-bge.gguf for BERT, ggml-vocab-gpt-neox.gguf for ModernBERT).
        #[arg(long)]
        vocab: PathBuf,
        /// f32, f16 or bf16 (default: the preset's).
        #[arg(long)]
        dtype: Option<String>,
        #[arg(long)]
        seed: Option<u64>,
        /// Number of classes of the sequence-classification head.
        #[arg(long)]
        labels: Option<usize>,
    },
    /// Print a GGUF file's metadata and tensors (--json: a manifest with tensor sha256s).
    Info {
        input: PathBuf,
        #[arg(long)]
        json: bool,
        /// Only scan the weights for NaN, infinities (in float tensors and block scales) and
        /// absurd norms or biases; report them (--json: as JSON) and exit with status 1 if any.
        #[arg(long)]
        check: bool,
    },
}

fn main() {
    if let Err(e) = run() {
        eprintln!("qconvert: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Export {
            input,
            output,
            dtype,
            force,
            allow_nonfinite,
        }) => {
            let dtype = ExportDtype::parse(&dtype)?;
            if output.join("model.safetensors").exists() && !force {
                bail!(
                    "{}: already holds a model (pass --force to replace it)",
                    output.display()
                );
            }
            let start = Instant::now();
            let f = GgufFile::open(&input)?;
            refuse_broken(&f, &input, allow_nonfinite)?;
            let bytes = export(&f, &output, dtype, std::io::stderr().is_terminal())?;
            eprintln!(
                "qconvert: exported {} to {} ({:.1} MiB of {} safetensors) in {:.1} s",
                input.display(),
                output.display(),
                bytes as f64 / (1 << 20) as f64,
                dtype.name(),
                start.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Some(Command::Synth {
            preset,
            output,
            vocab,
            dtype,
            seed,
            labels,
        }) => {
            let mut spec = SynthSpec::preset(&preset)?;
            if let Some(d) = dtype {
                spec.dtype = convert::safetensors_out::StDtype::parse(&d)?;
            }
            if let Some(s) = seed {
                spec.seed = s;
            }
            if let Some(l) = labels {
                spec.labels = l;
            }
            let bytes = synthesize(&spec, &vocab, &output, std::io::stderr().is_terminal())?;
            eprintln!(
                "qconvert: wrote {} ({}, {:.1} MiB of weights)",
                output.display(),
                spec.architecture,
                bytes as f64 / (1 << 20) as f64
            );
            Ok(())
        }
        Some(Command::Info { input, json, check }) => {
            let f = GgufFile::open(&input)?;
            if check {
                return check_cmd(&f, &input, json);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&manifest(&f))?);
                return Ok(());
            }
            println!(
                "{}: GGUF v{}, {} metadata keys, {} tensors",
                input.display(),
                f.header.version,
                f.metadata().len(),
                f.tensors().len()
            );
            for (k, v) in f.metadata() {
                println!("  {k} = {v}");
            }
            for t in f.tensors() {
                println!("  {:<40} {:<8} {:?}", t.name, t.type_info.name, t.dims);
            }
            Ok(())
        }
        None => convert_cmd(cli.convert),
    }
}

fn convert_cmd(a: ConvertArgs) -> Result<()> {
    let input = a.input.context("INPUT is required")?;
    let output = a.output.context("--output is required")?;
    let preset = Preset::parse(&a.preset.context("--type is required")?)?;
    let overrides = a
        .tensor_type
        .iter()
        .map(|s| Override::parse(s))
        .collect::<Result<Vec<_>>>()?;
    if let Some(t) = a.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t.max(1))
            .build_global()
            .context("setting the thread count")?;
    }
    let start = Instant::now();

    let gguf_in;
    let (cfg, ck);
    let (plan, inputs): (Plan, Inputs) = if convert::is_hf_dir(&input) {
        cfg = HfConfig::load(&input)?;
        ck = Checkpoint::open(&input)?;
        (
            convert::plan_hf(&cfg, &ck, preset, &overrides)?,
            Inputs::Checkpoint(&ck),
        )
    } else if input.extension().is_some_and(|e| e == "gguf") || input.is_file() {
        gguf_in = GgufFile::open(&input)?;
        refuse_broken(&gguf_in, &input, a.allow_nonfinite)?;
        let plan = convert::plan_gguf(&gguf_in, preset, &overrides)?;
        let requantized = convert::requantized_count(&plan);
        if requantized > 0 {
            eprintln!(
                "qconvert: warning: {requantized} tensors are already quantized and will be quantized again; quality suffers (convert from an F16/F32 source when you can)"
            );
        }
        (plan, Inputs::Gguf(&gguf_in))
    } else {
        bail!(
            "{}: not a Hugging Face folder or a GGUF file",
            input.display()
        );
    };

    let file_size = pipeline::writer_for(&plan)?.file_size();
    if a.dry_run {
        print_plan(&plan, file_size);
        return Ok(());
    }
    if output.exists() && !a.force {
        bail!("{}: exists (pass --force to replace it)", output.display());
    }
    if same_file(&input, &output) {
        bail!("{}: the output would replace the input", output.display());
    }
    // Temporary files of killed runs count against the free space: clear them first.
    for p in qgguf::atomic_file::remove_stale_temps(&output) {
        eprintln!(
            "qconvert: removed {}, left by an interrupted run",
            p.display()
        );
    }
    check_space(&output, file_size)?;

    let opts = WriteOptions {
        allow_nonfinite: a.allow_nonfinite,
        progress: std::io::stderr().is_terminal() && !a.json,
    };
    let summary = pipeline::write(&plan, &inputs, &output, opts)?;
    let secs = start.elapsed().as_secs_f64();
    let nf4 = plan
        .tensors
        .iter()
        .filter(|t| t.out_type == qgguf::quant_types::GgmlType::NF4)
        .count();
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "input": input, "output": output, "type": preset.name(),
                "file_bytes": summary.file_bytes, "bits_per_weight": summary.bits_per_weight(),
                "tensors": plan.tensors.len(), "nf4_tensors": nf4, "seconds": secs,
            })
        );
    }
    eprintln!(
        "qconvert: wrote {} ({:.1} MiB, {:.2} bits per weight, {} tensors{}) in {:.1} s",
        output.display(),
        summary.file_bytes as f64 / (1 << 20) as f64,
        summary.bits_per_weight(),
        plan.tensors.len(),
        if nf4 > 0 {
            format!("; {nf4} in NF4, a qgguf extension llama.cpp cannot load")
        } else {
            String::new()
        },
        secs
    );
    Ok(())
}

/// Scans a GGUF input's weights; a broken file is refused (or, with `allow`, warned about) so
/// that it does not pass through a requantization or an export unnoticed.
fn refuse_broken(f: &GgufFile, path: &Path, allow: bool) -> Result<()> {
    let report = qgguf::gguf::scan::scan_file(f, true);
    if report.is_clean() {
        return Ok(());
    }
    let text = report.summary(&path.display().to_string());
    if !allow {
        bail!("{text}\n(pass --allow-nonfinite to keep them)");
    }
    eprintln!("qconvert: warning: {text}\n(kept: --allow-nonfinite)");
    Ok(())
}

/// `qconvert info FILE --check`: the scan alone.
fn check_cmd(f: &GgufFile, path: &Path, json: bool) -> Result<()> {
    let start = Instant::now();
    let report = qgguf::gguf::scan::scan_file(f, true);
    let secs = start.elapsed().as_secs_f64();
    if json {
        let mut v = report.to_json();
        v["file"] = serde_json::json!(path);
        v["seconds"] = serde_json::json!(secs);
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if report.is_clean() {
        println!(
            "{}: clean ({} tensors, {:.1} MiB scanned in {:.2} s)",
            path.display(),
            report.tensors,
            report.bytes as f64 / (1 << 20) as f64,
            secs
        );
    }
    if !report.is_clean() {
        if json {
            std::process::exit(1);
        }
        bail!("{}", report.summary(&path.display().to_string()));
    }
    Ok(())
}

fn print_plan(plan: &Plan, file_size: u64) {
    println!(
        "{:<44} {:<24} {:<8} {:>12}",
        "tensor", "shape (ggml order)", "type", "bytes"
    );
    for t in &plan.tensors {
        println!(
            "{:<44} {:<24} {:<8} {:>12}",
            t.name,
            format!("{:?}", t.dims),
            t.out_type.name(),
            t.out_bytes()
        );
    }
    let tensor_bytes = plan.total_out_bytes();
    println!(
        "total: {} tensors, {} bytes of tensor data, file {} bytes ({:.1} MiB), {:.3} bits per weight",
        plan.tensors.len(),
        tensor_bytes,
        file_size,
        file_size as f64 / (1 << 20) as f64,
        tensor_bytes as f64 * 8.0 / plan.total_elements().max(1) as f64
    );
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Refuses to start a conversion the disk cannot hold (the file plus 1 MiB of slack).
fn check_space(output: &Path, need: u64) -> Result<()> {
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let free = fs4::available_space(&dir)
        .with_context(|| format!("{}: cannot read free space", dir.display()))?;
    if free < need + (1 << 20) {
        bail!(
            "{}: {:.1} MiB free, the output needs {:.1} MiB",
            dir.display(),
            free as f64 / (1 << 20) as f64,
            need as f64 / (1 << 20) as f64
        );
    }
    Ok(())
}
