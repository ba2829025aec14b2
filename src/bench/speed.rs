//! Timing loops of `qrun bench`, with llama-bench's test definitions: prompt processing of
//! `n_prompt` tokens (pp), generation of `n_gen` tokens one at a time (tg), each after `depth`
//! tokens already in the cache (`-d`, untimed) and repeated after a warm-up. A generated token
//! is sampled (greedy, where the logits are) and fed back, as in a real generation. For
//! encoders: the time of one batch of `batch` sequences of `n_prompt` tokens per example.

use crate::model::encoder::{Batch, EncoderState, Wants};
use crate::model::qwen2::{DecoderState, Output, Qwen2};
use crate::model::{Arch, Model};
use crate::sampling::{Sampler, SamplerConfig};
use anyhow::Result;
use serde::Serialize;
use std::time::Instant;

#[derive(Clone, Debug, Serialize)]
pub struct SpeedResult {
    pub model: String,
    #[serde(rename = "type")]
    pub file_type: String,
    pub threads: usize,
    pub n_prompt: usize,
    pub n_gen: usize,
    pub pp_tps: Option<f64>,
    pub pp_tps_std: Option<f64>,
    pub tg_tps: Option<f64>,
    pub tg_tps_std: Option<f64>,
    pub batch: Option<usize>,
    pub ms_per_example: Option<f64>,
    pub ms_per_example_std: Option<f64>,
    pub repetitions: usize,
    pub depth: usize,
}

/// Deterministic pseudo-random token ids in `[0, n_vocab)`.
fn tokens(n: usize, n_vocab: usize, seed: u64) -> Vec<u32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % n_vocab as u64) as u32
        })
        .collect()
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() - 1) as f64
    } else {
        0.0
    };
    (m, var.sqrt())
}

/// What one `qrun bench` run measures.
#[derive(Clone, Copy, Debug)]
pub struct BenchSpec {
    pub n_prompt: usize,
    pub n_gen: usize,
    /// Tokens in the cache before each test (llama-bench's `-d`).
    pub depth: usize,
    /// Encoders: sequences per batch.
    pub batch: usize,
    pub reps: usize,
}

/// Fills the cache with `depth` tokens (untimed).
fn prefill_depth(
    m: &Qwen2,
    f: &crate::gguf::GgufFile,
    st: &mut DecoderState,
    depth: usize,
) -> Result<()> {
    st.reset();
    let toks = tokens(depth, m.hp.n_vocab, 99);
    for chunk in toks.chunks(512) {
        m.forward(f, st, chunk, Output::LastLogits)?;
    }
    Ok(())
}

pub fn run(model: &Model, name: &str, file_type: &str, spec: BenchSpec) -> Result<SpeedResult> {
    let BenchSpec {
        n_prompt,
        n_gen,
        depth,
        batch,
        reps,
    } = spec;
    let threads = rayon::current_num_threads();
    let reps = reps.max(1);
    let mut r = SpeedResult {
        model: name.to_string(),
        file_type: file_type.to_string(),
        threads,
        n_prompt,
        n_gen,
        pp_tps: None,
        pp_tps_std: None,
        tg_tps: None,
        tg_tps_std: None,
        batch: None,
        ms_per_example: None,
        ms_per_example_std: None,
        repetitions: reps,
        depth,
    };
    match &model.arch {
        Arch::Qwen2(m) => {
            let mut st = m.new_state(depth + n_prompt.max(n_gen).max(1) + 1)?;
            let f = &model.file;
            if n_prompt > 0 {
                let toks = tokens(n_prompt, m.hp.n_vocab, 42);
                // Warm-up at full length: buffers reach their size, GPU libraries initialise.
                prefill_depth(m, f, &mut st, depth)?;
                m.forward(f, &mut st, &toks, Output::LastLogits)?;
                let mut tps = Vec::new();
                for _ in 0..reps {
                    prefill_depth(m, f, &mut st, depth)?;
                    let t = Instant::now();
                    m.forward(f, &mut st, &toks, Output::LastLogits)?;
                    tps.push(n_prompt as f64 / t.elapsed().as_secs_f64());
                }
                let (a, b) = mean_std(&tps);
                r.pp_tps = Some(a);
                r.pp_tps_std = Some(b);
            }
            if n_gen > 0 {
                let first = tokens(1, m.hp.n_vocab, 7)[0];
                let mut sampler = Sampler::new(SamplerConfig {
                    temperature: 0.0,
                    ..Default::default()
                });
                let mut generate = |st: &mut DecoderState, n: usize| -> Result<()> {
                    let mut tok = first;
                    for _ in 0..n {
                        tok = m.forward_sample(f, st, &[tok], &mut sampler, &[])?;
                    }
                    Ok(())
                };
                // Warm-up: a decoded token's first passes size buffers (and a GPU captures
                // its graph).
                prefill_depth(m, f, &mut st, depth)?;
                generate(&mut st, 3.min(n_gen))?;
                let mut tps = Vec::new();
                for _ in 0..reps {
                    prefill_depth(m, f, &mut st, depth)?;
                    let t = Instant::now();
                    generate(&mut st, n_gen)?;
                    tps.push(n_gen as f64 / t.elapsed().as_secs_f64());
                }
                let (a, b) = mean_std(&tps);
                r.tg_tps = Some(a);
                r.tg_tps_std = Some(b);
            }
        }
        Arch::Bert(_) | Arch::ModernBert(_) => {
            let n_vocab = match &model.arch {
                Arch::Bert(m) => m.hp.n_vocab,
                Arch::ModernBert(m) => m.hp.n_vocab,
                _ => unreachable!(),
            };
            // What a classification or embedding job takes back.
            let wants = if model.has_classifier() {
                Wants::LOGITS
            } else {
                Wants::POOLED
            };
            let seqs: Vec<Vec<u32>> = (0..batch)
                .map(|i| tokens(n_prompt, n_vocab, 100 + i as u64))
                .collect();
            let b = Batch::new(&seqs)?;
            let mut st = EncoderState::default();
            model.encode_with(&b, &mut st, wants)?;
            let mut ms = Vec::new();
            for _ in 0..reps {
                let t = Instant::now();
                model.encode_with(&b, &mut st, wants)?;
                ms.push(t.elapsed().as_secs_f64() * 1000.0 / batch as f64);
            }
            let (a, sd) = mean_std(&ms);
            r.batch = Some(batch);
            r.ms_per_example = Some(a);
            r.ms_per_example_std = Some(sd);
            r.pp_tps = Some(n_prompt as f64 / (a / 1000.0));
        }
    }
    Ok(r)
}
