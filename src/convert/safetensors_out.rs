//! A streaming safetensors writer: the header (names, dtypes, shapes, offsets) first, then each
//! tensor's values as they are produced, never the whole model in memory; written to a
//! temporary file and renamed into place when complete.

use anyhow::Result;
use half::{bf16, f16};
use serde_json::{json, Map, Value as Json};
use std::io::{BufWriter, Write};
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StDtype {
    F32,
    F16,
    BF16,
}

impl StDtype {
    pub fn parse(s: &str) -> Result<StDtype> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => StDtype::F32,
            "f16" | "float16" => StDtype::F16,
            "bf16" | "bfloat16" => StDtype::BF16,
            _ => anyhow::bail!("dtype '{s}': expected f16, bf16 or f32"),
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            StDtype::F32 => "F32",
            StDtype::F16 => "F16",
            StDtype::BF16 => "BF16",
        }
    }
    pub fn torch_name(self) -> &'static str {
        match self {
            StDtype::F32 => "float32",
            StDtype::F16 => "float16",
            StDtype::BF16 => "bfloat16",
        }
    }
    pub fn size(self) -> usize {
        if self == StDtype::F32 {
            4
        } else {
            2
        }
    }
}

/// A tensor to write: name and PyTorch shape.
pub struct Entry {
    pub name: String,
    pub shape: Vec<u64>,
}

/// Writes `entries` in order; `produce(i, sink)` must feed exactly the tensor's element count
/// to `sink`, in one or more chunks. Returns the file size.
pub fn write(
    path: &Path,
    entries: &[Entry],
    dtype: StDtype,
    progress: bool,
    mut produce: impl FnMut(usize, &mut dyn FnMut(&[f32]) -> Result<()>) -> Result<()>,
) -> Result<u64> {
    let mut header = Map::new();
    let mut offset = 0u64;
    for e in entries {
        let bytes = e.shape.iter().product::<u64>() * dtype.size() as u64;
        header.insert(
            e.name.clone(),
            json!({"dtype": dtype.name(), "shape": e.shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut text = serde_json::to_string(&Json::Object(header))?;
    while text.len() % 8 != 0 {
        text.push(' ');
    }
    let tmp = crate::atomic_file::temp_beside(path)?;
    let bar = if progress {
        indicatif::ProgressBar::new(offset)
    } else {
        indicatif::ProgressBar::hidden()
    };
    {
        let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file());
        w.write_all(&(text.len() as u64).to_le_bytes())?;
        w.write_all(text.as_bytes())?;
        let mut buf: Vec<u8> = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            bar.set_message(e.name.clone());
            let want = e.shape.iter().product::<u64>();
            let mut got = 0u64;
            produce(i, &mut |vals: &[f32]| {
                buf.clear();
                for &x in vals {
                    match dtype {
                        StDtype::F32 => buf.extend_from_slice(&x.to_le_bytes()),
                        StDtype::F16 => buf.extend_from_slice(&f16::from_f32(x).to_le_bytes()),
                        StDtype::BF16 => buf.extend_from_slice(&bf16::from_f32(x).to_le_bytes()),
                    }
                }
                w.write_all(&buf)?;
                bar.inc(buf.len() as u64);
                got += vals.len() as u64;
                Ok(())
            })?;
            anyhow::ensure!(
                got == want,
                "tensor '{}': {got} values produced, {want} expected",
                e.name
            );
        }
        w.flush()?;
    }
    bar.finish_and_clear();
    crate::atomic_file::persist(tmp, path)?;
    Ok(8 + text.len() as u64 + offset)
}
