//! Weight matrices on the GPU, kept in their GGUF blocks, and products with them: up to
//! [`MATVEC_MAX`] tokens through the fused dequantizing matrix-vector kernels, larger batches by
//! dequantizing row chunks to f16 and calling cuBLAS (f16 inputs, f32 accumulation and output).

use super::device::{Arg, DBuf, Gpu, Grow};
use crate::gguf::GgufFile;
use crate::model::weights::{Linear, Mat};
use anyhow::{bail, Context, Result};
use quant_types::GgmlType;

/// Suffixes of the per-type kernels (matvec1_*, matvec8_*, dequant_*).
pub const KERNEL_SUFFIXES: [&str; 13] = [
    "f32", "f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q4_k", "q5_k", "q6_k", "iq4_nl",
    "nf4",
];

/// Largest token count the matrix-vector kernels take; larger batches go to cuBLAS.
pub const MATVEC_MAX: usize = 8;

/// f16 elements of dequantized weights per cuBLAS call (64 MiB): large heads go in row chunks.
const DEQUANT_CHUNK_ELEMS: usize = 32 << 20;

pub fn kernel_suffix(ty: GgmlType) -> Result<&'static str> {
    Ok(match ty {
        GgmlType::F32 => "f32",
        GgmlType::F16 => "f16",
        GgmlType::BF16 => "bf16",
        GgmlType::Q4_0 => "q4_0",
        GgmlType::Q4_1 => "q4_1",
        GgmlType::Q5_0 => "q5_0",
        GgmlType::Q5_1 => "q5_1",
        GgmlType::Q8_0 => "q8_0",
        GgmlType::Q4_K => "q4_k",
        GgmlType::Q5_K => "q5_k",
        GgmlType::Q6_K => "q6_k",
        GgmlType::IQ4_NL => "iq4_nl",
        GgmlType::NF4 => "nf4",
        other => bail!("{other} weights are not supported on the GPU"),
    })
}

/// A weight matrix in device memory: `rows` rows of `cols` weights in GGUF blocks.
pub struct GpuMat {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub row_bytes: usize,
    sfx: &'static str,
    data: DBuf,
}

impl GpuMat {
    /// Uploads raw blocks (`name` for errors).
    pub fn upload(
        g: &Gpu,
        name: &str,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        bytes: &[u8],
    ) -> Result<GpuMat> {
        let sfx = kernel_suffix(ty).with_context(|| format!("tensor '{name}'"))?;
        // The kernels take 32 weights at a time (64 for NF4, 256 for the K types).
        let row_bytes = ty.row_bytes(cols);
        match row_bytes {
            Some(rb) if cols.is_multiple_of(32) && rb * rows == bytes.len() => {
                let data = DBuf::from_slice(g, bytes)
                    .with_context(|| format!("uploading tensor '{name}'"))?;
                Ok(GpuMat {
                    ty,
                    rows,
                    cols,
                    row_bytes: rb,
                    sfx,
                    data,
                })
            }
            _ => bail!(
                "tensor '{name}': {ty} [{rows} x {cols}] with {} bytes cannot run on the GPU (rows must hold whole blocks and a multiple of 32 weights)",
                bytes.len()
            ),
        }
    }

    pub fn from_mat(g: &Gpu, f: &GgufFile, m: &Mat) -> Result<GpuMat> {
        GpuMat::upload(
            g,
            &m.info.name,
            m.ty,
            m.rows,
            m.cols,
            f.tensor_data(&m.info),
        )
    }

    pub fn bytes(&self) -> usize {
        self.data.bytes()
    }

    /// Dequantizes rows `r0..r0 + n` to `out` (f16 when `f16`, else f32), row-major.
    pub fn dequantize(&self, g: &Gpu, r0: usize, n: usize, out: u64, f16: bool) -> Result<()> {
        let chunks = n * self.cols / 32;
        g.launch_1d(
            &format!("dequant_{}", self.sfx),
            chunks,
            &[
                Arg::P(self.data.ptr() + (r0 * self.row_bytes) as u64),
                Arg::L(self.row_bytes as i64),
                Arg::I(n as i32),
                Arg::I(self.cols as i32),
                Arg::P(out),
                Arg::I(f16 as i32),
            ],
        )
    }
}

