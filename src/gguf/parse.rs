//! The GGUF header parser. The header is untrusted: every count, length, offset, type id,
//! dimension product and alignment is checked against the bytes actually present before it is
//! used to allocate or index, so a malformed file yields an error naming the field, never a
//! panic, a huge allocation or an out-of-bounds read.

use super::value::{Array, Value, ValueType};
use super::{GgufError, TensorInfo, DEFAULT_ALIGNMENT, KEY_ALIGNMENT, MAGIC};
use quant_types::TypeInfo;
use std::collections::{HashMap, HashSet};

/// Largest number of tensors accepted (llama.cpp models have at most a few thousand).
pub const MAX_TENSORS: u64 = 1 << 20;
/// Largest number of metadata pairs accepted.
pub const MAX_KV: u64 = 1 << 20;
/// Longest string accepted (a key, a value or an array element).
pub const MAX_STRING: u64 = 64 << 20;
/// Longest tensor name accepted: ggml's GGML_MAX_NAME (64) minus the terminating zero.
pub const MAX_TENSOR_NAME: usize = 63;
/// Most dimensions of a tensor (ggml's GGML_MAX_DIMS).
pub const MAX_DIMS: u32 = 4;
/// Deepest nesting of arrays accepted.
pub const MAX_ARRAY_DEPTH: u32 = 4;
/// Largest alignment accepted.
pub const MAX_ALIGNMENT: u64 = 1 << 20;

/// Everything before the tensor data: version, metadata in file order, tensor infos, and where
/// the data section starts.
#[derive(Debug, Clone)]
pub struct Header {
    pub version: u32,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    source: &'a str,
}

impl<'a> Cursor<'a> {
    fn err(&self, what: impl Into<String>) -> GgufError {
        GgufError::Malformed {
            path: self.source.to_string(),
            offset: self.pos as u64,
            what: what.into(),
        }
    }

    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(self.err(format!(
                "{}: needs {n} bytes, only {} left in the file (truncated?)",
                what(),
                self.remaining()
            )));
        }
        let s = &self.bytes[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N], GgufError> {
        Ok(self.take(N as u64, what)?.try_into().expect("length taken"))
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, GgufError> {
        let len = self.u64(&|| format!("{}: string length", what()))?;
        if len > MAX_STRING {
            return Err(self.err(format!(
                "{}: string length {len} exceeds the limit of {MAX_STRING} bytes",
                what()
            )));
        }
        let raw = self.take(len, &|| format!("{}: string of {len} bytes", what()))?;
        String::from_utf8(raw.to_vec())
            .map_err(|_| self.err(format!("{}: string is not valid UTF-8", what())))
    }

    /// Checks that `count` elements of at least `min_size` bytes each can fit in what is left,
    /// before anything is allocated for them.
    fn check_count(
        &self,
        count: u64,
        min_size: u64,
        what: &dyn Fn() -> String,
    ) -> Result<usize, GgufError> {
        match count.checked_mul(min_size) {
            Some(need) if need <= self.remaining() => Ok(count as usize),
            _ => Err(self.err(format!(
                "{}: count {count} cannot fit in the {} bytes left in the file",
                what(),
                self.remaining()
            ))),
        }
    }

    fn value(
        &mut self,
        ty: ValueType,
        depth: u32,
        what: &dyn Fn() -> String,
    ) -> Result<Value, GgufError> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>(what)?[0]),
            ValueType::I8 => Value::I8(self.array::<1>(what)?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            ValueType::U32 => Value::U32(u32::from_le_bytes(self.array(what)?)),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            ValueType::U64 => Value::U64(u64::from_le_bytes(self.array(what)?)),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            ValueType::Bool => {
                let b = self.array::<1>(what)?[0];
                if b > 1 {
                    return Err(self.err(format!("{}: bool byte is {b}, not 0 or 1", what())));
                }
                Value::Bool(b == 1)
            }
            ValueType::String => Value::String(self.string(what)?),
            ValueType::Array => Value::Array(self.array_value(depth, what)?),
        })
    }

    fn array_value(&mut self, depth: u32, what: &dyn Fn() -> String) -> Result<Array, GgufError> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(self.err(format!(
                "{}: arrays nested deeper than {MAX_ARRAY_DEPTH}",
                what()
            )));
        }
        let type_id = self.u32(&|| format!("{}: array element type", what()))?;
        let ty = ValueType::from_id(type_id)
            .ok_or_else(|| self.err(format!("{}: unknown array element type {type_id}", what())))?;
        let count = self.u64(&|| format!("{}: array length", what()))?;
        let n = self.check_count(count, ty.min_size(), &|| format!("{}: array", what()))?;
        macro_rules! fixed {
            ($variant:ident, $t:ty) => {{
                let raw = self.take((n * std::mem::size_of::<$t>()) as u64, what)?;
                Array::$variant(
                    raw.chunks_exact(std::mem::size_of::<$t>())
                        .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk size")))
                        .collect(),
                )
            }};
        }
        Ok(match ty {
            ValueType::U8 => Array::U8(self.take(n as u64, what)?.to_vec()),
            ValueType::I8 => Array::I8(
                self.take(n as u64, what)?
                    .iter()
                    .map(|&b| b as i8)
                    .collect(),
            ),
            ValueType::U16 => fixed!(U16, u16),
            ValueType::I16 => fixed!(I16, i16),
            ValueType::U32 => fixed!(U32, u32),
            ValueType::I32 => fixed!(I32, i32),
            ValueType::F32 => fixed!(F32, f32),
            ValueType::U64 => fixed!(U64, u64),
            ValueType::I64 => fixed!(I64, i64),
            ValueType::F64 => fixed!(F64, f64),
            ValueType::Bool => {
                let raw = self.take(n as u64, what)?;
                if let Some(i) = raw.iter().position(|&b| b > 1) {
                    return Err(self.err(format!("{}: element {i} is not a bool", what())));
                }
                Array::Bool(raw.iter().map(|&b| b == 1).collect())
            }
            ValueType::String => {
                let mut v = Vec::with_capacity(n);
                for i in 0..n {
                    v.push(self.string(&|| format!("{}[{i}]", what()))?);
                }
                Array::String(v)
            }
            ValueType::Array => {
                let mut v = Vec::with_capacity(n);
                for i in 0..n {
                    v.push(self.array_value(depth + 1, &|| format!("{}[{i}]", what()))?);
                }
                Array::Array(v)
            }
        })
    }
}

