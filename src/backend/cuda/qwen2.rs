//! Qwen2's last layers on the GPU (llama.cpp's -ngl): the same graph as `model::qwen2`, with the
//! weights uploaded once in their GGUF blocks, an f16 KV cache per offloaded layer in device
//! memory, and the residual stream crossing from the host once per forward pass (and back once,
//! as logits or hidden states when the head is offloaded too).

use super::attention;
use super::device::{gpu, DBuf, Gpu, Grow};
use super::linear::{matmul, GemmScratch, GpuLinear, GpuMat};
use super::ops;
use crate::backend::cpu::attention::Heads;
use crate::backend::offload::{DecoderOffload, OffloadState};
use crate::gguf::GgufFile;
use crate::model::qwen2::{Output, Qwen2, Qwen2Params};
use crate::model::weights::{sized, Loader};
use anyhow::{bail, Context, Result};
use std::sync::Mutex;

struct Layer {
    attn_norm: DBuf,
    q: GpuLinear,
    k: GpuLinear,
    v: GpuLinear,
    o: GpuLinear,
    ffn_norm: DBuf,
    gate: GpuLinear,
    up: GpuLinear,
    down: GpuLinear,
}

/// Activations of one pass, reused (grown as needed) across passes.
#[derive(Default)]
struct Scratch {
    x: Grow,
    h: Grow,
    q: Grow,
    k: Grow,
    v: Grow,
    att: Grow,
    gate: Grow,
    up: Grow,
    logits: Grow,
    part: Grow,
    gemm: GemmScratch,
}

/// One sequence's KV cache of the offloaded layers (f16).
struct SeqCache {
    ctx: usize,
    k: Vec<DBuf>,
    v: Vec<DBuf>,
}

pub struct GpuQwen2 {
    hp: Qwen2Params,
    first: usize,
    layers: Vec<Layer>,
    head: Option<(DBuf, GpuMat)>,
    scratch: Mutex<Scratch>,
    pub weight_bytes: usize,
}

impl GpuQwen2 {
    /// Uploads the last `ngl` layers of `m` (and the final norm and output head when `ngl`
    /// reaches the layer count).
    pub fn load(g: &Gpu, f: &GgufFile, m: &Qwen2, ngl: usize) -> Result<GpuQwen2> {
        let hp = m.hp.clone();
        let n_gpu = ngl.min(hp.n_layer);
        let first = hp.n_layer - n_gpu;
        if !attention::HEAD_DIMS.contains(&hp.head_dim) {
            bail!(
                "{}: head size {} is not supported on the GPU (supported: {:?})",
                f.path().display(),
                hp.head_dim,
                attention::HEAD_DIMS
            );
        }
        let l = Loader::new(f, false);
        let (e, kv, ff) = (hp.n_embd, hp.n_head_kv * hp.head_dim, hp.n_ff);
        let up_lin = |stem: &str, cols, rows| -> Result<GpuLinear> {
            GpuLinear::from_linear(g, f, &l.linear(stem, cols, rows)?)
        };
        let up_vec = |name: &str, len| -> Result<DBuf> { DBuf::from_slice(g, &l.vec(name, len)?) };
        let mut layers = Vec::with_capacity(n_gpu);
        let mut weight_bytes = 0;
        for i in first..hp.n_layer {
            let p = |s: &str| format!("blk.{i}.{s}");
            let layer = Layer {
                attn_norm: up_vec(&p("attn_norm.weight"), e)?,
                q: up_lin(&p("attn_q"), e, e)?,
                k: up_lin(&p("attn_k"), e, kv)?,
                v: up_lin(&p("attn_v"), e, kv)?,
                o: up_lin(&p("attn_output"), e, e)?,
                ffn_norm: up_vec(&p("ffn_norm.weight"), e)?,
                gate: up_lin(&p("ffn_gate"), e, ff)?,
                up: up_lin(&p("ffn_up"), e, ff)?,
                down: up_lin(&p("ffn_down"), ff, e)?,
            };
            weight_bytes += [
                &layer.q,
                &layer.k,
                &layer.v,
                &layer.o,
                &layer.gate,
                &layer.up,
                &layer.down,
            ]
            .iter()
            .map(|x| x.bytes())
            .sum::<usize>()
                + layer.attn_norm.bytes()
                + layer.ffn_norm.bytes();
            layers.push(layer);
        }
        let head = if ngl >= hp.n_layer {
            let name = if l.has("output.weight") {
                "output.weight"
            } else {
                "token_embd.weight"
            };
            let w = GpuMat::from_mat(g, f, &l.mat(name, e, hp.n_vocab)?)?;
            let norm = up_vec("output_norm.weight", e)?;
            weight_bytes += w.bytes() + norm.bytes();
            Some((norm, w))
        } else {
            None
        };
        Ok(GpuQwen2 {
            hp,
            first,
            layers,
            head,
            scratch: Mutex::new(Scratch::default()),
            weight_bytes,
        })
    }

    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    pub fn head_offloaded(&self) -> bool {
        self.head.is_some()
    }

