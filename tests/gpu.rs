//! GPU backend against references: every kernel against a host computation of what it must
//! produce, on random data, and whole models (Qwen2 fully and partly offloaded, with and without
//! CUDA graphs; BERT, ModernBERT, the Qwen2 classifier) against the CPU on tiny synthetic
//! checkpoints of every format.
//!
//! Needs an NVIDIA GPU: built with `--features cuda`, and run only when QGGUF_TEST_GPU=1 (CI has
//! no GPU, so these tests say they skip there). The model tests also need QGGUF_VOCAB_DIR.
//! `broken_weights_are_refused_when_offloaded` plants NaN and Inf in each kind of tensor.
//! `kernels_compile_for_the_t4_and_hopper` needs only NVRTC's library (no GPU).
#![cfg(feature = "cuda")]

use half::f16;
use qgguf::backend::cpu::attention::{self as cpu_attn, Heads};
use qgguf::backend::cpu::ops::RopeTable;
use qgguf::backend::cuda::attention::{self, DecodeScratch, FlashParams};
use qgguf::backend::cuda::device::{DBuf, Gpu};
use qgguf::backend::cuda::matvec::{self, Input, Kind, Part};
use qgguf::backend::cuda::sample::{self, SampleScratch};
use qgguf::backend::cuda::tensors::GpuMat;
use qgguf::backend::cuda::{gemm, Cuda};
use qgguf::backend::{GpuOptions, SampleSpec};
use qgguf::convert::hf_config::HfConfig;
use qgguf::convert::mix::{Override, Preset};
use qgguf::convert::pipeline::{self, WriteOptions};
use qgguf::convert::plan::Inputs;
use qgguf::convert::plan_hf;
use qgguf::convert::safetensors_in::Checkpoint;
use qgguf::convert::synth::{synthesize, SynthSpec};
use qgguf::model::encoder::{Batch, EncoderState};
use qgguf::model::qwen2::Output;
use qgguf::model::{Arch, LoadOptions, Model};
use qgguf::sampling::{Sampler, SamplerConfig};
use quant_types::formats::{BlockNF4, NF4_LEVELS_I8};
use quant_types::{dynamic, GgmlType};
use std::path::{Path, PathBuf};

fn enabled() -> Option<&'static Cuda> {
    if std::env::var("QGGUF_TEST_GPU").as_deref() != Ok("1") {
        eprintln!("QGGUF_TEST_GPU is not 1: skipping the GPU test");
        return None;
    }
    Some(Cuda::get(GpuOptions::default()).expect("QGGUF_TEST_GPU=1 but no usable GPU"))
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

/// The weights the integer products multiply with: the dequantized ones, except NF4's levels,
/// which the kernels (as the CPU's) take as round(127 * level) / 127.
fn product_weights(ty: GgmlType, q: &[u8], rows: usize, cols: usize) -> Vec<f32> {
    if ty != GgmlType::NF4 {
        return dequantized(ty, q, rows, cols);
    }
    let blocks: &[BlockNF4] = bytemuck::cast_slice(q);
    let mut w = Vec::with_capacity(rows * cols);
    for b in blocks {
        let d = b.d.to_f32();
        for i in b.indices() {
            w.push(d * NF4_LEVELS_I8[i as usize] as f32 / 127.0);
        }
    }
    w
}

fn download(g: &Gpu, b: &DBuf, n: usize) -> Vec<f32> {
    let mut v = vec![0f32; n];
    g.download(b, 0, &mut v).unwrap();
    v
}

/// A Step block: position of the first token, token count.
fn step(g: &Gpu, pos0: usize, n: usize) -> DBuf {
    let mut v = vec![0i32; 8 + 256];
    v[0] = pos0 as i32;
    v[1] = n as i32;
    DBuf::from_slice(g, &v).unwrap()
}

