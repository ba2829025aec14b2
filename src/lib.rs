//! qgguf: convert Hugging Face checkpoints to llama.cpp's GGUF, run GGUF models fast on CPU and
//! NVIDIA GPUs, and benchmark every format against fp16.
//!
//! The block formats live in the `quant_types` crate; this crate holds file formats, model code,
//! backends and the command-line tools.

pub mod atomic_file;
pub mod backend;
pub mod bench;
pub mod chat;
pub mod convert;
pub mod generate;
pub mod gguf;
pub mod mapped;
pub mod model;
pub mod sampling;
pub mod tokenizer;

pub use quant_types;

/// qgguf's cache folder: `$QGGUF_CACHE`, else `~/.cache/qgguf` (None without a home).
pub fn cache_dir() -> Option<std::path::PathBuf> {
    std::env::var_os("QGGUF_CACHE")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache/qgguf")))
}
