//! Small Qwen2 files with NaN, infinities or absurd values planted in one kind of tensor each
//! (tests/nonfinite.rs; the `-ngl` case in tests/gpu.rs). The model is one layer, 256 wide so
//! that Q4_K has whole super-blocks, with its matrices in F16, Q4_K, Q8_0 and IQ4_NL and the
//! byte-level tokenizer of the fuzz seed (so that `qconvert export` can rebuild a
//! tokenizer.json).

use qgguf::gguf::{GgufFile, GgufWriter, Value};
use qgguf::quant_types::{dynamic, GgmlType};
use std::path::{Path, PathBuf};

const E: u64 = 256;
const KV: u64 = 128;
const FF: u64 = 256;

/// The tensors: name, dims (ggml order), type.
fn layout(vocab: u64) -> Vec<(&'static str, Vec<u64>, GgmlType)> {
    use GgmlType::*;
    vec![
        ("token_embd.weight", vec![E, vocab], Q8_0),
        ("blk.0.attn_norm.weight", vec![E], F32),
        ("blk.0.attn_q.weight", vec![E, E], Q4_K),
        ("blk.0.attn_q.bias", vec![E], F32),
        ("blk.0.attn_k.weight", vec![E, KV], IQ4_NL),
        ("blk.0.attn_k.bias", vec![KV], F32),
        ("blk.0.attn_v.weight", vec![E, KV], F16),
        ("blk.0.attn_v.bias", vec![KV], F32),
        ("blk.0.attn_output.weight", vec![E, E], Q8_0),
        ("blk.0.ffn_norm.weight", vec![E], F32),
        ("blk.0.ffn_gate.weight", vec![E, FF], Q4_K),
        ("blk.0.ffn_up.weight", vec![E, FF], F16),
        ("blk.0.ffn_down.weight", vec![FF, E], Q4_K),
        ("output_norm.weight", vec![E], F32),
    ]
}

