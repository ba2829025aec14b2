//! Writes a plan to a GGUF file: header first, then tensor data streamed in order. Large tensors
//! go through in chunks of rows (quantized in parallel across rows); runs of small tensors are
//! quantized in parallel across tensors. Peak memory is a few chunks, not the model.

use super::plan::{Inputs, Plan, PlannedTensor};
use crate::gguf::GgufWriter;
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use quant_types::dynamic;
use rayon::prelude::*;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// f32 values handled per chunk: 16 MiB of floats.
const CHUNK_ELEMS: usize = 4 << 20;

#[derive(Clone, Copy, Debug, Default)]
pub struct WriteOptions {
    /// Keep NaN and infinite weights instead of refusing them.
    pub allow_nonfinite: bool,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

#[derive(Clone, Debug)]
pub struct Summary {
    pub file_bytes: u64,
    pub tensor_bytes: u64,
    pub elements: u64,
    pub elapsed: Duration,
}

impl Summary {
    pub fn bits_per_weight(&self) -> f64 {
        self.tensor_bytes as f64 * 8.0 / self.elements.max(1) as f64
    }
}

pub fn writer_for(plan: &Plan) -> Result<GgufWriter> {
    let mut w = GgufWriter::new();
    for (k, v) in &plan.metadata {
        w.set(k, v.clone())?;
    }
    for t in &plan.tensors {
        w.add_tensor(&t.name, &t.dims, t.out_type.info())?;
    }
    Ok(w)
}

pub fn write(plan: &Plan, inputs: &Inputs, out: &Path, opts: WriteOptions) -> Result<Summary> {
    let start = Instant::now();
    let writer = writer_for(plan)?;
    let total = plan.total_out_bytes();
    let bar = if opts.progress {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {msg}",
            )
            .expect("valid template"),
        );
        bar
    } else {
        ProgressBar::hidden()
    };

    // Tensors are produced in batches: a large tensor alone, chunk by chunk; small neighbours
    // together, in parallel. Each batch's bytes are handed to the writer in order.
    let mut pending: std::collections::VecDeque<Vec<u8>> = Default::default();
    let mut next_batch = 0usize;
    let batches = batches(&plan.tensors);
    writer.write_file(out, |i, t, sink| {
        let planned = &plan.tensors[i];
        debug_assert_eq!(planned.name, t.name);
        bar.set_message(planned.name.clone());
        if planned.n_elements() as usize > CHUNK_ELEMS {
            stream_large(planned, inputs, sink, opts, &bar)?;
            inputs.release(planned);
            return Ok(());
        }
        if pending.is_empty() {
            // Quantize the next batch of small tensors in parallel.
            while next_batch < batches.len() && batches[next_batch].0 < i {
                next_batch += 1;
            }
            let (first, last) = batches[next_batch];
            debug_assert_eq!(first, i);
            let done: Vec<Result<Vec<u8>>> = plan.tensors[first..=last]
                .par_iter()
                .map(|t| encode_small(t, inputs, opts))
                .collect();
            for d in done {
                pending.push_back(d?);
            }
        }
        let bytes = pending.pop_front().expect("batch covers this tensor");
        sink.write_all(&bytes)?;
        bar.inc(bytes.len() as u64);
        inputs.release(planned);
        Ok(())
    })?;
    bar.finish_and_clear();
    let file_bytes = std::fs::metadata(out)
        .with_context(|| out.display().to_string())?
        .len();
    Ok(Summary {
        file_bytes,
        tensor_bytes: total,
        elements: plan.total_elements(),
        elapsed: start.elapsed(),
    })
}

/// Consecutive runs of small tensors, as (first, last) index pairs; large tensors are skipped
/// (they are streamed alone).
fn batches(tensors: &[PlannedTensor]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < tensors.len() {
        if tensors[i].n_elements() as usize > CHUNK_ELEMS {
            i += 1;
            continue;
        }
        let first = i;
        let mut elems = 0usize;
        while i < tensors.len()
            && tensors[i].n_elements() as usize <= CHUNK_ELEMS
            && elems + tensors[i].n_elements() as usize <= 4 * CHUNK_ELEMS
        {
            elems += tensors[i].n_elements() as usize;
            i += 1;
        }
        out.push((first, i - 1));
    }
    out
}

