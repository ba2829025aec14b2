//! The generation loop: a prompt, then one token at a time, each sampled where the logits are
//! (on the GPU only its id comes back), until a stop token or the requested count.

use crate::gguf::GgufFile;
use crate::model::qwen2::{DecoderState, Qwen2};
use crate::sampling::Sampler;
use anyhow::Result;
use std::time::Instant;

/// What a generation did and how long it took.
#[derive(Clone, Debug, Default)]
pub struct Generation {
    /// Generated token ids (without the stop token).
    pub tokens: Vec<u32>,
    /// Time of the prompt's pass and the first token's sampling.
    pub prompt_ms: f64,
    /// Time of the single-token passes that followed.
    pub eval_ms: f64,
    /// Single-token passes run.
    pub evals: usize,
}

/// Generates up to `n_predict` tokens after `prompt` (the state's cache must be empty or hold
/// what comes before it). `on_token` sees each token as it arrives and may stop the loop by
/// returning false.
#[allow(clippy::too_many_arguments)]
pub fn generate(
    m: &Qwen2,
    f: &GgufFile,
    st: &mut DecoderState,
    prompt: &[u32],
    n_predict: usize,
    sampler: &mut Sampler,
    stops: &[u32],
    mut on_token: impl FnMut(u32, &[u32]) -> Result<bool>,
) -> Result<Generation> {
    let mut g = Generation::default();
    if n_predict == 0 {
        return Ok(g);
    }
    let mut history = prompt.to_vec();
    let t0 = Instant::now();
    let mut next = m.forward_sample(f, st, prompt, sampler, &history)?;
    g.prompt_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let t1 = Instant::now();
    loop {
        if stops.contains(&next) {
            break;
        }
        g.tokens.push(next);
        history.push(next);
        if !on_token(next, &g.tokens)? || g.tokens.len() == n_predict {
            break;
        }
        next = m.forward_sample(f, st, &[next], sampler, &history)?;
        g.evals += 1;
    }
    g.eval_ms = t1.elapsed().as_secs_f64() * 1000.0;
    Ok(g)
}
