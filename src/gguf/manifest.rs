//! A compact, comparable description of a GGUF file: every metadata value (long arrays as a
//! length and a sha256) and every tensor's name, type, dimensions and data sha256. Reference
//! conversions made by llama.cpp are committed as manifests (`tests/fixtures/convert`), so tests
//! compare qgguf's files with llama.cpp's without committing large files.

use super::{Array, GgufFile, Value};
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};

/// Arrays longer than this are summarised by their sha256.
const INLINE_ARRAY: usize = 64;

fn array_bytes(a: &Array) -> Vec<u8> {
    let mut out = Vec::new();
    match a {
        Array::String(v) => {
            for s in v {
                out.extend_from_slice(&(s.len() as u64).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
        other => out.extend_from_slice(format!("{other:?}").as_bytes()),
    }
    out
}

pub fn value_json(v: &Value) -> Json {
    match v {
        Value::Array(a) if a.len() > INLINE_ARRAY => json!({
            "array": a.elem_type().name(),
            "len": a.len(),
            "sha256": format!("{:x}", Sha256::digest(array_bytes(a))),
        }),
        Value::Array(a) => json!({"array": a.elem_type().name(), "values": format!("{a:?}")}),
        Value::F32(x) => json!({"f32": format!("{:08x}", x.to_bits())}),
        Value::F64(x) => json!({"f64": format!("{:016x}", x.to_bits())}),
        Value::String(s) => json!({"string": s}),
        other => json!({ other.value_type().name(): other.to_string() }),
    }
}

pub fn manifest(f: &GgufFile) -> Json {
    let metadata: Vec<Json> = f
        .metadata()
        .iter()
        .map(|(k, v)| json!([k, value_json(v)]))
        .collect();
    let tensors: Vec<Json> = f
        .tensors()
        .iter()
        .map(|t| {
            json!([
                t.name,
                t.type_info.name,
                t.dims,
                format!("{:x}", Sha256::digest(f.tensor_data(t)))
            ])
        })
        .collect();
    json!({"version": f.header.version, "metadata": metadata, "tensors": tensors})
}
