//! Reading a Hugging Face checkpoint's weights: one `model.safetensors`, or shards listed by
//! `model.safetensors.index.json`. Files are memory-mapped. Each header is checked twice before
//! any tensor is touched: first here ([`check_header`]), so that a malformed file gets an error
//! naming the field and the tensor (the `safetensors` crate's own errors often name neither),
//! then by the `safetensors` crate, which gives the views. Both enforce a header size cap of
//! [`MAX_HEADER`] bytes, contiguous non-overlapping ranges that exactly fill the file, and
//! overflow-checked shapes.

use crate::mapped::MappedFile;
use anyhow::{bail, Context, Result};
use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};
use serde::de::{Deserializer, Error as _, MapAccess, Visitor};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

/// Largest safetensors header accepted, in bytes (the `safetensors` crate's limit). A declared
/// length above it is refused before anything is read or allocated.
pub const MAX_HEADER: u64 = 100_000_000;

/// Element types qgguf reads from checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceDtype {
    F32,
    F16,
    BF16,
}

impl SourceDtype {
    pub fn size(self) -> usize {
        match self {
            SourceDtype::F32 => 4,
            SourceDtype::F16 | SourceDtype::BF16 => 2,
        }
    }
}

/// One tensor of the checkpoint: where its bytes are and what they hold.
#[derive(Clone, Debug)]
pub struct SourceTensor {
    pub name: String,
    /// PyTorch order: outermost first (`[out_features, in_features]`).
    pub shape: Vec<usize>,
    pub dtype: SourceDtype,
    shard: usize,
    /// Byte range inside the shard's map.
    start: usize,
    end: usize,
}

impl SourceTensor {
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }
}

/// All shards of a checkpoint, mapped.
pub struct Checkpoint {
    shards: Vec<(PathBuf, MappedFile)>,
    tensors: BTreeMap<String, SourceTensor>,
}

impl Checkpoint {
    /// Opens `dir/model.safetensors`, or the shards named by `dir/model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Checkpoint> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if single.exists() {
            vec![single]
        } else if index.exists() {
            shard_files(&index)?
        } else {
            bail!(
                "{}: no model.safetensors or model.safetensors.index.json (only safetensors checkpoints are read)",
                dir.display()
            );
        };
        let mut ck = Checkpoint {
            shards: Vec::new(),
            tensors: BTreeMap::new(),
        };
        for path in files {
            ck.add_shard(path)?;
        }
        Ok(ck)
    }

    fn add_shard(&mut self, path: PathBuf) -> Result<()> {
        let map = MappedFile::open(&path).with_context(|| format!("{}", path.display()))?;
        map.advise_sequential();
        let shard = self.shards.len();
        let base = map.as_ptr() as usize;
        check_header(&map).map_err(|what| {
            anyhow::anyhow!("{}: invalid safetensors file: {what}", path.display())
        })?;
        {
            let st = SafeTensors::deserialize(&map).map_err(|e| {
                anyhow::anyhow!("{}: invalid safetensors file: {e}", path.display())
            })?;
            for (name, view) in st.tensors() {
                let dtype = match view.dtype() {
                    Dtype::F32 => SourceDtype::F32,
                    Dtype::F16 => SourceDtype::F16,
                    Dtype::BF16 => SourceDtype::BF16,
                    other => {
                        // Integer buffers (e.g. position_ids) are never weights; skip them. A
                        // weight or bias stored as integers is an error, not a missing tensor.
                        let param = name.ends_with(".weight") || name.ends_with(".bias");
                        if !param
                            && matches!(other, Dtype::I64 | Dtype::I32 | Dtype::U8 | Dtype::BOOL)
                        {
                            continue;
                        }
                        bail!(
                            "{}: tensor '{name}' has dtype {other:?}; only F32, F16 and BF16 weights are read",
                            path.display()
                        )
                    }
                };
                let data = view.data();
                let start = data.as_ptr() as usize - base;
                if self.tensors.contains_key(&name) {
                    bail!("{}: tensor '{name}' appears in two shards", path.display());
                }
                self.tensors.insert(
                    name.clone(),
                    SourceTensor {
                        name,
                        shape: view.shape().to_vec(),
                        dtype,
                        shard,
                        start,
                        end: start + data.len(),
                    },
                );
            }
        }
        self.shards.push((path, map));
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&SourceTensor> {
        self.tensors.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn tensors(&self) -> impl Iterator<Item = &SourceTensor> {
        self.tensors.values()
    }

    /// Tensors shard by shard (shards in file-name order), each shard's by name: the order
    /// llama.cpp's converter writes them in.
    pub fn in_file_order(&self) -> Vec<&SourceTensor> {
        let mut v: Vec<&SourceTensor> = self.tensors.values().collect();
        v.sort_by(|a, b| (a.shard, a.name.as_bytes()).cmp(&(b.shard, b.name.as_bytes())));
        v
    }

    /// Drops a tensor's pages from this process's memory once it has been converted.
    pub fn release(&self, t: &SourceTensor) {
        self.shards[t.shard].1.release(t.start..t.end);
    }

    /// Drops the pages of bytes `[from, to)` of a tensor.
    pub fn release_part(&self, t: &SourceTensor, from: usize, to: usize) {
        self.shards[t.shard]
            .1
            .release(t.start + from..t.start + to.min(t.end - t.start));
    }

    pub fn raw(&self, t: &SourceTensor) -> &[u8] {
        &self.shards[t.shard].1[t.start..t.end]
    }

    /// Elements `[first, first + out.len())` of a tensor (flattened, row-major) as f32.
    pub fn read_f32(&self, t: &SourceTensor, first: usize, out: &mut [f32]) {
        let raw = self.raw(t);
        let size = t.dtype.size();
        let bytes = &raw[first * size..(first + out.len()) * size];
        convert_to_f32(t.dtype, bytes, out);
    }
}

/// Converts little-endian F32/F16/BF16 bytes to f32 (exactly: both halves widen losslessly).
pub fn convert_to_f32(dtype: SourceDtype, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        SourceDtype::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        SourceDtype::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        SourceDtype::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
    }
}

