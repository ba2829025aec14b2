//! Loading weights by name from a GGUF file, with the checks that turn a wrong or partial file
//! into an error naming the tensor: presence, shape, and a type qgguf can compute with. The
//! checked tensors go to whichever backend runs them, and every one is scanned for non-finite
//! or absurd values (`gguf::scan`) on the way.

use crate::backend::{Backend, TensorRef, Use};
use crate::gguf::scan::ScanLog;
use crate::gguf::{GgufFile, TensorInfo};
use anyhow::{bail, Context, Result};
use quant_types::{dynamic, GgmlType};

pub use crate::backend::cpu::sized;

/// A norm's scale and optional shift on a backend.
pub struct Norm<B: Backend> {
    pub w: B::Vector,
    pub b: Option<B::Vector>,
}

impl<B: Backend> Norm<B> {
    /// The scale and the shift, as the backend's norms take them.
    pub fn parts(&self) -> (&B::Vector, Option<&B::Vector>) {
        (&self.w, self.b.as_ref())
    }
}

/// Largest hyper-parameter (layer count, widths, context length) accepted from a file. Sizes
/// are computed from them (`3 * n_embd`, KV cache rows) before any tensor confirms them, so
/// they are bounded first; real models stay far below (2^31).
pub const MAX_HP: usize = 1 << 31;

pub struct Loader<'a> {
    pub f: &'a GgufFile,
    /// Where every tensor read is scanned for non-finite or absurd values.
    log: &'a ScanLog,
}

impl<'a> Loader<'a> {
    pub fn new(f: &'a GgufFile, log: &'a ScanLog) -> Loader<'a> {
        Loader { f, log }
    }

    /// Records the scan of a matrix the backend has taken, or, when the backend did not read
    /// its values (weights used in place, uploaded), leaves it to the log's final pass.
    fn scanned<B: Backend>(&self, b: &B, t: TensorRef, l: &B::Linear) {
        match b.weight_scan(l) {
            Some(s) => self.log.record(t.info, t.ty, s),
            None => self.log.defer(t.info, t.ty),
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

    /// Tensor `name` as `rows` rows of `cols` (GGUF dims `[cols, rows]`; a single row may be
    /// stored 1-D).
    pub fn tensor(&self, name: &str, cols: usize, rows: usize) -> Result<TensorRef<'a>> {
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
        Ok(TensorRef {
            info,
            ty: self.ty(info)?,
            rows,
            cols,
        })
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
        let ty = self.ty(info)?;
        dynamic::dequantize(ty, self.f.tensor_data(info), &mut out)
            .with_context(|| format!("tensor '{name}'"))?;
        // Float vectors are scanned as the f32 values they became (NaN and Inf survive the
        // widening); quantized ones on their stored scales.
        let s = if ty.block_elems() == 1 {
            quant_types::scan::scan(GgmlType::F32, bytemuck::cast_slice(&out))
        } else {
            quant_types::scan::scan(ty, self.f.tensor_data(info))
        };
        self.log.record(info, ty, s);
        Ok(out)
    }

    pub fn opt_vec(&self, name: &str, len: usize) -> Result<Option<Vec<f32>>> {
        if self.has(name) {
            self.vec(name, len).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Matrix `name` (no bias) on backend `b`.
    pub fn mat<B: Backend>(
        &self,
        b: &B,
        s: &B::Session,
        name: &str,
        cols: usize,
        rows: usize,
        usage: Use,
    ) -> Result<B::Linear> {
        let t = self.tensor(name, cols, rows)?;
        let l = b
            .linear(s, self.f, t, None, usage)
            .with_context(|| format!("tensor '{name}'"))?;
        self.scanned(b, t, &l);
        Ok(l)
    }

    /// `{stem}.weight` as rows x cols and `{stem}.bias` if present, on backend `b`.
    pub fn linear<B: Backend>(
        &self,
        b: &B,
        s: &B::Session,
        stem: &str,
        cols: usize,
        rows: usize,
    ) -> Result<B::Linear> {
        let name = format!("{stem}.weight");
        let t = self.tensor(&name, cols, rows)?;
        let bias = self.opt_vec(&format!("{stem}.bias"), rows)?;
        let l = b
            .linear(s, self.f, t, bias, Use::Product)
            .with_context(|| format!("tensor '{name}'"))?;
        self.scanned(b, t, &l);
        Ok(l)
    }

    /// `{stem}.weight` if the file has it.
    pub fn opt_linear<B: Backend>(
        &self,
        b: &B,
        s: &B::Session,
        stem: &str,
        cols: usize,
        rows: usize,
    ) -> Result<Option<B::Linear>> {
        if self.has(&format!("{stem}.weight")) {
            self.linear(b, s, stem, cols, rows).map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn vector<B: Backend>(&self, b: &B, name: &str, len: usize) -> Result<B::Vector> {
        b.vector(self.vec(name, len)?)
    }

    pub fn norm<B: Backend>(&self, b: &B, stem: &str, dim: usize) -> Result<Norm<B>> {
        Ok(Norm {
            w: b.vector(self.vec(&format!("{stem}.weight"), dim)?)?,
            b: match self.opt_vec(&format!("{stem}.bias"), dim)? {
                Some(v) => Some(b.vector(v)?),
                None => None,
            },
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
