//! The fuzz targets' inputs on stable Rust: every committed seed (`fuzz/corpus/<target>/`) must
//! go all the way through its target's walk (load, tokenize, run), so the fuzzers start from
//! deep inside the readers; and every input that crashed a walk
//! (`tests/fixtures/fuzz_regressions/<target>-*`) must now end cleanly, in an error naming the
//! file.
//!
//! The seeds are generated here from qgguf's own writers, small and deterministic:
//! `QGGUF_WRITE_FUZZ_SEEDS=1 cargo test --release --test fuzz_inputs` rewrites them.

// The fuzz targets' own code; `scratch_dir` serves only the fuzzers.
#[allow(dead_code)]
#[path = "../fuzz/src/lib.rs"]
mod harness;

use qgguf::gguf::{Array, GgufWriter, Value};
use qgguf::quant_types::{dynamic, GgmlType};
use std::path::{Path, PathBuf};

type Harness = fn(&[u8], &Path) -> anyhow::Result<()>;

const TARGETS: &[(&str, Harness)] = &[
    ("gguf_reader", harness::gguf_reader),
    ("safetensors", harness::safetensors),
    ("tokenizer_from_gguf", harness::tokenizer_from_gguf),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Deterministic weights (xorshift), small so every format represents them well.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
    }
}

/// A GGUF file assembled in memory with [`GgufWriter`].
struct Gguf {
    w: GgufWriter,
    data: Vec<Vec<u8>>,
    rng: Rng,
}

impl Gguf {
    fn new(seed: u64) -> Gguf {
        Gguf {
            w: GgufWriter::new(),
            data: Vec::new(),
            rng: Rng(seed),
        }
    }

    fn kv(&mut self, key: &str, v: impl Into<Value>) -> &mut Self {
        self.w.set(key, v).unwrap();
        self
    }

    fn values(&mut self, name: &str, dims: &[u64], ty: GgmlType, vals: &[f32]) -> &mut Self {
        self.w.add_tensor(name, dims, ty.info()).unwrap();
        let mut out = vec![0u8; ty.row_bytes(vals.len()).unwrap()];
        dynamic::quantize(ty, vals, &mut out).unwrap();
        self.data.push(out);
        self
    }

    fn tensor(&mut self, name: &str, dims: &[u64], ty: GgmlType) -> &mut Self {
        let n: u64 = dims.iter().product();
        let vals: Vec<f32> = (0..n).map(|_| self.rng.next()).collect();
        self.values(name, dims, ty, &vals)
    }

    /// A norm scale near 1 (and, with `bias`, a shift near 0).
    fn norm(&mut self, stem: &str, n: u64, bias: bool) -> &mut Self {
        let vals: Vec<f32> = (0..n).map(|_| 1.0 + self.rng.next()).collect();
        self.values(&format!("{stem}.weight"), &[n], GgmlType::F32, &vals);
        if bias {
            self.tensor(&format!("{stem}.bias"), &[n], GgmlType::F32);
        }
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.w
            .write_to(&mut out, &mut |i, _, sink| {
                Ok(sink.write_all(&self.data[i])?)
            })
            .unwrap();
        out
    }
}

const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;

/// GPT-2's byte-to-character table (printable bytes stand for themselves).
fn byte_chars() -> Vec<char> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32).collect();
    printable.extend(0xA1..=0xAC);
    printable.extend(0xAE..=0xFF);
    let mut extra = 0;
    (0u32..256)
        .map(|b| {
            if printable.contains(&b) {
                char::from_u32(b).unwrap()
            } else {
                extra += 1;
                char::from_u32(255 + extra).unwrap()
            }
        })
        .collect()
}

