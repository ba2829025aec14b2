//! GPU backend against the CPU: every kernel against its scalar reference on random data, and
//! whole models (Qwen2 fully and partly offloaded, BERT, ModernBERT) against the CPU models on
//! tiny synthetic checkpoints of every format.
//!
//! Needs an NVIDIA GPU: built with `--features cuda`, and run only when QGGUF_TEST_GPU=1 (CI has
//! no GPU, so these tests say they skip there). The model tests also need QGGUF_VOCAB_DIR.
#![cfg(feature = "cuda")]

use half::f16;
use qgguf::backend::cpu::attention::{self as cpu_attn, Heads};
use qgguf::backend::cpu::ops as cpu_ops;
use qgguf::backend::cuda::attention::{self, EncoderAttnScratch};
use qgguf::backend::cuda::device::{DBuf, Gpu, Grow};
use qgguf::backend::cuda::linear::{matmul, GemmScratch, GpuMat};
use qgguf::backend::cuda::{gpu, ops};
use qgguf::backend::offload;
use qgguf::convert::hf_config::HfConfig;
use qgguf::convert::mix::{Override, Preset};
use qgguf::convert::pipeline::{self, WriteOptions};
use qgguf::convert::plan::Inputs;
use qgguf::convert::plan_hf;
use qgguf::convert::safetensors_in::Checkpoint;
use qgguf::convert::synth::{synthesize, SynthSpec};
use qgguf::model::encoder::{Batch, EncoderState};
use qgguf::model::qwen2::Output;
use qgguf::model::{Arch, Model};
use quant_types::{dynamic, GgmlType};
use std::path::{Path, PathBuf};

fn enabled() -> Option<&'static Gpu> {
    if std::env::var("QGGUF_TEST_GPU").as_deref() != Ok("1") {
        eprintln!("QGGUF_TEST_GPU is not 1: skipping the GPU test");
        return None;
    }
    Some(gpu().expect("QGGUF_TEST_GPU=1 but no usable GPU"))
}

/// Deterministic values in [-1, 1).
fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

const WEIGHT_TYPES: [GgmlType; 13] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_NL,
    GgmlType::NF4,
];

fn quantized(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    let w: Vec<f32> = rand_vec(rows * cols, seed)
        .iter()
        .map(|v| v * 0.1)
        .collect();
    let rb = ty.row_bytes(cols).unwrap();
    let mut q = vec![0u8; rows * rb];
    for (dst, src) in q.chunks_mut(rb).zip(w.chunks(cols)) {
        dynamic::quantize(ty, src, dst).unwrap();
    }
    q
}

fn dequantized(ty: GgmlType, q: &[u8], rows: usize, cols: usize) -> Vec<f32> {
    let rb = ty.row_bytes(cols).unwrap();
    let mut w = vec![0f32; rows * cols];
    for (dst, src) in w.chunks_mut(cols).zip(q.chunks(rb)) {
        dynamic::dequantize(ty, src, dst).unwrap();
    }
    w
}

fn download(g: &Gpu, b: &DBuf, n: usize) -> Vec<f32> {
    let mut v = vec![0f32; n];
    g.download(b, 0, &mut v).unwrap();
    v
}

#[test]
fn dequantization_is_exact_for_every_type() {
    let Some(g) = enabled() else { return };
    let (rows, cols) = (7, 512);
    for (i, ty) in WEIGHT_TYPES.into_iter().enumerate() {
        let q = quantized(ty, rows, cols, 1 + i as u64);
        let want = dequantized(ty, &q, rows, cols);
        let m = GpuMat::upload(g, "w", ty, rows, cols, &q).unwrap();
        let out = DBuf::new(g, rows * cols * 4).unwrap();
        m.dequantize(g, 0, rows, out.ptr(), false).unwrap();
        let got = download(g, &out, rows * cols);
        for (j, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(
                a.to_bits() == b.to_bits(),
                "{ty}: weight {j}: GPU {a} vs CPU {b}"
            );
        }
    }
}

