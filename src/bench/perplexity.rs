//! Perplexity and KL divergence of a causal LM over a text, the way llama-perplexity measures
//! them, so that numbers compare across the two tools: the token stream is cut into chunks of
//! `n_ctx` tokens, each evaluated from an empty cache, and only the second half of each chunk
//! is scored. Log-probabilities can be saved in llama-perplexity's `--kl-divergence-base`
//! format (and read back), so either tool can serve as the other's baseline.

use crate::gguf::GgufFile;
use crate::model::qwen2::{DecoderState, Output, Qwen2};
use anyhow::{bail, Context, Result};
use std::io::{Read, Write};

/// Per-position numbers of a comparison against a baseline.
#[derive(Default, Clone, Debug)]
pub struct KldStats {
    pub count: usize,
    pub sum_nll: f64,
    pub sum_nll2: f64,
    pub sum_nll_base: f64,
    pub sum_nll_base2: f64,
    pub sum_kld: f64,
    pub sum_kld2: f64,
    pub same_top: usize,
    /// KLD of every position, for percentiles.
    pub klds: Vec<f32>,
}

#[derive(Clone, Debug)]
pub struct Report {
    pub n_tokens_scored: usize,
    pub ppl: f64,
    pub ppl_err: f64,
    pub kld: Option<KldReport>,
}

#[derive(Clone, Debug)]
pub struct KldReport {
    pub ppl_base: f64,
    pub mean_kld: f64,
    pub mean_kld_err: f64,
    pub kld_99: f64,
    pub same_top_pct: f64,
}

/// Bytes per position in llama.cpp's log-prob file: two f32 (scale, min) then one u16 per token,
/// the count rounded to an even number.
fn row_u16(n_vocab: usize) -> usize {
    2 * n_vocab.div_ceil(2) + 4
}

/// `log_softmax` of one position, compressed as llama-perplexity does (16-bit levels over the
/// last 16 nats). Returns the negative log-likelihood of `tok`.
fn compress(logits: &[f32], tok: usize, out: &mut [u16]) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut min = logits.iter().copied().fold(f32::INFINITY, f32::min);
    min = min.max(max - 16.0);
    let sum_exp: f64 = logits.iter().map(|&l| (l - max).exp() as f64).sum();
    let log_sum_exp = sum_exp.ln() as f32;
    let min_log_prob = min - max - log_sum_exp;
    let scale = (max - min) / 65535.0;
    out[..2].copy_from_slice(&u32_halves(scale.to_bits()));
    out[2..4].copy_from_slice(&u32_halves(min_log_prob.to_bits()));
    let body = &mut out[4..4 + logits.len()];
    if scale != 0.0 {
        let inv = 1.0 / scale;
        for (o, &l) in body.iter_mut().zip(logits) {
            *o = if l > min {
                nearest_int(inv * (l - min)) as u16
            } else {
                0
            };
        }
    } else {
        body.fill(0);
    }
    (max + log_sum_exp - logits[tok]) as f64
}

fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0;
    (v.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

fn u32_halves(v: u32) -> [u16; 2] {
    [v as u16, (v >> 16) as u16]
}

fn f32_of(lo: u16, hi: u16) -> f32 {
    f32::from_bits(lo as u32 | ((hi as u32) << 16))
}

/// One position compared with a baseline row; updates `k`.
fn compare(logits: &[f32], base: &[u16], tok: usize, k: &mut KldStats) {
    let (mut max, mut imax) = (logits[0], 0);
    for (i, &l) in logits.iter().enumerate() {
        if l > max {
            max = l;
            imax = i;
        }
    }
    let sum_exp: f64 = logits.iter().map(|&l| (l - max).exp() as f64).sum();
    let log_sum_exp = sum_exp.ln() as f32;
    let scale = f32_of(base[0], base[1]);
    let min_log_prob = f32_of(base[2], base[3]);
    let b = &base[4..4 + logits.len()];
    let nll = (max + log_sum_exp - logits[tok]) as f64;
    let nll_base = -(scale * b[tok] as f32 + min_log_prob) as f64;
    k.sum_nll += nll;
    k.sum_nll2 += nll * nll;
    k.sum_nll_base += nll_base;
    k.sum_nll_base2 += nll_base * nll_base;
    let norm = max + log_sum_exp;
    let mut kld = 0.0f64;
    let (mut best, mut ibest) = (f32::NEG_INFINITY, 0);
    for (i, (&q, &l)) in b.iter().zip(logits).enumerate() {
        let p_log = scale * q as f32 + min_log_prob;
        if p_log > best {
            best = p_log;
            ibest = i;
        }
        if p_log > -16.0 {
            kld += (p_log.exp() * (p_log - l + norm)) as f64;
        }
    }
    k.sum_kld += kld;
    k.sum_kld2 += kld * kld;
    k.klds.push(kld as f32);
    k.count += 1;
    if imax == ibest {
        k.same_top += 1;
    }
}

/// A baseline file: header, tokens, then log-prob rows chunk by chunk.
pub struct BaseReader<R: Read> {
    r: R,
    pub n_ctx: usize,
    pub n_vocab: usize,
    pub n_chunk: usize,
    pub tokens: Vec<u32>,
}

impl<R: Read> BaseReader<R> {
    pub fn open(mut r: R) -> Result<BaseReader<R>> {
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic)
            .context("reading the KL-divergence base header")?;
        if &magic != b"_logits_" {
            bail!("not a llama-perplexity log-probability file (no _logits_ magic)");
        }
        let mut u = [0u8; 4];
        let mut read_i32 = |r: &mut R| -> Result<usize> {
            r.read_exact(&mut u)?;
            let v = i32::from_le_bytes(u);
            if v <= 0 {
                bail!("bad count {v} in the KL-divergence base");
            }
            Ok(v as usize)
        };
        let n_ctx = read_i32(&mut r)?;
        let n_vocab = read_i32(&mut r)?;
        let n_chunk = read_i32(&mut r)?;
        let n = n_ctx
            .checked_mul(n_chunk)
            .filter(|&n| n < (1 << 28))
            .context("base too large")?;
        let mut raw = vec![0u8; n * 4];
        r.read_exact(&mut raw)
            .context("reading the base's tokens")?;
        let tokens = raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        Ok(BaseReader {
            r,
            n_ctx,
            n_vocab,
            n_chunk,
            tokens,
        })
    }

    fn chunk(&mut self, rows: usize) -> Result<Vec<u16>> {
        let mut raw = vec![0u8; rows * row_u16(self.n_vocab) * 2];
        self.r
            .read_exact(&mut raw)
            .context("the base file ends early")?;
        Ok(raw
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect())
    }
}