/// Byte-level BPE tokenizer metadata: single-byte tokens (all 256, or printable ASCII and the
/// space), a few merges, and special tokens. Returns the vocabulary size.
fn bpe_tokenizer(g: &mut Gguf, pre: &str, all_bytes: bool, specials: &[&str]) -> usize {
    let chars = byte_chars();
    let mut tokens: Vec<String> = if all_bytes {
        chars.iter().map(|c| c.to_string()).collect()
    } else {
        (b' '..=b'~')
            .map(|b| chars[b as usize].to_string())
            .collect()
    };
    let mut types = vec![1i32; tokens.len()];
    let merges = ["H e", "l l", "Ġ w", "o r", "Ġw or", "ll o"];
    for m in merges {
        tokens.push(m.replace(' ', ""));
        types.push(1);
    }
    for s in specials {
        tokens.push(s.to_string());
        types.push(CONTROL);
    }
    let n = tokens.len();
    g.kv("tokenizer.ggml.model", "gpt2")
        .kv("tokenizer.ggml.pre", pre)
        .kv("tokenizer.ggml.tokens", tokens)
        .kv("tokenizer.ggml.token_type", types)
        .kv(
            "tokenizer.ggml.merges",
            merges.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
        );
    n
}

/// A Qwen2 decoder: 32 wide, 2 heads of which 1 for K/V, `layers` blocks, the i-th matrix's
/// weights in `ty(i)`, and with `labels` a classification head.
fn qwen2(g: &mut Gguf, vocab: u64, layers: u64, ty: &dyn Fn(usize) -> GgmlType, labels: usize) {
    let (e, kv, ff) = (32u64, 16u64, 32u64);
    g.kv("general.architecture", "qwen2")
        .kv("general.name", "fuzz seed")
        .kv("qwen2.block_count", layers as u32)
        .kv("qwen2.context_length", 64u32)
        .kv("qwen2.embedding_length", e as u32)
        .kv("qwen2.feed_forward_length", ff as u32)
        .kv("qwen2.attention.head_count", 2u32)
        .kv("qwen2.attention.head_count_kv", 1u32)
        .kv("qwen2.rope.freq_base", 1_000_000f32)
        .kv("qwen2.attention.layer_norm_rms_epsilon", 1e-6f32);
    if labels > 0 {
        let names: Vec<String> = (0..labels).map(|i| format!("class_{i}")).collect();
        g.kv("qwen2.classifier.output_labels", names);
    }
    let mut m = 0;
    let mut mat = |g: &mut Gguf, name: &str, dims: &[u64]| {
        g.tensor(name, dims, ty(m));
        m += 1;
    };
    mat(g, "token_embd.weight", &[e, vocab]);
    for i in 0..layers {
        let p = |s: &str| format!("blk.{i}.{s}");
        g.norm(&p("attn_norm"), e, false);
        mat(g, &p("attn_q.weight"), &[e, e]);
        g.tensor(&p("attn_q.bias"), &[e], GgmlType::F32);
        mat(g, &p("attn_k.weight"), &[e, kv]);
        g.tensor(&p("attn_k.bias"), &[kv], GgmlType::F32);
        mat(g, &p("attn_v.weight"), &[e, kv]);
        g.tensor(&p("attn_v.bias"), &[kv], GgmlType::F32);
        mat(g, &p("attn_output.weight"), &[e, e]);
        g.norm(&p("ffn_norm"), e, false);
        mat(g, &p("ffn_gate.weight"), &[e, ff]);
        mat(g, &p("ffn_up.weight"), &[e, ff]);
        mat(g, &p("ffn_down.weight"), &[ff, e]);
    }
    g.norm("output_norm", e, false);
    if labels > 0 {
        g.tensor("cls.output.weight", &[e, labels as u64], GgmlType::F16);
    }
}

