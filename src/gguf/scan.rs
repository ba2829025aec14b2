//! A file's weights checked for values no model can compute with: NaN and infinities in float
//! tensors, non-finite block scales in quantized ones (which poison their block), and norms or
//! biases of a magnitude no trained model has. Broken files exist in the wild and load without
//! complaint in llama.cpp; a model with them prints garbage. Every path that loads weights
//! (qrun on the CPU and with -ngl; qconvert when it requantizes or exports a GGUF) scans first;
//! `qconvert info FILE --check` runs the scan alone.

use super::{GgufFile, TensorInfo};
use quant_types::scan::{self, Scan};
use quant_types::GgmlType;
use rayon::prelude::*;
use serde_json::json;

/// Largest magnitude accepted in a 1-D tensor (a norm's scale or shift, a bias) in F32 or BF16.
/// Trained models keep these within a few thousand (the largest RMSNorm scales of Qwen2 and
/// Llama models are in the tens to hundreds), and f16 cannot exceed 65504, so 1e6 flags only
/// values that are garbage (such as the 3e38 of the broken files that prompted this check)
/// while leaving three orders of magnitude for unusual models.
pub const MAX_NORM_MAGNITUDE: f32 = 1e6;

/// Bytes scanned per task of a large tensor.
const CHUNK_BYTES: usize = 4 << 20;

/// What was wrong with one tensor.
#[derive(Clone, Debug)]
pub struct TensorFinding {
    pub name: String,
    /// Where its data starts in the file's data section (findings are reported in file order).
    pub offset: u64,
    pub type_name: &'static str,
    /// Counts are of blocks (quantized types) rather than elements.
    pub blocks: bool,
    pub scan: Scan,
    /// A norm or bias above [`MAX_NORM_MAGNITUDE`].
    pub absurd: bool,
}

impl TensorFinding {
    /// One line, e.g. "blk.0.attn_norm.weight: 12 NaN, max |x| 2.9e38".
    pub fn describe(&self) -> String {
        let s = &self.scan;
        let mut parts = Vec::new();
        if self.blocks {
            if s.bad_blocks > 0 {
                parts.push(format!(
                    "{} of {} blocks with non-finite scales ({} NaN, {} Inf)",
                    s.bad_blocks, s.units, s.nan, s.inf
                ));
            }
        } else {
            if s.nan > 0 {
                parts.push(format!("{} NaN", s.nan));
            }
            if s.inf > 0 {
                parts.push(format!("{} Inf", s.inf));
            }
        }
        if self.absurd || !self.blocks {
            parts.push(format!("max |x| {:.1e}", s.max_abs));
        }
        if self.absurd {
            parts.push(format!(
                "above {MAX_NORM_MAGNITUDE:.0e}, which no norm or bias of a trained model reaches"
            ));
        }
        format!("{} ({}): {}", self.name, self.type_name, parts.join(", "))
    }
}

/// The scan of a whole file.
#[derive(Clone, Debug, Default)]
pub struct ScanReport {
    /// Tensors scanned (those of types qgguf computes with).
    pub tensors: usize,
    pub bytes: u64,
    /// Offending tensors, in file order.
    pub findings: Vec<TensorFinding>,
}

impl ScanReport {
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }

    /// The error text: the first five offending tensors and how many there are.
    pub fn summary(&self, file: &str) -> String {
        let mut s = format!(
            "{file}: {} of {} tensors hold non-finite or absurd values (a model with them computes garbage):",
            self.findings.len(),
            self.tensors
        );
        for f in self.findings.iter().take(5) {
            s.push_str("\n  ");
            s.push_str(&f.describe());
        }
        if self.findings.len() > 5 {
            s.push_str(&format!("\n  and {} more", self.findings.len() - 5));
        }
        s
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "clean": self.is_clean(),
            "tensors": self.tensors,
            "bytes": self.bytes,
            "max_norm_magnitude": MAX_NORM_MAGNITUDE,
            "findings": self.findings.iter().map(|f| json!({
                "tensor": f.name,
                "type": f.type_name,
                "unit": if f.blocks { "blocks" } else { "elements" },
                "units": f.scan.units,
                "nan": f.scan.nan,
                "inf": f.scan.inf,
                "bad_blocks": f.scan.bad_blocks,
                "max_abs": f.scan.max_abs,
                "absurd": f.absurd,
                "message": f.describe(),
            })).collect::<Vec<_>>(),
        })
    }
}