/// The kernels' int8 activations: per 32 values, d = amax / 127 and the levels round(x / d).
fn q8_acts(x: &[f32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for c in x.chunks(32) {
        let amax = c.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        out.extend(c.iter().map(|&v| {
            if amax == 0.0 {
                0.0
            } else {
                (v / d).round() * d
            }
        }));
    }
    out
}

#[test]
fn kernels_compile_for_the_t4_and_hopper() {
    // SAFETY: only tries to open NVRTC's library.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        eprintln!("NVRTC is not loadable: skipping the kernel compile check");
        return;
    }
    for arch in [75, 80, 90] {
        let ptx = qgguf::backend::cuda::device::kernels_ptx(arch, None)
            .unwrap_or_else(|e| panic!("compute_{arch}: {e:#}"));
        for k in qgguf::backend::cuda::kernels::names() {
            assert!(
                ptx.contains(&format!(".entry {k}(")),
                "compute_{arch}: no kernel {k}"
            );
        }
        assert!(
            !ptx.contains(".f64"),
            "compute_{arch}: f64 arithmetic in a kernel"
        );
    }
}

#[test]
fn dequantization_is_exact_for_every_type() {
    let Some(c) = enabled() else { return };
    let g = c.gpu();
    let (rows, cols) = (7, 512);
    for (i, ty) in WEIGHT_TYPES.into_iter().enumerate() {
        let q = quantized(ty, rows, cols, 1 + i as u64);
        let want = dequantized(ty, &q, rows, cols);
        let m = GpuMat::upload(g, "w", ty, rows, cols, &q).unwrap();
        let out = DBuf::new(g, rows * cols * 4).unwrap();
        gemm::dequantize(g, c.kernels(), &m, (0, rows), out.ptr(), false).unwrap();
        let got = download(g, &out, rows * cols);
        for (j, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(
                a.to_bits() == b.to_bits(),
                "{ty}: weight {j}: GPU {a} vs CPU {b}"
            );
        }
    }
}

/// The matrix-vector kernels for every type (1, 3 and 8 tokens; plain, added, biased, and with
/// the RMS norm prologue; rows short enough for one warp, long enough for two and four, and
/// longer than the prologue's registers) against f64 sums of the product weights with the same
/// int8 activations the kernels make (exact up to float rounding of scales; with the norm, a
/// level may round the other way).
#[test]
fn matvec_matches_the_int8_reference_for_every_type() {
    let Some(c) = enabled() else { return };
    let g = c.gpu();
    let rows = 37;
    let st = step(g, 0, 1);
    for (i, ty) in WEIGHT_TYPES.into_iter().enumerate() {
        for cols in [512usize, 768, 2304, 6400] {
            matvec_case(c, &st, ty, rows, cols, 100 + i as u64);
        }
    }
}

fn matvec_case(c: &Cuda, st: &DBuf, ty: GgmlType, rows: usize, cols: usize, seed: u64) {
    let g = c.gpu();
    {
        let i = seed;
        let q = quantized(ty, rows, cols, i);
        let w = product_weights(ty, &q, rows, cols);
        let m = GpuMat::upload(g, "w", ty, rows, cols, &q).unwrap();
        let bias = rand_vec(rows, 7);
        let bb = DBuf::from_slice(g, &bias).unwrap();
        let norm_w: Vec<f32> = rand_vec(cols, 8).iter().map(|v| 1.0 + 0.3 * v).collect();
        let nb = DBuf::from_slice(g, &norm_w).unwrap();
        let float = matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16);
        for n in [1usize, 3, 8] {
            for (with_norm, add) in [(false, false), (false, true), (true, false)] {
                let x: Vec<f32> = rand_vec(n * cols, 200 + n as u64)
                    .iter()
                    .map(|v| v * 40.0)
                    .collect();
                let y0 = rand_vec(n * rows, 300 + n as u64);
                let xb = DBuf::from_slice(g, &x).unwrap();
                let yb = DBuf::from_slice(g, &y0).unwrap();
                let input = Input {
                    x: xb.ptr(),
                    stride: cols,
                    n,
                    norm: with_norm.then(|| (nb.ptr(), 1e-6)),
                };
                let part = Part {
                    m: &m,
                    bias: bb.ptr(),
                    kind: if add { Kind::Add } else { Kind::Store },
                    out: yb.ptr(),
                    out_stride: rows,
                };
                matvec::launch(g, c.kernels(), &input, &[part], st.ptr(), None).unwrap();
                let got = download(g, &yb, n * rows);
                for t in 0..n {
                    let mut xt = x[t * cols..(t + 1) * cols].to_vec();
                    if with_norm {
                        let ss: f64 = xt.iter().map(|v| (*v as f64).powi(2)).sum();
                        let inv = 1.0 / (ss / cols as f64 + 1e-6).sqrt();
                        for (v, nw) in xt.iter_mut().zip(&norm_w) {
                            *v = (*v as f64 * inv) as f32 * nw;
                        }
                    }
                    let a = if float { xt } else { q8_acts(&xt) };
                    for o in 0..rows {
                        let (mut exact, mut scale) = (0f64, 0f64);
                        for j in 0..cols {
                            let p = w[o * cols + j] as f64 * a[j] as f64;
                            exact += p;
                            scale += p.abs();
                        }
                        let base = if add { y0[t * rows + o] as f64 } else { 0.0 };
                        let want = base + exact + bias[o] as f64;
                        let err = (got[t * rows + o] as f64 - want).abs();
                        let rel = if with_norm && !float { 2e-3 } else { 1e-4 };
                        assert!(
                            err <= rel * (scale + 1.0),
                            "{ty} cols={cols} n={n} norm={with_norm} add={add} t{t} o{o}: GPU {} vs {want} (scale {scale})",
                            got[t * rows + o]
                        );
                    }
                }
            }
        }
    }
}

