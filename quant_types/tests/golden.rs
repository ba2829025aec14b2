//! The proof that qgguf's quantizers are llama.cpp's: bytes written by ggml itself
//! (`ggml_quantize_chunk`, the path llama-quantize takes without an importance matrix) and floats
//! dequantized by ggml and by the `gguf` PyPI package, for rows of random normal, heavy-tailed,
//! all-zero, constant, tiny, huge, subnormal, tie-inducing and mixed-scale values. The fixtures
//! are made by `tools/make-golden.sh`; see `tests/fixtures/golden/manifest.json`.

use quant_types::dynamic::{dequantize, quantize};
use quant_types::GgmlType;
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/golden")
}

struct Golden {
    n: usize,
    /// Rows of each case kept in the dequantized references.
    dequant_rows: usize,
    /// (case name, rows) in file order.
    cases: Vec<(String, usize)>,
    inputs: Vec<f32>,
}

impl Golden {
    /// Names every input row: (case, row within the case).
    fn row_names(&self) -> Vec<(String, usize)> {
        self.cases
            .iter()
            .flat_map(|(name, rows)| (0..*rows).map(move |r| (name.clone(), r)))
            .collect()
    }
}

fn read_f32(name: &str) -> Vec<f32> {
    let bytes = std::fs::read(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn load() -> Golden {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir().join("manifest.json")).unwrap()).unwrap();
    Golden {
        n: m["n_per_row"].as_u64().unwrap() as usize,
        dequant_rows: m["dequant_rows"].as_u64().unwrap() as usize,
        cases: m["cases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_string(),
                    c["rows"].as_u64().unwrap() as usize,
                )
            })
            .collect(),
        inputs: read_f32("inputs.f32"),
    }
}

/// ggml's file-name spelling of each type (`ggml_type_name`).
const TYPES: &[(GgmlType, &str)] = &[
    (GgmlType::F16, "f16"),
    (GgmlType::BF16, "bf16"),
    (GgmlType::Q4_0, "q4_0"),
    (GgmlType::Q4_1, "q4_1"),
    (GgmlType::Q5_0, "q5_0"),
    (GgmlType::Q5_1, "q5_1"),
    (GgmlType::Q8_0, "q8_0"),
    (GgmlType::Q4_K, "q4_K"),
    (GgmlType::Q5_K, "q5_K"),
    (GgmlType::Q6_K, "q6_K"),
    (GgmlType::IQ4_NL, "iq4_nl"),
    (GgmlType::Q8_1, "q8_1"),
    (GgmlType::Q8_K, "q8_K"),
];

#[test]
fn quantized_bytes_equal_ggml() {
    let g = load();
    let names = g.row_names();
    let mut failures = Vec::new();
    for &(ty, name) in TYPES {
        let expected = std::fs::read(dir().join(format!("{name}.q"))).unwrap();
        let row_bytes = ty.row_bytes(g.n).unwrap();
        assert_eq!(
            expected.len(),
            row_bytes * g.inputs.len() / g.n,
            "{name}.q size"
        );
        for (r, (x, want)) in g
            .inputs
            .chunks_exact(g.n)
            .zip(expected.chunks_exact(row_bytes))
            .enumerate()
        {
            let mut got = vec![0u8; row_bytes];
            quantize(ty, x, &mut got).unwrap();
            if got != want {
                let byte = got.iter().zip(want).position(|(a, b)| a != b).unwrap();
                failures.push(format!(
                    "{ty}: case {} row {}: first difference in block {} (byte {byte})",
                    names[r].0,
                    names[r].1,
                    byte / ty.block_bytes()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn check_dequant(reference: &str) {
    let g = load();
    // The references keep only the first `dequant_rows` rows of each case.
    let kept: Vec<(usize, (String, usize))> = g
        .row_names()
        .into_iter()
        .enumerate()
        .filter(|(_, (_, r))| *r < g.dequant_rows)
        .collect();
    let mut failures = Vec::new();
    let mut checked = 0;
    for &(ty, name) in TYPES {
        let path = format!("{name}.{reference}.f32");
        if !dir().join(&path).exists() {
            continue;
        }
        checked += 1;
        let want = read_f32(&path);
        let bytes = std::fs::read(dir().join(format!("{name}.q"))).unwrap();
        let row_bytes = ty.row_bytes(g.n).unwrap();
        assert_eq!(want.len(), kept.len() * g.n, "{path} size");
        for ((row, (case, r)), want) in kept.iter().zip(want.chunks_exact(g.n)) {
            let q = &bytes[row * row_bytes..(row + 1) * row_bytes];
            let mut got = vec![0.0f32; g.n];
            dequantize(ty, q, &mut got).unwrap();
            if let Some(i) = got
                .iter()
                .zip(want)
                .position(|(a, b)| a.to_bits() != b.to_bits())
            {
                failures.push(format!(
                    "{ty} vs {reference}: case {case} row {r}: element {i}: {} != {}",
                    got[i], want[i]
                ));
            }
        }
    }
    assert!(
        checked >= 11,
        "only {checked} {reference} dequantizations found"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn dequantized_floats_equal_ggml_bit_for_bit() {
    check_dequant("ggml");
}

#[test]
fn dequantized_floats_equal_gguf_py_bit_for_bit() {
    check_dequant("gguf");
}