/// A BERT encoder, 32 wide with 2 heads, 16 positions, a pooler and a classifier.
fn bert(g: &mut Gguf, vocab: u64, ty: GgmlType, labels: usize) {
    let (e, ff) = (32u64, 32u64);
    g.kv("general.architecture", "bert")
        .kv("bert.block_count", 1u32)
        .kv("bert.context_length", 16u32)
        .kv("bert.embedding_length", e as u32)
        .kv("bert.feed_forward_length", ff as u32)
        .kv("bert.attention.head_count", 2u32)
        .kv("bert.attention.layer_norm_epsilon", 1e-12f32)
        .kv("bert.pooling_type", 2u32);
    let names: Vec<String> = (0..labels).map(|i| format!("L{i}")).collect();
    g.kv("bert.classifier.output_labels", names);
    g.tensor("token_embd.weight", &[e, vocab], ty)
        .tensor("position_embd.weight", &[e, 16], GgmlType::F16)
        .tensor("token_types.weight", &[e, 2], GgmlType::F32)
        .norm("token_embd_norm", e, true);
    for s in ["attn_q", "attn_k", "attn_v", "attn_output"] {
        g.tensor(&format!("blk.0.{s}.weight"), &[e, e], ty).tensor(
            &format!("blk.0.{s}.bias"),
            &[e],
            GgmlType::F32,
        );
    }
    g.norm("blk.0.attn_output_norm", e, true)
        .tensor("blk.0.ffn_up.weight", &[e, ff], ty)
        .tensor("blk.0.ffn_up.bias", &[ff], GgmlType::F32)
        .tensor("blk.0.ffn_down.weight", &[ff, e], ty)
        .tensor("blk.0.ffn_down.bias", &[e], GgmlType::F32)
        .norm("blk.0.layer_output_norm", e, true)
        .tensor("cls.weight", &[e, e], GgmlType::Q8_0)
        .tensor("cls.bias", &[e], GgmlType::F32)
        .tensor("cls.output.weight", &[e, labels as u64], GgmlType::F32)
        .tensor("cls.output.bias", &[labels as u64], GgmlType::F32);
}

/// A ModernBERT encoder: `layers` layers (the first without attention norm, as the real model),
/// alternating local and global attention, a head and a classifier.
fn modern_bert(g: &mut Gguf, vocab: u64, layers: u32, ty: GgmlType, labels: usize) {
    let (e, ff) = (32u64, 32u64);
    g.kv("general.architecture", "modern-bert")
        .kv("modern-bert.block_count", layers)
        .kv("modern-bert.context_length", 32u32)
        .kv("modern-bert.embedding_length", e as u32)
        .kv("modern-bert.feed_forward_length", ff as u32)
        .kv("modern-bert.attention.head_count", 2u32)
        .kv("modern-bert.attention.layer_norm_epsilon", 1e-5f32)
        .kv("modern-bert.attention.sliding_window", 4u32)
        .kv("modern-bert.attention.sliding_window_pattern", 2u32)
        .kv("modern-bert.rope.freq_base", 160_000f32)
        .kv("modern-bert.rope.freq_base_swa", 10_000f32)
        .kv("modern-bert.pooling_type", 1u32);
    let names: Vec<String> = (0..labels).map(|i| format!("L{i}")).collect();
    g.kv("modern-bert.classifier.output_labels", names);
    g.tensor("token_embd.weight", &[e, vocab], ty)
        .norm("token_embd_norm", e, false);
    for i in 0..layers {
        let p = |s: &str| format!("blk.{i}.{s}");
        if i > 0 {
            g.norm(&p("attn_norm"), e, false);
        }
        g.tensor(&p("attn_qkv.weight"), &[e, 3 * e], ty)
            .tensor(&p("attn_output.weight"), &[e, e], ty)
            .norm(&p("ffn_norm"), e, false)
            .tensor(&p("ffn_up.weight"), &[e, 2 * ff], ty)
            .tensor(&p("ffn_down.weight"), &[ff, e], ty);
    }
    g.norm("output_norm", e, false)
        .tensor("cls.weight", &[e, e], ty)
        .norm("cls.norm", e, false)
        .tensor("cls.output.weight", &[e, labels as u64], GgmlType::F32)
        .tensor("cls.output.bias", &[labels as u64], GgmlType::F32);
}

