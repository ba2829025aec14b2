//! The GGUF v3 writer. Tensor infos are declared first (their sizes follow from shape and type),
//! so the header, with every offset, is written before any tensor data; data is then streamed
//! tensor by tensor, never held in memory as a whole. Output goes to a temporary file beside the
//! target, which is synced and renamed into place only once complete: a crash leaves the target
//! untouched.

use super::value::{Array, Value, ValueType};
use super::{GgufError, DEFAULT_ALIGNMENT, KEY_ALIGNMENT, MAGIC, MAX_TENSOR_NAME, VERSION};
use quant_types::TypeInfo;
use std::io::{self, BufWriter, Write};
use std::path::Path;

/// A tensor declared to the writer.
#[derive(Debug, Clone)]
pub struct TensorPlan {
    pub name: String,
    /// ggml order: innermost dimension first.
    pub dims: Vec<u64>,
    pub type_info: TypeInfo,
    pub nbytes: u64,
    /// Offset within the data section.
    pub offset: u64,
}

#[derive(Debug, Clone)]
pub struct GgufWriter {
    alignment: u64,
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorPlan>,
    data_size: u64,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

fn err(what: impl Into<String>) -> GgufError {
    GgufError::Write(what.into())
}

impl GgufWriter {
    pub fn new() -> GgufWriter {
        GgufWriter {
            alignment: DEFAULT_ALIGNMENT,
            metadata: Vec::new(),
            tensors: Vec::new(),
            data_size: 0,
        }
    }

    /// Sets a metadata value, replacing an earlier one of the same key in place (keys keep the
    /// order of their first setting). `general.alignment` also changes the data alignment.
    pub fn set(&mut self, key: &str, value: impl Into<Value>) -> Result<(), GgufError> {
        let value = value.into();
        if key.is_empty() {
            return Err(err("metadata key is empty"));
        }
        if key == KEY_ALIGNMENT {
            let a = match value {
                Value::U32(a) if a.is_power_of_two() => a as u64,
                _ => return Err(err(format!("{KEY_ALIGNMENT} must be a u32 power of two"))),
            };
            if !self.tensors.is_empty() {
                return Err(err("set the alignment before adding tensors"));
            }
            self.alignment = a;
        }
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.metadata.push((key.to_string(), value)),
        }
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn remove(&mut self, key: &str) {
        self.metadata.retain(|(k, _)| k != key);
    }

    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    pub fn tensors(&self) -> &[TensorPlan] {
        &self.tensors
    }

    /// Declares the next tensor. Data must later be supplied in declaration order.
    pub fn add_tensor(
        &mut self,
        name: &str,
        dims: &[u64],
        type_info: TypeInfo,
    ) -> Result<(), GgufError> {
        if name.is_empty() || name.len() > MAX_TENSOR_NAME {
            return Err(err(format!(
                "tensor name '{name}' must be 1 to {MAX_TENSOR_NAME} bytes long"
            )));
        }
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(err(format!("tensor '{name}' added twice")));
        }
        if dims.is_empty() || dims.len() > 4 || dims.contains(&0) {
            return Err(err(format!("tensor '{name}': bad dimensions {dims:?}")));
        }
        let elems = dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .ok_or_else(|| err(format!("tensor '{name}': element count overflows")))?;
        if !dims[0].is_multiple_of(type_info.block_elems as u64) {
            return Err(err(format!(
                "tensor '{name}': row length {} is not a multiple of the {} block size {}",
                dims[0], type_info.name, type_info.block_elems
            )));
        }
        let nbytes = type_info
            .bytes_for(elems)
            .ok_or_else(|| err(format!("tensor '{name}': size overflows")))?;
        let offset = self.data_size;
        self.data_size = offset + nbytes.div_ceil(self.alignment) * self.alignment;
        self.tensors.push(TensorPlan {
            name: name.to_string(),
            dims: dims.to_vec(),
            type_info,
            nbytes,
            offset,
        });
        Ok(())
    }

    /// The complete header, padded to the start of the data section.
    pub fn header_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_string(&mut out, key);
            out.extend_from_slice(&(value.value_type() as u32).to_le_bytes());
            put_value(&mut out, value);
        }
        for t in &self.tensors {
            put_string(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.type_info.id.to_le_bytes());
            out.extend_from_slice(&t.offset.to_le_bytes());
        }
        let padded = (out.len() as u64).div_ceil(self.alignment) * self.alignment;
        out.resize(padded as usize, 0);
        out
    }

    /// Total size of the file this writer produces.
    pub fn file_size(&self) -> u64 {
        self.header_bytes().len() as u64 + self.data_size
    }

    /// Writes the file: header, then for each declared tensor in order, what `fill` writes for it
    /// (exactly its `nbytes`, checked), padded to the alignment. The result appears at `path`
    /// only when complete.
    pub fn write_file(
        &self,
        path: &Path,
        mut fill: impl FnMut(usize, &TensorPlan, &mut dyn Write) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let tmp = crate::atomic_file::temp_beside(path)?;
        let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file());
        self.write_to(&mut w, &mut fill)?;
        w.flush()?;
        drop(w);
        crate::atomic_file::persist(tmp, path)?;
        Ok(())
    }

    /// Writes header and data to any writer (used by `write_file` and by tests in memory).
    pub fn write_to(
        &self,
        w: &mut dyn Write,
        fill: &mut dyn FnMut(usize, &TensorPlan, &mut dyn Write) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        w.write_all(&self.header_bytes())?;
        let zeros = vec![0u8; self.alignment as usize];
        for (i, t) in self.tensors.iter().enumerate() {
            let mut counted = CountingWriter {
                inner: w,
                written: 0,
            };
            fill(i, t, &mut counted)?;
            if counted.written != t.nbytes {
                anyhow::bail!(
                    "tensor '{}': {} bytes were written, {} were declared",
                    t.name,
                    counted.written,
                    t.nbytes
                );
            }
            let pad = (t.nbytes.div_ceil(self.alignment) * self.alignment - t.nbytes) as usize;
            w.write_all(&zeros[..pad])?;
        }
        Ok(())
    }
}

struct CountingWriter<'a> {
    inner: &'a mut dyn Write,
    written: u64,
}

impl Write for CountingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => put_string(out, s),
        Value::Array(a) => put_array(out, a),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

fn put_array(out: &mut Vec<u8>, a: &Array) {
    out.extend_from_slice(&(a.elem_type() as u32).to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! each {
        ($v:expr) => {
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match a {
        Array::U8(v) => out.extend_from_slice(v),
        Array::I8(v) => out.extend(v.iter().map(|&x| x as u8)),
        Array::U16(v) => each!(v),
        Array::I16(v) => each!(v),
        Array::U32(v) => each!(v),
        Array::I32(v) => each!(v),
        Array::F32(v) => each!(v),
        Array::U64(v) => each!(v),
        Array::I64(v) => each!(v),
        Array::F64(v) => each!(v),
        Array::Bool(v) => out.extend(v.iter().map(|&x| x as u8)),
        Array::String(v) => v.iter().for_each(|s| put_string(out, s)),
        Array::Array(v) => v.iter().for_each(|inner| put_array(out, inner)),
    }
}

// The value-type ids used above must be GGUF's; `ValueType` carries them as discriminants.
const _: () = assert!(ValueType::Array as u32 == 9 && ValueType::F64 as u32 == 12);
