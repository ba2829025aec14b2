//! qbench: the comparison table. Every format of every reference model, on CPU and GPU, measured
//! by running the sibling binaries `qconvert` and `qrun` as child processes (one per row, so each
//! configuration's peak memory is its own), compared with the F16 row, cached row by row so an
//! interrupted run resumes, and reported as Markdown, CSV, JSON and SVG plots.

pub mod metrics;
