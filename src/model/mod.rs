//! Models, one file per architecture, each describing its graph once over the operations of
//! `backend::Backend`; weights are read in place from the GGUF memory map or handed to the
//! backend that runs them.

pub mod bert;
pub mod encoder;
pub mod modern_bert;
pub mod qwen2;
pub mod weights;

use crate::backend::{self, GpuOptions, WithBackend};
use crate::gguf::GgufFile;
use anyhow::{bail, Result};
use encoder::{Batch, EncoderGraph, EncoderOutput, EncoderState, Wants};
use std::path::Path;

/// How a model is loaded.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// Pack the CPU's weights for its SIMD kernels where it has them (off: read them in place
    /// from the map, to compare).
    pub pack: bool,
    /// Layers on the GPU: a decoder's last `ngl` (and its output head when `ngl` covers every
    /// layer), an encoder whole when `ngl` > 0.
    pub ngl: usize,
    pub gpu: GpuOptions,
    /// Run on the CPU when no GPU can be used, with a warning, instead of failing.
    pub gpu_fallback: bool,
    /// Load a file whose weights hold NaN, infinities or absurd norms (a warning, not an
    /// error; see `gguf::scan`).
    pub allow_nonfinite: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            pack: true,
            ngl: 0,
            gpu: GpuOptions::default(),
            gpu_fallback: false,
            allow_nonfinite: false,
        }
    }
}

pub enum Arch {
    Qwen2(qwen2::Qwen2),
    Bert(bert::Bert),
    ModernBert(modern_bert::ModernBert),
}

pub struct Model {
    pub file: GgufFile,
    pub arch: Arch,
    /// What the load let pass with a warning (weights kept by `allow_nonfinite`).
    pub warnings: Vec<String>,
}

/// The error of a load that asked for the GPU and got none.
pub(crate) fn gpu_error(e: anyhow::Error, ngl: usize, n_layer: usize) -> anyhow::Error {
    anyhow::anyhow!(
        "-ngl {ngl}: {e:#}; the model's {n_layer} layers run on the CPU with -ngl 0 (or pass --gpu-fallback to run there instead)"
    )
}

/// Builds an encoder's graph on the backend the options choose.
fn on_backend<W: WithBackend<Out = Box<dyn EncoderGraph>>>(
    plan: W,
    opts: &LoadOptions,
    n_layer: usize,
) -> Result<Box<dyn EncoderGraph>> {
    if opts.ngl == 0 {
        return backend::with_cpu(plan, opts.pack);
    }
    // The plan is consumed by the first try: a fallback needs a second one, so build the GPU
    // graph through a cell that hands the plan back on failure.
    let mut slot = Some(plan);
    let gpu = backend::with_gpu(Once(&mut slot), opts.gpu);
    match gpu {
        Ok(g) => Ok(g),
        Err(e) if opts.gpu_fallback => {
            eprintln!("qrun: warning: {e:#}; running on the CPU (--gpu-fallback)");
            match slot.take() {
                Some(plan) => backend::with_cpu(plan, opts.pack),
                None => Err(e),
            }
        }
        Err(e) => Err(gpu_error(e, opts.ngl, n_layer)),
    }
}

/// A plan built at most once, left in its slot until a backend takes it.
struct Once<'a, W>(&'a mut Option<W>);

impl<W: WithBackend> WithBackend for Once<'_, W> {
    type Out = W::Out;

    fn with<B: backend::Backend>(self, b: &'static B) -> Result<W::Out> {
        match self.0.take() {
            Some(w) => w.with(b),
            None => bail!("the model was already built"),
        }
    }
}

impl Model {
    pub fn load(path: &Path) -> Result<Model> {
        Self::load_with(path, &LoadOptions::default())
    }

    pub fn load_with(path: &Path, opts: &LoadOptions) -> Result<Model> {
        let file = GgufFile::open(path)?;
        let mut warnings = Vec::new();
        // Every tensor the model reads is scanned as it loads, on every path (CPU, -ngl).
        let log = crate::gguf::scan::ScanLog::default();
        let arch = match file.architecture()? {
            "qwen2" => Arch::Qwen2(qwen2::Qwen2::load(&file, opts, &log)?),
            "bert" => Arch::Bert(bert::Bert::load(&file, opts, &log)?),
            "modern-bert" => Arch::ModernBert(modern_bert::ModernBert::load(&file, opts, &log)?),
            other => bail!(
                "{}: architecture '{other}' is not supported (qrun runs qwen2, bert and modern-bert)",
                path.display()
            ),
        };
        let report = log.report(&file);
        if !report.is_clean() {
            let text = report.summary(&path.display().to_string());
            if !opts.allow_nonfinite {
                bail!("{text}\n(pass --allow-nonfinite to load it anyway)");
            }
            warnings.push(format!("{text}\n(loaded anyway: --allow-nonfinite)"));
        }
        Ok(Model {
            file,
            arch,
            warnings,
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

    /// Where the model runs (backends and their layers), one line.
    pub fn placement(&self) -> String {
        match &self.arch {
            Arch::Qwen2(m) => m.placement(),
            Arch::Bert(m) => m.graph.describe(),
            Arch::ModernBert(m) => m.graph.describe(),
        }
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
            Arch::Qwen2(m) => m.has_cls,
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

    fn encoder(&self) -> Result<&dyn EncoderGraph> {
        Ok(match &self.arch {
            Arch::Bert(m) => m.graph.as_ref(),
            Arch::ModernBert(m) => m.graph.as_ref(),
            Arch::Qwen2(_) => {
                bail!("qwen2 is a decoder: use generate, or classify with a classifier head")
            }
        })
    }

    /// Runs an encoder over a batch: hidden states, pooled vectors and, with a head, class
    /// logits. On the CPU a big batch runs in parts of whole sequences (the same numbers).
    pub fn encode(&self, batch: &Batch, st: &mut EncoderState) -> Result<EncoderOutput> {
        self.encode_with(batch, st, Wants::ALL)
    }

    /// [`Model::encode`] with only the outputs `wants` names copied back.
    pub fn encode_with(
        &self,
        batch: &Batch,
        st: &mut EncoderState,
        wants: Wants,
    ) -> Result<EncoderOutput> {
        self.encoder()?.encode(&self.file, st, batch, wants)
    }

    /// [`Model::encode`] with the batch cut into parts of at most `max_tokens` tokens (for
    /// checking that parts give the same numbers).
    pub fn encode_in_parts(
        &self,
        batch: &Batch,
        st: &mut EncoderState,
        max_tokens: usize,
    ) -> Result<EncoderOutput> {
        let g = self.encoder()?;
        encoder::in_parts(batch, Some(max_tokens), |part| {
            g.encode(&self.file, st, part, Wants::ALL)
        })
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
