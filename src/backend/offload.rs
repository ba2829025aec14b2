//! The seam between the models and an accelerator: a model holds an optional offload object and
//! hands it the layers it does not run itself. Compiled with or without the `cuda` feature, so
//! the model code has no feature switches; `attach` says clearly when no GPU backend is built in.

use crate::gguf::GgufFile;
use crate::model::encoder::{Batch, EncoderOutput};
use crate::model::qwen2::Output;
use crate::model::Model;
use anyhow::Result;
use std::any::Any;

/// Per-sequence device state (KV cache of the offloaded layers), created by the offload object
/// on first use and kept in the decoder's state.
pub type OffloadState = Option<Box<dyn Any + Send>>;

/// The last layers of a decoder, run on a device.
pub trait DecoderOffload: Send + Sync {
    /// Layers before this one run on the CPU.
    fn first_layer(&self) -> usize;

    /// Runs the offloaded layers over `x` (n rows of the residual stream after the CPU's layers)
    /// at positions pos0..pos0 + n of a context of `ctx` positions. Returns true when the device
    /// also ran the final norm and head and filled `logits` / `hidden` as `out` asks; false when
    /// it wrote the residual stream back into `x` for the CPU to finish.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        state: &mut OffloadState,
        ctx: usize,
        x: &mut [f32],
        n: usize,
        pos0: usize,
        out: Output,
        logits: &mut Vec<f32>,
        hidden: &mut Vec<f32>,
    ) -> Result<bool>;
}

/// A whole encoder run on a device (embedding lookups may stay on the host).
pub trait EncoderOffload: Send + Sync {
    fn encode(&self, f: &GgufFile, batch: &Batch) -> Result<EncoderOutput>;
}

/// Device memory figures, in MiB.
#[derive(Clone, Copy, Debug)]
pub struct VramReport {
    /// Most memory qgguf's own buffers held at once (weights, KV caches, activations).
    pub peak_mib: f64,
    /// Device memory in use beyond what was in use when qgguf's GPU context was ready, at its
    /// highest sample (adds cuBLAS's workspace and allocator slack).
    pub device_mib: f64,
    pub total_mib: f64,
}

/// Offloads `ngl` layers of `model` to the GPU: a decoder's last `ngl` layers (and its output
/// head when `ngl` covers every layer), an encoder whole. Returns a one-line summary.
pub fn attach(model: &mut Model, ngl: usize) -> Result<String> {
    #[cfg(feature = "cuda")]
    {
        crate::backend::cuda::attach(model, ngl)
    }
    #[cfg(not(feature = "cuda"))]
    {
        anyhow::bail!(
            "-ngl {ngl}: this qrun was built without GPU support (build with --features cuda); the model's {} layers run on the CPU with -ngl 0",
            model.n_layer()
        )
    }
}

/// VRAM figures of this process, when a GPU is in use.
pub fn vram() -> Option<VramReport> {
    #[cfg(feature = "cuda")]
    {
        crate::backend::cuda::vram_stats().map(|v| VramReport {
            peak_mib: v.peak_allocated as f64 / 1048576.0,
            device_mib: v.device_used as f64 / 1048576.0,
            total_mib: v.device_total as f64 / 1048576.0,
        })
    }
    #[cfg(not(feature = "cuda"))]
    {
        None
    }
}
