//! Malformed Hugging Face checkpoints: safetensors headers (sizes, ranges, dtypes, shapes),
//! shard indexes and config.json keys that are missing or contradict the tensors. Each is
//! rejected with an error naming the file and the field (and the tensor where there is one);
//! none panics or allocates from a declared size.

use qgguf::convert::hf_config::HfConfig;
use qgguf::convert::mix::Preset;
use qgguf::convert::plan_hf;
use qgguf::convert::safetensors_in::{Checkpoint, MAX_HEADER};
use serde_json::{json, Value as Json};
use std::path::Path;

/// A safetensors file from a header (any JSON) and data bytes.
fn st_bytes(header: &Json, data: &[u8]) -> Vec<u8> {
    let text = header.to_string();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(data);
    out
}

fn open_err(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model.safetensors"), bytes).unwrap();
    match Checkpoint::open(dir.path()) {
        Ok(_) => panic!("accepted a malformed safetensors file"),
        Err(e) => format!("{e:#}"),
    }
}

#[track_caller]
fn rejects(bytes: &[u8], needles: &[&str]) {
    let msg = open_err(bytes);
    assert!(
        msg.contains("model.safetensors: invalid safetensors file"),
        "error does not name the file: {msg}"
    );
    for n in needles {
        assert!(msg.contains(n), "expected '{n}' in: {msg}");
    }
}

fn f32s(n: usize) -> Vec<u8> {
    (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect()
}

#[test]
fn a_valid_file_opens() {
    let bytes = st_bytes(
        &json!({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
                "pos": {"dtype": "I64", "shape": [1], "data_offsets": [16, 24]},
                "__metadata__": {"format": "pt"}}),
        &[f32s(4), vec![0; 8]].concat(),
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model.safetensors"), bytes).unwrap();
    let ck = Checkpoint::open(dir.path()).unwrap();
    let w = ck.get("w").unwrap();
    let mut out = [0f32; 4];
    ck.read_f32(w, 0, &mut out);
    assert_eq!(out, [0.0, 1.0, 2.0, 3.0]);
    assert!(ck.get("pos").is_none(), "integer buffers are skipped");
}

#[test]
fn truncated_before_the_header_length() {
    rejects(
        &[1, 0, 0],
        &["header length: needs 8 bytes, the file has 3"],
    );
    rejects(&[], &["header length: needs 8 bytes, the file has 0"]);
}

#[test]
fn header_over_100_mb_is_refused_unread() {
    // Declares a 200 MB header in a 24-byte file: refused from the length alone.
    let mut bytes = 200_000_000u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}              ");
    rejects(
        &bytes,
        &[&format!(
            "header length 200000000 exceeds the limit of {MAX_HEADER} bytes"
        )],
    );
    let mut bytes = u64::MAX.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    rejects(&bytes, &["header length 18446744073709551615 exceeds"]);
}

#[test]
fn header_length_past_the_end() {
    let mut bytes = 1000u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{\"w\": {}}");
    rejects(
        &bytes,
        &["header length 1000 runs past the end of the file"],
    );
}

#[test]
fn header_not_utf8_or_not_an_object() {
    let mut bytes = 4u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(&[b'{', 0xff, 0xfe, b'}']);
    rejects(&bytes, &["header is not valid UTF-8"]);
    rejects(&st_bytes(&json!([1, 2]), &[]), &["header: invalid type"]);
    let mut bytes = 6u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{\"w\": ");
    rejects(&bytes, &["header: tensor 'w': EOF while parsing"]);
}

#[test]
fn entry_fields_missing_or_mistyped() {
    rejects(
        &st_bytes(&json!({"w": {"dtype": "F32", "shape": [1]}}), &f32s(1)),
        &["tensor 'w': missing field `data_offsets`"],
    );
    rejects(
        &st_bytes(
            &json!({"w": {"shape": [1], "data_offsets": [0, 4]}}),
            &f32s(1),
        ),
        &["tensor 'w': missing field `dtype`"],
    );
    rejects(
        &st_bytes(
            &json!({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}),
            &f32s(1),
        ),
        &["tensor 'w': invalid value: integer `-1`"],
    );
    rejects(
        &st_bytes(
            &json!({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0]}}),
            &f32s(1),
        ),
        &["tensor 'w': invalid length 1"],
    );
    rejects(
        &st_bytes(&json!({"__metadata__": {"format": 1}}), &[]),
        &["__metadata__ must map names to strings"],
    );
}

