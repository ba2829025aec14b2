//! GGUF v3, the file format of llama.cpp: a validating reader over a memory map (tensor data is
//! borrowed from the map, never copied) and a streaming writer that writes to a temporary file
//! and renames it into place.
//!
//! Why our own parser rather than the gguf-rs crate (0.1.x, read before deciding): it trusts the
//! header. It allocates each string from its 64-bit length before reading it (a length of 2^40 is
//! an out-of-memory abort), indexes a fixed `[u64; 4]` with the file's `n_dims` (a panic for 5),
//! multiplies dimensions unchecked, never checks tensor offsets or sizes against the file, sizes
//! some blocks wrongly (IQ4_NL as 256 elements, Q8_1 as 40 bytes), truncates arrays to 3 elements
//! unless told otherwise, and decodes strings lossily. A model file comes from strangers, so every
//! number in it is checked here first (`tests/gguf_malformed.rs`).

pub mod manifest;
mod parse;
pub mod scan;
pub mod value;
mod write;

pub use parse::{
    parse_header, Header, MAX_ALIGNMENT, MAX_ARRAY_DEPTH, MAX_DIMS, MAX_KV, MAX_STRING,
    MAX_TENSORS, MAX_TENSOR_NAME,
};
pub use value::{Array, Value, ValueType};
pub use write::{GgufWriter, TensorPlan};

use crate::mapped::MappedFile;
use quant_types::{GgmlType, TypeInfo};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const MAGIC: [u8; 4] = *b"GGUF";
pub const VERSION: u32 = 3;
pub const DEFAULT_ALIGNMENT: u64 = 32;
pub const KEY_ALIGNMENT: &str = "general.alignment";

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: malformed GGUF: {what} (at byte {offset})")]
    Malformed {
        path: String,
        offset: u64,
        what: String,
    },
    #[error("{path}: {what}")]
    Metadata { path: String, what: String },
    #[error("{0}")]
    Write(String),
}

/// One tensor's entry in the header.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml's `ne`: innermost (contiguous) dimension first. A PyTorch `[out, in]` weight is
    /// `[in, out]` here.
    pub dims: Vec<u64>,
    pub type_info: TypeInfo,
    /// Offset from the start of the data section.
    pub offset: u64,
    pub nbytes: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// The type, if qgguf can compute with it.
    pub fn ggml_type(&self) -> Option<GgmlType> {
        GgmlType::from_id(self.type_info.id)
    }

    /// Row length (`ne[0]`) and number of rows.
    pub fn rows(&self) -> (usize, usize) {
        let row = self.dims[0] as usize;
        (row, (self.n_elements() / self.dims[0]) as usize)
    }
}

/// An open GGUF file: validated header plus the memory map of its data.
pub struct GgufFile {
    path: PathBuf,
    map: MappedFile,
    pub header: Header,
    keys: HashMap<String, usize>,
    tensor_index: HashMap<String, usize>,
}

impl GgufFile {
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let io = |source| GgufError::Io {
            path: shown.clone(),
            source,
        };
        let map = MappedFile::open(path).map_err(io)?;
        let header = parse_header(&map, map.len() as u64, &shown)?;
        let keys = parse::index_of(&header.metadata);
        let tensor_index = header
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(GgufFile {
            path: path.to_path_buf(),
            map,
            header,
            keys,
            tensor_index,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file_size(&self) -> u64 {
        self.map.len() as u64
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.header.tensors
    }

    pub fn metadata(&self) -> &[(String, Value)] {
        &self.header.metadata
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index
            .get(name)
            .map(|&i| &self.header.tensors[i])
    }

    /// The bytes of a tensor, borrowed from the map (bounds were checked when parsing).
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let start = (self.header.data_offset + t.offset) as usize;
        &self.map[start..start + t.nbytes as usize]
    }

    /// Drops a tensor's pages from this process's memory (streaming jobs call this when done).
    pub fn release(&self, t: &TensorInfo) {
        let start = (self.header.data_offset + t.offset) as usize;
        self.map.release(start..start + t.nbytes as usize);
    }

    /// Drops the pages of bytes `[from, to)` of a tensor's data.
    pub fn release_part(&self, t: &TensorInfo, from: usize, to: usize) {
        let start = (self.header.data_offset + t.offset) as usize;
        self.map
            .release(start + from..start + to.min(t.nbytes as usize));
    }

    /// Drops the pages around bytes `[from, to)` of a tensor's data, out to the 2 MiB
    /// boundaries of the file (clamped to the tensor): the page cache may hold the file in 2 MiB
    /// folios and map a whole folio on the first touch of any of its pages.
    pub fn release_folios_around(&self, t: &TensorInfo, from: usize, to: usize) {
        const FOLIO: usize = 2 << 20;
        let start = (self.header.data_offset + t.offset) as usize;
        let lo = ((start + from) / FOLIO * FOLIO).saturating_sub(start);
        let hi = (start + to).div_ceil(FOLIO).saturating_mul(FOLIO) - start;
        self.release_part(t, lo, hi);
    }

    pub fn advise_sequential(&self) {
        self.map.advise_sequential();
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.keys.get(key).map(|&i| &self.header.metadata[i].1)
    }

    fn meta_err(&self, what: String) -> GgufError {
        GgufError::Metadata {
            path: self.path.display().to_string(),
            what,
        }
    }

    fn required<'a>(&'a self, key: &str) -> Result<&'a Value, GgufError> {
        self.get(key)
            .ok_or_else(|| self.meta_err(format!("metadata key '{key}' is missing")))
    }

    fn typed<'a, T>(
        &'a self,
        key: &str,
        want: &str,
        f: impl Fn(&'a Value) -> Option<T>,
    ) -> Result<T, GgufError> {
        let v = self.required(key)?;
        f(v).ok_or_else(|| {
            self.meta_err(format!(
                "metadata key '{key}' must be {want}, found {} ({v})",
                v.value_type().name()
            ))
        })
    }

    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        self.typed(key, "a non-negative integer", Value::as_u64)
    }

    pub fn get_usize(&self, key: &str) -> Result<usize, GgufError> {
        self.typed(key, "a non-negative integer", |v| {
            v.as_u64().and_then(|x| usize::try_from(x).ok())
        })
    }

    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        self.typed(key, "a float", Value::as_f32)
    }

    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        self.typed(key, "a string", Value::as_str)
    }

    pub fn get_array(&self, key: &str) -> Result<&Array, GgufError> {
        self.typed(key, "an array", Value::as_array)
    }

    pub fn architecture(&self) -> Result<&str, GgufError> {
        self.get_str("general.architecture")
    }
}
