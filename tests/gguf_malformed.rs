//! Malformed GGUF headers: each is rejected with an error naming the field, and none panics,
//! allocates from an untrusted count, or reads out of bounds. Files are assembled byte by byte so
//! that any field can hold any value.

use qgguf::gguf::{parse_header, GgufFile, GgufWriter, Value};
use qgguf::quant_types::GgmlType;

/// Raw GGUF assembly.
#[derive(Default, Clone)]
struct Raw(Vec<u8>);

impl Raw {
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    fn str(self, s: &str) -> Self {
        self.u64(s.len() as u64).bytes(s.as_bytes())
    }
    fn header(n_tensors: u64, n_kv: u64) -> Self {
        Raw::default()
            .bytes(b"GGUF")
            .u32(3)
            .u64(n_tensors)
            .u64(n_kv)
    }
    fn kv_u32(self, key: &str, v: u32) -> Self {
        self.str(key).u32(4).u32(v)
    }
    fn tensor(self, name: &str, dims: &[u64], ty: u32, offset: u64) -> Self {
        let mut r = self.str(name).u32(dims.len() as u32);
        for &d in dims {
            r = r.u64(d);
        }
        r.u32(ty).u64(offset)
    }
    /// Pads to 32 and appends `n` bytes of data.
    fn data(mut self, n: usize) -> Self {
        let pad = self.0.len().div_ceil(32) * 32;
        self.0.resize(pad + n, 0);
        self
    }
}

fn err_of(raw: &Raw) -> String {
    match parse_header(&raw.0, raw.0.len() as u64, "bad.gguf") {
        Ok(_) => panic!("accepted a malformed file"),
        Err(e) => e.to_string(),
    }
}

#[track_caller]
fn rejects(raw: Raw, needle: &str) {
    let msg = err_of(&raw);
    assert!(
        msg.starts_with("bad.gguf: "),
        "error does not name the file: {msg}"
    );
    assert!(msg.contains(needle), "expected '{needle}' in: {msg}");
}

fn one_tensor(dims: &[u64], ty: u32, offset: u64, data: usize) -> Raw {
    Raw::header(1, 0).tensor("w", dims, ty, offset).data(data)
}

#[test]
fn a_valid_file_parses() {
    let r = one_tensor(&[32, 2], GgmlType::Q8_0.id(), 0, 68);
    let h = parse_header(&r.0, r.0.len() as u64, "ok.gguf").unwrap();
    assert_eq!(h.tensors[0].nbytes, 68);
}

#[test]
fn magic_and_version() {
    rejects(Raw::default().bytes(b"GGU"), "magic");
    rejects(
        Raw::default().bytes(b"GGML").u32(3).u64(0).u64(0),
        "not a GGUF file",
    );
    rejects(
        Raw::default().bytes(b"GGUF").u32(1).u64(0).u64(0),
        "version 1",
    );
    rejects(
        Raw::default()
            .bytes(b"GGUF")
            .u32(3u32.swap_bytes())
            .u64(0)
            .u64(0),
        "big-endian",
    );
    rejects(
        Raw::default().bytes(b"GGUF").u32(99).u64(0).u64(0),
        "unsupported GGUF version 99",
    );
    rejects(Raw::default().bytes(b"GGUF").u32(3), "tensor count");
}

#[test]
fn counts_that_cannot_fit() {
    rejects(Raw::header(1 << 63, 0), "tensor count");
    rejects(Raw::header(0, 1 << 63), "metadata count");
    rejects(Raw::header(0, 5), "metadata count: count 5 cannot fit");
    rejects(
        Raw::header(3, 0).data(40),
        "tensor count: count 3 cannot fit",
    );
}

#[test]
fn strings() {
    rejects(
        Raw::header(0, 1).u64(1 << 40).bytes(&[0; 16]),
        "key: string length 1099511627776",
    );
    rejects(
        Raw::header(0, 1).u64(100).bytes(b"short").u32(4).u32(0),
        "key: string of 100 bytes",
    );
    rejects(Raw::header(0, 1).str("").u32(4).u32(0), "empty key");
    rejects(
        Raw::header(0, 1).u64(2).bytes(&[0xff, 0xfe]).u32(4).u32(0),
        "not valid UTF-8",
    );
    rejects(
        Raw::header(0, 2).kv_u32("k", 1).kv_u32("k", 2),
        "'k' appears twice",
    );
    let long_value = Raw::header(0, 1)
        .str("k")
        .u32(8)
        .u64(u64::MAX)
        .bytes(&[0; 16]);
    rejects(long_value, "key 'k': string length");
}

