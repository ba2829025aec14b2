//! Loading weights by name from a GGUF file, with the checks that turn a wrong or partial file
//! into an error naming the tensor: presence, shape, and a type qgguf can compute with.

use crate::backend::cpu::matmul::{self, Scratch, WeightView};
use crate::backend::cpu::ops;
use crate::gguf::{GgufFile, TensorInfo};
use anyhow::{bail, Context, Result};
use quant_types::packed::{self, Arena, Layout, PackedMatrix};
use quant_types::{dynamic, GgmlType};
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
    /// Only ever read by rows ([`Loader::lookup_table`]): its pages of the file's map are
    /// handed back after each lookup. False for a table that is also an output head.
    pub lookup_only: bool,
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

    /// Replaces the in-place weights by a packed copy when the CPU and type allow it and
    /// `QGGUF_NO_PACK` is unset, then releases the tensor's pages of the map.
    fn pack(&mut self, f: &GgufFile, arena: &Arena) {
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
        for (dst, src) in slices {
            dst.par_chunks_exact_mut(dst_unit)
                .zip(src.par_chunks(src_unit))
                .for_each(|(dst, src)| packed::pack_unit(ty, cols, layout, src, dst));
            f.release_part(&self.info, done, done + src.len());
            done += src.len();
        }
        f.release(&self.info);
        self.packed = Some(Arc::new(m));
    }
}

/// Whether weights are packed at load: the CPU has the kernels, and `QGGUF_NO_PACK` (for
/// measuring the difference) is unset.
pub fn packing_enabled() -> bool {
    packed::available() && std::env::var("QGGUF_NO_PACK").map_or(true, |v| v.is_empty() || v == "0")
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

/// A norm's scale and optional shift.
#[derive(Clone, Debug)]
pub struct Norm {
    pub w: Vec<f32>,
    pub b: Option<Vec<f32>>,
}

/// Largest hyper-parameter (layer count, widths, context length) accepted from a file. Sizes
/// are computed from them (`3 * n_embd`, KV cache rows) before any tensor confirms them, so
/// they are bounded first; real models stay far below (2^31).
pub const MAX_HP: usize = 1 << 31;

pub struct Loader<'a> {
    pub f: &'a GgufFile,
    /// Pack matrices for the CPU's packed kernels (see [`packing_enabled`]).
    pub pack: bool,
    /// Where packed matrices live: one model's matrices one after another in huge pages.
    arena: Arena,
}

impl<'a> Loader<'a> {
    pub fn new(f: &'a GgufFile, pack: bool) -> Loader<'a> {
        Loader {
            f,
            pack,
            arena: Arena::new(),
        }
    }

    fn info(&self, name: &str) -> Result<&'a TensorInfo> {
        self.f.tensor(name).with_context(|| {
            format!(
                "{}: the model has no tensor '{name}'",
                self.f.path().display()
            )
        })
    }