/// A linear layer on the GPU: y = x W^T (+ b).
pub struct GpuLinear {
    pub w: GpuMat,
    pub b: Option<DBuf>,
}

impl GpuLinear {
    pub fn from_linear(g: &Gpu, f: &GgufFile, l: &Linear) -> Result<GpuLinear> {
        Ok(GpuLinear {
            w: GpuMat::from_mat(g, f, &l.w)?,
            b: match &l.b {
                Some(b) => Some(DBuf::from_slice(g, b)?),
                None => None,
            },
        })
    }

    pub fn rows(&self) -> usize {
        self.w.rows
    }

    /// y (n rows of `rows`) = [y +] x (n rows of `cols`) W^T + b.
    pub fn forward(
        &self,
        g: &Gpu,
        x: u64,
        n: usize,
        y: u64,
        accumulate: bool,
        s: &mut GemmScratch,
    ) -> Result<()> {
        matmul(
            g,
            &self.w,
            x,
            n,
            y,
            self.b.as_ref().map(|b| b.ptr()),
            accumulate,
            s,
        )
    }

    pub fn bytes(&self) -> usize {
        self.w.bytes() + self.b.as_ref().map_or(0, |b| b.bytes())
    }
}

/// f16 staging buffers of the cuBLAS path, shared by all layers.
#[derive(Default)]
pub struct GemmScratch {
    weights: Grow,
    acts: Grow,
}

/// y[t][o] = [y[t][o] +] sum_i W[o][i] x[t][i] (+ bias[o]) for t in 0..n; x and y are f32 device
/// arrays of n rows.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    g: &Gpu,
    w: &GpuMat,
    x: u64,
    n: usize,
    y: u64,
    bias: Option<u64>,
    accumulate: bool,
    s: &mut GemmScratch,
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    if n <= MATVEC_MAX {
        let k = if n == 1 { "matvec1" } else { "matvec8" };
        return g.launch(
            &format!("{k}_{}", w.sfx),
            (w.rows.div_ceil(8) as u32, 1, 1),
            256,
            &[
                w.data.arg(),
                Arg::L(w.row_bytes as i64),
                Arg::I(w.rows as i32),
                Arg::I(w.cols as i32),
                Arg::P(x),
                Arg::I(n as i32),
                Arg::P(y),
                Arg::P(bias.unwrap_or(0)),
                Arg::I(accumulate as i32),
            ],
        );
    }
    let xf16 = s.acts.ptr(g, n * w.cols * 2)?;
    g.launch_1d(
        "to_f16",
        n * w.cols,
        &[
            Arg::P(x),
            Arg::I(w.cols as i32),
            Arg::P(xf16),
            Arg::I(w.cols as i32),
            Arg::I(n as i32),
            Arg::I(w.cols as i32),
        ],
    )?;
    let beta = if accumulate { 1.0 } else { 0.0 };
    if w.ty == GgmlType::F16 {
        g.gemm_f16(
            true,
            false,
            (w.rows, n, w.cols),
            (w.data.ptr(), w.cols, 0),
            (xf16, w.cols, 0),
            (y, w.rows, 0),
            beta,
            1,
        )?;
    } else {
        let chunk = (DEQUANT_CHUNK_ELEMS / w.cols).clamp(1, w.rows);
        let wf16 = s.weights.ptr(g, chunk * w.cols * 2)?;
        for r0 in (0..w.rows).step_by(chunk) {
            let rc = chunk.min(w.rows - r0);
            w.dequantize(g, r0, rc, wf16, true)?;
            g.gemm_f16(
                true,
                false,
                (rc, n, w.cols),
                (wf16, w.cols, 0),
                (xf16, w.cols, 0),
                (y + 4 * r0 as u64, w.rows, 0),
                beta,
                1,
            )?;
        }
    }
    if let Some(b) = bias {
        g.launch_1d(
            "add_bias",
            n * w.rows,
            &[
                Arg::P(y),
                Arg::P(b),
                Arg::L((n * w.rows) as i64),
                Arg::I(w.rows as i32),
            ],
        )?;
    }
    Ok(())
}