#[test]
fn unknown_dtype() {
    rejects(
        &st_bytes(
            &json!({"w": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 1]}}),
            &[0],
        ),
        &["tensor 'w': unknown variant `Q4`"],
    );
}

#[test]
fn dtypes_that_are_not_weights() {
    // Known to safetensors, but not a weight type qgguf converts.
    for (dtype, size) in [("F64", 8), ("I8", 1), ("F8_E4M3", 1), ("U16", 2)] {
        let bytes = st_bytes(
            &json!({"model.norm.weight": {"dtype": dtype, "shape": [2], "data_offsets": [0, 2 * size]}}),
            &vec![0; 2 * size],
        );
        let msg = open_err(&bytes);
        assert!(
            msg.contains("model.safetensors: tensor 'model.norm.weight' has dtype")
                && msg.contains("only F32, F16 and BF16"),
            "{dtype}: {msg}"
        );
    }
    // An integer buffer is skipped, but a weight stored as integers is refused.
    let bytes = st_bytes(
        &json!({"lm_head.weight": {"dtype": "I32", "shape": [1], "data_offsets": [0, 4]}}),
        &[0; 4],
    );
    let msg = open_err(&bytes);
    assert!(
        msg.contains("tensor 'lm_head.weight' has dtype I32"),
        "{msg}"
    );
}

#[test]
fn short_range() {
    rejects(
        &st_bytes(
            &json!({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}}),
            &[0; 20],
        ),
        &["tensor 'w': data_offsets [0, 20] hold 20 bytes, but shape [2, 3] of F32 takes 24"],
    );
}

