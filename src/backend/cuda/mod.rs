//! NVIDIA GPUs through cudarc (feature `cuda`): the driver, NVRTC and cuBLAS are loaded at run
//! time, so this builds without CUDA; kernels are CUDA C (kernels/*.cu) compiled by NVRTC for the
//! device's architecture at first use, written for sm_75 (T4) and up.
//!
//! - `device`: context, stream, kernel module, launches, cuBLAS GEMM, tracked device memory.
//! - `linear`: weights in their GGUF blocks; fused dequantizing matrix-vector kernels for
//!   decoding (and batches up to 8 tokens), f16 dequantization + cuBLAS for larger batches.
//! - `ops`, `attention`: norms, RoPE, activations, causal attention over an f16 KV cache,
//!   bidirectional (optionally windowed) attention through cuBLAS.
//! - `qwen2`, `encoders`: the models' graphs, attached through `backend::offload`.

pub mod attention;
pub mod device;
pub mod encoders;
pub mod linear;
pub mod ops;
pub mod qwen2;

pub use device::{gpu, vram_stats, Gpu, VramStats};

use crate::model::{Arch, Model};
use anyhow::Result;

/// Offloads `ngl` layers of `model` (see `backend::offload::attach`).
pub fn attach(model: &mut Model, ngl: usize) -> Result<String> {
    let g = gpu()?;
    let dev = format!(
        "{} (sm_{}{}, kernels for compute_{})",
        g.name, g.compute_capability.0, g.compute_capability.1, g.arch
    );
    match &mut model.arch {
        Arch::Qwen2(m) => {
            m.offload = None;
            let off = qwen2::GpuQwen2::load(g, &model.file, m, ngl)?;
            let s = format!(
                "offloaded {}/{} layers{} to {dev}: {:.1} MiB of weights",
                off.n_layers(),
                m.hp.n_layer,
                if off.head_offloaded() {
                    " and the output head"
                } else {
                    ""
                },
                off.weight_bytes as f64 / 1048576.0
            );
            m.offload = Some(Box::new(off));
            Ok(s)
        }
        Arch::Bert(m) => {
            let off = encoders::GpuBert::load(g, &model.file, m)?;
            model.encoder_offload = Some(Box::new(off));
            Ok(format!("offloaded the whole encoder to {dev}"))
        }
        Arch::ModernBert(m) => {
            let off = encoders::GpuModernBert::load(g, &model.file, m)?;
            model.encoder_offload = Some(Box::new(off));
            Ok(format!("offloaded the whole encoder to {dev}"))
        }
    }
}