/// The epilogues of the fused decoding kernels: RoPE pairs to f32 and into an f16 cache at the
/// Step's position, values into the cache, SwiGLU of a gate/up pair, and SwiGLU onto a gate
/// computed before.
#[test]
fn matvec_epilogues_rotate_store_and_gate() {
    let Some(c) = enabled() else { return };
    let g = c.gpu();
    let (hd, heads, cols, n, pos0) = (64usize, 3usize, 256usize, 2usize, 37usize);
    let rows = hd * heads;
    let ty = GgmlType::Q8_0;
    let (qa, qb) = (quantized(ty, rows, cols, 1), quantized(ty, rows, cols, 2));
    let (wa, wb) = (
        product_weights(ty, &qa, rows, cols),
        product_weights(ty, &qb, rows, cols),
    );
    let (ma, mb) = (
        GpuMat::upload(g, "a", ty, rows, cols, &qa).unwrap(),
        GpuMat::upload(g, "b", ty, rows, cols, &qb).unwrap(),
    );
    let x = rand_vec(n * cols, 3);
    let xb = DBuf::from_slice(g, &x).unwrap();
    let st = step(g, pos0, n);
    let mut rope = RopeTable::default();
    rope.ensure(hd, 10000.0, pos0 + n);
    let rb = DBuf::from_slice(g, &rope.cos_sin_pairs()).unwrap();
    let dot = |w: &[f32], t: usize, r: usize| -> f32 {
        let a = q8_acts(&x[t * cols..(t + 1) * cols]);
        (0..cols)
            .map(|j| w[r * cols + j] as f64 * a[j] as f64)
            .sum::<f64>() as f32
    };
    let input = Input {
        x: xb.ptr(),
        stride: cols,
        n,
        norm: None,
    };
    // RoPE to f32 rows, and to the cache at pos0 + t.
    let out = DBuf::new(g, n * rows * 4).unwrap();
    let cache = DBuf::new(g, (pos0 + n) * rows * 2).unwrap();
    let parts = [
        Part {
            m: &ma,
            bias: 0,
            kind: Kind::Rope,
            out: out.ptr(),
            out_stride: rows,
        },
        Part {
            m: &ma,
            bias: 0,
            kind: Kind::RopeCache,
            out: cache.ptr(),
            out_stride: rows,
        },
    ];
    matvec::launch(
        g,
        c.kernels(),
        &input,
        &parts,
        st.ptr(),
        Some((rb.ptr(), hd)),
    )
    .unwrap();
    let got = download(g, &out, n * rows);
    let mut c16 = vec![f16::ZERO; (pos0 + n) * rows];
    g.download(&cache, 0, &mut c16).unwrap();
    for t in 0..n {
        let mut want: Vec<f32> = (0..rows).map(|r| dot(&wa, t, r)).collect();
        rope.apply(&mut want, pos0 + t);
        for r in 0..rows {
            let (a, b) = (got[t * rows + r], want[r]);
            assert!(
                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                "rope t{t} r{r}: {a} vs {b}"
            );
            let k = c16[(pos0 + t) * rows + r].to_f32();
            assert!(
                (k - b).abs() <= 2e-3 * (1.0 + b.abs()),
                "rope cache t{t} r{r}: {k} vs {b}"
            );
        }
    }
    // Values into the cache, and the two SwiGLU forms.
    let parts = [Part {
        m: &mb,
        bias: 0,
        kind: Kind::Cache,
        out: cache.ptr(),
        out_stride: rows,
    }];
    matvec::launch(g, c.kernels(), &input, &parts, st.ptr(), None).unwrap();
    g.download(&cache, 0, &mut c16).unwrap();
    let silu = |v: f32| v / (1.0 + (-v).exp());
    for t in 0..n {
        for r in 0..rows {
            let (k, b) = (c16[(pos0 + t) * rows + r].to_f32(), dot(&wb, t, r));
            assert!(
                (k - b).abs() <= 2e-3 * (1.0 + b.abs()),
                "cache t{t} r{r}: {k} vs {b}"
            );
        }
    }
    let pair = [
        Part {
            m: &ma,
            bias: 0,
            kind: Kind::Swiglu,
            out: out.ptr(),
            out_stride: rows,
        },
        Part {
            m: &mb,
            bias: 0,
            kind: Kind::Store,
            out: out.ptr(),
            out_stride: rows,
        },
    ];
    matvec::launch(g, c.kernels(), &input, &pair, st.ptr(), None).unwrap();
    let fused = download(g, &out, n * rows);
    let gate = [Part {
        m: &ma,
        bias: 0,
        kind: Kind::Store,
        out: out.ptr(),
        out_stride: rows,
    }];
    matvec::launch(g, c.kernels(), &input, &gate, st.ptr(), None).unwrap();
    let up = [Part {
        m: &mb,
        bias: 0,
        kind: Kind::SwigluUp,
        out: out.ptr(),
        out_stride: rows,
    }];
    matvec::launch(g, c.kernels(), &input, &up, st.ptr(), None).unwrap();
    let split = download(g, &out, n * rows);
    for t in 0..n {
        for r in 0..rows {
            let want = silu(dot(&wa, t, r)) * dot(&wb, t, r);
            for (what, v) in [
                ("fused", fused[t * rows + r]),
                ("split", split[t * rows + r]),
            ] {
                assert!(
                    (v - want).abs() <= 1e-4 * (1.0 + want.abs()),
                    "swiglu {what} t{t} r{r}: {v} vs {want}"
                );
            }
        }
    }
}