fn check_finite(t: &PlannedTensor, row0: usize, values: &[f32], opts: WriteOptions) -> Result<()> {
    if opts.allow_nonfinite {
        return Ok(());
    }
    if let Some(pos) = values.iter().position(|v| !v.is_finite()) {
        let row = row0 + pos / t.row_len();
        bail!(
            "tensor '{}': element {} of row {} is {} (pass --allow-nonfinite to keep non-finite weights)",
            t.name,
            pos % t.row_len(),
            row,
            values[pos]
        );
    }
    Ok(())
}

/// Quantizes `rows` (row-major f32) into `out`, in parallel across rows.
fn quantize_rows(t: &PlannedTensor, values: &[f32], out: &mut [u8]) -> Result<()> {
    let row = t.row_len();
    let row_bytes = t.out_type.row_bytes(row).expect("row fits the type");
    out.par_chunks_mut(row_bytes)
        .zip(values.par_chunks(row))
        .try_for_each(|(dst, src)| dynamic::quantize(t.out_type, src, dst))
        .with_context(|| format!("tensor '{}'", t.name))
}

/// Refuses non-finite values in rows `row0..` of a tensor whose stored bytes are copied as they
/// are (a source already in the output type: F16 to F16, or a quantized GGUF tensor kept), which
/// skip the f32 pass where [`check_finite`] otherwise looks.
fn check_finite_raw(t: &PlannedTensor, row0: usize, raw: &[u8], opts: WriteOptions) -> Result<()> {
    if opts.allow_nonfinite {
        return Ok(());
    }
    let row = t.row_len();
    let row_bytes = t.out_type.row_bytes(row).expect("row fits the type");
    let rows_per_chunk = (CHUNK_ELEMS / row).max(1);
    let mut values = vec![0.0f32; rows_per_chunk.min(raw.len() / row_bytes) * row];
    for (i, chunk) in raw.chunks(rows_per_chunk * row_bytes).enumerate() {
        let values = &mut values[..chunk.len() / row_bytes * row];
        dynamic::dequantize(t.out_type, chunk, values)
            .with_context(|| format!("tensor '{}'", t.name))?;
        check_finite(t, row0 + i * rows_per_chunk, values, opts)?;
    }
    Ok(())
}

fn encode_small(t: &PlannedTensor, inputs: &Inputs, opts: WriteOptions) -> Result<Vec<u8>> {
    if let Some(raw) = inputs.raw_if_unchanged(t) {
        check_finite_raw(t, 0, raw, opts)?;
        return Ok(raw.to_vec());
    }
    let mut values = vec![0.0f32; t.n_elements() as usize];
    inputs.read_rows(t, 0, &mut values)?;
    check_finite(t, 0, &values, opts)?;
    let mut out = vec![0u8; t.out_bytes() as usize];
    quantize_rows(t, &values, &mut out)?;
    Ok(out)
}

fn stream_large(
    t: &PlannedTensor,
    inputs: &Inputs,
    sink: &mut dyn Write,
    opts: WriteOptions,
    bar: &ProgressBar,
) -> Result<()> {
    if let Some(raw) = inputs.raw_if_unchanged(t) {
        // Whole rows at a time (about 16 MiB), so that each chunk is checked as it is copied.
        let row_bytes = t
            .out_type
            .row_bytes(t.row_len())
            .expect("row fits the type");
        let rows = ((16 << 20) / row_bytes).max(1);
        let step = rows * row_bytes;
        for (i, chunk) in raw.chunks(step).enumerate() {
            check_finite_raw(t, i * rows, chunk, opts)?;
            sink.write_all(chunk)?;
            bar.inc(chunk.len() as u64);
            inputs.release_bytes(t, i * step, i * step + chunk.len());
        }
        return Ok(());
    }
    let src_row = inputs.source_row_bytes(t);
    let row = t.row_len();
    let rows_per_chunk = (CHUNK_ELEMS / row).max(1);
    let row_bytes = t.out_type.row_bytes(row).expect("row fits the type");
    let mut values = vec![0.0f32; rows_per_chunk * row];
    let mut out = vec![0u8; rows_per_chunk * row_bytes];
    let mut row0 = 0;
    while row0 < t.n_rows() {
        let n = rows_per_chunk.min(t.n_rows() - row0);
        let values = &mut values[..n * row];
        inputs.read_rows(t, row0, values)?;
        check_finite(t, row0, values, opts)?;
        let out = &mut out[..n * row_bytes];
        quantize_rows(t, values, out)?;
        sink.write_all(out)?;
        bar.inc(out.len() as u64);
        inputs.release_bytes(t, row0 * src_row, (row0 + n) * src_row);
        row0 += n;
    }
    Ok(())
}
