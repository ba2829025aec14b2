//! qrun: run GGUF models (qgguf's and llama.cpp's): generate text with Qwen2, classify and embed
//! with BERT, ModernBERT and Qwen2 classifiers, benchmark, and measure perplexity / KL
//! divergence. `qrun -m MODEL -p PROMPT` alone means generate. Text goes to stdout; logs and
//! timings to stderr, as llama.cpp does.

// The tokenizer is rebuilt from the GGUF vocabulary at every start: some 600,000 small
// allocations, where mimalloc is faster than glibc's malloc (time to first token).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use qgguf::backend::{self, GpuOptions, KvType};
use qgguf::bench::{perplexity, speed};
use qgguf::chat::{self, Message};
use qgguf::convert::mix::file_type_name;
use qgguf::model::encoder::{normalize_rows, Batch, EncoderState, Wants};
use qgguf::model::{Arch, LoadOptions, Model};
use qgguf::sampling::{Sampler, SamplerConfig};
use qgguf::tokenizer::Tokenizer;
use serde_json::json;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Parser)]
#[command(
    version,
    about = "Run GGUF models: generate, classify, embed, bench, perplexity"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text (the default: `qrun -m MODEL -p PROMPT`).
    Generate(GenerateArgs),
    /// Classify texts with a model that has a classification head.
    Classify(BatchArgs),
    /// Sentence embeddings from an encoder (BERT, ModernBERT).
    Embed(BatchArgs),
    /// Prompt and generation speed (tokens/s), or encoder time per example.
    Bench(BenchArgs),
    /// Perplexity of a text, and KL divergence against a saved baseline.
    Perplexity(PerplexityArgs),
    /// Memory read bandwidth with -t threads: the roofline of decoding (GB/s; tokens/s = that
    /// divided by the weight bytes read per token).
    Bandwidth(BandwidthArgs),
}

#[derive(Args)]
struct BandwidthArgs {
    /// Threads (default: all cores).
    #[arg(short, long)]
    threads: Option<usize>,
    /// Buffer size in MiB (far larger than the caches).
    #[arg(long, default_value_t = 1024)]
    mib: usize,
    /// Bytes of weights read per token: also print the decode roofline in tokens/s.
    #[arg(short, long)]
    model: Option<PathBuf>,
    /// Read a buffer in 4 KiB pages instead of the transparent huge pages that packed weights
    /// are loaded into (the difference is the cost of TLB misses).
    #[arg(long)]
    small_pages: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Args, Clone)]