/// Parses and validates a GGUF header. `bytes` is the whole file (or at least its header);
/// `file_len` is the file's size, against which tensor data ranges are checked. `source` names
/// the file in errors.
pub fn parse_header(bytes: &[u8], file_len: u64, source: &str) -> Result<Header, GgufError> {
    let mut c = Cursor {
        bytes,
        pos: 0,
        source,
    };
    let magic = c.array::<4>(&|| "magic".into())?;
    if magic != MAGIC {
        return Err(c.err(format!(
            "not a GGUF file: magic is {:?}, expected \"GGUF\"",
            String::from_utf8_lossy(&magic)
        )));
    }
    let version = c.u32(&|| "version".into())?;
    match version {
        2 | 3 => {}
        1 => return Err(c.err("GGUF version 1 is not supported (re-convert the model)")),
        v if v.swap_bytes() <= 3 => {
            return Err(c.err(format!(
                "version {v} looks byte-swapped: big-endian GGUF files are not supported"
            )))
        }
        v => return Err(c.err(format!("unsupported GGUF version {v} (2 and 3 are read)"))),
    }
    let n_tensors = c.u64(&|| "tensor count".into())?;
    let n_kv = c.u64(&|| "metadata count".into())?;
    if n_tensors > MAX_TENSORS {
        return Err(c.err(format!(
            "tensor count {n_tensors} exceeds the limit of {MAX_TENSORS}"
        )));
    }
    if n_kv > MAX_KV {
        return Err(c.err(format!(
            "metadata count {n_kv} exceeds the limit of {MAX_KV}"
        )));
    }
    // A pair takes at least 8 (key length) + 1 (key) + 4 (type) + 1 (value) bytes.
    let n_kv = c.check_count(n_kv, 14, &|| "metadata count".into())?;

    let mut metadata = Vec::with_capacity(n_kv);
    let mut seen = HashSet::with_capacity(n_kv);
    for i in 0..n_kv {
        let key = c.string(&|| format!("metadata pair {i}: key"))?;
        if key.is_empty() {
            return Err(c.err(format!("metadata pair {i}: empty key")));
        }
        if !seen.insert(key.clone()) {
            return Err(c.err(format!("metadata key '{key}' appears twice")));
        }
        let type_id = c.u32(&|| format!("key '{key}': value type"))?;
        let ty = ValueType::from_id(type_id)
            .ok_or_else(|| c.err(format!("key '{key}': unknown value type {type_id}")))?;
        let value = c.value(ty, 0, &|| format!("key '{key}'"))?;
        metadata.push((key, value));
    }

    let alignment = match metadata.iter().find(|(k, _)| k == KEY_ALIGNMENT) {
        None => DEFAULT_ALIGNMENT,
        Some((_, Value::U32(a))) => {
            let a = *a as u64;
            if a == 0 || !a.is_power_of_two() || a > MAX_ALIGNMENT {
                return Err(c.err(format!(
                    "key '{KEY_ALIGNMENT}': alignment {a} is not a power of two up to {MAX_ALIGNMENT}"
                )));
            }
            a
        }
        Some((_, v)) => {
            return Err(c.err(format!(
                "key '{KEY_ALIGNMENT}' must be u32, found {}",
                v.value_type().name()
            )))
        }
    };

    // A tensor info takes at least 8 + 1 (name) + 4 (n_dims) + 8 (one dim) + 4 (type) + 8.
    let n_tensors = c.check_count(n_tensors, 33, &|| "tensor count".into())?;
    let mut tensors = Vec::with_capacity(n_tensors);
    let mut names = HashSet::with_capacity(n_tensors);
    for i in 0..n_tensors {
        let name = c.string(&|| format!("tensor {i}: name"))?;
        if name.is_empty() || name.len() > MAX_TENSOR_NAME {
            return Err(c.err(format!(
                "tensor {i}: name '{name}' must be 1 to {MAX_TENSOR_NAME} bytes long"
            )));
        }
        if !names.insert(name.clone()) {
            return Err(c.err(format!("tensor name '{name}' appears twice")));
        }
        let n_dims = c.u32(&|| format!("tensor '{name}': n_dims"))?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(c.err(format!(
                "tensor '{name}': n_dims is {n_dims}, must be 1 to {MAX_DIMS}"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        let mut elems: u64 = 1;
        for d in 0..n_dims {
            let ne = c.u64(&|| format!("tensor '{name}': dimension {d}"))?;
            if ne == 0 || ne > i64::MAX as u64 {
                return Err(c.err(format!(
                    "tensor '{name}': dimension {d} is {ne}, must be 1 to 2^63-1"
                )));
            }
            elems = elems
                .checked_mul(ne)
                .filter(|&e| e <= i64::MAX as u64)
                .ok_or_else(|| {
                    c.err(format!(
                        "tensor '{name}': element count overflows (dimensions {dims:?}, {ne})"
                    ))
                })?;
            dims.push(ne);
        }
        let type_id = c.u32(&|| format!("tensor '{name}': type"))?;
        let info = TypeInfo::of_id(type_id)
            .ok_or_else(|| c.err(format!("tensor '{name}': unknown ggml type id {type_id}")))?;
        if dims[0] % info.block_elems as u64 != 0 {
            return Err(c.err(format!(
                "tensor '{name}': row length {} is not a multiple of the {} block size {}",
                dims[0], info.name, info.block_elems
            )));
        }
        let nbytes = info.bytes_for(elems).ok_or_else(|| {
            c.err(format!(
                "tensor '{name}': byte size of {elems} {} elements overflows",
                info.name
            ))
        })?;
        let offset = c.u64(&|| format!("tensor '{name}': offset"))?;
        if offset % alignment != 0 {
            return Err(c.err(format!(
                "tensor '{name}': offset {offset} is not a multiple of the alignment {alignment}"
            )));
        }
        tensors.push(TensorInfo {
            name,
            dims,
            type_info: info,
            offset,
            nbytes,
        });
    }

    let header_end = c.pos as u64;
    let data_offset = header_end.div_ceil(alignment) * alignment;
    let data_len = file_len.saturating_sub(data_offset);
    if !tensors.is_empty() && data_offset > file_len {
        return Err(c.err(format!(
            "data section would start at {data_offset}, past the end of the file ({file_len} bytes)"
        )));
    }
    check_ranges(&tensors, data_len).map_err(|what| c.err(what))?;
    Ok(Header {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
    })
}

/// Every tensor lies inside the data section, and no two overlap.
fn check_ranges(tensors: &[TensorInfo], data_len: u64) -> Result<(), String> {
    for t in tensors {
        match t.offset.checked_add(t.nbytes) {
            Some(end) if end <= data_len => {}
            _ => {
                return Err(format!(
                    "tensor '{}': data [{}, +{}) runs past the end of the data section ({} bytes; truncated file?)",
                    t.name, t.offset, t.nbytes, data_len
                ))
            }
        }
    }
    let mut by_offset: Vec<&TensorInfo> = tensors.iter().collect();
    by_offset.sort_by_key(|t| t.offset);
    for pair in by_offset.windows(2) {
        if pair[0].offset + pair[0].nbytes > pair[1].offset {
            return Err(format!(
                "tensors '{}' and '{}' overlap in the data section",
                pair[0].name, pair[1].name
            ));
        }
    }
    Ok(())
}

/// Looks a key up in parsed metadata.
pub(crate) fn index_of(metadata: &[(String, Value)]) -> HashMap<String, usize> {
    metadata
        .iter()
        .enumerate()
        .map(|(i, (k, _))| (k.clone(), i))
        .collect()
}