fn shard_files(index: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index).with_context(|| format!("{}", index.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", index.display()))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .with_context(|| format!("{}: no \"weight_map\" object", index.display()))?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut files: Vec<PathBuf> = Vec::new();
    for (tensor, file) in map {
        let file = file.as_str().with_context(|| {
            format!(
                "{}: weight_map[\"{tensor}\"] is not a file name",
                index.display()
            )
        })?;
        if file.contains('/') || file.contains('\\') || file.starts_with('.') {
            bail!(
                "{}: shard name '{file}' must be a plain file name",
                index.display()
            );
        }
        let path = dir.join(file);
        if !files.contains(&path) {
            files.push(path);
        }
    }
    if files.is_empty() {
        bail!("{}: weight_map is empty", index.display());
    }
    // Shards are read in file-name order, as llama.cpp's converter does (it fixes tensor order).
    files.sort();
    Ok(files)
}

/// One tensor's entry in a safetensors header, as the format defines it.
#[derive(Deserialize)]
struct RawEntry {
    dtype: Dtype,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

/// A header's entries in file order, duplicates kept (a JSON map would silently keep the last),
/// each entry's parse error naming its tensor.
struct Entries(Vec<(String, Option<RawEntry>)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Entries, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object of tensor entries")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<Entries, A::Error> {
                let mut out = Vec::new();
                while let Some(name) = m.next_key::<String>()? {
                    if name == "__metadata__" {
                        m.next_value::<HashMap<String, String>>().map_err(|e| {
                            A::Error::custom(format!(
                                "__metadata__ must map names to strings ({e})"
                            ))
                        })?;
                        out.push((name, None));
                    } else {
                        let entry = m
                            .next_value::<RawEntry>()
                            .map_err(|e| A::Error::custom(format!("tensor '{name}': {e}")))?;
                        out.push((name, Some(entry)));
                    }
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Validates a whole safetensors file's header against its size. The error names the field (and
/// the tensor) at fault; the caller adds the file.
pub fn check_header(bytes: &[u8]) -> std::result::Result<(), String> {
    let Some(len) = bytes.get(..8) else {
        return Err(format!(
            "header length: needs 8 bytes, the file has {} (truncated?)",
            bytes.len()
        ));
    };
    let n = u64::from_le_bytes(len.try_into().expect("8 bytes"));
    if n > MAX_HEADER {
        return Err(format!(
            "header length {n} exceeds the limit of {MAX_HEADER} bytes"
        ));
    }
    let rest = (bytes.len() - 8) as u64;
    if n > rest {
        return Err(format!(
            "header length {n} runs past the end of the file ({rest} bytes follow it; truncated?)"
        ));
    }
    let header = &bytes[8..8 + n as usize];
    let text = std::str::from_utf8(header).map_err(|e| {
        format!(
            "header is not valid UTF-8 (at byte {})",
            8 + e.valid_up_to()
        )
    })?;
    let entries: Entries = serde_json::from_str(text).map_err(|e| format!("header: {e}"))?;
    let data_len = rest - n;
    let mut names = HashSet::new();
    let mut ranges: Vec<(u64, u64, &str)> = Vec::new();
    for (name, entry) in &entries.0 {
        if !names.insert(name.as_str()) {
            return Err(format!("tensor '{name}' appears twice in the header"));
        }
        let Some(e) = entry else { continue };
        let (start, end) = e.data_offsets;
        if end < start {
            return Err(format!(
                "tensor '{name}': data_offsets [{start}, {end}] end before they start"
            ));
        }
        if end > data_len {
            return Err(format!(
                "tensor '{name}': data_offsets [{start}, {end}] run past the end of the data ({data_len} bytes; truncated file?)"
            ));
        }
        let bits = e.dtype.bitsize() as u64;
        let need = e
            .shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .and_then(|elems| elems.checked_mul(bits))
            .filter(|b| b.is_multiple_of(8))
            .map(|b| b / 8)
            .ok_or_else(|| {
                format!(
                    "tensor '{name}': shape {:?} of {:?} overflows or does not fill whole bytes",
                    e.shape, e.dtype
                )
            })?;
        if end - start != need {
            return Err(format!(
                "tensor '{name}': data_offsets [{start}, {end}] hold {} bytes, but shape {:?} of {:?} takes {need}",
                end - start,
                e.shape,
                e.dtype
            ));
        }
        ranges.push((start, end, name));
    }
    ranges.sort();
    let mut covered = 0u64;
    let mut last: Option<(u64, u64, &str)> = None;
    for &(start, end, name) in &ranges {
        if start < covered {
            let (ps, pe, pn) = last.expect("an earlier range");
            return Err(format!(
                "tensors '{pn}' and '{name}' overlap (data_offsets [{ps}, {pe}] and [{start}, {end}])"
            ));
        }
        if start > covered {
            return Err(format!(
                "data bytes [{covered}, {start}) belong to no tensor (before tensor '{name}')"
            ));
        }
        covered = end;
        last = Some((start, end, name));
    }
    if covered != data_len {
        return Err(format!(
            "data bytes [{covered}, {data_len}) at the end of the file belong to no tensor"
        ));
    }
    Ok(())
}
