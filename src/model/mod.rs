//! Models, one file per architecture, computing on the CPU backend with weights read in place
//! from the GGUF memory map.

pub mod bert;
pub mod encoder;
pub mod modern_bert;
pub mod qwen2;
pub mod weights;

use crate::gguf::GgufFile;
use anyhow::{bail, Result};
use std::path::Path;

pub enum Arch {
    Qwen2(qwen2::Qwen2),
    Bert(bert::Bert),
    ModernBert(modern_bert::ModernBert),
}

pub struct Model {
    pub file: GgufFile,
    pub arch: Arch,
    /// An encoder run on a GPU (`backend::offload::attach`).
    pub encoder_offload: Option<Box<dyn crate::backend::offload::EncoderOffload>>,
}

impl Model {
    pub fn load(path: &Path) -> Result<Model> {
        Self::load_with(path, weights::packing_enabled())
    }

    /// Loads with weights packed for the CPU's kernels (`pack`, where available) or read in
    /// place from the map.
    pub fn load_with(path: &Path, pack: bool) -> Result<Model> {
        let file = GgufFile::open(path)?;
        let arch = match file.architecture()? {
            "qwen2" => Arch::Qwen2(qwen2::Qwen2::load_with(&file, pack)?),
            "bert" => Arch::Bert(bert::Bert::load_with(&file, pack)?),
            "modern-bert" => Arch::ModernBert(modern_bert::ModernBert::load_with(&file, pack)?),
            other => bail!(
                "{}: architecture '{other}' is not supported (qrun runs qwen2, bert and modern-bert)",
                path.display()
            ),
        };
        Ok(Model {
            file,
            arch,
            encoder_offload: None,
        })
    }

    pub fn arch_name(&self) -> &'static str {
        match self.arch {
            Arch::Qwen2(_) => "qwen2",
            Arch::Bert(_) => "bert",
            Arch::ModernBert(_) => "modern-bert",
        }
    }

    pub fn is_decoder(&self) -> bool {
        matches!(self.arch, Arch::Qwen2(_))
    }

    pub fn labels(&self) -> &[String] {
        match &self.arch {
            Arch::Qwen2(m) => &m.labels,
            Arch::Bert(m) => &m.labels,
            Arch::ModernBert(m) => &m.labels,
        }
    }

    pub fn has_classifier(&self) -> bool {
        match &self.arch {
            Arch::Qwen2(m) => m.cls.is_some(),
            Arch::Bert(m) => m.has_classifier(),
            Arch::ModernBert(m) => m.has_classifier(),
        }
    }

    /// Number of transformer blocks (what `-ngl` counts).
    pub fn n_layer(&self) -> usize {
        match &self.arch {
            Arch::Qwen2(m) => m.hp.n_layer,
            Arch::Bert(m) => m.hp.n_layer,
            Arch::ModernBert(m) => m.hp.n_layer,
        }
    }

    /// Longest input the model takes (training context).
    pub fn max_positions(&self) -> usize {
        match &self.arch {
            Arch::Qwen2(m) => m.hp.n_ctx_train,
            Arch::Bert(m) => m.hp.n_ctx,
            Arch::ModernBert(m) => m.hp.n_ctx,
        }
    }

    /// Runs an encoder over a batch (embeddings and, with a head, class logits). On the CPU,
    /// a big batch runs in parts of whole sequences of at most [`ENCODE_PART_TOKENS`] tokens
    /// (see [`Model::encode_in_parts`]).
    pub fn encode(
        &self,
        batch: &encoder::Batch,
        st: &mut encoder::EncoderState,
    ) -> Result<encoder::EncoderOutput> {
        if let (Some(gpu), false) = (&self.encoder_offload, self.is_decoder()) {
            return gpu.encode(&self.file, batch);
        }
        self.encode_in_parts(batch, st, ENCODE_PART_TOKENS)
    }

    /// [`Model::encode`] on the CPU, the batch cut into parts of whole sequences of at most
    /// `max_tokens` tokens (a longer sequence is a part alone). Sequences never see each
    /// other and every product computes each token alike, so the outputs are the same to the
    /// bit as in one pass; activation buffers are sized by the part: `qrun bench --batch 32
    /// -p 128` on the ModernBERT-base shape in Q8_0 peaked at 340 MiB resident in one pass, at
    /// 200 MiB in parts of 512 tokens, at the same speed.
    pub fn encode_in_parts(
        &self,
        batch: &encoder::Batch,
        st: &mut encoder::EncoderState,
        max_tokens: usize,
    ) -> Result<encoder::EncoderOutput> {
        if batch.n_tokens() <= max_tokens || batch.seqs.len() <= 1 {
            return self.encode_pass(batch, st);
        }
        let mut out = encoder::EncoderOutput::default();
        let mut first = 0;
        while first < batch.seqs.len() {
            let start = batch.seqs[first].start;
            let mut end = first + 1;
            while end < batch.seqs.len() && batch.seqs[end].end - start <= max_tokens {
                end += 1;
            }
            let seqs = &batch.seqs[first..end];
            let part = encoder::Batch {
                tokens: batch.tokens[start..seqs[seqs.len() - 1].end].to_vec(),
                seqs: seqs
                    .iter()
                    .map(|r| r.start - start..r.end - start)
                    .collect(),
            };
            let o = self.encode_pass(&part, st)?;
            if first == 0 {
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

    fn encode_pass(
        &self,
        batch: &encoder::Batch,
        st: &mut encoder::EncoderState,
    ) -> Result<encoder::EncoderOutput> {
        match &self.arch {
            Arch::Bert(m) => m.encode(&self.file, batch, st),
            Arch::ModernBert(m) => m.encode(&self.file, batch, st),
            Arch::Qwen2(_) => {
                bail!("qwen2 is a decoder: use generate, or classify with a classifier head")
            }
        }
    }
}

/// Tokens per pass of an encoder batch on the CPU ([`Model::encode`]): enough for the products
/// to stay compute-bound (each pass reads the weights once more: 153 MiB for the ModernBERT
/// shape in Q8_0, against 0.4 s of arithmetic per 512 tokens on two cores).
pub const ENCODE_PART_TOKENS: usize = 512;

/// Bytes of weights a decoder reads per generated token: every tensor once, except the token
/// embedding table, of which one row is read, unless the output head shares it (no
/// `output.weight`), in which case the head reads it whole. The denominator of the decode
/// roofline.
pub fn weight_bytes_per_token(path: &Path) -> Result<u64> {
    let f = GgufFile::open(path)?;
    let tied = f.tensor("output.weight").is_none();
    Ok(f.tensors()
        .iter()
        .filter(|t| tied || t.name != "token_embd.weight")
        .map(|t| t.nbytes)
        .sum())
}