/// Scans one tensor's bytes (whole units, in parallel chunks).
pub fn scan_tensor(ty: GgmlType, data: &[u8]) -> Scan {
    let unit = ty.block_bytes().max(1);
    let chunk = (CHUNK_BYTES / unit).max(1) * unit;
    data.par_chunks(chunk)
        .map(|c| scan::scan(ty, c))
        .reduce(Scan::default, |mut a, b| {
            a.merge(&b);
            a
        })
}

pub fn finding(info: &TensorInfo, ty: GgmlType, s: Scan) -> Option<TensorFinding> {
    let blocks = ty.block_elems() > 1;
    let one_d = info.dims.len() == 1;
    let absurd = one_d && !blocks && s.max_abs > MAX_NORM_MAGNITUDE;
    (s.non_finite() || absurd).then(|| TensorFinding {
        name: info.name.clone(),
        offset: info.offset,
        type_name: ty.name(),
        blocks,
        scan: s,
        absurd,
    })
}

/// Scans every tensor of `f` whose type qgguf computes with. With `release`, each tensor's
/// pages of the map are handed back once scanned (so the scan adds no resident memory).
pub fn scan_file(f: &GgufFile, release: bool) -> ScanReport {
    let results: Vec<(Option<TensorFinding>, u64)> = f
        .tensors()
        .par_iter()
        .filter_map(|info| {
            let ty = info.ggml_type()?;
            let data = f.tensor_data(info);
            let s = scan_tensor(ty, data);
            if release {
                f.release(info);
            }
            Some((finding(info, ty, s), data.len() as u64))
        })
        .collect();
    ScanReport {
        tensors: results.len(),
        bytes: results.iter().map(|r| r.1).sum(),
        findings: results.into_iter().filter_map(|r| r.0).collect(),
    }
}

/// The scans of the tensors a model load reads, as its loaders record them (each tensor once,
/// also when two backends load it). The scan runs where the weights are read anyway (the CPU's
/// packing, vectors); weights no backend reads at load (used in place, uploaded, lookup
/// tables) are deferred to one parallel pass in [`ScanLog::report`], when every core is free
/// (inside a layer's load the scan would run on one core while the others pack).
#[derive(Default)]
pub struct ScanLog {
    inner: std::sync::Mutex<Log>,
}

#[derive(Default)]
struct Log {
    seen: std::collections::HashSet<String>,
    report: ScanReport,
    deferred: Vec<(TensorInfo, GgmlType)>,
}

impl ScanLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn record(&self, info: &TensorInfo, ty: GgmlType, s: Scan) {
        let mut g = self.lock();
        if !g.seen.insert(info.name.clone()) {
            return;
        }
        g.report.tensors += 1;
        g.report.bytes += info.nbytes;
        if let Some(f) = finding(info, ty, s) {
            g.report.findings.push(f);
        }
    }

    /// Tensor `info`, which no backend read, to be scanned by [`ScanLog::report`].
    pub fn defer(&self, info: &TensorInfo, ty: GgmlType) {
        let mut g = self.lock();
        if g.seen.insert(info.name.clone()) {
            g.deferred.push((info.clone(), ty));
        }
    }

    /// Scans what was deferred (in chunks over every core, each tensor's pages handed back
    /// once scanned: what computes with them in place reads them again from the page cache),
    /// then reports, offending tensors in file order.
    pub fn report(&self, f: &GgufFile) -> ScanReport {
        let deferred = std::mem::take(&mut self.lock().deferred);
        let scans: Vec<Scan> = deferred
            .par_iter()
            .map(|(info, ty)| {
                let s = scan_tensor(*ty, f.tensor_data(info));
                f.release(info);
                s
            })
            .collect();
        let mut g = self.lock();
        for ((info, ty), s) in deferred.iter().zip(scans) {
            g.report.tensors += 1;
            g.report.bytes += info.nbytes;
            if let Some(found) = finding(info, *ty, s) {
                g.report.findings.push(found);
            }
        }
        let mut r = g.report.clone();
        r.findings.sort_by_key(|x| x.offset);
        r
    }
}