/// A change to one tensor's stored bytes.
pub type Damage = (&'static str, fn(&mut [u8]));

/// Writes the model with `damage` applied to the named tensors' bytes.
pub fn write_model(dir: &Path, file: &str, damage: &[Damage]) -> PathBuf {
    let seed = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus/tokenizer_from_gguf/qwen2-bpe.gguf");
    let seed = GgufFile::open(&seed).unwrap();
    let mut w = GgufWriter::new();
    let mut vocab = 0;
    for (k, v) in seed.metadata() {
        if k.starts_with("tokenizer.") {
            if k == "tokenizer.ggml.tokens" {
                vocab = match v {
                    Value::Array(a) => a.len() as u64,
                    _ => unreachable!(),
                };
            }
            w.set(k, v.clone()).unwrap();
        }
    }
    for (k, v) in [
        ("general.architecture", Value::from("qwen2")),
        ("general.name", Value::from("non-finite test")),
        ("qwen2.block_count", Value::U32(1)),
        ("qwen2.context_length", Value::U32(64)),
        ("qwen2.embedding_length", Value::U32(E as u32)),
        ("qwen2.feed_forward_length", Value::U32(FF as u32)),
        ("qwen2.attention.head_count", Value::U32(2)),
        ("qwen2.attention.head_count_kv", Value::U32(1)),
        ("qwen2.rope.freq_base", Value::F32(1e6)),
        ("qwen2.attention.layer_norm_rms_epsilon", Value::F32(1e-6)),
    ] {
        w.set(k, v).unwrap();
    }
    let tensors = layout(vocab);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut data = Vec::new();
    for (name, dims, ty) in &tensors {
        w.add_tensor(name, dims, ty.info()).unwrap();
        let n: u64 = dims.iter().product();
        let values: Vec<f32> = (0..n)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let x = ((rng >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2;
                // Norm scales near 1, as trained models have them.
                if name.contains("norm") {
                    1.0 + x
                } else {
                    x
                }
            })
            .collect();
        let mut bytes = vec![0u8; dynamic::bytes_for(*ty, n as usize).unwrap()];
        dynamic::quantize(*ty, &values, &mut bytes).unwrap();
        for (target, f) in damage {
            if target == name {
                f(&mut bytes);
            }
        }
        data.push(bytes);
    }
    let path = dir.join(file);
    w.write_file(&path, |i, _, sink| {
        sink.write_all(&data[i])?;
        Ok(())
    })
    .unwrap();
    path
}

fn put_f32(b: &mut [u8], i: usize, x: f32) {
    b[i * 4..i * 4 + 4].copy_from_slice(&x.to_le_bytes());
}

fn put_f16_bits(b: &mut [u8], at: usize, bits: u16) {
    b[at..at + 2].copy_from_slice(&bits.to_le_bytes());
}

const F16_NAN: u16 = 0x7e00;
const F16_INF: u16 = 0x7c00;
const F16_NEG_INF: u16 = 0xfc00;
/// Bytes per block: Q4_K (d, dmin, 12 scale bytes, 128 of levels), Q8_0, IQ4_NL.
const Q4_K_BLOCK: usize = 144;
const Q8_0_BLOCK: usize = 34;
const IQ4_NL_BLOCK: usize = 18;

/// One broken file: what is damaged, and what the refusal must say about it.
pub struct Case {
    pub file: &'static str,
    pub damage: Vec<Damage>,
    /// How the refusal names it: "name (TYPE)".
    pub tensor: &'static str,
    /// What the refusal says of it.
    pub says: &'static str,
}

pub fn cases() -> Vec<Case> {
    vec![
        Case {
            file: "norm-nan.gguf",
            damage: vec![("blk.0.attn_norm.weight", |b| {
                put_f32(b, 3, f32::NAN);
                put_f32(b, 200, f32::NAN);
            })],
            tensor: "blk.0.attn_norm.weight (F32)",
            says: "2 NaN",
        },
        Case {
            file: "norm-inf.gguf",
            damage: vec![("blk.0.ffn_norm.weight", |b| {
                put_f32(b, 0, f32::NEG_INFINITY)
            })],
            tensor: "blk.0.ffn_norm.weight (F32)",
            says: "1 Inf",
        },
        Case {
            file: "norm-huge.gguf",
            damage: vec![("output_norm.weight", |b| put_f32(b, 17, 1e38))],
            tensor: "output_norm.weight (F32)",
            says: "max |x| 1.0e38, above 1e6",
        },
        Case {
            file: "bias-huge.gguf",
            damage: vec![("blk.0.attn_q.bias", |b| put_f32(b, 9, -3e38))],
            tensor: "blk.0.attn_q.bias (F32)",
            says: "max |x| 3.0e38",
        },
        Case {
            file: "f16-nan.gguf",
            damage: vec![("blk.0.ffn_up.weight", |b| {
                put_f16_bits(b, 2 * 1000, F16_NAN);
                put_f16_bits(b, 2 * 5000, F16_NAN);
                put_f16_bits(b, 2 * 65535, F16_NAN);
            })],
            tensor: "blk.0.ffn_up.weight (F16)",
            says: "3 NaN",
        },
        Case {
            file: "f16-inf.gguf",
            damage: vec![("blk.0.attn_v.weight", |b| {
                put_f16_bits(b, 0, F16_INF);
                put_f16_bits(b, 2, F16_NEG_INF);
            })],
            tensor: "blk.0.attn_v.weight (F16)",
            says: "2 Inf",
        },
        Case {
            file: "q4k-d-inf.gguf",
            damage: vec![("blk.0.attn_q.weight", |b| {
                put_f16_bits(b, 5 * Q4_K_BLOCK, F16_INF)
            })],
            tensor: "blk.0.attn_q.weight (Q4_K)",
            says: "1 of 256 blocks with non-finite scales (0 NaN, 1 Inf)",
        },
        Case {
            file: "q4k-dmin-nan.gguf",
            damage: vec![("blk.0.ffn_down.weight", |b| {
                put_f16_bits(b, 2, F16_NAN);
                // Both scales of one block: still one block.
                put_f16_bits(b, 255 * Q4_K_BLOCK, F16_NAN);
                put_f16_bits(b, 255 * Q4_K_BLOCK + 2, F16_INF);
            })],
            tensor: "blk.0.ffn_down.weight (Q4_K)",
            says: "2 of 256 blocks with non-finite scales (2 NaN, 1 Inf)",
        },
        Case {
            file: "q8_0-scale-nan.gguf",
            damage: vec![("blk.0.attn_output.weight", |b| {
                put_f16_bits(b, 7 * Q8_0_BLOCK, F16_NAN)
            })],
            tensor: "blk.0.attn_output.weight (Q8_0)",
            says: "1 of 2048 blocks with non-finite scales (1 NaN, 0 Inf)",
        },
        Case {
            file: "q8_0-embedding-inf.gguf",
            damage: vec![("token_embd.weight", |b| put_f16_bits(b, 0, F16_INF))],
            tensor: "token_embd.weight (Q8_0)",
            says: "blocks with non-finite scales (0 NaN, 1 Inf)",
        },
        Case {
            file: "iq4_nl-scale-inf.gguf",
            damage: vec![("blk.0.attn_k.weight", |b| {
                put_f16_bits(b, 1023 * IQ4_NL_BLOCK, F16_NEG_INF)
            })],
            tensor: "blk.0.attn_k.weight (IQ4_NL)",
            says: "1 of 1024 blocks with non-finite scales (0 NaN, 1 Inf)",
        },
    ]
}