struct ModelArgs {
    /// The GGUF model.
    #[arg(short, long)]
    model: PathBuf,
    /// Threads (default: all cores).
    #[arg(short, long)]
    threads: Option<usize>,
    /// Layers to offload to the GPU: a decoder's last N (and its output head when N covers
    /// every layer), an encoder whole when N > 0 (needs a build with `--features cuda`).
    #[arg(long = "ngl", visible_alias = "n-gpu-layers", default_value_t = 0)]
    ngl: usize,
    /// With -ngl: run on the CPU when no GPU can be used, instead of stopping with an error.
    #[arg(long)]
    gpu_fallback: bool,
    /// Decoders: element type of the KV cache (llama.cpp's default is f16).
    #[arg(long = "cache-type", value_enum, default_value_t = KvType::F16)]
    cache_type: KvType,
    /// With -ngl: launch every kernel of every decoded token instead of replaying the
    /// token's captured CUDA graph (to compare).
    #[arg(long)]
    no_cuda_graphs: bool,
    /// Read the CPU's weights in place from the file instead of packing them for the SIMD
    /// kernels (to compare).
    #[arg(long)]
    no_pack: bool,
    /// Load a model whose weights hold NaN, infinities or absurd norm values (refused by
    /// default, naming the tensors), with a warning.
    #[arg(long)]
    allow_nonfinite: bool,
    /// Run decoding's products through rayon instead of the decode team of spinning helper
    /// threads (to compare).
    #[arg(long)]
    no_team: bool,
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    m: ModelArgs,
    /// Prompt.
    #[arg(short, long)]
    prompt: Option<String>,
    /// Read the prompt from a file.
    #[arg(short, long)]
    file: Option<PathBuf>,
    /// Tokens to generate.
    #[arg(short = 'n', long = "n-predict", default_value_t = 128)]
    n_predict: usize,
    /// Context size (default: 4096, or the model's training context if smaller).
    #[arg(short = 'c', long = "ctx-size")]
    ctx: Option<usize>,
    /// Temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.8)]
    temp: f32,
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    #[arg(long, default_value_t = 64)]
    repeat_last_n: usize,
    /// Random seed (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Wrap the prompt in the model's chat template as a user message.
    #[arg(long)]
    chat: bool,
    /// System message for --chat.
    #[arg(long)]
    system: Option<String>,
    /// Print the result and timings as one JSON object on stdout instead of streaming.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct BatchArgs {
    #[command(flatten)]
    m: ModelArgs,
    /// One text.
    #[arg(short, long)]
    prompt: Option<String>,
    /// Texts: .jsonl (objects with "text", or strings) or .txt (one per line).
    #[arg(long)]
    input: Option<PathBuf>,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Write JSONL here instead of stdout.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Embeddings: keep raw pooled vectors (default: L2-normalized, as llama-embedding).
    #[arg(long)]
    no_normalize: bool,
    /// Cut each text to this many tokens (default and upper bound: the model's positions).
    #[arg(short = 'c', long = "ctx-size")]
    ctx: Option<usize>,
    /// With -o: print the timing summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Run the first batch once, untimed, before the timed pass.
    #[arg(long)]
    warmup: bool,
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    m: ModelArgs,
    /// Prompt tokens (pp test; per example for encoders).
    #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
    n_prompt: usize,
    /// Generated tokens (tg test).
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    n_gen: usize,
    /// Repetitions.
    #[arg(short = 'r', long, default_value_t = 3)]
    repetitions: usize,
    /// Encoders: sequences per batch.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Tokens already in the cache before each test (llama-bench's -d).
    #[arg(short = 'd', long = "n-depth", default_value_t = 0)]
    depth: usize,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct PerplexityArgs {
    #[command(flatten)]
    m: ModelArgs,
    /// The text.
    #[arg(short, long)]
    file: PathBuf,
    /// Tokens per chunk.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    ctx: usize,
    /// Chunks to evaluate (default: all).
    #[arg(long)]
    chunks: Option<usize>,
    /// Save log-probabilities here (llama-perplexity's format), or with --kl-divergence read the
    /// baseline from here.
    #[arg(long)]
    kl_divergence_base: Option<PathBuf>,
    /// Compare with the baseline in --kl-divergence-base.
    #[arg(long)]
    kl_divergence: bool,
    #[arg(long)]
    json: bool,
}

fn main() {
    // `qrun -m MODEL -p PROMPT` means `qrun generate ...`.
    let mut args: Vec<String> = std::env::args().collect();
    let subcommands = [
        "generate",
        "classify",
        "embed",
        "bench",
        "perplexity",
        "bandwidth",
        "help",
    ];
    // llama.cpp spells the offload flag with one dash.
    for a in args.iter_mut().skip(1) {
        if a == "-ngl" {
            *a = "--ngl".into();
        } else if let Some(v) = a.strip_prefix("-ngl=") {
            *a = format!("--ngl={v}");
        }
    }
    if args.len() > 1
        && !subcommands.contains(&args[1].as_str())
        && !matches!(args[1].as_str(), "-h" | "--help" | "-V" | "--version")
    {
        args.insert(1, "generate".into());
    }
    let cli = Cli::parse_from(args);
    if let Err(e) = in_thread_pool(cli.command) {
        eprintln!("qrun: error: {e:#}");
        std::process::exit(1);
    }
}

/// Runs the command on a worker of a pool of `-t` threads (all cores by default). Running the
/// whole forward pass inside the pool matters for decoding: each of its ~170 matrix products per
/// token is then split by a worker that takes part in it, and idle workers spin for the next
/// one, instead of the main thread handing every product to the pool and sleeping on a futex
/// until it finishes (which cost ~15% of a token on 2 cores).
fn in_thread_pool(cmd: Command) -> Result<()> {
    let threads = match &cmd {
        Command::Generate(a) => a.m.threads,
        Command::Classify(a) | Command::Embed(a) => a.m.threads,
        Command::Bench(a) => a.m.threads,
        Command::Perplexity(a) => a.m.threads,
        Command::Bandwidth(a) => a.threads,
    };
    let mut pool = rayon::ThreadPoolBuilder::new();
    if let Some(t) = threads {
        pool = pool.num_threads(t.max(1));
    }
    let pool = pool.build().context("starting the worker threads")?;
    pool.install(|| run(cmd))
}

fn setup(m: &ModelArgs) -> Result<(Model, f64)> {
    let t = Instant::now();
    if m.no_team {
        qgguf::backend::cpu::team::disable();
    }
    let opts = LoadOptions {
        pack: !m.no_pack,
        ngl: m.ngl,
        gpu: GpuOptions {
            graphs: !m.no_cuda_graphs,
        },
        gpu_fallback: m.gpu_fallback,
        allow_nonfinite: m.allow_nonfinite,
    };
    let model = Model::load_with(&m.model, &opts)?;
    for w in &model.warnings {
        eprintln!("qrun: warning: {w}");
    }
    if m.ngl > 0 {
        eprintln!("qrun: {}", model.placement());
        if m.cache_type == KvType::F32 {
            eprintln!("qrun: note: offloaded layers keep an f16 KV cache (--cache-type applies to the CPU's layers)");
        }
    }
    Ok((model, t.elapsed().as_secs_f64() * 1000.0))
}

/// The GPU memory line of the timing summary (nothing when no GPU was used).
fn report_vram() {
    if let Some(v) = backend::vram() {
        eprintln!(
            "qrun: GPU memory: peak {:.1} MiB held by qgguf, {:.1} MiB in use on the device (of {:.0} MiB)",
            v.peak_mib, v.device_mib, v.total_mib
        );
    }
}

fn file_type(model: &Model) -> String {
    model
        .file
        .get_u64("general.file_type")
        .map(|v| file_type_name(v as u32))
        .unwrap_or_else(|_| "unknown".into())
}

fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Generate(a) => generate(a),
        Command::Classify(a) => batch_job(a, true),
        Command::Embed(a) => batch_job(a, false),
        Command::Bench(a) => bench(a),
        Command::Perplexity(a) => ppl(a),
        Command::Bandwidth(a) => bandwidth(a),
    }
}

