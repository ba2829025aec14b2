//! What the encoders (BERT, ModernBERT) share: batches of sequences packed end to end (no
//! padding is computed: each sequence attends within its own range), the outputs a caller asks
//! for, and running a big batch in parts where the backend wants that.

use anyhow::{bail, Result};
use std::any::Any;
use std::ops::Range;

pub use crate::backend::Pooling;

/// Sequences of token ids packed into one array.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub tokens: Vec<u32>,
    pub seqs: Vec<Range<usize>>,
}

impl Batch {
    pub fn new(seqs: &[Vec<u32>]) -> Result<Batch> {
        let mut b = Batch::default();
        for s in seqs {
            if s.is_empty() {
                bail!("an input has no tokens");
            }
            let start = b.tokens.len();
            b.tokens.extend_from_slice(s);
            b.seqs.push(start..b.tokens.len());
        }
        Ok(b)
    }

    pub fn n_tokens(&self) -> usize {
        self.tokens.len()
    }

    /// Sequences `seqs` of this batch as a batch of their own.
    fn part(&self, seqs: &[Range<usize>]) -> Batch {
        let start = seqs[0].start;
        Batch {
            tokens: self.tokens[start..seqs[seqs.len() - 1].end].to_vec(),
            seqs: seqs
                .iter()
                .map(|r| r.start - start..r.end - start)
                .collect(),
        }
    }
}

/// Results of an encoder pass over a batch.
#[derive(Clone, Debug, Default)]
pub struct EncoderOutput {
    /// Final hidden state of every token, packed like the batch.
    pub hidden: Vec<f32>,
    /// One pooled vector per sequence (embedding).
    pub pooled: Vec<f32>,
    /// Class logits per sequence, when the model has a head.
    pub logits: Vec<f32>,
    pub dim: usize,
    pub n_labels: usize,
}

/// Which outputs an encoder pass copies back (a GPU computes all of them but returns only
/// these; an empty one stays empty in [`EncoderOutput`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wants {
    pub hidden: bool,
    pub pooled: bool,
    pub logits: bool,
}

impl Wants {
    pub const ALL: Wants = Wants {
        hidden: true,
        pooled: true,
        logits: true,
    };
    pub const POOLED: Wants = Wants {
        hidden: false,
        pooled: true,
        logits: false,
    };
    pub const LOGITS: Wants = Wants {
        hidden: false,
        pooled: false,
        logits: true,
    };
}

/// L2-normalizes each row of `dim` in place (sentence-embedding convention).
pub fn normalize_rows(x: &mut [f32], dim: usize) {
    for row in x.chunks_exact_mut(dim) {
        let n = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        if n > 0.0 {
            row.iter_mut().for_each(|v| *v /= n);
        }
    }
}

/// Buffers of encoder passes, reused from batch to batch (made by the model's backend on
/// first use).
#[derive(Default)]
pub struct EncoderState {
    pub(crate) inner: Option<Box<dyn Any + Send>>,
}

/// An encoder's graph on one backend.
pub(crate) trait EncoderGraph: Send + Sync {
    fn describe(&self) -> String;
    /// Token count per pass, or None for whole batches.
    fn part_tokens(&self) -> Option<usize>;
    fn encode(
        &self,
        f: &crate::gguf::GgufFile,
        st: &mut EncoderState,
        batch: &Batch,
        wants: Wants,
    ) -> Result<EncoderOutput>;
}

/// Runs `pass` over the batch cut into parts of whole sequences of at most `max_tokens` tokens
/// (a longer sequence is a part alone). Sequences never see each other and every product
/// computes each token alike, so the outputs are the same to the bit as in one pass;
/// activation buffers are sized by the part.
pub(crate) fn in_parts(
    batch: &Batch,
    max_tokens: Option<usize>,
    mut pass: impl FnMut(&Batch) -> Result<EncoderOutput>,
) -> Result<EncoderOutput> {
    let Some(max_tokens) = max_tokens else {
        return pass(batch);
    };
    if batch.n_tokens() <= max_tokens || batch.seqs.len() <= 1 {
        return pass(batch);
    }
    let mut out = EncoderOutput::default();
    let mut first = 0;
    while first < batch.seqs.len() {
        let start = batch.seqs[first].start;
        let mut end = first + 1;
        while end < batch.seqs.len() && batch.seqs[end].end - start <= max_tokens {
            end += 1;
        }
        let o = pass(&batch.part(&batch.seqs[first..end]))?;
        if first == 0 && !o.hidden.is_empty() {
            out.hidden.reserve_exact(batch.n_tokens() * o.dim);
        }
        out.dim = o.dim;
        out.n_labels = o.n_labels;
        out.hidden.extend_from_slice(&o.hidden);
        out.pooled.extend_from_slice(&o.pooled);
        out.logits.extend_from_slice(&o.logits);
        first = end;
    }
    Ok(out)
}

/// Checks a batch against the model's limits before any backend sees it.
pub(crate) fn check_batch(batch: &Batch, n_ctx: usize, n_vocab: usize) -> Result<()> {
    for seq in &batch.seqs {
        if seq.len() > n_ctx {
            bail!(
                "an input of {} tokens exceeds the model's {n_ctx} positions",
                seq.len()
            );
        }
    }
    if let Some(&tok) = batch.tokens.iter().find(|&&t| t as usize >= n_vocab) {
        bail!("token id {tok} is outside the vocabulary ({n_vocab})");
    }
    Ok(())
}