#[test]
fn value_types() {
    rejects(
        Raw::header(0, 1).str("k").u32(13).u32(0).bytes(&[0; 8]),
        "key 'k': unknown value type 13",
    );
    rejects(
        Raw::header(0, 1).str("k").u32(7).bytes(&[2]).bytes(&[0; 8]),
        "bool byte is 2",
    );
    rejects(Raw::header(0, 1).str("k").u32(6).bytes(&[0, 0]), "key 'k'");
}

#[test]
fn arrays() {
    let arr = |elem: u32, n: u64| Raw::header(0, 1).str("a").u32(9).u32(elem).u64(n);
    rejects(
        arr(4, 1 << 62).bytes(&[0; 64]),
        "key 'a': array: count 4611686018427387904 cannot fit",
    );
    rejects(arr(4, 3).bytes(&[0; 8]), "key 'a'");
    rejects(arr(99, 1).bytes(&[0; 16]), "unknown array element type 99");
    rejects(
        arr(8, 2).str("x").u64(1 << 50).bytes(&[0; 8]),
        "key 'a'[1]: string length",
    );
    rejects(
        arr(7, 2).bytes(&[1, 3]).bytes(&[0; 16]),
        "element 1 is not a bool",
    );
    // Nesting beyond the limit.
    let mut deep = Raw::header(0, 1).str("a").u32(9);
    for _ in 0..6 {
        deep = deep.u32(9).u64(1);
    }
    rejects(deep.u32(4).u64(0).bytes(&[0; 64]), "nested deeper");
}

#[test]
fn alignment_key() {
    rejects(
        Raw::header(0, 1).kv_u32("general.alignment", 0),
        "not a power of two",
    );
    rejects(
        Raw::header(0, 1).kv_u32("general.alignment", 48),
        "not a power of two",
    );
    rejects(
        Raw::header(0, 1).kv_u32("general.alignment", 1 << 30),
        "not a power of two",
    );
    let as_u64 = Raw::header(0, 1).str("general.alignment").u32(10).u64(64);
    rejects(as_u64, "must be u32, found u64");
}

#[test]
fn tensor_infos() {
    let q8 = GgmlType::Q8_0.id();
    rejects(one_tensor(&[], q8, 0, 64), "n_dims is 0");
    rejects(one_tensor(&[32, 1, 1, 1, 1], q8, 0, 64), "n_dims is 5");
    rejects(one_tensor(&[32, 0], q8, 0, 64), "dimension 1 is 0");
    rejects(one_tensor(&[1 << 63, 1], 0, 0, 64), "dimension 0 is");
    rejects(
        one_tensor(&[1 << 32, 1 << 32], 0, 0, 64),
        "element count overflows",
    );
    rejects(one_tensor(&[32, 1], 4, 0, 64), "unknown ggml type id 4");
    rejects(
        one_tensor(&[32, 1], 1000, 0, 64),
        "unknown ggml type id 1000",
    );
    rejects(
        one_tensor(&[33, 1], q8, 0, 64),
        "row length 33 is not a multiple of the Q8_0 block size 32",
    );
    rejects(
        one_tensor(&[32, 1], q8, 16, 64),
        "offset 16 is not a multiple of the alignment 32",
    );
    rejects(
        one_tensor(&[32, 2], q8, 0, 67),
        "runs past the end of the data section",
    );
    rejects(
        one_tensor(&[32, 2], q8, u64::MAX - 31, 68),
        "runs past the end",
    );
    rejects(one_tensor(&[32, 1], q8, 0, 0), "past the end");
    let long = "x".repeat(64);
    rejects(
        Raw::header(1, 0).tensor(&long, &[32], 0, 0).data(128),
        "must be 1 to 63 bytes",
    );
    rejects(
        Raw::header(1, 0).tensor("", &[32], 0, 0).data(128),
        "must be 1 to 63 bytes",
    );
    let dup = Raw::header(2, 0)
        .tensor("w", &[8], 0, 0)
        .tensor("w", &[8], 0, 32)
        .data(64);
    rejects(dup, "tensor name 'w' appears twice");
    let overlap = Raw::header(2, 0)
        .tensor("a", &[16], 0, 0)
        .tensor("b", &[16], 0, 32)
        .data(128);
    rejects(overlap, "tensors 'a' and 'b' overlap");
    rejects(
        Raw::header(1, 0).tensor("w", &[32], 0, 0),
        "past the end of the file",
    );
}