/// The fused matrix-vector kernels (1 and up to 8 tokens) and the f16 cuBLAS path (more tokens),
/// with bias and accumulation, against f64 sums over the CPU's dequantized weights.
#[test]
fn products_match_the_dequantized_reference_for_every_type() {
    let Some(g) = enabled() else { return };
    let (rows, cols) = (37, 512);
    for (i, ty) in WEIGHT_TYPES.into_iter().enumerate() {
        let q = quantized(ty, rows, cols, 100 + i as u64);
        let w = dequantized(ty, &q, rows, cols);
        let m = GpuMat::upload(g, "w", ty, rows, cols, &q).unwrap();
        let bias = rand_vec(rows, 7);
        let bb = DBuf::from_slice(g, &bias).unwrap();
        let mut s = GemmScratch::default();
        for n in [1usize, 3, 8, 17] {
            let x = rand_vec(n * cols, 200 + n as u64);
            let y0 = rand_vec(n * rows, 300 + n as u64);
            let xb = DBuf::from_slice(g, &x).unwrap();
            let yb = DBuf::from_slice(g, &y0).unwrap();
            matmul(g, &m, xb.ptr(), n, yb.ptr(), Some(bb.ptr()), true, &mut s).unwrap();
            let got = download(g, &yb, n * rows);
            // f32 accumulation for the fused kernels; f16 inputs through cuBLAS.
            let rel = if n <= 8 { 1e-5 } else { 3e-3 };
            for t in 0..n {
                for o in 0..rows {
                    let (mut exact, mut scale) = (0f64, 0f64);
                    for c in 0..cols {
                        let p = w[o * cols + c] as f64 * x[t * cols + c] as f64;
                        exact += p;
                        scale += p.abs();
                    }
                    let want = y0[t * rows + o] as f64 + exact + bias[o] as f64;
                    let err = (got[t * rows + o] as f64 - want).abs();
                    assert!(
                        err <= rel * (scale + 1.0),
                        "{ty} n={n} t{t} o{o}: GPU {} vs {want} (scale {scale})",
                        got[t * rows + o]
                    );
                }
            }
        }
    }
}

#[track_caller]
fn close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= tol * (1.0 + b.abs()),
            "{what}: element {i}: GPU {a} vs CPU {b}"
        );
    }
}

/// Relative L2 distance `|got - want| / |want|` at most `tol`.
fn close_norm(what: &str, got: &[f32], want: &[f32], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let (mut d2, mut w2) = (0.0f64, 0.0f64);
    for (a, b) in got.iter().zip(want) {
        d2 += (*a as f64 - *b as f64).powi(2);
        w2 += (*b as f64).powi(2);
    }
    let rel = (d2 / w2.max(f64::MIN_POSITIVE)).sqrt();
    assert!(
        rel <= tol,
        "{what}: relative L2 distance {rel:.2e} > {tol:.0e}"
    );
    eprintln!("{what}: relative L2 distance {rel:.2e}");
}

