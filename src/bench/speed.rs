//! Timing loops of `qrun bench`, with llama-bench's test definitions: prompt processing of
//! `n_prompt` tokens from an empty cache (pp), generation of `n_gen` tokens one at a time from an
//! empty cache (tg), each repeated after a warm-up; for encoders, the time of one batch of
//! `batch` sequences of `n_prompt` tokens per example.

use crate::model::encoder::{Batch, EncoderState};
use crate::model::qwen2::Output;
use crate::model::{Arch, Model};
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

pub fn run(
    model: &Model,
    name: &str,
    file_type: &str,
    n_prompt: usize,
    n_gen: usize,
    batch: usize,
    reps: usize,
) -> Result<SpeedResult> {
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
    };
    match &model.arch {
        Arch::Qwen2(m) => {
            let mut st = m.new_state(n_prompt.max(n_gen).max(1) + 1);
            let f = &model.file;
            if n_prompt > 0 {
                let toks = tokens(n_prompt, m.hp.n_vocab, 42);
                // Warm-up at full length: buffers reach their size, GPU libraries initialise.
                st.reset();
                m.forward(f, &mut st, &toks, Output::LastLogits)?;
                let mut tps = Vec::new();
                for _ in 0..reps {
                    st.reset();
                    let t = Instant::now();
                    m.forward(f, &mut st, &toks, Output::LastLogits)?;
                    tps.push(n_prompt as f64 / t.elapsed().as_secs_f64());
                }
                let (a, b) = mean_std(&tps);
                r.pp_tps = Some(a);
                r.pp_tps_std = Some(b);
            }
            if n_gen > 0 {
                let toks = tokens(n_gen, m.hp.n_vocab, 7);
                st.reset();
                m.forward(f, &mut st, &toks[..1], Output::LastLogits)?;
                let mut tps = Vec::new();
                for _ in 0..reps {
                    st.reset();
                    let t = Instant::now();
                    for &tok in &toks {
                        m.forward(f, &mut st, &[tok], Output::LastLogits)?;
                    }
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
            let seqs: Vec<Vec<u32>> = (0..batch)
                .map(|i| tokens(n_prompt, n_vocab, 100 + i as u64))
                .collect();
            let b = Batch::new(&seqs)?;
            let mut st = EncoderState::default();
            model.encode(&b, &mut st)?;
            let mut ms = Vec::new();
            for _ in 0..reps {
                let t = Instant::now();
                model.encode(&b, &mut st)?;
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
