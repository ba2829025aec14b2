//! qbench: the comparison table. Every format of every reference model, on CPU and GPU, measured
//! by running the sibling binaries `qconvert` and `qrun` as child processes (one per row, so each
//! configuration's peak memory is its own), compared with the F16 row, cached row by row so an
//! interrupted run resumes, and reported as Markdown, CSV, JSON and SVG plots.

pub mod cache;
pub mod config;
pub mod data;
pub mod envelope;
pub mod metrics;
pub mod peers;
pub mod plots;
pub mod report;
pub mod rows;
pub mod runner;

use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

/// Writes a whole file atomically (temporary file beside it, then rename): a run killed midway
/// leaves the previous version or nothing, never half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    }
    let mut tmp = crate::atomic_file::temp_beside(path)?;
    tmp.write_all(bytes)
        .with_context(|| path.display().to_string())?;
    crate::atomic_file::persist(tmp, path)
}