    fn ty(&self, info: &TensorInfo) -> Result<GgmlType> {
        match info.ggml_type() {
            Some(t) if !matches!(t, GgmlType::Q8_1 | GgmlType::Q8_K) => Ok(t),
            _ => bail!(
                "{}: tensor '{}' has type {}, which qgguf cannot run (it runs F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, IQ4_NL and NF4)",
                self.f.path().display(),
                info.name,
                info.type_info.name
            ),
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.f.tensor(name).is_some()
    }

    /// A matrix of `rows` x `cols` (GGUF dims `[cols, rows]`; a single row may be stored 1-D),
    /// packed for the matrix kernels where they serve it.
    pub fn mat(&self, name: &str, cols: usize, rows: usize) -> Result<Mat> {
        self.mat_packed_if(name, cols, rows, self.pack)
    }

    /// A table read only by rows (token and position embeddings that are not also an output
    /// head): left in the file's blocks, so only the rows a prompt looks up are ever read. A
    /// packed copy would read the whole table at load and hold it in memory (a 272 MiB F16
    /// vocabulary of Qwen2.5-0.5B) for no product.
    pub fn lookup_table(&self, name: &str, cols: usize, rows: usize) -> Result<Mat> {
        self.mat_packed_if(name, cols, rows, false)
    }

    fn mat_packed_if(&self, name: &str, cols: usize, rows: usize, pack: bool) -> Result<Mat> {
        let info = self.info(name)?;
        let ok =
            info.dims == [cols as u64, rows as u64] || (rows == 1 && info.dims == [cols as u64]);
        if !ok {
            bail!(
                "{}: tensor '{name}' has dims {:?}, expected [{cols}, {rows}]",
                self.f.path().display(),
                info.dims
            );
        }
        let mut m = Mat {
            info: info.clone(),
            ty: self.ty(info)?,
            rows,
            cols,
            packed: None,
            lookup_only: !pack,
        };
        if pack {
            m.pack(self.f, &self.arena);
        }
        Ok(m)
    }

    /// A vector of `len` values, dequantized to f32.
    pub fn vec(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        let info = self.info(name)?;
        if info.n_elements() != len as u64 {
            bail!(
                "{}: tensor '{name}' has {} values, expected {len}",
                self.f.path().display(),
                info.n_elements()
            );
        }
        let mut out = vec![0.0; len];
        dynamic::dequantize(self.ty(info)?, self.f.tensor_data(info), &mut out)
            .with_context(|| format!("tensor '{name}'"))?;
        Ok(out)
    }

    pub fn opt_vec(&self, name: &str, len: usize) -> Result<Option<Vec<f32>>> {
        if self.has(name) {
            self.vec(name, len).map(Some)
        } else {
            Ok(None)
        }
    }

    /// `{stem}.weight` as rows x cols, and `{stem}.bias` if present.
    pub fn linear(&self, stem: &str, cols: usize, rows: usize) -> Result<Linear> {
        Ok(Linear {
            w: self.mat(&format!("{stem}.weight"), cols, rows)?,
            b: self.opt_vec(&format!("{stem}.bias"), rows)?,
        })
    }

    pub fn norm(&self, stem: &str, dim: usize) -> Result<Norm> {
        Ok(Norm {
            w: self.vec(&format!("{stem}.weight"), dim)?,
            b: self.opt_vec(&format!("{stem}.bias"), dim)?,
        })
    }

    /// A required hyper-parameter `{arch}.{key}`, at most [`MAX_HP`].
    pub fn hp(&self, arch: &str, key: &str) -> Result<usize> {
        let k = format!("{arch}.{key}");
        let v = match self.f.get(&k) {
            Some(crate::gguf::Value::Array(a)) => a
                .to_i64_vec()
                .and_then(|v| v.first().copied())
                .and_then(|v| usize::try_from(v).ok())
                .with_context(|| {
                    format!(
                        "{}: '{k}' is not an array of non-negative integers",
                        self.f.path().display()
                    )
                })?,
            _ => self.f.get_usize(&k)?,
        };
        if v > MAX_HP {
            bail!(
                "{}: '{k}' is {v}, more than any model has (the limit is {MAX_HP})",
                self.f.path().display()
            );
        }
        Ok(v)
    }

    pub fn hp_opt(&self, arch: &str, key: &str) -> Result<Option<usize>> {
        if self.f.get(&format!("{arch}.{key}")).is_some() {
            self.hp(arch, key).map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn hp_f32(&self, arch: &str, key: &str) -> Result<f32> {
        Ok(self.f.get_f32(&format!("{arch}.{key}"))?)
    }

    pub fn labels(&self, arch: &str) -> Vec<String> {
        match self.f.get(&format!("{arch}.classifier.output_labels")) {
            Some(crate::gguf::Value::Array(crate::gguf::Array::String(v))) => v.clone(),
            _ => Vec::new(),
        }
    }
}

/// Grows a buffer to `n` values without shrinking its allocation (no per-token allocation).
pub fn sized(buf: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if buf.len() < n {
        buf.resize(n, 0.0);
    }
    &mut buf[..n]
}