fn bandwidth(a: BandwidthArgs) -> Result<()> {
    let bps = qgguf::bench::bandwidth::read_bandwidth(a.mib << 20, 5, !a.small_pages);
    let threads = rayon::current_num_threads();
    // Decoding reads every tensor but the embedding table once per token (the table is read by
    // row; when the output head shares it, the head reads it whole).
    let per_token = match &a.model {
        Some(p) => Some(qgguf::model::weight_bytes_per_token(p)?),
        None => None,
    };
    let roofline = per_token.map(|b| bps / b as f64);
    if a.json {
        println!(
            "{}",
            json!({"threads": threads, "read_gbps": bps / 1e9, "bytes_per_token": per_token,
                   "roofline_tps": roofline, "huge_pages": !a.small_pages})
        );
    } else {
        println!(
            "read bandwidth with {threads} threads: {:.1} GB/s ({} pages)",
            bps / 1e9,
            if a.small_pages { "4 KiB" } else { "huge" }
        );
        if let (Some(b), Some(r)) = (per_token, roofline) {
            println!(
                "weights read per token: {:.1} MiB; decode roofline: {r:.1} tokens/s",
                b as f64 / (1 << 20) as f64
            );
        }
    }
    Ok(())
}

fn read_prompt(prompt: Option<String>, file: Option<&Path>) -> Result<String> {
    let text = match (prompt, file) {
        (Some(p), None) => p,
        (None, Some(f)) => {
            let bytes = std::fs::read(f).with_context(|| f.display().to_string())?;
            String::from_utf8(bytes).map_err(|e| {
                anyhow::anyhow!(
                    "{}: not valid UTF-8 (byte {})",
                    f.display(),
                    e.utf8_error().valid_up_to()
                )
            })?
        }
        (Some(_), Some(_)) => bail!("give either -p or -f, not both"),
        (None, None) => bail!("no prompt: give -p TEXT or -f FILE"),
    };
    if text.is_empty() {
        bail!("the prompt is empty");
    }
    Ok(text)
}

/// The context size to allocate: `-c`, else 4096 or the training context if smaller. Larger
/// than the training context is refused (positions the model never saw, and a KV cache sized
/// by a number from the command line or the file).
fn context_size(ctx: Option<usize>, n_ctx_train: usize) -> Result<usize> {
    match ctx {
        Some(0) => bail!("-c 0: the context must hold at least one token"),
        Some(c) if c > n_ctx_train => {
            bail!("-c {c} exceeds the model's training context ({n_ctx_train} positions)")
        }
        Some(c) => Ok(c),
        None => Ok(4096.min(n_ctx_train).max(1)),
    }
}