#[test]
fn every_truncation_of_a_real_file_is_an_error() {
    let mut w = GgufWriter::new();
    w.set("general.architecture", "qwen2").unwrap();
    w.set(
        "tokenizer.ggml.tokens",
        vec!["a".to_string(), "bb".into(), "ccc".into()],
    )
    .unwrap();
    w.set("x.f32s", vec![1.0f32, 2.0]).unwrap();
    w.set("x.flag", Value::Bool(true)).unwrap();
    w.add_tensor("a.weight", &[32, 2], GgmlType::Q8_0.info())
        .unwrap();
    w.add_tensor("b.weight", &[256], GgmlType::Q6_K.info())
        .unwrap();
    let mut full = Vec::new();
    w.write_to(&mut full, &mut |_, t, sink| {
        Ok(sink.write_all(&vec![0u8; t.nbytes as usize])?)
    })
    .unwrap();
    let h = parse_header(&full, full.len() as u64, "full.gguf").unwrap();
    // Cutting the file anywhere before its last tensor's end must fail (cleanly).
    let last = h.tensors.last().unwrap();
    let last_end = (h.data_offset + last.offset + last.nbytes) as usize;
    for cut in 0..last_end {
        let r = parse_header(&full[..cut], cut as u64, "cut.gguf");
        assert!(r.is_err(), "truncation at {cut} accepted");
    }
    // Flipping any single header byte never panics (it may or may not be an error).
    let header_len = w.header_bytes().len();
    for i in 0..header_len {
        for bit in [0x01u8, 0x80] {
            let mut m = full.clone();
            m[i] ^= bit;
            let _ = parse_header(&m, m.len() as u64, "flip.gguf");
        }
    }
}

#[test]
fn files_on_disk_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("broken.gguf");
    std::fs::write(&p, b"GGUF\x03\x00\x00\x00").unwrap();
    let e = GgufFile::open(&p).err().unwrap().to_string();
    assert!(
        e.contains("broken.gguf") && e.contains("tensor count"),
        "{e}"
    );
    let e = GgufFile::open(dir.path().join("absent.gguf"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("absent.gguf"), "{e}");
}

#[test]
fn byte_size_overflows_though_the_element_count_fits() {
    // 2^62 F32 elements: a valid count, but 2^64 bytes.
    rejects(
        one_tensor(&[1 << 31, 1 << 31], 0, 0, 64),
        "tensor 'w': byte size of 4611686018427387904 F32 elements overflows",
    );
}

#[test]
fn counts_above_the_limits() {
    use qgguf::gguf::{MAX_KV, MAX_TENSORS};
    rejects(
        Raw::header(MAX_TENSORS + 1, 0),
        &format!(
            "tensor count {} exceeds the limit of {MAX_TENSORS}",
            MAX_TENSORS + 1
        ),
    );
    rejects(
        Raw::header(0, MAX_KV + 1),
        &format!(
            "metadata count {} exceeds the limit of {MAX_KV}",
            MAX_KV + 1
        ),
    );
}

// Files whose header is well-formed but whose model is not: what qrun's loader checks. Each
// starts from a valid tiny Qwen2 file (the fuzz seed) with one key or tensor changed.

use qgguf::gguf::TensorInfo;
use qgguf::model::Model;

/// Rewrites the seed model with `meta` applied to its metadata and `tensor` to each tensor's
/// (name, dims, type id); data is kept where the size is unchanged, zeros otherwise.
fn mutated_model(
    meta: impl Fn(&mut Vec<(String, Value)>),
    tensor: impl Fn(&mut String, &mut Vec<u64>, &mut GgmlType),
) -> (tempfile::TempDir, std::path::PathBuf) {
    mutated_model_from("qwen2-q8_0.gguf", meta, tensor)
}