/// Split-key decoding attention (every head size, one and three tokens, caches from a few keys
/// to several blocks, grouped-query heads) against the CPU's on the same f16 cache.
#[test]
fn decode_attention_matches_the_cpu() {
    let Some(c) = enabled() else { return };
    let g = c.gpu();
    for hd in qgguf::backend::cuda::kernels::HEAD_DIMS {
        for (n, pos0, ctx) in [
            (1usize, 0usize, 8usize),
            (1, 700, 1200),
            (3, 40, 64),
            (1, 255, 1100),
        ] {
            let h = Heads {
                n_head: 6,
                n_head_kv: 2,
                head_dim: hd,
            };
            let (qd, kvd, len) = (h.q_dim(), h.kv_dim(), pos0 + n);
            let q: Vec<f32> = rand_vec(n * qd, hd as u64)
                .iter()
                .map(|v| v * 3.0)
                .collect();
            let k16: Vec<f16> = rand_vec(ctx * kvd, 11)
                .iter()
                .map(|&x| f16::from_f32(x))
                .collect();
            let v16: Vec<f16> = rand_vec(ctx * kvd, 12)
                .iter()
                .map(|&x| f16::from_f32(x))
                .collect();
            let kr: Vec<f32> = k16[..len * kvd].iter().map(|x| x.to_f32()).collect();
            let vr: Vec<f32> = v16[..len * kvd].iter().map(|x| x.to_f32()).collect();
            let mut want = vec![0f32; n * qd];
            cpu_attn::causal(&q, &kr, &vr, n, pos0, h, &mut want);
            let (kb, vb) = (
                DBuf::from_slice(g, &k16).unwrap(),
                DBuf::from_slice(g, &v16).unwrap(),
            );
            let qb = DBuf::from_slice(g, &q).unwrap();
            let ob = DBuf::new(g, n * qd * 4).unwrap();
            let st = step(g, pos0, n);
            let mut sc = DecodeScratch::default();
            // Twice: the last block resets its counters for the next pass.
            for rep in 0..2 {
                attention::decode(
                    g,
                    c.kernels(),
                    &mut sc,
                    (qb.ptr(), ob.ptr()),
                    (kb.ptr(), vb.ptr(), ctx),
                    n,
                    h,
                    st.ptr(),
                )
                .unwrap();
                let got = download(g, &ob, n * qd);
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (a - b).abs() <= 2e-5 * (1.0 + b.abs()),
                        "decode hd{hd} n{n} pos0 {pos0} ctx {ctx} rep {rep}: element {i}: {a} vs {b}"
                    );
                }
            }
        }
    }
}

