//! What the CUDA backend computes with: weight matrices uploaded once in their GGUF blocks (or
//! a lookup table left in host memory), activation buffers with an optional f16 copy for the
//! tensor-core products, KV caches and rotary tables.

use super::device::{DBuf, Gpu, Grow};
use super::kernels::type_index;
use crate::backend::cpu::weights::Mat;
use crate::backend::TensorRef;
use crate::gguf::GgufFile;
use anyhow::{bail, Context, Result};
use quant_types::GgmlType;

/// A weight matrix in device memory: `rows` rows of `cols` weights in GGUF blocks.
pub struct GpuMat {
    pub ty: GgmlType,
    /// Index of the type in the kernel tables.
    pub ti: usize,
    pub rows: usize,
    pub cols: usize,
    pub row_bytes: usize,
    pub data: DBuf,
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
        let ti = type_index(ty).with_context(|| format!("tensor '{name}'"))?;
        match ty.row_bytes(cols) {
            Some(rb) if cols.is_multiple_of(32) && rb * rows == bytes.len() => {
                let data = DBuf::from_slice(g, bytes)
                    .with_context(|| format!("uploading tensor '{name}'"))?;
                Ok(GpuMat {
                    ty,
                    ti,
                    rows,
                    cols,
                    row_bytes: rb,
                    data,
                })
            }
            _ => bail!(
                "tensor '{name}': {ty} [{rows} x {cols}] with {} bytes cannot run on the GPU (rows must hold whole blocks and a multiple of 32 weights)",
                bytes.len()
            ),
        }
    }

    pub fn ptr(&self) -> u64 {
        self.data.ptr()
    }
}

/// Where a matrix's weights are.
pub enum Weights {
    Device(GpuMat),
    /// A lookup table kept in host memory: rows are gathered there and uploaded.
    Host(Mat),
}

/// The CUDA backend's weight matrix with its optional bias.
pub struct GpuLinear {
    pub w: Weights,
    pub bias: Option<DBuf>,
    pub rows: usize,
    pub cols: usize,
    pub name: String,
}

impl GpuLinear {
    pub fn load(
        g: &Gpu,
        f: &GgufFile,
        t: TensorRef,
        bias: Option<Vec<f32>>,
        on_host: bool,
    ) -> Result<GpuLinear> {
        let name = t.info.name.clone();
        let w = if on_host {
            Weights::Host(Mat {
                info: t.info.clone(),
                ty: t.ty,
                rows: t.rows,
                cols: t.cols,
                packed: None,
                lookup_only: true,
                scan: None,
            })
        } else {
            Weights::Device(GpuMat::upload(
                g,
                &name,
                t.ty,
                t.rows,
                t.cols,
                f.tensor_data(t.info),
            )?)
        };
        let bias = match bias {
            Some(b) => Some(DBuf::from_slice(g, &b)?),
            None => None,
        };
        Ok(GpuLinear {
            w,
            bias,
            rows: t.rows,
            cols: t.cols,
            name,
        })
    }

    /// The device matrix, or an error for a table kept on the host.
    pub fn device(&self) -> Result<&GpuMat> {
        match &self.w {
            Weights::Device(m) => Ok(m),
            Weights::Host(_) => bail!(
                "tensor '{}' is kept in host memory for lookups; it cannot be multiplied on the GPU",
                self.name
            ),
        }
    }

    pub fn bias_ptr(&self) -> u64 {
        self.bias.as_ref().map_or(0, |b| b.ptr())
    }

    pub fn device_bytes(&self) -> usize {
        let w = match &self.w {
            Weights::Device(m) => m.data.bytes(),
            Weights::Host(_) => 0,
        };
        w + self.bias.as_ref().map_or(0, |b| b.bytes())
    }
}

/// Rows of f32 activations, with an f16 copy when the operation that wrote them made one
/// (then a product's input needs no conversion).
#[derive(Default)]
pub struct DevBuf {
    f32: Grow,
    f16: Grow,
    f16_fresh: bool,
    /// The last write made only the f16 copy.
    f32_stale: bool,
}