fn generate(a: GenerateArgs) -> Result<()> {
    // The prompt first: a missing or unreadable prompt should not wait for the model to load.
    let mut text = read_prompt(a.prompt, a.file.as_deref())?;
    // The tokenizer is rebuilt from the file's vocabulary (0.1 s for Qwen's 151,936 tokens on
    // one thread of the Xeon VM) while the weights are packed: time to first token.
    let (loaded, tok) = rayon::join(
        || setup(&a.m),
        || -> Result<Tokenizer> {
            let file = qgguf::gguf::GgufFile::open(&a.m.model)?;
            Tokenizer::for_model(&a.m.model, &file)
        },
    );
    let (model, load_ms) = loaded?;
    let Arch::Qwen2(m) = &model.arch else {
        bail!(
            "{} is an encoder ({}): use `qrun classify` or `qrun embed`",
            a.m.model.display(),
            model.arch_name()
        );
    };
    let tok = tok?;
    if a.chat {
        let template = model
            .file
            .get_str("tokenizer.chat_template")
            .context("--chat: the model has no chat template (tokenizer.chat_template)")?;
        let mut msgs = Vec::new();
        if let Some(s) = a.system {
            msgs.push(Message {
                role: "system".into(),
                content: s,
            });
        }
        msgs.push(Message {
            role: "user".into(),
            content: text,
        });
        text = chat::render(template, &msgs, "", "")?;
    }
    let prompt = tok.encode(&text, true)?;
    if prompt.is_empty() {
        bail!("the prompt tokenizes to nothing");
    }
    let ctx = context_size(a.ctx, m.hp.n_ctx_train)?;
    if prompt.len() >= ctx {
        bail!(
            "the prompt has {} tokens, the context holds {ctx} (raise -c, at most {})",
            prompt.len(),
            m.hp.n_ctx_train
        );
    }
    let n_predict = a.n_predict.min(ctx - prompt.len());
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let mut sampler = Sampler::new(SamplerConfig {
        temperature: a.temp,
        top_k: a.top_k,
        top_p: a.top_p,
        repeat_penalty: a.repeat_penalty,
        repeat_last_n: a.repeat_last_n,
        seed,
    });
    let stops = stop_tokens(&model, &tok);
    let mut st = m.new_state_with(ctx, a.m.cache_type)?;
    let out = std::io::stdout();
    let mut out = out.lock();
    if !a.json {
        write!(out, "{text}")?;
        out.flush()?;
    }
    let mut printed = 0usize;
    let stream = !a.json;
    let g = qgguf::generate::generate(
        m,
        &model.file,
        &mut st,
        &prompt,
        n_predict,
        &mut sampler,
        &stops,
        |_, generated| {
            if stream {
                let s = tok.decode(generated, true)?;
                // Hold back an incomplete UTF-8 sequence until its last token arrives.
                if !s.ends_with('\u{FFFD}') && s.len() > printed {
                    write!(out, "{}", &s[printed..])?;
                    out.flush()?;
                    printed = s.len();
                }
            }
            Ok(true)
        },
    )?;
    let (prompt_ms, gen_ms, evals, generated) = (g.prompt_ms, g.eval_ms, g.evals, g.tokens);
    let completion = tok.decode(&generated, true)?;
    if a.json {
        println!(
            "{}",
            json!({
                "prompt": text, "completion": completion, "prompt_tokens": prompt.len(),
                "generated_tokens": generated.len(), "load_ms": load_ms, "prompt_ms": prompt_ms,
                "prompt_tps": prompt.len() as f64 / (prompt_ms / 1000.0),
                "eval_ms": gen_ms, "eval_tps": if evals > 0 { evals as f64 / (gen_ms / 1000.0) } else { 0.0 },
                "vram_peak_mib": backend::vram().map(|v| v.peak_mib),
            })
        );
    } else {
        if printed < completion.len() {
            write!(out, "{}", &completion[printed..])?;
        }
        writeln!(out)?;
    }
    eprintln!("\nqrun: load time = {load_ms:10.2} ms");
    eprintln!(
        "qrun: prompt eval time = {prompt_ms:10.2} ms / {:5} tokens ({:8.2} ms per token, {:8.2} tokens per second)",
        prompt.len(),
        prompt_ms / prompt.len() as f64,
        prompt.len() as f64 / (prompt_ms / 1000.0)
    );
    if evals > 0 {
        eprintln!(
            "qrun:        eval time = {gen_ms:10.2} ms / {evals:5} runs   ({:8.2} ms per token, {:8.2} tokens per second)",
            gen_ms / evals as f64,
            evals as f64 / (gen_ms / 1000.0)
        );
    }
    report_vram();
    Ok(())
}