fn flash_params(q: u64, k: u64, v: u64, out: u64, h: Heads) -> FlashParams {
    FlashParams {
        q,
        k,
        v,
        out,
        n_head: h.n_head as i32,
        n_kv: h.n_head_kv as i32,
        scale: 1.0 / (h.head_dim as f32).sqrt(),
        window: -1,
        ..Default::default()
    }
}

/// The tensor-core attention: causal over an f16 cache (prompts after cached positions), and
/// within packed sequences with RoPE on load and a window (encoders), against the CPU.
#[test]
fn flash_attention_matches_the_cpu() {
    let Some(c) = enabled() else { return };
    let g = c.gpu();
    for hd in qgguf::backend::cuda::kernels::HEAD_DIMS {
        let h = Heads {
            n_head: 4,
            n_head_kv: 2,
            head_dim: hd,
        };
        let (qd, kvd) = (h.q_dim(), h.kv_dim());
        for (n, pos0) in [(20usize, 0usize), (130, 40), (64, 0)] {
            let len = pos0 + n;
            let q: Vec<f32> = rand_vec(n * qd, 5 + hd as u64)
                .iter()
                .map(|v| v * 3.0)
                .collect();
            let k16: Vec<f16> = rand_vec(len * kvd, 11)
                .iter()
                .map(|&x| f16::from_f32(x))
                .collect();
            let v16: Vec<f16> = rand_vec(len * kvd, 12)
                .iter()
                .map(|&x| f16::from_f32(x))
                .collect();
            let kr: Vec<f32> = k16.iter().map(|x| x.to_f32()).collect();
            let vr: Vec<f32> = v16.iter().map(|x| x.to_f32()).collect();
            let mut want = vec![0f32; n * qd];
            cpu_attn::causal(&q, &kr, &vr, n, pos0, h, &mut want);
            let (kb, vb) = (
                DBuf::from_slice(g, &k16).unwrap(),
                DBuf::from_slice(g, &v16).unwrap(),
            );
            let qb = DBuf::from_slice(g, &q).unwrap();
            let ob = DBuf::new(g, n * qd * 4).unwrap();
            let st = step(g, pos0, n);
            let mut p = flash_params(qb.ptr(), kb.ptr(), vb.ptr(), ob.ptr(), h);
            p.step = st.ptr();
            (p.q_stride, p.k_stride, p.v_stride, p.out_stride) =
                (qd as i32, kvd as i32, kvd as i32, qd as i32);
            (p.n_q, p.kv_f16, p.causal) = (n as i32, 1, 1);
            attention::flash(g, c.kernels(), &p, n.div_ceil(64), h).unwrap();
            let got = download(g, &ob, n * qd);
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= 3e-3 * (1.0 + b.abs()),
                    "causal hd{hd} n{n} pos0 {pos0}: element {i}: {a} vs {b}"
                );
            }
        }
        // Encoders: packed q|k|v rows (as ModernBERT's fused projection), three sequences.
        let h = Heads {
            n_head: 3,
            n_head_kv: 3,
            head_dim: hd,
        };
        let e = h.q_dim();
        let seqs = [0..37usize, 37..137, 137..138];
        let n = 138;
        let qkv = rand_vec(n * 3 * e, hd as u64 + 50);
        let qkvb = DBuf::from_slice(g, &qkv).unwrap();
        let ob = DBuf::new(g, n * e * 4).unwrap();
        let mut rope = RopeTable::default();
        rope.ensure(hd, 160000.0, 100);
        let rb = DBuf::from_slice(g, &rope.cos_sin_pairs()).unwrap();
        let mut pos = vec![0i32; n];
        let mut tiles = Vec::new();
        for s in &seqs {
            for (p, t) in s.clone().enumerate() {
                pos[t] = p as i32;
            }
            for q0 in (0..s.len()).step_by(64) {
                tiles.extend_from_slice(&[
                    s.start as i32,
                    s.len() as i32,
                    (s.start + q0) as i32,
                    64.min(s.len() - q0) as i32,
                ]);
            }
        }
        let (pb, tb) = (
            DBuf::from_slice(g, &pos).unwrap(),
            DBuf::from_slice(g, &tiles).unwrap(),
        );
        for (window, with_rope) in [(None, false), (Some(5), true), (None, true)] {
            let mut want = vec![0f32; n * e];
            for s in &seqs {
                let pick = |off: usize, rot: bool| -> Vec<f32> {
                    s.clone()
                        .flat_map(|t| {
                            let mut r = qkv[t * 3 * e + off..t * 3 * e + off + e].to_vec();
                            if rot {
                                rope.apply(&mut r, t - s.start);
                            }
                            r
                        })
                        .collect()
                };
                let (q, k, v) = (pick(0, with_rope), pick(e, with_rope), pick(2 * e, false));
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
            let base = qkvb.ptr();
            let mut p = flash_params(base, base + 4 * e as u64, base + 8 * e as u64, ob.ptr(), h);
            (p.q_stride, p.k_stride, p.v_stride, p.out_stride) =
                (3 * e as i32, 3 * e as i32, 3 * e as i32, e as i32);
            p.tiles = tb.ptr();
            p.pos = pb.ptr();
            p.rope = if with_rope { rb.ptr() } else { 0 };
            p.window = window.map_or(-1, |w| w as i32);
            attention::flash(g, c.kernels(), &p, tiles.len() / 4, h).unwrap();
            let got = download(g, &ob, n * e);
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= 3e-3 * (1.0 + b.abs()),
                    "sequences hd{hd} window {window:?} rope {with_rope}: element {i}: {a} vs {b}"
                );
            }
        }
    }
}