#[test]
fn overlapping_ranges() {
    rejects(
        &st_bytes(
            &json!({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                    "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}),
            &f32s(6),
        ),
        &["tensors 'a' and 'b' overlap (data_offsets [0, 16] and [8, 24])"],
    );
}

#[test]
fn range_past_the_end_or_backwards() {
    rejects(
        &st_bytes(
            &json!({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}),
            &f32s(3),
        ),
        &["tensor 'w': data_offsets [0, 16] run past the end of the data (12 bytes"],
    );
    rejects(
        &st_bytes(
            &json!({"w": {"dtype": "F32", "shape": [0], "data_offsets": [8, 4]}}),
            &f32s(3),
        ),
        &["tensor 'w': data_offsets [8, 4] end before they start"],
    );
    rejects(
        &st_bytes(
            &json!({"w": {"dtype": "F32", "shape": [1], "data_offsets": [u64::MAX - 1, u64::MAX]}}),
            &f32s(1),
        ),
        &["tensor 'w': data_offsets", "run past the end"],
    );
}

#[test]
fn bytes_that_belong_to_no_tensor() {
    rejects(
        &st_bytes(
            &json!({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}),
            &f32s(2),
        ),
        &["data bytes [0, 4) belong to no tensor (before tensor 'w')"],
    );
    rejects(
        &st_bytes(
            &json!({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}),
            &f32s(2),
        ),
        &["data bytes [4, 8) at the end of the file belong to no tensor"],
    );
}

#[test]
fn shape_product_overflows() {
    rejects(
        &st_bytes(
            &json!({"w": {"dtype": "F32", "shape": [1u64 << 32, 1u64 << 32, 16], "data_offsets": [0, 4]}}),
            &f32s(1),
        ),
        &["tensor 'w': shape [4294967296, 4294967296, 16] of F32 overflows"],
    );
    // Overflows only once multiplied by the element size.
    rejects(
        &st_bytes(
            &json!({"w": {"dtype": "F64", "shape": [1u64 << 61], "data_offsets": [0, 8]}}),
            &[0; 8],
        ),
        &["tensor 'w': shape [2305843009213693952] of F64 overflows"],
    );
}

#[test]
fn duplicate_tensor_names() {
    // JSON maps would keep only the last entry; the reader sees both.
    let text = r#"{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}"#;
    let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(text.as_bytes());
    bytes.extend_from_slice(&f32s(2));
    rejects(&bytes, &["tensor 'w' appears twice in the header"]);
}

#[test]
fn shard_index_problems() {
    let dir = tempfile::tempdir().unwrap();
    let index = dir.path().join("model.safetensors.index.json");
    let err = |text: &str| {
        std::fs::write(&index, text).unwrap();
        format!("{:#}", Checkpoint::open(dir.path()).err().unwrap())
    };
    let e = err("{not json");
    assert!(
        e.contains("model.safetensors.index.json: not valid JSON"),
        "{e}"
    );
    let e = err(r#"{"metadata": {}}"#);
    assert!(e.contains("no \"weight_map\" object"), "{e}");
    let e = err(r#"{"weight_map": {"w": 3}}"#);
    assert!(e.contains("weight_map[\"w\"] is not a file name"), "{e}");
    let e = err(r#"{"weight_map": {"w": "../../etc/passwd"}}"#);
    assert!(
        e.contains("shard name '../../etc/passwd' must be a plain file name"),
        "{e}"
    );
    let e = err(r#"{"weight_map": {}}"#);
    assert!(e.contains("weight_map is empty"), "{e}");
    let e = err(r#"{"weight_map": {"w": "model-00001-of-00002.safetensors"}}"#);
    assert!(e.contains("model-00001-of-00002.safetensors"), "{e}");
    // The same tensor in two shards.
    let shard = st_bytes(
        &json!({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}),
        &f32s(1),
    );
    std::fs::write(dir.path().join("a.safetensors"), &shard).unwrap();
    std::fs::write(dir.path().join("b.safetensors"), &shard).unwrap();
    let e = err(r#"{"weight_map": {"w": "a.safetensors", "x": "b.safetensors"}}"#);
    assert!(
        e.contains("b.safetensors: tensor 'w' appears in two shards"),
        "{e}"
    );
}

// config.json against the tensors: a tiny Qwen2 checkpoint (hidden 8, 2 heads of which 1 for
// K/V, ffn 16, vocab 10, one layer) and its config, one key changed per test. Shapes are checked
// before the tokenizer is read, so a folder without one shows how far planning got.

fn qwen2_tensors() -> Vec<(String, Vec<u64>)> {
    let mut t: Vec<(String, Vec<u64>)> = vec![
        ("model.embed_tokens.weight".into(), vec![10, 8]),
        ("model.norm.weight".into(), vec![8]),
    ];
    let p = |s: &str| format!("model.layers.0.{s}");
    for (name, shape) in [
        ("input_layernorm.weight", vec![8]),
        ("post_attention_layernorm.weight", vec![8]),
        ("self_attn.q_proj.weight", vec![8, 8]),
        ("self_attn.q_proj.bias", vec![8]),
        ("self_attn.k_proj.weight", vec![4, 8]),
        ("self_attn.k_proj.bias", vec![4]),
        ("self_attn.v_proj.weight", vec![4, 8]),
        ("self_attn.v_proj.bias", vec![4]),
        ("self_attn.o_proj.weight", vec![8, 8]),
        ("mlp.gate_proj.weight", vec![16, 8]),
        ("mlp.up_proj.weight", vec![16, 8]),
        ("mlp.down_proj.weight", vec![8, 16]),
    ] {
        t.push((p(name), shape));
    }
    t
}

fn qwen2_config() -> Json {
    json!({
        "architectures": ["Qwen2ForCausalLM"], "hidden_size": 8, "intermediate_size": 16,
        "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
        "vocab_size": 10, "max_position_embeddings": 64, "rms_norm_eps": 1e-6,
        "tie_word_embeddings": true
    })
}

fn write_model(dir: &Path, config: &Json, tensors: &[(String, Vec<u64>)]) {
    let mut header = serde_json::Map::new();
    let mut offset = 0u64;
    for (name, shape) in tensors {
        let bytes = shape.iter().product::<u64>() * 2;
        header.insert(
            name.clone(),
            json!({"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let st = st_bytes(&Json::Object(header), &vec![0; offset as usize]);
    std::fs::write(dir.join("model.safetensors"), st).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
}

/// Plans a conversion of the tiny checkpoint with `config` and returns the error.
fn plan_err(config: &Json, tensors: &[(String, Vec<u64>)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), config, tensors);
    let r = HfConfig::load(dir.path()).and_then(|cfg| {
        let ck = Checkpoint::open(dir.path())?;
        plan_hf(&cfg, &ck, Preset::F16, &[]).map(|_| ())
    });
    match r {
        Ok(()) => panic!("planned a conversion of a contradictory checkpoint"),
        Err(e) => format!("{e:#}"),
    }
}

fn with(key: &str, value: Json) -> Json {
    let mut c = qwen2_config();
    c[key] = value;
    c
}

#[track_caller]
fn config_rejects(config: &Json, needles: &[&str]) {
    let msg = plan_err(config, &qwen2_tensors());
    for n in needles {
        assert!(msg.contains(n), "expected '{n}' in: {msg}");
    }
}

#[test]
fn the_unchanged_checkpoint_gets_as_far_as_the_tokenizer() {
    // Control for the tests below: with a consistent config, planning stops only for want of a
    // tokenizer, so each error below comes from the key that test changed.
    let msg = plan_err(&qwen2_config(), &qwen2_tensors());
    assert!(msg.contains("tokenizer"), "{msg}");
    assert!(!msg.contains("config.json implies"), "{msg}");
}

#[test]
fn config_missing_or_not_json() {
    let dir = tempfile::tempdir().unwrap();
    let e = format!("{:#}", HfConfig::load(dir.path()).err().unwrap());
    assert!(e.contains("config.json: cannot read"), "{e}");
    std::fs::write(dir.path().join("config.json"), "{\"architectures\": [").unwrap();
    let e = format!("{:#}", HfConfig::load(dir.path()).err().unwrap());
    assert!(e.contains("config.json: not a JSON object"), "{e}");
}

#[test]
fn config_without_architectures() {
    let mut c = qwen2_config();
    c.as_object_mut().unwrap().remove("architectures");
    config_rejects(&c, &["config.json: no \"architectures\" list"]);
    config_rejects(
        &with("architectures", json!("Qwen2ForCausalLM")),
        &["config.json: no \"architectures\" list"],
    );
}

#[test]
fn config_key_of_the_wrong_type() {
    config_rejects(
        &with("hidden_size", json!("8")),
        &["config.json: 'hidden_size' must be a non-negative integer, found \"8\""],
    );
    config_rejects(
        &with("num_hidden_layers", json!(-1)),
        &["config.json: 'num_hidden_layers' must be a non-negative integer"],
    );
    config_rejects(
        &with("num_attention_heads", json!(1u64 << 40)),
        &["config.json: 'num_attention_heads' must be a non-negative integer"],
    );
    config_rejects(
        &with("rms_norm_eps", json!("small")),
        &["config.json: 'rms_norm_eps' must be a number"],
    );
}

#[test]
fn config_key_null_where_required() {
    // A key present as null suppresses the class default (as transformers' to_dict does).
    config_rejects(
        &with("vocab_size", Json::Null),
        &["config.json: required key 'vocab_size' is missing"],
    );
}

#[test]
fn config_missing_hidden_size_contradicts_the_embedding() {
    // Absent keys take transformers' defaults (hidden_size 4096), which the tensors contradict.
    let mut c = qwen2_config();
    c.as_object_mut().unwrap().remove("hidden_size");
    config_rejects(
        &c,
        &["tensor 'token_embd.weight' has shape [10, 8], but config.json implies [10, 4096]"],
    );
}

#[test]
fn config_vocab_contradicts_the_embedding() {
    config_rejects(
        &with("vocab_size", json!(12)),
        &["tensor 'token_embd.weight' has shape [10, 8], but config.json implies [12, 8]"],
    );
}

#[test]
fn config_heads_do_not_divide_hidden_size() {
    config_rejects(
        &with("num_attention_heads", json!(3)),
        &["hidden_size 8 is not a multiple of num_attention_heads 3"],
    );
    config_rejects(
        &with("num_attention_heads", json!(0)),
        &["is not a multiple of num_attention_heads 0"],
    );
}

#[test]
fn config_kv_heads_contradict_k_proj() {
    config_rejects(
        &with("num_key_value_heads", json!(2)),
        &["tensor 'blk.0.attn_k.weight' has shape [4, 8], but config.json implies [8, 8]"],
    );
}

#[test]
fn config_intermediate_size_contradicts_the_mlp() {
    config_rejects(
        &with("intermediate_size", json!(32)),
        &["tensor 'blk.0.ffn_gate.weight' has shape [16, 8], but config.json implies [32, 8]"],
    );
}

#[test]
fn config_more_layers_than_the_checkpoint() {
    config_rejects(
        &with("num_hidden_layers", json!(2)),
        &["tensor for 'blk.1.attn_q.weight' is missing (num_hidden_layers is 2)"],
    );
    // Four billion layers: the first missing one stops the check.
    config_rejects(
        &with("num_hidden_layers", json!(u32::MAX)),
        &["tensor for 'blk.1.attn_q.weight' is missing (num_hidden_layers is 4294967295)"],
    );
}

#[test]
fn config_fewer_layers_than_the_checkpoint() {
    let mut tensors = qwen2_tensors();
    let extra: Vec<_> = tensors
        .iter()
        .filter(|(n, _)| n.starts_with("model.layers.0."))
        .map(|(n, s)| (n.replace("layers.0.", "layers.1."), s.clone()))
        .collect();
    tensors.extend(extra);
    let msg = plan_err(&qwen2_config(), &tensors);
    assert!(
        msg.contains("the checkpoint has more layers than num_hidden_layers (1)"),
        "{msg}"
    );
}

#[test]
fn config_labels_contradict_the_score_head() {
    let mut c = with("architectures", json!(["Qwen2ForSequenceClassification"]));
    c["id2label"] = json!({"0": "neg", "1": "pos", "2": "neutral"});
    let mut tensors = qwen2_tensors();
    tensors.push(("score.weight".into(), vec![2, 8]));
    let msg = plan_err(&c, &tensors);
    assert!(
        msg.contains("tensor 'cls.output.weight' has shape [2, 8], but config.json implies [3, 8]"),
        "{msg}"
    );
    c["id2label"] = json!({"0": "neg", "x": "pos"});
    let msg = plan_err(&c, &tensors);
    assert!(
        msg.contains("config.json: id2label key 'x' is not an integer"),
        "{msg}"
    );
    c["id2label"] = json!({"0": "neg", "2": "pos"});
    let msg = plan_err(&c, &tensors);
    assert!(
        msg.contains("config.json: id2label ids are not 0..2"),
        "{msg}"
    );
}

#[test]
fn tensor_the_architecture_does_not_have() {
    let mut tensors = qwen2_tensors();
    tensors.push(("model.layers.0.mlp.experts.0.weight".into(), vec![8]));
    let msg = plan_err(&qwen2_config(), &tensors);
    assert!(
        msg.contains("tensor 'model.layers.0.mlp.experts.0.weight' is not part of a Qwen2ForCausalLM checkpoint"),
        "{msg}"
    );
}

#[test]
fn tensor_with_a_zero_dimension() {
    let mut tensors = qwen2_tensors();
    tensors[1].1 = vec![0];
    let msg = plan_err(&qwen2_config(), &tensors);
    assert!(
        msg.contains("tensor 'model.norm.weight' has shape [0]"),
        "{msg}"
    );
}
