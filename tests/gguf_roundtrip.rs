//! GGUF writer and reader: round trips of every value type, alignment, atomic output, and files
//! written by llama.cpp itself (its tokenizer vocabularies and llama-quantize's output).

use qgguf::gguf::{parse_header, Array, GgufFile, GgufWriter, Value};
use qgguf::quant_types::{dynamic, GgmlType, TypeInfo};
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn every_value() -> Vec<(&'static str, Value)> {
    vec![
        ("t.u8", Value::U8(200)),
        ("t.i8", Value::I8(-100)),
        ("t.u16", Value::U16(60000)),
        ("t.i16", Value::I16(-30000)),
        ("t.u32", Value::U32(4_000_000_000)),
        ("t.i32", Value::I32(-2_000_000_000)),
        ("t.f32", Value::F32(-1.5e-7)),
        ("t.bool", Value::Bool(true)),
        ("t.string", Value::String("héllo, wörld ✓".into())),
        ("t.u64", Value::U64(u64::MAX)),
        ("t.i64", Value::I64(i64::MIN)),
        ("t.f64", Value::F64(std::f64::consts::PI)),
        ("t.empty_string", Value::String(String::new())),
        ("a.u8", Value::Array(Array::U8(vec![1, 2, 255]))),
        ("a.i8", Value::Array(Array::I8(vec![-1, 0, 127]))),
        ("a.u16", Value::Array(Array::U16(vec![1, 65535]))),
        ("a.i16", Value::Array(Array::I16(vec![-32768, 7]))),
        ("a.u32", Value::Array(Array::U32(vec![3, 4_000_000_000]))),
        ("a.i32", Value::Array(Array::I32(vec![-5, 5]))),
        (
            "a.f32",
            Value::Array(Array::F32(vec![0.25, -0.0, f32::INFINITY])),
        ),
        ("a.bool", Value::Array(Array::Bool(vec![true, false, true]))),
        (
            "a.string",
            Value::Array(Array::String(vec!["a".into(), "".into(), "ünï".into()])),
        ),
        ("a.u64", Value::Array(Array::U64(vec![u64::MAX, 0]))),
        ("a.i64", Value::Array(Array::I64(vec![i64::MIN, 1]))),
        ("a.f64", Value::Array(Array::F64(vec![1e300, -2.0]))),
        ("a.empty", Value::Array(Array::F32(vec![]))),
        (
            "a.nested",
            Value::Array(Array::Array(vec![
                Array::I32(vec![1, 2]),
                Array::String(vec!["x".into()]),
            ])),
        ),
    ]
}

fn writer_with_tensors(alignment: Option<u32>) -> (GgufWriter, Vec<Vec<u8>>) {
    let mut w = GgufWriter::new();
    if let Some(a) = alignment {
        w.set("general.alignment", Value::U32(a)).unwrap();
    }
    for (k, v) in every_value() {
        w.set(k, v).unwrap();
    }
    let shapes: [(&str, &[u64], GgmlType); 4] = [
        ("norm.weight", &[7], GgmlType::F32),
        ("q8.weight", &[64, 3], GgmlType::Q8_0),
        ("q4k.weight", &[256, 2], GgmlType::Q4_K),
        ("nf4.weight", &[128, 1, 1, 2], GgmlType::NF4),
    ];
    let mut data = Vec::new();
    for (i, (name, dims, ty)) in shapes.iter().enumerate() {
        w.add_tensor(name, dims, ty.info()).unwrap();
        let n: u64 = dims.iter().product();
        let src: Vec<f32> = (0..n)
            .map(|j| ((i as f32 + 1.0) * j as f32 * 0.1).sin())
            .collect();
        let mut bytes = vec![0u8; dynamic::bytes_for(*ty, n as usize).unwrap()];
        dynamic::quantize(*ty, &src, &mut bytes).unwrap();
        data.push(bytes);
    }
    (w, data)
}

fn write_to_vec(w: &GgufWriter, data: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    w.write_to(&mut out, &mut |i, _, sink| Ok(sink.write_all(&data[i])?))
        .unwrap();
    out
}

#[test]
fn every_value_type_round_trips() {
    for alignment in [None, Some(64), Some(1)] {
        let (w, data) = writer_with_tensors(alignment);
        let bytes = write_to_vec(&w, &data);
        assert_eq!(bytes.len() as u64, w.file_size());
        let h = parse_header(&bytes, bytes.len() as u64, "memory").unwrap();
        assert_eq!(h.version, 3);
        let a = alignment.unwrap_or(32) as u64;
        assert_eq!(h.alignment, a);
        assert_eq!(h.data_offset % a, 0);
        let mut expected = every_value();
        if let Some(al) = alignment {
            expected.insert(0, ("general.alignment", Value::U32(al)));
        }
        assert_eq!(h.metadata.len(), expected.len());
        for ((k, v), (ek, ev)) in h.metadata.iter().zip(&expected) {
            assert_eq!(k, ek);
            assert_eq!(v, ev, "{k}");
        }
        assert_eq!(h.tensors.len(), 4);
        for (t, d) in h.tensors.iter().zip(&data) {
            assert_eq!(t.offset % a, 0, "{}", t.name);
            assert_eq!(t.nbytes as usize, d.len());
            let start = (h.data_offset + t.offset) as usize;
            assert_eq!(&bytes[start..start + d.len()], &d[..], "{}", t.name);
        }
        assert_eq!(h.tensors[3].dims, vec![128, 1, 1, 2]);
        assert_eq!(h.tensors[3].type_info, GgmlType::NF4.info());
    }
}

