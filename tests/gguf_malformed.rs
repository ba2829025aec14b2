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