#[test]
fn norms_rope_and_activations_match_the_cpu() {
    let Some(g) = enabled() else { return };
    let (n, dim) = (5, 896);
    let x: Vec<f32> = rand_vec(n * dim, 1).iter().map(|v| v * 300.0).collect();
    let w = rand_vec(dim, 2);
    let b = rand_vec(dim, 3);
    let (xb, wb, bb) = (
        DBuf::from_slice(g, &x).unwrap(),
        DBuf::from_slice(g, &w).unwrap(),
        DBuf::from_slice(g, &b).unwrap(),
    );
    let ob = DBuf::new(g, n * dim * 4).unwrap();
    let mut want = vec![0f32; n * dim];
    ops::rms_norm(g, xb.ptr(), wb.ptr(), ob.ptr(), n, dim, 1e-6).unwrap();
    cpu_ops::rms_norm(&x, &w, 1e-6, &mut want);
    close("rms_norm", &download(g, &ob, n * dim), &want, 1e-6);
    ops::layer_norm(
        g,
        xb.ptr(),
        wb.ptr(),
        Some(bb.ptr()),
        ob.ptr(),
        n,
        dim,
        1e-5,
    )
    .unwrap();
    cpu_ops::layer_norm(&x, &w, Some(&b), 1e-5, &mut want);
    close("layer_norm", &download(g, &ob, n * dim), &want, 1e-5);

    // RoPE: 7 heads of 128 at positions 1000.., and per-token positions.
    let mut want = x.clone();
    for t in 0..n {
        cpu_ops::rope_neox(&mut want[t * dim..(t + 1) * dim], 128, 1000 + t, 1e6);
    }
    let rb = DBuf::from_slice(g, &x).unwrap();
    ops::rope(g, rb.ptr(), n, 7, 128, dim, 1000, None, 1e6).unwrap();
    close("rope", &download(g, &rb, n * dim), &want, 1e-6);
    let pos: Vec<i32> = vec![3, 0, 9, 1, 4];
    let mut want = x.clone();
    for t in 0..n {
        cpu_ops::rope_neox(
            &mut want[t * dim..(t + 1) * dim],
            64,
            pos[t] as usize,
            160000.0,
        );
    }
    let pb = DBuf::from_slice(g, &pos).unwrap();
    let rb = DBuf::from_slice(g, &x).unwrap();
    ops::rope(g, rb.ptr(), n, 14, 64, dim, 0, Some(pb.ptr()), 160000.0).unwrap();
    close(
        "rope with positions",
        &download(g, &rb, n * dim),
        &want,
        1e-6,
    );

    let a: Vec<f32> = rand_vec(n * dim, 4).iter().map(|v| v * 8.0).collect();
    let u = rand_vec(n * dim, 5);
    let (ab, ub) = (
        DBuf::from_slice(g, &a).unwrap(),
        DBuf::from_slice(g, &u).unwrap(),
    );
    ops::silu_mul(g, ab.ptr(), ub.ptr(), n * dim).unwrap();
    let want: Vec<f32> = a
        .iter()
        .zip(&u)
        .map(|(x, y)| cpu_ops::silu(*x) * y)
        .collect();
    close("silu_mul", &download(g, &ab, n * dim), &want, 1e-6);
    let ab = DBuf::from_slice(g, &a).unwrap();
    ops::gelu(g, ab.ptr(), n * dim).unwrap();
    let want: Vec<f32> = a.iter().map(|x| cpu_ops::gelu(*x)).collect();
    // erf near -1 loses digits: GELU of large negative inputs agrees to ~1e-6 absolutely.
    close("gelu", &download(g, &ab, n * dim), &want, 1e-5);
    let ff = dim / 2;
    let ab = DBuf::from_slice(g, &a).unwrap();
    let gb = DBuf::new(g, n * ff * 4).unwrap();
    ops::geglu(g, ab.ptr(), gb.ptr(), n, ff).unwrap();
    let want: Vec<f32> = (0..n * ff)
        .map(|i| {
            let (t, j) = (i / ff, i % ff);
            cpu_ops::gelu(a[t * dim + j]) * a[t * dim + ff + j]
        })
        .collect();
    close("geglu", &download(g, &gb, n * ff), &want, 1e-5);
}

/// Causal attention over an f16 cache (with and without key splits, every head size) against
/// the CPU's.
#[test]
fn causal_attention_matches_the_cpu() {
    let Some(g) = enabled() else { return };
    for hd in attention::HEAD_DIMS {
        for (n, pos0) in [(1usize, 0usize), (3, 700), (20, 0), (9, 40)] {
            let h = Heads {
                n_head: 4,
                n_head_kv: 2,
                head_dim: hd,
            };
            let (qd, kvd, len) = (4 * hd, 2 * hd, pos0 + n);
            let q: Vec<f32> = rand_vec(n * qd, hd as u64)
                .iter()
                .map(|v| v * 3.0)
                .collect();
            let k = rand_vec(len * kvd, 11);
            let v = rand_vec(len * kvd, 12);
            let k16: Vec<f16> = k.iter().map(|&x| f16::from_f32(x)).collect();
            let v16: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
            let mut want = vec![0f32; n * qd];
            let kr: Vec<f32> = k16.iter().map(|x| x.to_f32()).collect();
            let vr: Vec<f32> = v16.iter().map(|x| x.to_f32()).collect();
            cpu_attn::causal(&q, &kr, &vr, n, pos0, h, &mut want);
            let kb = DBuf::from_slice(g, &k16).unwrap();
            let vb = DBuf::from_slice(g, &v16).unwrap();
            let qb = DBuf::from_slice(g, &q).unwrap();
            let ob = DBuf::new(g, n * qd * 4).unwrap();
            let mut part = Grow::default();
            attention::causal(
                g,
                qb.ptr(),
                kb.ptr(),
                vb.ptr(),
                ob.ptr(),
                &mut part,
                n,
                pos0,
                h,
            )
            .unwrap();
            close(
                &format!("causal hd{hd} n{n} pos0 {pos0}"),
                &download(g, &ob, n * qd),
                &want,
                2e-5,
            );
        }
    }
}