/// Greedy and top-k/top-p sampling on the device pick the CPU sampler's token for the same
/// logits and draws (with and without a repetition penalty).
#[test]
fn device_sampling_picks_the_cpu_token() {
    let Some(c) = enabled() else { return };
    let g = c.gpu();
    let vocab = 151_936;
    let mut sc = SampleScratch::default();
    for case in 0..12u64 {
        let logits: Vec<f32> = rand_vec(vocab, 40 + case)
            .iter()
            .map(|v| v * 12.0)
            .collect();
        let lb = DBuf::from_slice(g, &logits).unwrap();
        let cfg = SamplerConfig {
            temperature: if case % 3 == 0 { 0.0 } else { 0.8 },
            top_k: [40, 1, 64][(case % 3) as usize],
            top_p: if case % 2 == 0 { 0.95 } else { 1.0 },
            repeat_penalty: if case % 4 < 2 { 1.0 } else { 1.3 },
            repeat_last_n: 64,
            seed: case,
        };
        let mut sampler = Sampler::new(cfg.clone());
        let history: Vec<u32> = (0..80)
            .map(|i| (i * 1777 + case as u32 * 31) % vocab as u32)
            .collect();
        let mut ids = Vec::new();
        let draw = sampler.next_step(&history, &mut ids);
        let spec = SampleSpec {
            cfg: &cfg,
            draw,
            penalized: &ids,
        };
        let mut stepv = vec![0i32; 8 + 256];
        stepv[3] = ids.len() as i32;
        stepv[4] = draw.to_bits() as i32;
        for (d, &t) in stepv[8..].iter_mut().zip(&ids) {
            *d = t as i32;
        }
        let st = DBuf::from_slice(g, &stepv).unwrap();
        sample::launch(g, &mut sc, lb.ptr(), vocab, &spec, st.ptr()).unwrap();
        let (out, _) = sc.out.current();
        let mut tok = [0u32];
        let ob = DBuf::new(g, 4).unwrap();
        g.copy_dd(ob.ptr(), out, 4).unwrap();
        g.download(&ob, 0, &mut tok).unwrap();
        let want = qgguf::sampling::choose(&mut logits.clone(), &cfg, draw, &ids);
        assert_eq!(tok[0], want, "case {case}: {cfg:?}");
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
/// which the CPU runs with exact f32 activations.
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

fn load(path: &Path, ngl: usize, graphs: bool) -> Model {
    let opts = LoadOptions {
        ngl,
        gpu: GpuOptions { graphs },
        ..Default::default()
    };
    Model::load_with(path, &opts).unwrap()
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

/// Logits of every position: a prompt of 40 tokens (cuBLAS path), 8 decoded one by one (fused
/// kernels) and a short prompt of 5 (fused kernels, several tokens).
fn qwen_logits(model: &Model, tokens: &[u32]) -> Vec<Vec<f32>> {
    let Arch::Qwen2(m) = &model.arch else {
        panic!("not qwen2")
    };
    let mut st = m.new_state(64).unwrap();
    let mut out = Vec::new();
    m.forward(&model.file, &mut st, &tokens[..40], Output::AllLogits)
        .unwrap();
    out.extend(st.logits.chunks(m.hp.n_vocab).take(40).map(|c| c.to_vec()));
    for &t in &tokens[40..48] {
        m.forward(&model.file, &mut st, &[t], Output::LastLogits)
            .unwrap();
        out.push(st.logits[..m.hp.n_vocab].to_vec());
    }
    m.forward(&model.file, &mut st, &tokens[48..53], Output::AllLogits)
        .unwrap();
    out.extend(st.logits.chunks(m.hp.n_vocab).take(5).map(|c| c.to_vec()));
    out
}

fn compare(want: &[Vec<f32>], got: &[Vec<f32>]) -> (f64, f64) {
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
}

/// Greedy tokens of a generation from `prompt`.
fn greedy(model: &Model, prompt: &[u32], n: usize) -> Vec<u32> {
    let Arch::Qwen2(m) = &model.arch else {
        panic!("not qwen2")
    };
    let mut st = m.new_state(prompt.len() + n + 1).unwrap();
    let mut s = Sampler::new(SamplerConfig {
        temperature: 0.0,
        ..Default::default()
    });
    qgguf::generate::generate(m, &model.file, &mut st, prompt, n, &mut s, &[], |_, _| {
        Ok(true)
    })
    .unwrap()
    .tokens
}

/// GPU Qwen2 (all layers and head; the last two layers; the last three without the head)
/// against the CPU and the exact f32 math on each format, and a replayed CUDA graph against
/// eager launches.
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
    let tokens: Vec<u32> = rand_vec(53, 9)
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
    for (preset, ov) in cases {
        let name = format!("{} {:?}", preset.name(), ov.first());
        let (path, twin) = convert(
            &dir,
            &tmp.path().join(format!("q-{}.gguf", preset.name())),
            preset,
            ov,
        );
        let cpu = qwen_logits(&Model::load(&path).unwrap(), &tokens);
        let exact = qwen_logits(&Model::load(&twin).unwrap(), &tokens);
        for ngl in [99usize, 2, 3] {
            let got = qwen_logits(&load(&path, ngl, true), &tokens);
            let (kld, top) = compare(&exact, &got);
            let (kld_cpu, top_cpu) = compare(&cpu, &got);
            eprintln!(
                "qwen2 {name} ngl {ngl}: against exact f32 math: mean KLD {kld:.2e}, same top-1 {:.1}%; against the CPU: mean KLD {kld_cpu:.2e}, same top-1 {:.1}%",
                100.0 * top,
                100.0 * top_cpu
            );
            // Both round activations to 8 bits (the GPU per 32 values, as llama.cpp's MMVQ,
            // the CPU per block of its kernels): close to the exact math and to each other.
            assert!(
                kld <= 2e-2,
                "{name} ngl {ngl}: mean KLD against exact {kld}"
            );
            assert!(
                kld_cpu <= 2e-2,
                "{name} ngl {ngl}: mean KLD against the CPU {kld_cpu}"
            );
            assert!(top >= 0.8, "{name} ngl {ngl}: top-1 against exact {top}");
            // F16 weights take f32 activations on both: the exact math's numbers.
            if preset == Preset::F16 {
                assert!(
                    kld <= 1e-4,
                    "{name} ngl {ngl}: mean KLD against exact {kld}"
                );
            }
        }
        // A replayed graph computes what the eager launches compute: the same tokens, fully
        // and partly offloaded.
        for ngl in [99usize, 2] {
            let a = greedy(&load(&path, ngl, true), &tokens[..7], 24);
            let b = greedy(&load(&path, ngl, false), &tokens[..7], 24);
            assert_eq!(
                a, b,
                "{name} ngl {ngl}: graph replay against eager launches"
            );
            assert_eq!(a.len(), 24, "{name}: tokens generated");
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
            let gm = load(&path, 99, true);
            let seqs: Vec<Vec<u32>> = (0..5)
                .map(|i| {
                    rand_vec(3 + 7 * i + 30 * (i % 2), i as u64 + 1)
                        .iter()
                        .map(|v| ((v + 1.0) * 1000.0) as u32)
                        .collect()
                })
                .collect();
            let what = format!("{fixture} {}", preset.name());
            match (&cpu.arch, &gm.arch) {
                (Arch::Qwen2(c), Arch::Qwen2(gq)) => {
                    let (mut sc, mut sg) = (c.new_state(64).unwrap(), gq.new_state(64).unwrap());
                    for s in &seqs {
                        let a = c.classify(&cpu.file, &mut sc, s).unwrap();
                        let b = gq.classify(&gm.file, &mut sg, s).unwrap();
                        // Short inputs take the 8-bit decoding kernels, longer ones cuBLAS.
                        close_norm(&format!("{what} class logits"), &b, &a, 3e-2);
                    }
                }
                _ => {
                    let batch = Batch::new(&seqs).unwrap();
                    let a = cpu.encode(&batch, &mut EncoderState::default()).unwrap();
                    let b = gm.encode(&batch, &mut EncoderState::default()).unwrap();
                    // f16 operands in cuBLAS and the attention: a few 1e-3 of the exact math.
                    close_norm(&format!("{what} hidden"), &b.hidden, &a.hidden, 5e-3);
                    // The classifier heads run 5 rows: the 8-bit decoding kernels.
                    close_norm(&format!("{what} class logits"), &b.logits, &a.logits, 2e-2);
                    let q = quant.encode(&batch, &mut EncoderState::default()).unwrap();
                    for (x, y) in q.pooled.chunks(q.dim).zip(b.pooled.chunks(b.dim)) {
                        let dot: f32 = x.iter().zip(y).map(|(p, q)| p * q).sum();
                        let nx: f32 = x.iter().map(|p| p * p).sum::<f32>().sqrt();
                        let ny: f32 = y.iter().map(|p| p * p).sum::<f32>().sqrt();
                        let cos = dot / (nx * ny);
                        assert!(cos >= 0.999, "{what}: pooled cosine {cos}");
                    }
                }
            }
        }
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
    eprintln!("{what}: relative L2 distance {rel:.2e}");
    assert!(
        rel <= tol,
        "{what}: relative L2 distance {rel:.2e} > {tol:.0e}"
    );
}

#[path = "support/broken_models.rs"]
mod broken_models;

#[test]
fn broken_weights_are_refused_when_offloaded() {
    if enabled().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let clean = broken_models::write_model(dir.path(), "clean.gguf", &[]);
    let m = load(&clean, 99, true);
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    for case in broken_models::cases() {
        let path = broken_models::write_model(dir.path(), case.file, &case.damage);
        // No fallback: what is refused is the GPU's own load of the weights it uploads.
        let opts = LoadOptions {
            ngl: 99,
            ..Default::default()
        };
        let msg = match Model::load_with(&path, &opts) {
            Ok(_) => panic!("{}: a broken file loaded with -ngl 99", case.file),
            Err(e) => format!("{e:#}"),
        };
        let line = msg
            .lines()
            .find(|l| l.contains(case.tensor))
            .unwrap_or_else(|| panic!("'{}' not named in: {msg}", case.tensor));
        assert!(line.contains(case.says), "{line}");
        assert!(msg.contains(case.file), "{msg}");
    }
}
