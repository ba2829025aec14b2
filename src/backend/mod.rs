//! Compute backends: the CPU (always) and NVIDIA GPUs through cudarc (feature `cuda`).

pub mod cpu;
