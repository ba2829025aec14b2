//! What the encoders (BERT, ModernBERT) share: batches of sequences packed end to end (no
//! padding is computed: each sequence attends within its own range), pooling, and outputs.

use crate::backend::cpu::matmul::Scratch;
use crate::backend::cpu::ops::RopeTable;
use anyhow::{bail, Result};
use std::ops::Range;

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
}

/// How token states become one vector per sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    Mean,
    Cls,
    Last,
}

impl Pooling {
    /// llama.cpp's pooling type numbers (0 none, 1 mean, 2 cls, 3 last).
    pub fn from_gguf(v: usize) -> Option<Pooling> {
        match v {
            1 => Some(Pooling::Mean),
            2 => Some(Pooling::Cls),
            3 => Some(Pooling::Last),
            _ => None,
        }
    }

    pub fn pool(self, hidden: &[f32], dim: usize, seq: &Range<usize>, out: &mut [f32]) {
        match self {
            Pooling::Cls => out.copy_from_slice(&hidden[seq.start * dim..(seq.start + 1) * dim]),
            Pooling::Last => out.copy_from_slice(&hidden[(seq.end - 1) * dim..seq.end * dim]),
            Pooling::Mean => {
                out.fill(0.0);
                for t in seq.clone() {
                    for (o, &v) in out.iter_mut().zip(&hidden[t * dim..(t + 1) * dim]) {
                        *o += v;
                    }
                }
                let inv = 1.0 / seq.len() as f32;
                out.iter_mut().for_each(|o| *o *= inv);
            }
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

/// L2-normalizes each row of `dim` in place (sentence-embedding convention).
pub fn normalize_rows(x: &mut [f32], dim: usize) {
    for row in x.chunks_exact_mut(dim) {
        let n = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        if n > 0.0 {
            row.iter_mut().for_each(|v| *v /= n);
        }
    }
}

/// Buffers of encoder passes, reused from batch to batch.
#[derive(Default)]
pub struct EncoderState {
    pub(crate) x: Vec<f32>,
    pub(crate) q: Vec<f32>,
    pub(crate) k: Vec<f32>,
    pub(crate) v: Vec<f32>,
    pub(crate) att: Vec<f32>,
    pub(crate) o: Vec<f32>,
    pub(crate) ff: Vec<f32>,
    pub(crate) row: Vec<f32>,
    pub(crate) scratch: Scratch,
    /// Rotary angles (ModernBERT: global and local attention have different bases).
    pub(crate) rope: [RopeTable; 2],
}