#[test]
fn write_file_is_atomic_and_readable() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("model.gguf");
    let (w, data) = writer_with_tensors(None);

    // A failure half way leaves neither the target nor a temporary file behind.
    let err = w
        .write_file(&target, |i, _, sink| {
            if i == 2 {
                anyhow::bail!("simulated failure")
            }
            Ok(sink.write_all(&data[i])?)
        })
        .unwrap_err();
    assert!(err.to_string().contains("simulated failure"));
    assert!(!target.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    // Writing too few bytes for a tensor is caught too.
    let err = w
        .write_file(&target, |i, _, sink| Ok(sink.write_all(&data[i][1..])?))
        .unwrap_err();
    assert!(err.to_string().contains("were declared"), "{err}");
    assert!(!target.exists());

    w.write_file(&target, |i, _, sink| Ok(sink.write_all(&data[i])?))
        .unwrap();
    let f = GgufFile::open(&target).unwrap();
    assert_eq!(f.get("t.string").unwrap().as_str(), Some("héllo, wörld ✓"));
    assert_eq!(f.get_u64("t.u32").unwrap(), 4_000_000_000);
    let t = f.tensor("q4k.weight").unwrap();
    assert_eq!(f.tensor_data(t), &data[2][..]);
    assert!(f
        .get_str("t.u8")
        .unwrap_err()
        .to_string()
        .contains("must be a string"));
    assert!(f
        .get_u64("missing.key")
        .unwrap_err()
        .to_string()
        .contains("'missing.key' is missing"));
}

/// llama-quantize's output (Q4_K_M, Q5_K_S, Q8_0 of a tiny Qwen2 in F16, made by
/// tools/make-quantize-fixture.sh): qgguf reads it, and re-quantizing the F16 source tensor by
/// tensor with qgguf's quantizers gives llama-quantize's bytes exactly.
#[test]
fn reads_llama_quantize_output_and_reproduces_its_bytes() {
    let dir = fixtures().join("llama_quantize");
    let src = GgufFile::open(dir.join("tiny-qwen2-f16.gguf")).unwrap();
    let mut seen_types = std::collections::BTreeSet::new();
    for mix in ["Q4_K_M", "Q5_K_S", "Q8_0"] {
        let q = GgufFile::open(dir.join(format!("tiny-qwen2-{mix}.gguf"))).unwrap();
        assert_eq!(q.architecture().unwrap(), "qwen2");
        assert_eq!(q.tensors().len(), src.tensors().len());
        for t in q.tensors() {
            let s = src.tensor(&t.name).unwrap();
            assert_eq!(t.dims, s.dims, "{mix} {}", t.name);
            let ty = t
                .ggml_type()
                .unwrap_or_else(|| panic!("{mix}: {} unsupported", t.name));
            seen_types.insert(ty);
            let n = t.n_elements() as usize;
            let mut f32s = vec![0.0f32; n];
            let src_ty = s.ggml_type().unwrap();
            dynamic::dequantize(src_ty, src.tensor_data(s), &mut f32s).unwrap();
            let mut ours = vec![0u8; t.nbytes as usize];
            dynamic::quantize(ty, &f32s, &mut ours).unwrap();
            assert!(
                ours == q.tensor_data(t),
                "{mix}: tensor {} ({ty}) differs from llama-quantize's bytes",
                t.name
            );
        }
    }
    for ty in [
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q8_0,
        GgmlType::F32,
    ] {
        assert!(
            seen_types.contains(&ty),
            "no {ty} tensor in the fixtures: {seen_types:?}"
        );
    }
}

fn vocab_dir() -> Option<PathBuf> {
    match std::env::var_os("QGGUF_VOCAB_DIR") {
        Some(d) => Some(PathBuf::from(d)),
        None => {
            eprintln!(
                "QGGUF_VOCAB_DIR is not set: skipping llama.cpp's vocabularies \
                 (tools/test.sh sets it from tools/fetch-llama-vocab.py)"
            );
            None
        }
    }
}

#[test]
fn reads_llama_cpp_vocab_files() {
    let Some(dir) = vocab_dir() else { return };
    let cases = [
        ("qwen2", "gpt2", 151_936),
        ("gpt-2", "gpt2", 50_257),
        ("bert-bge", "bert", 30_522),
        ("llama-spm", "llama", 32_000),
    ];
    for (name, model, n_vocab) in cases {
        let path = dir.join(format!("ggml-vocab-{name}.gguf"));
        let f = GgufFile::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.get_str("tokenizer.ggml.model").unwrap(), model, "{name}");
        let tokens = f.get_array("tokenizer.ggml.tokens").unwrap();
        match tokens {
            Array::String(v) => assert!(
                v.len() >= n_vocab - 300 && v.len() <= n_vocab + 300,
                "{name}: {}",
                v.len()
            ),
            other => panic!("{name}: tokens are {:?}", other.elem_type()),
        }
        // Rewriting the metadata with qgguf's writer gives back the same header bytes.
        let mut w = GgufWriter::new();
        for (k, v) in f.metadata() {
            w.set(k, v.clone()).unwrap();
        }
        // (A vocabulary file has no tensors, and gguf-py does not pad its end.)
        let original = std::fs::read(&path).unwrap();
        let header = w.header_bytes();
        assert!(f.tensors().is_empty());
        assert!(header.len() >= original.len() && header.len() - original.len() < 32);
        assert!(
            header[..original.len()] == original[..],
            "{name}: header bytes differ"
        );
    }
}

#[test]
fn nf4_files_are_marked_by_type_id() {
    let info = TypeInfo::of_id(qgguf::quant_types::NF4_TYPE_ID).unwrap();
    assert_eq!((info.block_elems, info.block_bytes), (64, 34));
    assert!(info.id > 1000, "NF4's id must stay far above ggml's range");
}
