//! A conversion plan: the output file's metadata and, for every output tensor, its GGUF name,
//! shape, where its values come from and which type it is written in. Building the plan reads no
//! tensor data, so `--dry-run` is instant and the writer can lay out the header first.

use super::safetensors_in::{Checkpoint, SourceTensor};
use crate::gguf::{GgufFile, TensorInfo, Value};
use quant_types::{dynamic, GgmlType};

/// Where a tensor's values come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A checkpoint tensor, read in its own row-major order (for a 2-D weight, PyTorch's
    /// `[out, in]` is exactly GGUF's rows of `ne[0] = in`).
    Checkpoint(SourceTensor),
    /// A tensor of a GGUF file (requantization).
    Gguf(TensorInfo),
    /// Values computed while planning (small tensors only).
    Owned(Vec<f32>),
}

#[derive(Clone, Debug)]
pub struct PlannedTensor {
    pub name: String,
    /// ggml order: innermost dimension first.
    pub dims: Vec<u64>,
    pub source: Source,
    /// The type the values are stored in at the source (F32 for computed values), which some
    /// rules consult (llama-quantize keeps a tensor as it is when not quantizing it).
    pub source_type: GgmlType,
    /// The type written, chosen by the tensor-type mix.
    pub out_type: GgmlType,
}

impl PlannedTensor {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    pub fn row_len(&self) -> usize {
        self.dims[0] as usize
    }

    pub fn n_rows(&self) -> usize {
        (self.n_elements() / self.dims[0]) as usize
    }

    pub fn out_bytes(&self) -> u64 {
        self.out_type
            .info()
            .bytes_for(self.n_elements())
            .expect("planned types fit their rows")
    }
}

/// Everything the writer needs.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<PlannedTensor>,
}

impl Plan {
    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        let value = value.into();
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.metadata.push((key.to_string(), value)),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn total_out_bytes(&self) -> u64 {
        self.tensors.iter().map(PlannedTensor::out_bytes).sum()
    }

    pub fn total_elements(&self) -> u64 {
        self.tensors.iter().map(PlannedTensor::n_elements).sum()
    }
}

/// The files planned tensors read from.
pub enum Inputs<'a> {
    Checkpoint(&'a Checkpoint),
    Gguf(&'a GgufFile),
}

impl Inputs<'_> {
    /// Reads rows `[row0, row0 + n)` of a planned tensor as f32 into `out`
    /// (`out.len() == n * row_len`).
    pub fn read_rows(&self, t: &PlannedTensor, row0: usize, out: &mut [f32]) -> anyhow::Result<()> {
        let row = t.row_len();
        let first = row0 * row;
        match (&t.source, self) {
            (Source::Checkpoint(st), Inputs::Checkpoint(ck)) => ck.read_f32(st, first, out),
            (Source::Gguf(info), Inputs::Gguf(f)) => {
                let ty = info.ggml_type().ok_or_else(|| {
                    anyhow::anyhow!(
                        "{}: tensor '{}' has type {}, which qgguf cannot read",
                        f.path().display(),
                        info.name,
                        info.type_info.name
                    )
                })?;
                let row_bytes = ty.row_bytes(row).expect("validated when parsing");
                let data = f.tensor_data(info);
                let n_rows = out.len() / row;
                let bytes = &data[row0 * row_bytes..(row0 + n_rows) * row_bytes];
                dynamic::dequantize(ty, bytes, out)?;
            }
            (Source::Owned(v), _) => out.copy_from_slice(&v[first..first + out.len()]),
            _ => anyhow::bail!("tensor '{}': source does not match the input", t.name),
        }
        Ok(())
    }

    /// Hands back the memory of a tensor's source pages once it has been written.
    pub fn release(&self, t: &PlannedTensor) {
        match (&t.source, self) {
            (Source::Checkpoint(st), Inputs::Checkpoint(ck)) => ck.release(st),
            (Source::Gguf(info), Inputs::Gguf(f)) => f.release(info),
            _ => {}
        }
    }

    /// Hands back the memory of the source bytes `[from, to)` of a tensor (offsets within its
    /// stored data), for tensors streamed in chunks.
    pub fn release_bytes(&self, t: &PlannedTensor, from: usize, to: usize) {
        match (&t.source, self) {
            (Source::Checkpoint(st), Inputs::Checkpoint(ck)) => ck.release_part(st, from, to),
            (Source::Gguf(info), Inputs::Gguf(f)) => f.release_part(info, from, to),
            _ => {}
        }
    }

    /// Bytes one row of a tensor takes at its source.
    pub fn source_row_bytes(&self, t: &PlannedTensor) -> usize {
        match &t.source {
            Source::Checkpoint(st) => t.row_len() * st.dtype.size(),
            Source::Gguf(info) => {
                info.type_info.bytes_for(t.row_len() as u64).unwrap_or(0) as usize
            }
            Source::Owned(_) => 0,
        }
    }

    /// The stored bytes of a tensor when they can be copied as they are: the type written is
    /// the type stored at the source.
    pub fn raw_if_unchanged<'s>(&'s self, t: &PlannedTensor) -> Option<&'s [u8]> {
        match (&t.source, self) {
            (Source::Gguf(info), Inputs::Gguf(f)) if info.ggml_type() == Some(t.out_type) => {
                Some(f.tensor_data(info))
            }
            (Source::Checkpoint(st), Inputs::Checkpoint(ck))
                if super::hf_arch::checkpoint_type(st) == t.out_type =>
            {
                Some(ck.raw(st))
            }
            _ => None,
        }
    }
}