/// Bidirectional attention of a packed batch through cuBLAS (f16 inputs), global and windowed.
#[test]
fn encoder_attention_matches_the_cpu() {
    let Some(g) = enabled() else { return };
    for hd in [16usize, 32, 64] {
        let h = Heads {
            n_head: 3,
            n_head_kv: 3,
            head_dim: hd,
        };
        let e = 3 * hd;
        let seqs = [0..37usize, 37..87, 87..88];
        let n = 88;
        // Packed q|k|v rows, as ModernBERT's fused projection leaves them.
        let qkv = rand_vec(n * 3 * e, hd as u64 + 50);
        let qkvb = DBuf::from_slice(g, &qkv).unwrap();
        let ob = DBuf::new(g, n * e * 4).unwrap();
        let mut sc = EncoderAttnScratch::default();
        for window in [None, Some(5)] {
            let mut want = vec![0f32; n * e];
            for s in &seqs {
                let pick = |off: usize| -> Vec<f32> {
                    s.clone()
                        .flat_map(|t| qkv[t * 3 * e + off..t * 3 * e + off + e].to_vec())
                        .collect()
                };
                let (q, k, v) = (pick(0), pick(e), pick(2 * e));
                cpu_attn::bidirectional(
                    &q,
                    &k,
                    &v,
                    s.len(),
                    window,
                    h,
                    &mut want[s.start * e..s.end * e],
                );
            }
            let p = qkvb.ptr();
            attention::bidirectional(
                g,
                (p, p + 4 * e as u64, p + 8 * e as u64),
                3 * e,
                ob.ptr(),
                &seqs,
                window,
                h,
                &mut sc,
            )
            .unwrap();
            close(
                &format!("bidirectional hd{hd} window {window:?}"),
                &download(g, &ob, n * e),
                &want,
                3e-3,
            );
        }
    }
}

// ---- Whole models ----

fn vocab_dir() -> Option<PathBuf> {
    let d = std::env::var_os("QGGUF_VOCAB_DIR").map(PathBuf::from);
    if d.is_none() {
        eprintln!("QGGUF_VOCAB_DIR is not set: skipping");
    }
    d
}

/// Converts a checkpoint; returns the file and its "twin": the same weights dequantized to F32,
/// which the CPU runs with exact f32 activations. The twin separates the GPU's own error (it
/// takes f32 activations too) from the CPU's 8-bit activation rounding on quantized weights.
fn convert(model_dir: &Path, out: &Path, preset: Preset, overrides: &[&str]) -> (PathBuf, PathBuf) {
    let cfg = HfConfig::load(model_dir).unwrap();
    let ck = Checkpoint::open(model_dir).unwrap();
    let ov: Vec<Override> = overrides
        .iter()
        .map(|s| Override::parse(s).unwrap())
        .collect();
    let plan = plan_hf(&cfg, &ck, preset, &ov).unwrap();
    pipeline::write(
        &plan,
        &Inputs::Checkpoint(&ck),
        out,
        WriteOptions::default(),
    )
    .unwrap();
    let file = qgguf::gguf::GgufFile::open(out).unwrap();
    let twin = out.with_extension("f32.gguf");
    let plan = qgguf::convert::plan_gguf(&file, Preset::F32, &[]).unwrap();
    pipeline::write(&plan, &Inputs::Gguf(&file), &twin, WriteOptions::default()).unwrap();
    (out.to_path_buf(), twin)
}

/// A Qwen2 checkpoint whose matrices suit every block size (256 columns), two KV heads of 64.
fn qwen_spec() -> SynthSpec {
    let mut s = SynthSpec::preset("tiny-qwen2").unwrap();
    s.hidden = 256;
    s.heads = 4;
    s.kv_heads = 2;
    s.ff = 512;
    s.layers = 4;
    s
}

fn log_softmax(l: &[f32]) -> Vec<f64> {
    let m = l.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let s: f64 = l.iter().map(|&v| (v as f64 - m).exp()).sum();
    l.iter().map(|&v| v as f64 - m - s.ln()).collect()
}