/// Tokens that end generation: the model's EOS and end-of-turn tokens.
fn stop_tokens(model: &Model, tok: &Tokenizer) -> Vec<u32> {
    let mut v: Vec<u32> = ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"]
        .iter()
        .filter_map(|k| model.file.get(k).and_then(|x| x.as_u64()).map(|x| x as u32))
        .collect();
    for t in ["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end|>"] {
        if let Some(id) = tok.token_to_id(t) {
            v.push(id);
        }
    }
    v
}

/// Texts from -p or --input (.jsonl with "text" fields or strings; other files: one per line).
fn read_texts(prompt: Option<String>, input: Option<&Path>) -> Result<Vec<String>> {
    match (prompt, input) {
        (Some(p), None) => Ok(vec![p]),
        (None, Some(path)) => {
            let f = std::fs::File::open(path).with_context(|| path.display().to_string())?;
            let jsonl = path
                .extension()
                .is_some_and(|e| e == "jsonl" || e == "json");
            let mut out = Vec::new();
            for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
                let line = line.with_context(|| {
                    format!("{}: line {}: not valid UTF-8", path.display(), i + 1)
                })?;
                if line.trim().is_empty() {
                    continue;
                }
                if jsonl {
                    let v: serde_json::Value = serde_json::from_str(&line)
                        .with_context(|| format!("{}: line {}: not JSON", path.display(), i + 1))?;
                    let t = match &v {
                        serde_json::Value::String(s) => s.clone(),
                        _ => v
                            .get("text")
                            .and_then(|t| t.as_str())
                            .with_context(|| {
                                format!("{}: line {}: no \"text\" field", path.display(), i + 1)
                            })?
                            .to_string(),
                    };
                    out.push(t);
                } else {
                    out.push(line);
                }
            }
            if out.is_empty() {
                bail!("{}: no texts", path.display());
            }
            Ok(out)
        }
        (Some(_), Some(_)) => bail!("give either -p or --input, not both"),
        (None, None) => bail!("no input: give -p TEXT or --input FILE"),
    }
}

/// Token ids with the model's special tokens, cut to the model's positions (keeping the last,
/// closing token) as transformers' truncation does.
fn encode_truncated(tok: &Tokenizer, text: &str, max: usize) -> Result<Vec<u32>> {
    let mut ids = tok.encode(text, true)?;
    if ids.is_empty() {
        bail!("an input tokenizes to nothing");
    }
    if ids.len() > max {
        let last = *ids.last().unwrap();
        ids.truncate(max);
        ids[max - 1] = last;
    }
    Ok(ids)
}