    fn new_cache(&self, g: &Gpu, ctx: usize) -> Result<SeqCache> {
        let bytes = ctx * self.hp.n_head_kv * self.hp.head_dim * 2;
        let mut c = SeqCache {
            ctx,
            k: Vec::new(),
            v: Vec::new(),
        };
        for _ in &self.layers {
            c.k.push(DBuf::new(g, bytes).context("the GPU KV cache")?);
            c.v.push(DBuf::new(g, bytes).context("the GPU KV cache")?);
        }
        Ok(c)
    }
}

impl DecoderOffload for GpuQwen2 {
    fn first_layer(&self) -> usize {
        self.first
    }

    fn forward(
        &self,
        state: &mut OffloadState,
        ctx: usize,
        x: &mut [f32],
        n: usize,
        pos0: usize,
        out: Output,
        logits: &mut Vec<f32>,
        hidden: &mut Vec<f32>,
    ) -> Result<bool> {
        let g = gpu()?;
        g.bind()?;
        let hp = &self.hp;
        let (e, kvd, ff, vocab) = (hp.n_embd, hp.n_head_kv * hp.head_dim, hp.n_ff, hp.n_vocab);
        if pos0 + n > ctx {
            bail!("positions {pos0}..{} exceed the context of {ctx}", pos0 + n);
        }
        let fits = state
            .as_ref()
            .and_then(|s| s.downcast_ref::<SeqCache>())
            .is_some_and(|c| c.ctx >= ctx);
        if !fits {
            *state = None;
            *state = Some(Box::new(self.new_cache(g, ctx)?));
        }
        let cache = state
            .as_ref()
            .and_then(|s| s.downcast_ref::<SeqCache>())
            .expect("created above");
        let heads = Heads {
            n_head: hp.n_head,
            n_head_kv: hp.n_head_kv,
            head_dim: hp.head_dim,
        };
        let mut guard = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let sc = &mut *guard;
        let xb = sc.x.get(g, n * e * 4)?;
        g.upload(xb, 0, &x[..n * e])?;
        let xb = xb.ptr();
        let hb = sc.h.ptr(g, n * e * 4)?;
        let qb = sc.q.ptr(g, n * e * 4)?;
        let kb = sc.k.ptr(g, n * kvd * 4)?;
        let vb = sc.v.ptr(g, n * kvd * 4)?;
        let ab = sc.att.ptr(g, n * e * 4)?;
        let gb = sc.gate.ptr(g, n * ff * 4)?;
        let ub = sc.up.ptr(g, n * ff * 4)?;
        for (i, l) in self.layers.iter().enumerate() {
            let (kc, vc) = (cache.k[i].ptr(), cache.v[i].ptr());
            ops::rms_norm(g, xb, l.attn_norm.ptr(), hb, n, e, hp.eps)?;
            l.q.forward(g, hb, n, qb, false, &mut sc.gemm)?;
            l.k.forward(g, hb, n, kb, false, &mut sc.gemm)?;
            l.v.forward(g, hb, n, vb, false, &mut sc.gemm)?;
            ops::rope(
                g,
                qb,
                n,
                hp.n_head,
                hp.head_dim,
                e,
                pos0,
                None,
                hp.rope_theta,
            )?;
            ops::rope(
                g,
                kb,
                n,
                hp.n_head_kv,
                hp.head_dim,
                kvd,
                pos0,
                None,
                hp.rope_theta,
            )?;
            ops::kv_store(g, kb, vb, kc, vc, n, kvd, pos0)?;
            attention::causal(g, qb, kc, vc, ab, &mut sc.part, n, pos0, heads)?;
            l.o.forward(g, ab, n, xb, true, &mut sc.gemm)?;
            ops::rms_norm(g, xb, l.ffn_norm.ptr(), hb, n, e, hp.eps)?;
            l.gate.forward(g, hb, n, gb, false, &mut sc.gemm)?;
            l.up.forward(g, hb, n, ub, false, &mut sc.gemm)?;
            ops::silu_mul(g, gb, ub, n * ff)?;
            l.down.forward(g, gb, n, xb, true, &mut sc.gemm)?;
        }
        let Some((norm, w)) = &self.head else {
            let xb = sc.x.get(g, n * e * 4)?;
            g.download(xb, 0, &mut x[..n * e])?;
            return Ok(false);
        };
        match out {
            Output::LastLogits => {
                let last = xb + ((n - 1) * e * 4) as u64;
                ops::rms_norm(g, last, norm.ptr(), hb, 1, e, hp.eps)?;
                let lb = sc.logits.ptr(g, vocab * 4)?;
                matmul(g, w, hb, 1, lb, None, false, &mut sc.gemm)?;
                let lbuf = sc.logits.get(g, vocab * 4)?;
                g.download(lbuf, 0, sized(logits, vocab))?;
            }
            Output::AllLogits => {
                ops::rms_norm(g, xb, norm.ptr(), hb, n, e, hp.eps)?;
                let lb = sc.logits.ptr(g, n * vocab * 4)?;
                matmul(g, w, hb, n, lb, None, false, &mut sc.gemm)?;
                let lbuf = sc.logits.get(g, n * vocab * 4)?;
                g.download(lbuf, 0, sized(logits, n * vocab))?;
            }
            Output::AllHidden => {
                ops::rms_norm(g, xb, norm.ptr(), hb, n, e, hp.eps)?;
                let hbuf = sc.h.get(g, n * e * 4)?;
                g.download(hbuf, 0, sized(hidden, n * e))?;
            }
        }
        Ok(true)
    }
}
