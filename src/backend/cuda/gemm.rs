//! Products of more than a few tokens (prompts, encoder batches) on tensor cores through cuBLAS:
//! f16 inputs (the activations' f16 copy, or a conversion), the weights dequantized to f16 in
//! row chunks into a scratch buffer (F16 weights are used as they are), f32 sums and outputs.
//! The scratch holds one matrix (or 64 MiB of a large one) at a time, never a second copy of
//! the model.

use super::device::{Arg, Gpu, Grow};
use super::kernels::Kernels;
use super::tensors::{DevBuf, GpuMat};
use anyhow::Result;
use quant_types::GgmlType;

/// f16 elements of dequantized weights per cuBLAS call (64 MiB): large heads go in row chunks.
const DEQUANT_CHUNK_ELEMS: usize = 32 << 20;

/// Scratch of the cuBLAS path, shared by all products of a sequence's passes.
#[derive(Default)]
pub struct GemmScratch {
    weights: Grow,
    acts: Grow,
}

/// Dequantizes rows `r0..r0 + n` of `m` to f16 (or f32) at `out`, row-major.
pub fn dequantize(
    g: &Gpu,
    k: &Kernels,
    m: &GpuMat,
    (r0, n): (usize, usize),
    out: u64,
    f16: bool,
) -> Result<()> {
    let chunks = n * m.cols / 32;
    if chunks == 0 {
        return Ok(());
    }
    let f = k.dequant[m.ti];
    let w = m.ptr() + (r0 * m.row_bytes) as u64;
    let (rb, rows, cols, o, h) = (m.row_bytes as i64, n as i32, m.cols as i32, out, f16 as i32);
    let mut params = [
        &w as *const u64 as *mut std::ffi::c_void,
        &rb as *const i64 as *mut _,
        &rows as *const i32 as *mut _,
        &cols as *const i32 as *mut _,
        &o as *const u64 as *mut _,
        &h as *const i32 as *mut _,
    ];
    g.launch_raw(f, (chunks.div_ceil(256) as u32, 1, 1), 256, 0, &mut params)
}

/// The f16 copy of `n` rows of `cols` of x: its own when fresh, else converted into scratch.
pub fn f16_input(g: &Gpu, s: &mut GemmScratch, x: &DevBuf, n: usize, cols: usize) -> Result<u64> {
    if let Some(p) = x.input16(n * cols) {
        return Ok(p);
    }
    let src = x.input(n * cols)?;
    let dst = s.acts.ptr(g, n * cols * 2)?;
    g.launch_1d(
        "to_f16",
        n * cols,
        &[
            Arg::P(src),
            Arg::I(cols as i32),
            Arg::P(dst),
            Arg::I(cols as i32),
            Arg::I(n as i32),
            Arg::I(cols as i32),
        ],
    )?;
    Ok(dst)
}

/// y (n rows of `rows`, f32, row stride `ldy`) = [y +] x W^T + bias, x given as f16 rows.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    g: &Gpu,
    k: &Kernels,
    s: &mut GemmScratch,
    m: &GpuMat,
    x16: u64,
    n: usize,
    (y, ldy): (u64, usize),
    bias: u64,
    add: bool,
) -> Result<()> {
    let beta = if add { 1.0 } else { 0.0 };
    if m.ty == GgmlType::F16 {
        g.gemm_f16(
            true,
            false,
            (m.rows, n, m.cols),
            (m.ptr(), m.cols, 0),
            (x16, m.cols, 0),
            (y, ldy, 0),
            beta,
            1,
        )?;
    } else {
        let chunk = (DEQUANT_CHUNK_ELEMS / m.cols).clamp(1, m.rows);
        let w16 = s.weights.ptr(g, chunk * m.cols * 2)?;
        for r0 in (0..m.rows).step_by(chunk) {
            let rc = chunk.min(m.rows - r0);
            dequantize(g, k, m, (r0, rc), w16, true)?;
            g.gemm_f16(
                true,
                false,
                (rc, n, m.cols),
                (w16, m.cols, 0),
                (x16, m.cols, 0),
                (y + 4 * r0 as u64, ldy, 0),
                beta,
                1,
            )?;
        }
    }
    if bias != 0 {
        if ldy != m.rows {
            anyhow::bail!("a bias on a strided output");
        }
        g.launch_1d(
            "add_bias",
            n * m.rows,
            &[
                Arg::P(y),
                Arg::P(bias),
                Arg::L((n * m.rows) as i64),
                Arg::I(m.rows as i32),
            ],
        )?;
    }
    Ok(())
}