/// Logits of every position: a prefill of 40 tokens (cuBLAS path) then 8 decoded one by one
/// (fused kernels).
fn qwen_logits(model: &Model, tokens: &[u32]) -> Vec<Vec<f32>> {
    let Arch::Qwen2(m) = &model.arch else {
        panic!("not qwen2")
    };
    let mut st = m.new_state(64);
    let mut out = Vec::new();
    m.forward(&model.file, &mut st, &tokens[..40], Output::AllLogits)
        .unwrap();
    out.extend(st.logits.chunks(m.hp.n_vocab).take(40).map(|c| c.to_vec()));
    for &t in &tokens[40..] {
        m.forward(&model.file, &mut st, &[t], Output::LastLogits)
            .unwrap();
        out.push(st.logits[..m.hp.n_vocab].to_vec());
    }
    out
}

/// GPU Qwen2 (all layers and head, and only the last two layers) against the CPU on each
/// format: mean KL divergence and top-1 agreement over 48 positions.
#[test]
fn qwen2_offload_matches_the_cpu_for_every_format() {
    let Some(_) = enabled() else { return };
    let Some(vocab) = vocab_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("qwen");
    synthesize(
        &qwen_spec(),
        &vocab.join("ggml-vocab-qwen2.gguf"),
        &dir,
        false,
    )
    .unwrap();
    let tokens: Vec<u32> = rand_vec(48, 9)
        .iter()
        .map(|v| ((v + 1.0) * 70000.0) as u32)
        .collect();
    let mix = [
        "attn_q=Q4_0",
        "attn_k=Q4_1",
        "attn_v=Q5_1",
        "attn_output=Q5_0",
        "ffn_gate=BF16",
        "ffn_up=Q5_K",
        "ffn_down=Q6_K",
    ];
    let cases: [(Preset, &[&str]); 7] = [
        (Preset::F16, &[]),
        (Preset::Q8_0, &[]),
        (Preset::Q4_K_M, &[]),
        (Preset::Q5_K_S, &[]),
        (Preset::IQ4_NL, &[]),
        (Preset::NF4, &[]),
        (Preset::F32, &mix),
    ];
    let compare = |want: &[Vec<f32>], got: &[Vec<f32>]| -> (f64, f64) {
        let (mut kld, mut same) = (0f64, 0usize);
        for (a, b) in want.iter().zip(got) {
            let (la, lb) = (log_softmax(a), log_softmax(b));
            kld += la
                .iter()
                .zip(&lb)
                .map(|(p, q)| p.exp() * (p - q))
                .sum::<f64>();
            same += (qgguf::sampling::argmax(a) == qgguf::sampling::argmax(b)) as usize;
        }
        (kld / want.len() as f64, same as f64 / want.len() as f64)
    };
    for (preset, ov) in cases {
        let (path, twin) = convert(
            &dir,
            &tmp.path().join(format!("q-{}.gguf", preset.name())),
            preset,
            ov,
        );
        let cpu = qwen_logits(&Model::load(&path).unwrap(), &tokens);
        let exact = qwen_logits(&Model::load(&twin).unwrap(), &tokens);
        for ngl in [99usize, 2] {
            let mut gm = Model::load(&path).unwrap();
            offload::attach(&mut gm, ngl).unwrap();
            let got = qwen_logits(&gm, &tokens);
            let (kld, top) = compare(&exact, &got);
            let (kld_cpu, top_cpu) = compare(&cpu, &got);
            eprintln!(
                "qwen2 {} {:?} ngl {ngl}: against exact f32 math: mean KLD {kld:.2e}, same top-1 {:.1}%; against the CPU (8-bit activations): mean KLD {kld_cpu:.2e}, same top-1 {:.1}%",
                preset.name(),
                ov.first(),
                100.0 * top,
                100.0 * top_cpu
            );
            // With every layer on the GPU, or with f16 weights (which the CPU multiplies without
            // rounding activations to 8 bits), the result is the exact f32 math's.
            if ngl >= 4 || preset == Preset::F16 {
                assert!(kld <= 1e-4, "{} ngl {ngl}: mean KLD {kld}", preset.name());
                assert!(top >= 0.95, "{} ngl {ngl}: top-1 {top}", preset.name());
            }
            // Against the CPU the difference is the CPU's activation rounding, smaller when the
            // CPU computes some layers itself (the hand-off must add nothing).
            let bound = if ngl >= 4 { 1e-2 } else { 2e-3 };
            assert!(
                kld_cpu <= bound,
                "{} ngl {ngl}: mean KLD against the CPU {kld_cpu}",
                preset.name()
            );
        }
    }
}