fn mutated_model_from(
    seed: &str,
    meta: impl Fn(&mut Vec<(String, Value)>),
    tensor: impl Fn(&mut String, &mut Vec<u64>, &mut GgmlType),
) -> (tempfile::TempDir, std::path::PathBuf) {
    let seed = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus/gguf_reader")
        .join(seed);
    let src = GgufFile::open(seed).unwrap();
    let mut metadata = src.metadata().to_vec();
    meta(&mut metadata);
    let mut w = GgufWriter::new();
    for (k, v) in metadata {
        w.set(&k, v).unwrap();
    }
    let mut sources: Vec<&TensorInfo> = Vec::new();
    for t in src.tensors() {
        let (mut name, mut dims, mut ty) = (t.name.clone(), t.dims.clone(), t.ggml_type().unwrap());
        tensor(&mut name, &mut dims, &mut ty);
        w.add_tensor(&name, &dims, ty.info()).unwrap();
        sources.push(t);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    w.write_file(&path, |i, plan, sink| {
        let data = src.tensor_data(sources[i]);
        if data.len() as u64 == plan.nbytes {
            sink.write_all(data)?;
        } else {
            sink.write_all(&vec![0u8; plan.nbytes as usize])?;
        }
        Ok(())
    })
    .unwrap();
    (dir, path)
}

fn set(m: &mut [(String, Value)], key: &str, v: Value) {
    m.iter_mut().find(|(k, _)| k == key).unwrap().1 = v;
}

#[track_caller]
fn model_rejects(
    meta: impl Fn(&mut Vec<(String, Value)>),
    tensor: impl Fn(&mut String, &mut Vec<u64>, &mut GgmlType),
    needle: &str,
) {
    let (_dir, path) = mutated_model(meta, tensor);
    let msg = match Model::load(&path) {
        Ok(_) => panic!("loaded a broken model"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        msg.contains("model.gguf"),
        "error does not name the file: {msg}"
    );
    assert!(msg.contains(needle), "expected '{needle}' in: {msg}");
}

fn keep(_: &mut String, _: &mut Vec<u64>, _: &mut GgmlType) {}

#[test]
fn the_unchanged_seed_model_loads() {
    let (_dir, path) = mutated_model(|_| {}, keep);
    let m = Model::load(&path).unwrap();
    assert_eq!(m.n_layer(), 1);
}

#[test]
fn model_block_count_far_beyond_the_tensors() {
    // Two billion layers are not allocated up front: the first missing layer ends the load.
    model_rejects(
        |m| set(m, "qwen2.block_count", Value::U32(1 << 31)),
        keep,
        "the model has no tensor 'blk.1.attn_norm.weight'",
    );
    model_rejects(
        |m| set(m, "qwen2.block_count", Value::U32(u32::MAX)),
        keep,
        "'qwen2.block_count' is 4294967295, more than any model has",
    );
}

#[test]
fn model_hyperparameters_out_of_range() {
    model_rejects(
        |m| set(m, "qwen2.embedding_length", Value::U64(1 << 62)),
        keep,
        "'qwen2.embedding_length' is 4611686018427387904, more than any model has",
    );
    model_rejects(
        |m| set(m, "qwen2.context_length", Value::I32(-1)),
        keep,
        "metadata key 'qwen2.context_length' must be a non-negative integer",
    );
    model_rejects(
        |m| set(m, "qwen2.feed_forward_length", Value::from("32")),
        keep,
        "metadata key 'qwen2.feed_forward_length' must be a non-negative integer, found string",
    );
    model_rejects(
        |m| set(m, "qwen2.attention.head_count", Value::U32(0)),
        keep,
        "head counts 0/1 do not fit embedding length 32",
    );
    model_rejects(
        |m| set(m, "qwen2.attention.head_count_kv", Value::U32(3)),
        keep,
        "head counts 2/3 do not fit embedding length 32",
    );
    model_rejects(
        |m| m.retain(|(k, _)| k != "qwen2.attention.layer_norm_rms_epsilon"),
        keep,
        "metadata key 'qwen2.attention.layer_norm_rms_epsilon' is missing",
    );
}

#[test]
fn model_tensor_shape_contradicts_the_hyperparameters() {
    model_rejects(
        |_| {},
        |name, dims, _| {
            if name == "blk.0.ffn_up.weight" {
                dims[1] = 64;
            }
        },
        "tensor 'blk.0.ffn_up.weight' has dims [32, 64], expected [32, 32]",
    );
    model_rejects(
        |_| {},
        |name, dims, _| {
            if name == "output_norm.weight" {
                dims[0] = 16;
            }
        },
        "tensor 'output_norm.weight' has 16 values, expected 32",
    );
}

#[test]
fn model_tensor_missing_or_of_a_type_qgguf_cannot_run() {
    model_rejects(
        |_| {},
        |name, _, _| {
            if name == "blk.0.attn_v.weight" {
                *name = "blk.0.attn_v.w".into();
            }
        },
        "the model has no tensor 'blk.0.attn_v.weight'",
    );
    model_rejects(
        |_| {},
        |name, _, ty| {
            if name == "blk.0.attn_q.weight" {
                *ty = GgmlType::Q8_1;
            }
        },
        "tensor 'blk.0.attn_q.weight' has type Q8_1, which qgguf cannot run",
    );
}

#[test]
fn model_classifier_without_labels() {
    let (_dir, path) = mutated_model_from(
        "qwen2-cls-mixed.gguf",
        |m| m.retain(|(k, _)| k != "qwen2.classifier.output_labels"),
        keep,
    );
    let msg = format!("{:#}", Model::load(&path).err().unwrap());
    assert!(
        msg.contains("model.gguf: a classification head without qwen2.classifier.output_labels"),
        "{msg}"
    );
}
