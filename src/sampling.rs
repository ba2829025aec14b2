//! Token sampling, in llama.cpp's default order: repetition penalty over the last tokens, top-k,
//! top-p, temperature, then a draw. Temperature 0 is greedy. Buffers are reused from token to
//! token.

#[derive(Clone, Debug, PartialEq)]
pub struct SamplerConfig {
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub repeat_penalty: f32,
    pub repeat_last_n: usize,
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        // llama.cpp's defaults.
        SamplerConfig {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0,
        }
    }
}

pub struct Sampler {
    pub cfg: SamplerConfig,
    state: u64,
    penalized: Vec<u32>,
    candidates: Vec<(u32, f32)>,
}

impl Sampler {
    pub fn new(cfg: SamplerConfig) -> Sampler {
        let state = cfg.seed ^ 0x9E37_79B9_7F4A_7C15;
        Sampler {
            cfg,
            state: state.max(1),
            penalized: Vec::new(),
            candidates: Vec::new(),
        }
    }

    fn uniform(&mut self) -> f32 {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let x = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Picks the next token from `logits` (modified in place by the penalty) given the tokens
    /// seen so far.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        let mut ids = std::mem::take(&mut self.penalized);
        let draw = self.next_step(history, &mut ids);
        let t = choose_with(logits, &self.cfg, draw, &ids, &mut self.candidates);
        self.penalized = ids;
        t
    }

    /// A step's inputs, for sampling where the logits are ([`choose`]): the uniform draw
    /// (taken only when the temperature is above 0, so the sequence of draws is the same
    /// whoever samples), and into `penalized` the distinct recent tokens, sorted.
    pub fn next_step(&mut self, history: &[u32], penalized: &mut Vec<u32>) -> f32 {
        penalized.clear();
        let c = &self.cfg;
        if c.repeat_penalty != 1.0 && c.repeat_last_n > 0 {
            let start = history.len().saturating_sub(c.repeat_last_n);
            penalized.extend_from_slice(&history[start..]);
            penalized.sort_unstable();
            penalized.dedup();
        }
        if c.temperature > 0.0 {
            self.uniform()
        } else {
            0.0
        }
    }
}

/// The token that `cfg` picks from `logits` (the repetition penalty is applied to them in
/// place, for the `penalized` ids) with the uniform number `draw`.
pub fn choose(logits: &mut [f32], cfg: &SamplerConfig, draw: f32, penalized: &[u32]) -> u32 {
    choose_with(logits, cfg, draw, penalized, &mut Vec::new())
}

/// [`choose`] with a reusable buffer for the candidates.
pub fn choose_with(
    logits: &mut [f32],
    cfg: &SamplerConfig,
    draw: f32,
    penalized: &[u32],
    candidates: &mut Vec<(u32, f32)>,
) -> u32 {
    let c = cfg;
    if c.repeat_penalty != 1.0 {
        for &t in penalized {
            if let Some(l) = logits.get_mut(t as usize) {
                *l = if *l > 0.0 {
                    *l / c.repeat_penalty
                } else {
                    *l * c.repeat_penalty
                };
            }
        }
    }
    if c.temperature <= 0.0 {
        return argmax(logits);
    }
    let k = if c.top_k == 0 {
        logits.len()
    } else {
        c.top_k.min(logits.len())
    };
    candidates.clear();
    candidates.extend(logits.iter().enumerate().map(|(i, &l)| (i as u32, l)));
    if k < candidates.len() {
        candidates.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
        candidates.truncate(k);
    }
    candidates.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
    // Softmax over the survivors (at temperature 1 for top-p, as llama.cpp's chain does).
    let max = candidates[0].1;
    let mut probs: Vec<f32> = candidates.iter().map(|&(_, l)| (l - max).exp()).collect();
    let sum: f32 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= sum);
    let mut keep = probs.len();
    if c.top_p < 1.0 {
        let mut acc = 0.0;
        for (i, p) in probs.iter().enumerate() {
            acc += p;
            if acc >= c.top_p {
                keep = i + 1;
                break;
            }
        }
    }
    let temperature = c.temperature;
    let kept = &candidates[..keep];
    let max = kept[0].1;
    let weights: Vec<f32> = kept
        .iter()
        .map(|&(_, l)| ((l - max) / temperature).exp())
        .collect();
    let total: f32 = weights.iter().sum();
    let mut r = draw * total;
    for (w, &(id, _)) in weights.iter().zip(kept) {
        r -= w;
        if r <= 0.0 {
            return id;
        }
    }
    kept[keep - 1].0
}

pub fn argmax(logits: &[f32]) -> u32 {
    logits
        .iter()
        .enumerate()
        .fold((0usize, f32::NEG_INFINITY), |best, (i, &l)| {
            if l > best.1 {
                (i, l)
            } else {
                best
            }
        })
        .0 as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_penalty_and_determinism() {
        let mut s = Sampler::new(SamplerConfig {
            temperature: 0.0,
            ..Default::default()
        });
        assert_eq!(s.sample(&mut [0.1, 3.0, 2.0], &[]), 1);
        let mut s = Sampler::new(SamplerConfig {
            temperature: 0.0,
            repeat_penalty: 2.0,
            ..Default::default()
        });
        assert_eq!(s.sample(&mut [0.1, 3.0, 2.0], &[1]), 2);
        let cfg = SamplerConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: 7,
            ..Default::default()
        };
        let draws = |cfg: &SamplerConfig| {
            let mut s = Sampler::new(cfg.clone());
            (0..50)
                .map(|_| s.sample(&mut [1.0, 1.0, 1.0, 1.0], &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(draws(&cfg), draws(&cfg));
        assert!(draws(&cfg).iter().any(|&t| t != draws(&cfg)[0]));
        // top-k 1 is greedy whatever the temperature.
        let mut s = Sampler::new(SamplerConfig {
            temperature: 5.0,
            top_k: 1,
            ..Default::default()
        });
        assert_eq!(s.sample(&mut [0.0, 0.5, 0.2], &[]), 1);
    }
}