/// What to do besides computing perplexity.
pub enum Baseline<'a> {
    None,
    /// Write this run's log-probabilities (llama-perplexity's `--kl-divergence-base` file).
    Save(&'a mut dyn Write),
    /// Compare with a saved baseline (its tokens are used).
    Compare(BaseReader<&'a mut dyn Read>),
}

/// Perplexity over `tokens` in chunks of `n_ctx` (at most `max_chunks`), optionally saving or
/// comparing log-probabilities. `progress` is called after each chunk.
#[allow(clippy::too_many_arguments)]
pub fn run(
    model: &Qwen2,
    f: &GgufFile,
    st: &mut DecoderState,
    tokens: &[u32],
    n_ctx: usize,
    max_chunks: usize,
    mut baseline: Baseline,
    mut progress: impl FnMut(usize, usize, f64),
) -> Result<Report> {
    let tokens: Vec<u32> = match &baseline {
        Baseline::Compare(b) => {
            if b.n_ctx != n_ctx || b.n_vocab != model.hp.n_vocab {
                bail!(
                    "the baseline was made with n_ctx {} and {} tokens of vocabulary; this run has {n_ctx} and {}",
                    b.n_ctx,
                    b.n_vocab,
                    model.hp.n_vocab
                );
            }
            b.tokens.clone()
        }
        _ => tokens.to_vec(),
    };
    let n_chunk = match &baseline {
        Baseline::Compare(b) => b.n_chunk.min(max_chunks.max(1)),
        _ => {
            // llama-perplexity's rule: at least two chunks' worth of text.
            if tokens.len() < 2 * n_ctx {
                bail!(
                    "{} tokens are too few for a context of {n_ctx} (at least {} needed)",
                    tokens.len(),
                    2 * n_ctx
                );
            }
            (tokens.len() / n_ctx).min(max_chunks.max(1))
        }
    };
    let n_vocab = model.hp.n_vocab;
    let first = n_ctx / 2;
    let rows = n_ctx - 1 - first;
    let nv = row_u16(n_vocab);
    if let Baseline::Save(w) = &mut baseline {
        w.write_all(b"_logits_")?;
        for v in [n_ctx as i32, n_vocab as i32, n_chunk as i32] {
            w.write_all(&v.to_le_bytes())?;
        }
        for t in &tokens[..n_chunk * n_ctx] {
            w.write_all(&(*t as i32).to_le_bytes())?;
        }
    }
    let (mut nll, mut nll2, mut count) = (0.0f64, 0.0f64, 0usize);
    let mut k = KldStats::default();
    let mut rowbuf = vec![0u16; nv];
    for c in 0..n_chunk {
        let chunk = &tokens[c * n_ctx..(c + 1) * n_ctx];
        st.reset();
        model.forward(f, st, chunk, Output::AllLogits)?;
        let base = match &mut baseline {
            Baseline::Compare(b) => Some(b.chunk(rows)?),
            _ => None,
        };
        let mut out_bytes = Vec::new();
        for (r, j) in (first..n_ctx - 1).enumerate() {
            let logits = &st.logits[j * n_vocab..(j + 1) * n_vocab];
            let tok = chunk[j + 1] as usize;
            let v = compress(logits, tok, &mut rowbuf);
            nll += v;
            nll2 += v * v;
            count += 1;
            if let Some(b) = &base {
                compare(logits, &b[r * nv..(r + 1) * nv], tok, &mut k);
            }
            if matches!(baseline, Baseline::Save(_)) {
                out_bytes.extend(rowbuf.iter().flat_map(|x| x.to_le_bytes()));
            }
        }
        if let Baseline::Save(w) = &mut baseline {
            w.write_all(&out_bytes)?;
        }
        progress(c + 1, n_chunk, (nll / count as f64).exp());
    }
    let mean = nll / count as f64;
    let var = (nll2 / count as f64 - mean * mean).max(0.0);
    let err = if count > 10 {
        (var / (count - 1) as f64).sqrt()
    } else {
        0.0
    };
    let ppl = mean.exp();
    let kld = if k.count > 0 {
        let n = k.count as f64;
        let mean_kld = k.sum_kld / n;
        let var_kld = (k.sum_kld2 / n - mean_kld * mean_kld).max(0.0);
        let mut sorted = k.klds.clone();
        sorted.sort_by(f32::total_cmp);
        let p99 = sorted[((sorted.len() - 1) as f64 * 0.99).round() as usize] as f64;
        Some(KldReport {
            ppl_base: (k.sum_nll_base / n).exp(),
            mean_kld,
            mean_kld_err: if k.count > 10 {
                (var_kld / (n - 1.0)).sqrt()
            } else {
                0.0
            },
            kld_99: p99,
            same_top_pct: 100.0 * k.same_top as f64 / n,
        })
    } else {
        None
    };
    Ok(Report {
        n_tokens_scored: count,
        ppl,
        ppl_err: ppl * err,
        kld,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_rows_round_trip_into_zero_kld() {
        let logits: Vec<f32> = (0..101)
            .map(|i| ((i * 37) % 23) as f32 * 0.3 - 2.0)
            .collect();
        let mut row = vec![0u16; row_u16(logits.len())];
        let nll = compress(&logits, 5, &mut row);
        let mut k = KldStats::default();
        compare(&logits, &row, 5, &mut k);
        assert_eq!(k.same_top, 1);
        assert!(k.sum_kld.abs() < 1e-3, "{}", k.sum_kld);
        assert!((k.sum_nll - nll).abs() < 1e-6);
        assert!((k.sum_nll_base - nll).abs() < 1e-3);
    }
}