/// A Qwen2 model in F32 among metadata of every value type (nested arrays too), an alignment of
/// 64, and tensors of the K-quant and other types, of 1 to 4 dimensions.
fn every_kind() -> Vec<u8> {
    let mut g = Gguf::new(7);
    g.kv("general.alignment", 64u32)
        .kv("k.u8", Value::U8(1))
        .kv("k.i8", Value::I8(-1))
        .kv("k.u16", Value::U16(2))
        .kv("k.i16", Value::I16(-2))
        .kv("k.u32", 3u32)
        .kv("k.i32", Value::I32(-3))
        .kv("k.f32", 0.5f32)
        .kv("k.u64", Value::U64(4))
        .kv("k.i64", Value::I64(-4))
        .kv("k.f64", Value::F64(0.25))
        .kv("k.bool", Value::Bool(true))
        .kv("k.str", "text")
        .kv("k.a.u8", Value::Array(Array::U8(vec![1, 2])))
        .kv("k.a.i16", Value::Array(Array::I16(vec![-1, 2])))
        .kv("k.a.u64", Value::Array(Array::U64(vec![1 << 40])))
        .kv("k.a.f64", Value::Array(Array::F64(vec![1.5])))
        .kv("k.a.bool", Value::Array(Array::Bool(vec![true, false])))
        .kv("k.a.f32", vec![1.0f32, 2.0])
        .kv(
            "k.a.nested",
            Value::Array(Array::Array(vec![
                Array::I32(vec![1, 2]),
                Array::String(vec!["x".into()]),
            ])),
        );
    for (i, ty) in [
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q8_K,
        GgmlType::Q8_1,
    ]
    .into_iter()
    .enumerate()
    {
        g.tensor(&format!("t{i}.{}", ty.name()), &[256], ty);
    }
    qwen2(&mut g, 4, 1, &|_| GgmlType::Q4_0, 0);
    g.tensor("t.f32.3d", &[2, 3, 4], GgmlType::F32)
        .tensor("t.bf16.4d", &[2, 1, 2, 2], GgmlType::BF16)
        .tensor("t.nf4", &[64, 2], GgmlType::NF4);
    g.bytes()
}