/// Encoders whole on the GPU against the CPU: hidden states, pooled embeddings (cosine) and
/// class logits; and the Qwen2 classifier's head.
#[test]
fn classifiers_and_encoders_match_the_cpu() {
    let Some(_) = enabled() else { return };
    let Some(vocab) = vocab_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    for (fixture, v) in [
        ("tiny-bert-cls", "ggml-vocab-bert-bge.gguf"),
        ("tiny-modernbert-cls", "ggml-vocab-gpt-neox.gguf"),
        ("tiny-qwen2-cls", "ggml-vocab-qwen2.gguf"),
    ] {
        let dir = tmp.path().join(fixture);
        synthesize(
            &SynthSpec::preset(fixture).unwrap(),
            &vocab.join(v),
            &dir,
            false,
        )
        .unwrap();
        for preset in [Preset::F16, Preset::Q8_0, Preset::NF4] {
            let (path, twin) = convert(
                &dir,
                &tmp.path().join(format!("{fixture}-{}.gguf", preset.name())),
                preset,
                &[],
            );
            let cpu = Model::load(&twin).unwrap();
            let quant = Model::load(&path).unwrap();
            let mut gm = Model::load(&path).unwrap();
            // Encoders offload whole for any N > 0; the Qwen2 classifier fully (head included).
            offload::attach(&mut gm, 99).unwrap();
            let seqs: Vec<Vec<u32>> = (0..5)
                .map(|i| {
                    rand_vec(3 + 7 * i, i as u64 + 1)
                        .iter()
                        .map(|v| ((v + 1.0) * 1000.0) as u32)
                        .collect()
                })
                .collect();
            let what = format!("{fixture} {}", preset.name());
            match (&cpu.arch, &gm.arch) {
                (Arch::Qwen2(c), Arch::Qwen2(gq)) => {
                    let (mut sc, mut sg) = (c.new_state(64), gq.new_state(64));
                    for s in &seqs {
                        // Final hidden states: all on the GPU.
                        c.forward(&cpu.file, &mut sc, s, Output::AllHidden).unwrap();
                        gq.forward(&gm.file, &mut sg, s, Output::AllHidden).unwrap();
                        let len = s.len() * c.hp.n_embd;
                        // Short prompts take the decode kernels, which quantize activations to
                        // 8 bits as llama.cpp's MMVQ does (the CPU twin here computes in f32):
                        // single elements move by a few percent, the vector by about 0.1%
                        // (H100: at most 1.6e-3 over F16, Q8_0 and NF4).
                        close_norm(
                            &format!("{what} hidden"),
                            &sg.hidden[..len],
                            &sc.hidden[..len],
                            5e-3,
                        );
                        sc.reset();
                        sg.reset();
                        // The score head runs on the CPU (8-bit activations for quantized heads).
                        let a = c.classify(&cpu.file, &mut sc, s).unwrap();
                        let b = gq.classify(&gm.file, &mut sg, s).unwrap();
                        close(&format!("{what} class logits"), &b, &a, 2e-2);
                    }
                }
                _ => {
                    let batch = Batch::new(&seqs).unwrap();
                    let a = cpu.encode(&batch, &mut EncoderState::default()).unwrap();
                    let b = gm.encode(&batch, &mut EncoderState::default()).unwrap();
                    // f16 operands in cuBLAS: agreement to a few 1e-3 of the exact f32 math.
                    close(&format!("{what} hidden"), &b.hidden, &a.hidden, 5e-3);
                    close(&format!("{what} class logits"), &b.logits, &a.logits, 5e-3);
                    let q = quant.encode(&batch, &mut EncoderState::default()).unwrap();
                    for (x, y) in q.pooled.chunks(q.dim).zip(b.pooled.chunks(b.dim)) {
                        let dot: f32 = x.iter().zip(y).map(|(p, q)| p * q).sum();
                        let nx: f32 = x.iter().map(|p| p * p).sum::<f32>().sqrt();
                        let ny: f32 = y.iter().map(|p| p * p).sum::<f32>().sqrt();
                        let cos = dot / (nx * ny);
                        // Against the CPU on the quantized file (8-bit activations there).
                        assert!(cos >= 0.999, "{what}: pooled cosine {cos}");
                    }
                }
            }
        }
    }
}
