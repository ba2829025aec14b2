//! Compute backends: the CPU (always) and NVIDIA GPUs through cudarc (feature `cuda`), which
//! models reach through the hooks in `offload`.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod offload;