/// A safetensors file with tensors of any dtype, laid out in order.
fn safetensors_file(tensors: &[(&str, &str, &[u64], usize)], seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for &(name, dtype, shape, size) in tensors {
        let n: u64 = shape.iter().product();
        let start = data.len();
        for _ in 0..n {
            let x = rng.next();
            match (dtype, size) {
                ("F32", _) => data.extend_from_slice(&x.to_le_bytes()),
                ("F16", _) => data.extend_from_slice(&half::f16::from_f32(x).to_le_bytes()),
                ("BF16", _) => data.extend_from_slice(&half::bf16::from_f32(x).to_le_bytes()),
                (_, s) => data.extend(std::iter::repeat_n(1u8, s)),
            }
        }
        header.insert(
            name.into(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut text = serde_json::to_string(&header).unwrap();
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&data);
    out
}

/// Every seed: (target, file name, bytes).
fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    use GgmlType::*;
    let mut out = Vec::new();

    let mut g = Gguf::new(1);
    qwen2(&mut g, 8, 1, &|_| Q8_0, 0);
    out.push(("gguf_reader", "qwen2-q8_0.gguf", g.bytes()));

    let mixed = [Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, F16, BF16, Q8_0];
    let mut g = Gguf::new(2);
    qwen2(&mut g, 8, 1, &|i| mixed[i % mixed.len()], 3);
    out.push(("gguf_reader", "qwen2-cls-mixed.gguf", g.bytes()));

    let mut g = Gguf::new(3);
    bert(&mut g, 8, Q4_1, 2);
    out.push(("gguf_reader", "bert-cls-q4_1.gguf", g.bytes()));

    let mut g = Gguf::new(4);
    modern_bert(&mut g, 8, 2, Q4_0, 3);
    out.push(("gguf_reader", "modernbert-cls-q4_0.gguf", g.bytes()));

    out.push(("gguf_reader", "every-kind.gguf", every_kind()));

    // Non-finite weights (a NaN norm, an infinite Q8_0 scale, an absurd bias): refused by
    // default, then computed with as --allow-nonfinite does.
    let mut g = Gguf::new(12);
    qwen2(&mut g, 8, 1, &|_| Q8_0, 0);
    g.data[1][..4].copy_from_slice(&f32::NAN.to_le_bytes());
    g.data[2][..2].copy_from_slice(&0x7c00u16.to_le_bytes());
    g.data[3][4..8].copy_from_slice(&3e38f32.to_le_bytes());
    out.push(("gguf_reader", "qwen2-nonfinite.gguf", g.bytes()));

    // Tokenizers, with a model their ids run through.
    let mut g = Gguf::new(5);
    let n = bpe_tokenizer(
        &mut g,
        "qwen2",
        false,
        &["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    );
    g.kv("tokenizer.ggml.eos_token_id", (n - 1) as u32)
        .kv("tokenizer.ggml.padding_token_id", (n - 3) as u32)
        .kv("tokenizer.ggml.bos_token_id", (n - 3) as u32)
        .kv("tokenizer.ggml.add_bos_token", Value::Bool(false))
        .kv(
            "tokenizer.chat_template",
            "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}",
        );
    qwen2(&mut g, n as u64, 1, &|_| Q4_0, 0);
    out.push(("tokenizer_from_gguf", "qwen2-bpe.gguf", g.bytes()));

    let mut g = Gguf::new(6);
    let n = bpe_tokenizer(
        &mut g,
        "modern-bert",
        false,
        &["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"],
    );
    g.kv("tokenizer.ggml.unknown_token_id", (n - 5) as u32)
        .kv("tokenizer.ggml.bos_token_id", (n - 4) as u32)
        .kv("tokenizer.ggml.eos_token_id", (n - 3) as u32)
        .kv("tokenizer.ggml.seperator_token_id", (n - 3) as u32)
        .kv("tokenizer.ggml.padding_token_id", (n - 2) as u32)
        .kv("tokenizer.ggml.mask_token_id", (n - 1) as u32)
        .kv("tokenizer.ggml.add_bos_token", Value::Bool(true))
        .kv("tokenizer.ggml.add_eos_token", Value::Bool(true));
    modern_bert(&mut g, n as u64, 1, Q4_0, 2);
    out.push(("tokenizer_from_gguf", "modernbert-bpe.gguf", g.bytes()));

    // WordPiece, in llama.cpp's form: "▁word" starts a word, bare pieces continue one.
    let mut g = Gguf::new(8);
    let mut tokens: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]"]
        .map(String::from)
        .to_vec();
    let mut types = vec![CONTROL, CONTROL, CONTROL, CONTROL, CONTROL, USER_DEFINED];
    for w in [
        "hello", "world", "a", "b", "x", "na", "cafe", "日", "本", "!", ",", "1", "2",
    ] {
        tokens.push(format!("\u{2581}{w}"));
        types.push(1);
    }
    for p in ["s", "ing", "ive", "34", "語", "ll", "o"] {
        tokens.push(p.to_string());
        types.push(1);
    }
    let n = tokens.len();
    g.kv("tokenizer.ggml.model", "bert")
        .kv("tokenizer.ggml.tokens", tokens)
        .kv("tokenizer.ggml.token_type", types)
        .kv("tokenizer.ggml.padding_token_id", 0u32)
        .kv("tokenizer.ggml.unknown_token_id", 1u32)
        .kv("tokenizer.ggml.bos_token_id", 2u32)
        .kv("tokenizer.ggml.seperator_token_id", 3u32)
        .kv("tokenizer.ggml.mask_token_id", 4u32)
        .kv("tokenizer.ggml.normalizer.lowercase", Value::Bool(true));
    bert(&mut g, n as u64, Q4_0, 2);
    out.push(("tokenizer_from_gguf", "bert-wordpiece.gguf", g.bytes()));

    // GPT-2 pre-tokenizer with BOS/EOS added, a user-defined token and llama.cpp's [PAD] fillers;
    // no model.
    let mut g = Gguf::new(9);
    let mut tokens: Vec<String> = byte_chars().iter().map(|c| c.to_string()).collect();
    let mut types = vec![1i32; tokens.len()];
    for (t, ty) in [
        ("He", 1),
        ("ll", 1),
        ("<s>", CONTROL),
        ("</s>", CONTROL),
        ("<tool>", USER_DEFINED),
        ("[PAD0]", UNUSED),
        ("[PAD1]", UNUSED),
    ] {
        tokens.push(t.into());
        types.push(ty);
    }
    let n = tokens.len();
    g.kv("general.architecture", "gpt2")
        .kv("tokenizer.ggml.model", "gpt2")
        .kv("tokenizer.ggml.pre", "gpt-2")
        .kv("tokenizer.ggml.tokens", tokens)
        .kv("tokenizer.ggml.token_type", types)
        .kv(
            "tokenizer.ggml.merges",
            vec!["H e".to_string(), "l l".into()],
        )
        .kv("tokenizer.ggml.bos_token_id", (n - 5) as u32)
        .kv("tokenizer.ggml.eos_token_id", (n - 4) as u32)
        .kv("tokenizer.ggml.add_bos_token", Value::Bool(true))
        .kv("tokenizer.ggml.add_eos_token", Value::Bool(true));
    out.push((
        "tokenizer_from_gguf",
        "gpt2-fillers-no-model.gguf",
        g.bytes(),
    ));

    // Safetensors: the dtypes qgguf reads, skipped integer buffers, 0-D to 4-D shapes.
    out.push((
        "safetensors",
        "mixed-dtypes.safetensors",
        safetensors_file(
            &[
                ("model.embed_tokens.weight", "BF16", &[16, 8], 2),
                ("model.layers.0.mlp.up_proj.weight", "F16", &[8, 4], 2),
                ("model.norm.weight", "F32", &[8], 4),
                ("position_ids", "I64", &[1, 4], 8),
                ("scalar", "F32", &[], 4),
                ("conv", "F16", &[2, 1, 3, 2], 2),
                ("mask", "BOOL", &[3], 1),
            ],
            10,
        ),
    ));
    out.push((
        "safetensors",
        "f32-matrix.safetensors",
        safetensors_file(&[("w", "F32", &[4, 8], 4), ("b", "F32", &[4], 4)], 11),
    ));
    out
}

fn corpus(target: &str) -> PathBuf {
    root().join("fuzz/corpus").join(target)
}

#[test]
fn seeds_are_small_and_go_all_the_way() {
    if std::env::var_os("QGGUF_WRITE_FUZZ_SEEDS").is_some() {
        for (target, name, bytes) in seeds() {
            std::fs::create_dir_all(corpus(target)).unwrap();
            std::fs::write(corpus(target).join(name), bytes).unwrap();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    for &(target, run) in TARGETS {
        let mut n = 0;
        for entry in std::fs::read_dir(corpus(target)).unwrap() {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                bytes.len() <= 12 << 10,
                "{}: {} bytes; seeds stay small",
                path.display(),
                bytes.len()
            );
            if let Err(e) = run(&bytes, dir.path()) {
                panic!("{}: stopped early: {e:#}", path.display());
            }
            // A tokenizer seed holding a model must also load and run as one (the tokenizer
            // target runs its ids through the model).
            let name = path.file_name().unwrap().to_string_lossy();
            if target == "tokenizer_from_gguf" && !name.contains("no-model") {
                if let Err(e) = harness::gguf_reader(&bytes, dir.path()) {
                    panic!("{}: the model stopped early: {e:#}", path.display());
                }
            }
            n += 1;
        }
        assert!(n >= 2, "{target}: only {n} seeds");
    }
}

/// The committed seeds are what [`seeds`] generates (so they stay reproducible).
#[test]
fn seeds_match_their_generator() {
    for (target, name, bytes) in seeds() {
        let committed = std::fs::read(corpus(target).join(name)).unwrap_or_else(|e| {
            panic!("{target}/{name}: {e} (QGGUF_WRITE_FUZZ_SEEDS=1 writes it)")
        });
        assert!(
            committed == bytes,
            "{target}/{name} differs from its generator (QGGUF_WRITE_FUZZ_SEEDS=1 rewrites it)"
        );
    }
}

/// Inputs that crashed a target's walk before a fix (found by the fuzzers, or by hand and kept
/// here because they go through the same walk): each now ends in an error that names the file,
/// or goes through. Named `<target>-<what>`.
#[test]
fn fuzz_regressions_end_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = root().join("tests/fixtures/fuzz_regressions");
    let mut n = 0;
    for entry in std::fs::read_dir(&fixtures).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let (_, run) = TARGETS
            .iter()
            .find(|(t, _)| name.starts_with(&format!("{t}-")))
            .unwrap_or_else(|| panic!("{name}: no target of that name"));
        let bytes = std::fs::read(&path).unwrap();
        if let Err(e) = run(&bytes, dir.path()) {
            let msg = format!("{e:#}");
            assert!(
                msg.contains("model.gguf") || msg.contains("model.safetensors"),
                "{name}: the error does not name the file: {msg}"
            );
        }
        n += 1;
    }
    assert!(n > 0, "no regression inputs in {}", fixtures.display());
}
