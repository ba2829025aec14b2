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

    /// Runs an encoder over a batch (embeddings and, with a head, class logits).
    pub fn encode(
        &self,
        batch: &encoder::Batch,
        st: &mut encoder::EncoderState,
    ) -> Result<encoder::EncoderOutput> {
        if let (Some(gpu), false) = (&self.encoder_offload, self.is_decoder()) {
            return gpu.encode(&self.file, batch);
        }
        match &self.arch {
            Arch::Bert(m) => m.encode(&self.file, batch, st),
            Arch::ModernBert(m) => m.encode(&self.file, batch, st),
            Arch::Qwen2(_) => {
                bail!("qwen2 is a decoder: use generate, or classify with a classifier head")
            }
        }
    }
}

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