impl DevBuf {
    /// The f32 values for writing `elems` (the f16 copy is stale from now on).
    pub fn out(&mut self, g: &Gpu, elems: usize) -> Result<u64> {
        self.f16_fresh = false;
        self.f32_stale = false;
        self.f32.ptr(g, elems * 4)
    }

    /// The f16 copy for writing `elems` alongside the f32 values (call after [`DevBuf::out`]).
    pub fn out16(&mut self, g: &Gpu, elems: usize) -> Result<u64> {
        let p = self.f16.ptr(g, elems * 2)?;
        self.f16_fresh = true;
        Ok(p)
    }

    /// Only the f16 copy, for writing `elems` (an input of products alone).
    pub fn out16_only(&mut self, g: &Gpu, elems: usize) -> Result<u64> {
        let p = self.out16(g, elems)?;
        self.f32_stale = true;
        Ok(p)
    }

    /// The f32 values for reading `elems`.
    pub fn input(&self, elems: usize) -> Result<u64> {
        let (p, bytes) = self.f32.current();
        if self.f32_stale {
            bail!("an activation buffer read as f32 after an f16-only write");
        }
        if bytes < elems * 4 {
            bail!(
                "an activation buffer of {bytes} bytes read as {elems} values (not written by this pass)"
            );
        }
        Ok(p)
    }

    /// The f16 copy, if the last write made one covering `elems`.
    pub fn input16(&self, elems: usize) -> Option<u64> {
        let (p, bytes) = self.f16.current();
        (self.f16_fresh && bytes >= elems * 2).then_some(p)
    }

    /// Capacity in f32 values.
    pub fn len(&self) -> usize {
        self.f32.current().1 / 4
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One sequence's f16 KV cache of the layers on the GPU: per layer, rows of `row` values for
/// `ctx` positions.
pub struct GpuCache {
    pub ctx: usize,
    pub row: usize,
    pub layers: Vec<(DBuf, DBuf)>,
}

impl GpuCache {
    pub fn new(g: &Gpu, layers: usize, ctx: usize, row: usize) -> Result<GpuCache> {
        let bytes = ctx
            .checked_mul(row)
            .and_then(|v| v.checked_mul(2))
            .context("a KV cache too large to address")?;
        let mut v = Vec::with_capacity(layers.min(1024));
        for _ in 0..layers {
            v.push((
                DBuf::new(g, bytes).context("the GPU KV cache (lower -c)")?,
                DBuf::new(g, bytes).context("the GPU KV cache (lower -c)")?,
            ));
        }
        Ok(GpuCache {
            ctx,
            row,
            layers: v,
        })
    }

    pub fn bytes(&self) -> usize {
        self.layers.iter().map(|(k, v)| k.bytes() + v.bytes()).sum()
    }
}

/// Rotary (cos, sin) pairs on the device, position-major, computed by the CPU's table (the same
/// numbers).
#[derive(Default)]
pub struct GpuRope {
    host: crate::backend::cpu::ops::RopeTable,
    table: Option<DBuf>,
    /// What the device table holds: head size, base, positions.
    made: (usize, u32, usize),
}

impl GpuRope {
    pub fn ensure(&mut self, g: &Gpu, hd: usize, theta: f32, positions: usize) -> Result<()> {
        self.host.ensure(hd, theta, positions.max(1));
        let want = (hd, theta.to_bits(), self.host.positions());
        if self.table.is_some() && self.made == want {
            return Ok(());
        }
        let pairs = self.host.cos_sin_pairs();
        self.table = None;
        self.table = Some(DBuf::from_slice(g, &pairs)?);
        self.made = want;
        Ok(())
    }

    pub fn ptr(&self) -> Result<u64> {
        self.table
            .as_ref()
            .map(|t| t.ptr())
            .context("the rotary table was not made")
    }
}