fn softmax(v: &[f32]) -> Vec<f32> {
    let m = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = v.iter().map(|x| (x - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

fn batch_job(a: BatchArgs, classify: bool) -> Result<()> {
    let texts = read_texts(a.prompt, a.input.as_deref())?;
    if a.json && a.output.is_none() {
        bail!("--json prints the summary on stdout: give -o FILE for the rows");
    }
    let (model, load_ms) = setup(&a.m)?;
    if classify && !model.has_classifier() {
        bail!(
            "{} has no classification head: use `qrun embed`",
            a.m.model.display()
        );
    }
    if !classify && model.is_decoder() {
        bail!(
            "{} is a decoder: embeddings come from encoders (bert, modern-bert)",
            a.m.model.display()
        );
    }
    let tok = Tokenizer::for_model(&a.m.model, &model.file)?;
    let labels = model.labels().to_vec();
    let mut sink: Box<dyn Write> = match &a.output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| p.display().to_string())?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut st = EncoderState::default();
    let max = match a.ctx {
        Some(0) => bail!("-c 0: a text must keep at least one token"),
        Some(c) => c.min(model.max_positions()),
        None => model.max_positions(),
    };
    let batch_size = a.batch.max(1);
    // One forward pass over a chunk of texts: their output rows.
    let mut run_chunk = |chunk: &[String]| -> Result<Vec<serde_json::Value>> {
        let ids: Vec<Vec<u32>> = chunk
            .iter()
            .map(|t| encode_truncated(&tok, t, max))
            .collect::<Result<_>>()?;
        Ok(match &model.arch {
            Arch::Qwen2(m) => {
                let mut dst =
                    m.new_state_with(ids.iter().map(Vec::len).max().unwrap_or(1), a.m.cache_type)?;
                let mut rows = Vec::new();
                for s in &ids {
                    let logits = m.classify(&model.file, &mut dst, s)?;
                    rows.push(class_row(&logits, &labels));
                }
                rows
            }
            _ => {
                let batch = Batch::new(&ids)?;
                let wants = if classify {
                    Wants::LOGITS
                } else {
                    Wants::POOLED
                };
                let mut out = model.encode_with(&batch, &mut st, wants)?;
                if classify {
                    out.logits
                        .chunks(out.n_labels)
                        .map(|l| class_row(l, &labels))
                        .collect()
                } else {
                    if !a.no_normalize {
                        normalize_rows(&mut out.pooled, out.dim);
                    }
                    out.pooled
                        .chunks(out.dim)
                        .map(|e| json!({ "embedding": e }))
                        .collect()
                }
            }
        })
    };
    if a.warmup {
        // Untimed: buffers reach their size, GPU libraries initialise (as `qrun bench` does).
        run_chunk(&texts[..batch_size.min(texts.len())])?;
    }
    let t0 = Instant::now();
    let mut index = 0usize;
    for chunk in texts.chunks(batch_size) {
        let rows = run_chunk(chunk)?;
        for mut r in rows {
            r["index"] = json!(index);
            index += 1;
            writeln!(sink, "{r}")?;
        }
    }
    sink.flush()?;
    drop(sink);
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    if a.json {
        println!(
            "{}",
            json!({
                "model": a.m.model, "texts": texts.len(), "batch": a.batch, "max_tokens": max,
                "load_ms": load_ms, "total_ms": ms, "ms_per_example": ms / texts.len() as f64,
                "threads": rayon::current_num_threads(), "ngl": a.m.ngl,
                "peak_rss_mib": qgguf::bench::peak_rss_mib(),
                "vram_peak_mib": backend::vram().map(|v| v.peak_mib),
                "vram_device_mib": backend::vram().map(|v| v.device_mib),
            })
        );
    }
    eprintln!(
        "qrun: load time = {load_ms:.2} ms; {} texts in {ms:.2} ms ({:.3} ms per example, batch {})",
        texts.len(),
        ms / texts.len() as f64,
        a.batch
    );
    report_vram();
    Ok(())
}

fn class_row(logits: &[f32], labels: &[String]) -> serde_json::Value {
    let p = softmax(logits);
    let best = qgguf::sampling::argmax(logits) as usize;
    json!({
        "label": labels.get(best).cloned().unwrap_or_else(|| best.to_string()),
        "label_id": best,
        "probabilities": p,
        "logits": logits,
    })
}

fn bench(a: BenchArgs) -> Result<()> {
    let (model, load_ms) = setup(&a.m)?;
    let name = a.m.model.display().to_string();
    let r = speed::run(
        &model,
        &name,
        &file_type(&model),
        speed::BenchSpec {
            n_prompt: a.n_prompt,
            n_gen: if model.is_decoder() { a.n_gen } else { 0 },
            depth: a.depth,
            batch: a.batch,
            reps: a.repetitions,
        },
    )?;
    if a.json {
        let mut v = serde_json::to_value(&r)?;
        v["load_ms"] = json!(load_ms);
        v["arch"] = json!(model.arch_name());
        v["file_bytes"] = json!(model.file.file_size());
        v["ngl"] = json!(a.m.ngl);
        v["vram_peak_mib"] = json!(backend::vram().map(|v| v.peak_mib));
        v["vram_device_mib"] = json!(backend::vram().map(|v| v.device_mib));
        v["peak_rss_mib"] = json!(qgguf::bench::peak_rss_mib());
        println!("{v}");
        return Ok(());
    }
    println!("| model | type | size | threads | test | t/s |");
    println!("|---|---|---|---|---|---|");
    let size = format!(
        "{:.2} MiB",
        model.file.file_size() as f64 / (1 << 20) as f64
    );
    let short = Path::new(&name)
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or(name.clone());
    if model.is_decoder() {
        if let (Some(t), Some(s)) = (r.pp_tps, r.pp_tps_std) {
            println!(
                "| {short} | {} | {size} | {} | pp{} | {t:.2} ± {s:.2} |",
                r.file_type, r.threads, r.n_prompt
            );
        }
        if let (Some(t), Some(s)) = (r.tg_tps, r.tg_tps_std) {
            println!(
                "| {short} | {} | {size} | {} | tg{} | {t:.2} ± {s:.2} |",
                r.file_type, r.threads, r.n_gen
            );
        }
    } else if let (Some(ms), Some(sd)) = (r.ms_per_example, r.ms_per_example_std) {
        println!(
            "| {short} | {} | {size} | {} | {} x {} tokens | {:.2} ({ms:.3} ± {sd:.3} ms per example) |",
            r.file_type,
            r.threads,
            a.batch,
            r.n_prompt,
            r.pp_tps.unwrap_or(0.0)
        );
    }
    report_vram();
    Ok(())
}

fn ppl(a: PerplexityArgs) -> Result<()> {
    let text = read_prompt(None, Some(&a.file))?;
    let (model, load_ms) = setup(&a.m)?;
    let Arch::Qwen2(m) = &model.arch else {
        bail!("perplexity needs a causal LM (qwen2)");
    };
    context_size(Some(a.ctx), m.hp.n_ctx_train)?;
    let tok = Tokenizer::for_model(&a.m.model, &model.file)?;
    let tokens = tok.encode(&text, true)?;
    let mut st = m.new_state_with(a.ctx, a.m.cache_type)?;
    let chunks = a.chunks.unwrap_or(usize::MAX);
    let progress =
        |c: usize, n: usize, p: f64| eprint!("\rqrun: chunk {c}/{n}, perplexity so far {p:.4}   ");
    let report = match (&a.kl_divergence_base, a.kl_divergence) {
        (Some(path), true) => {
            let mut f = std::fs::File::open(path).with_context(|| path.display().to_string())?;
            let reader = perplexity::BaseReader::open(&mut f as &mut dyn std::io::Read)?;
            perplexity::run(
                m,
                &model.file,
                &mut st,
                &tokens,
                a.ctx,
                chunks,
                perplexity::Baseline::Compare(reader),
                progress,
            )?
        }
        (Some(path), false) => {
            let mut w = std::io::BufWriter::new(
                std::fs::File::create(path).with_context(|| path.display().to_string())?,
            );
            let r = perplexity::run(
                m,
                &model.file,
                &mut st,
                &tokens,
                a.ctx,
                chunks,
                perplexity::Baseline::Save(&mut w),
                progress,
            )?;
            w.flush()?;
            r
        }
        (None, true) => bail!("--kl-divergence needs --kl-divergence-base FILE"),
        (None, false) => perplexity::run(
            m,
            &model.file,
            &mut st,
            &tokens,
            a.ctx,
            chunks,
            perplexity::Baseline::None,
            progress,
        )?,
    };
    eprintln!();
    if a.json {
        println!(
            "{}",
            json!({
                "model": a.m.model, "ctx": a.ctx, "tokens_scored": report.n_tokens_scored,
                "ppl": report.ppl, "ppl_err": report.ppl_err, "load_ms": load_ms,
                "peak_rss_mib": qgguf::bench::peak_rss_mib(),
                "vram_peak_mib": backend::vram().map(|v| v.peak_mib),
                "kld": report.kld.as_ref().map(|k| json!({
                    "ppl_base": k.ppl_base, "mean": k.mean_kld, "mean_err": k.mean_kld_err,
                    "p99": k.kld_99, "same_top_pct": k.same_top_pct,
                })),
            })
        );
    } else {
        println!(
            "perplexity: {:.4} ± {:.4} over {} tokens",
            report.ppl, report.ppl_err, report.n_tokens_scored
        );
        if let Some(k) = &report.kld {
            println!(
                "baseline perplexity: {:.4}; ratio {:.4}",
                k.ppl_base,
                report.ppl / k.ppl_base
            );
            println!(
                "mean KLD: {:.6} ± {:.6}; 99% KLD: {:.6}; same top token: {:.2}%",
                k.mean_kld, k.mean_kld_err, k.kld_99, k.same_top_pct
            );
        }
    }
    Ok(())
}
