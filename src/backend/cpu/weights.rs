//! Weight matrices as the CPU computes with them: read in place from the file's memory map, or
//! packed at load time for the CPU's SIMD kernels.

use super::matmul::{self, Scratch, WeightView};
use super::ops;
use crate::gguf::{GgufFile, TensorInfo};
use anyhow::{Context, Result};
use quant_types::packed::{self, Arena, Layout, PackedMatrix};
use quant_types::GgmlType;
use rayon::prelude::*;
use std::sync::Arc;

/// A weight matrix: `rows` output features of `cols` inputs. Read in place from the file's map,
/// or, where the CPU has the packed kernels, from a packed copy made at load time (the map's
/// pages of the tensor are then released, so memory stays about the file's size).
#[derive(Clone, Debug)]
pub struct Mat {
    pub info: TensorInfo,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub packed: Option<Arc<PackedMatrix>>,
    /// Only ever read by rows: its pages of the file's map are handed back after each lookup.
    /// False for a table that is also an output head.
    pub lookup_only: bool,
    /// What packing found in the weights' values (NaN, infinities, block scales), scanned as
    /// each slice was packed; None when the weights were not packed.
    pub scan: Option<quant_types::scan::Scan>,
}

impl Mat {
    pub fn view<'a>(&'a self, f: &'a GgufFile) -> WeightView<'a> {
        WeightView {
            ty: self.ty,
            rows: self.rows,
            cols: self.cols,
            // The packed copy replaces the file's bytes: never touch released pages.
            data: if self.packed.is_some() {
                &[]
            } else {
                f.tensor_data(&self.info)
            },
            packed: self.packed.as_deref(),
        }
    }

    pub fn row(&self, f: &GgufFile, r: usize, out: &mut [f32]) -> Result<()> {
        matmul::dequantize_row(&self.view(f), r, out)
    }

    /// Rows of a lookup table read from the file's map ([`Mat::row`]), dequantized into `out`
    /// one after the other, each row's pages handed back once read. The page cache may hold
    /// a file in 2 MiB folios and map a whole folio at the first touch, so a prompt's few
    /// hundred embedding rows would otherwise keep most of Qwen's 97 MiB table resident (80
    /// MiB of the peak RSS of `qrun bench` on Q5_K_S), and releasing the table only after the
    /// last row still left that much in the peak (Q4_K_M, pp512: 555 -> 475 MiB); the next
    /// lookup faults its folio back in from the page cache. The release of the whole table
    /// after the rows still counts: without it the peak of a Q5_K_S pp512 was 2 MiB higher.
    pub fn rows_then_release(&self, f: &GgufFile, rows: &[u32], out: &mut [f32]) -> Result<()> {
        let row_bytes = self.ty.row_bytes(self.cols).unwrap_or(0);
        let release = self.lookup_only && self.packed.is_none();
        for (&r, o) in rows.iter().zip(out.chunks_exact_mut(self.cols)) {
            self.row(f, r as usize, o)?;
            if release {
                let at = r as usize * row_bytes;
                f.release_folios_around(&self.info, at, at + row_bytes);
            }
        }
        self.release_if_mapped(f);
        Ok(())
    }

    /// Hands a lookup-only table's pages of the file's map back (nothing when it is packed,
    /// or also a head whose products would fault the whole table back in).
    pub fn release_if_mapped(&self, f: &GgufFile) {
        if self.lookup_only && self.packed.is_none() {
            f.release(&self.info);
        }
    }

    /// Replaces the in-place weights by a packed copy when the CPU and type allow it, then
    /// releases the tensor's pages of the map.
    pub(crate) fn pack(&mut self, f: &GgufFile, arena: &Arena) {
        if !packed::available() || !packed::supports(self.ty) {
            return;
        }
        // QGGUF_PACK_LAYOUT=rows keeps the row layout where the interleaved one would be
        // chosen, to measure the difference.
        let layout = match std::env::var("QGGUF_PACK_LAYOUT").as_deref() {
            Ok("rows") => Layout::Rows,
            _ => Layout::best_for(self.ty),
        };
        let Some(mut m) =
            PackedMatrix::alloc_in(Some(arena), self.ty, self.rows, self.cols, layout)
        else {
            return;
        };
        let (ty, cols, layout) = (self.ty, self.cols, m.layout());
        let src = f.tensor_data(&self.info);
        let src_unit = ty.row_bytes(cols).expect("validated") * m.unit_rows();
        let dst_unit = m.unit_bytes();
        // In slices of about 8 MiB of the file, each released once packed: the packed copy
        // and the file's pages of a big matrix (a 272 MiB F16 embedding) never both stay
        // resident, so peak memory grows by one slice, not by the matrix. (The peak is the
        // last slice of the last matrix, with every packed copy made: 32 MiB slices put
        // Qwen's IQ4_NL decoder 5 MiB over file + KV cache + 64 MiB in one run.)
        let units_per_slice = ((8 << 20) / src_unit.max(1)).max(1);
        let slices = m
            .bytes_mut()
            .chunks_mut(units_per_slice * dst_unit)
            .zip(src.chunks(units_per_slice * src_unit));
        let mut done = 0;
        let mut found = quant_types::scan::Scan::default();
        for (dst, src) in slices {
            // Each unit is scanned while packing has it in cache.
            let s = dst
                .par_chunks_exact_mut(dst_unit)
                .zip(src.par_chunks(src_unit))
                .map(|(dst, src)| {
                    packed::pack_unit(ty, cols, layout, src, dst);
                    quant_types::scan::scan(ty, src)
                })
                .reduce(quant_types::scan::Scan::default, |mut a, b| {
                    a.merge(&b);
                    a
                });
            found.merge(&s);
            f.release_part(&self.info, done, done + src.len());
            done += src.len();
        }
        f.release(&self.info);
        self.scan = Some(found);
        self.packed = Some(Arc::new(m));
    }
}

/// Whether this CPU has the packed kernels (weights are then packed at load unless the load
/// options say otherwise).
pub fn packing_available() -> bool {
    packed::available()
}

/// A linear layer: y = x W^T (+ b).
#[derive(Clone, Debug)]
pub struct Linear {
    pub w: Mat,
    pub b: Option<Vec<f32>>,
}

impl Linear {
    pub fn forward(
        &self,
        f: &GgufFile,
        x: &[f32],
        n: usize,
        y: &mut [f32],
        s: &mut Scratch,
    ) -> Result<()> {
        matmul::matmul(&self.w.view(f), x, n, y, s)
            .with_context(|| format!("tensor '{}'", self.w.info.name))?;
        if let Some(b) = &self.b {
            ops::add_bias(y, b);
        }
        Ok(())
    }

    pub fn rows(&self) -> usize {
        self.w.rows
    }

    /// Several layers on the same input (`ys[i] = layers[i](x)`), as one parallel product when
    /// their weights allow it ([`matmul::matmul_group`]).
    pub fn forward_group<const N: usize>(
        layers: [&Linear; N],
        f: &GgufFile,
        x: &[f32],
        n: usize,
        ys: &mut [&mut [f32]; N],
        s: &mut Scratch,
    ) -> Result<()> {
        let views = layers.map(|l| l.w.view(f));
        matmul::matmul_group(&views, x, n, ys, s).with_context(|| {
            let names: Vec<&str> = layers.iter().map(|l| l.w.info.name.as_str()).collect();
            format!("tensors {}", names.join(", "))
        })?;
        for (l, y) in layers.iter().zip(ys.iter_mut()) {
            if let Some(b) = &l.b {
                ops::add_bias(y, b);
            }
        }
        Ok(())
    }
}
