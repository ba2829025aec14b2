//! BERT and ModernBERT whole on the GPU (`-ngl` > 0): the graphs of `model::bert` and
//! `model::modern_bert`, weights loaded by the same tensor names. Embedding rows are gathered on
//! the host (as llama.cpp keeps token embeddings on the CPU) and the batch crosses once; the
//! final hidden states, pooled vectors and class logits come back.

use super::attention::{self, EncoderAttnScratch};
use super::device::{gpu, DBuf, Gpu, Grow};
use super::linear::{GemmScratch, GpuLinear};
use super::ops;
use crate::backend::cpu::attention::Heads;
use crate::backend::offload::EncoderOffload;
use crate::gguf::GgufFile;
use crate::model::bert::{Bert, BertParams};
use crate::model::encoder::{Batch, EncoderOutput, Pooling};
use crate::model::modern_bert::{ModernBert, ModernBertParams};
use crate::model::weights::{Loader, Mat};
use anyhow::{bail, Result};
use std::ops::Range;
use std::sync::Mutex;

/// A norm's scale and optional shift on the device.
struct GNorm {
    w: DBuf,
    b: Option<DBuf>,
}

impl GNorm {
    fn load(g: &Gpu, l: &Loader, stem: &str, dim: usize) -> Result<GNorm> {
        let n = l.norm(stem, dim)?;
        Ok(GNorm {
            w: DBuf::from_slice(g, &n.w)?,
            b: match &n.b {
                Some(b) => Some(DBuf::from_slice(g, b)?),
                None => None,
            },
        })
    }

    /// Layer norm of n rows of `x` into `out` (may be `x`).
    fn apply(&self, g: &Gpu, x: u64, out: u64, n: usize, dim: usize, eps: f32) -> Result<()> {
        ops::layer_norm(
            g,
            x,
            self.w.ptr(),
            self.b.as_ref().map(|b| b.ptr()),
            out,
            n,
            dim,
            eps,
        )
    }
}

fn lin(
    g: &Gpu,
    f: &GgufFile,
    l: &Loader,
    stem: &str,
    cols: usize,
    rows: usize,
) -> Result<GpuLinear> {
    GpuLinear::from_linear(g, f, &l.linear(stem, cols, rows)?)
}

fn opt_lin(
    g: &Gpu,
    f: &GgufFile,
    l: &Loader,
    stem: &str,
    cols: usize,
    rows: usize,
) -> Result<Option<GpuLinear>> {
    if l.has(&format!("{stem}.weight")) {
        lin(g, f, l, stem, cols, rows).map(Some)
    } else {
        Ok(None)
    }
}

/// Buffers of encoder passes.
#[derive(Default)]
struct Scratch {
    x: Grow,
    a: Grow,
    q: Grow,
    k: Grow,
    v: Grow,
    att: Grow,
    ff: Grow,
    act: Grow,
    pooled: Grow,
    tmp: Grow,
    logits: Grow,
    pos: Grow,
    starts: Grow,
    ends: Grow,
    gemm: GemmScratch,
    attn: EncoderAttnScratch,
}

fn pool_mode(p: Pooling) -> i32 {
    match p {
        Pooling::Mean => 0,
        Pooling::Cls => 1,
        Pooling::Last => 2,
    }
}

/// Uploads sequence bounds and pools `hidden` into `sc.pooled` with `mode`; returns its pointer.
fn pool(
    g: &Gpu,
    sc: &mut Scratch,
    hidden: u64,
    seqs: &[Range<usize>],
    dim: usize,
    mode: i32,
    into_tmp: bool,
) -> Result<u64> {
    let ns = seqs.len();
    let starts: Vec<i32> = seqs.iter().map(|s| s.start as i32).collect();
    let ends: Vec<i32> = seqs.iter().map(|s| s.end as i32).collect();
    let sb = sc.starts.get(g, ns * 4)?;
    g.upload(sb, 0, &starts)?;
    let sb = sb.ptr();
    let eb = sc.ends.get(g, ns * 4)?;
    g.upload(eb, 0, &ends)?;
    let eb = eb.ptr();
    let out = if into_tmp {
        sc.tmp.ptr(g, ns * dim * 4)?
    } else {
        sc.pooled.ptr(g, ns * dim * 4)?
    };
    ops::pool(g, hidden, sb, eb, out, ns, dim, mode)?;
    Ok(out)
}

fn check_heads(f: &GgufFile, hd: usize) -> Result<()> {
    if hd == 0 || !hd.is_multiple_of(8) {
        bail!(
            "{}: head size {hd} is not supported on the GPU (a multiple of 8 is)",
            f.path().display()
        );
    }
    Ok(())
}

struct BertLayer {
    q: GpuLinear,
    k: GpuLinear,
    v: GpuLinear,
    o: GpuLinear,
    attn_out_norm: GNorm,
    up: GpuLinear,
    down: GpuLinear,
    out_norm: GNorm,
}

pub struct GpuBert {
    hp: BertParams,
    token_embd: Mat,
    pos_embd: Mat,
    type_embd: Option<Mat>,
    embd_norm: GNorm,
    layers: Vec<BertLayer>,
    pooling: Pooling,
    pooler: Option<GpuLinear>,
    cls_out: Option<GpuLinear>,
    scratch: Mutex<Scratch>,
}

impl GpuBert {
    pub fn load(g: &Gpu, f: &GgufFile, m: &Bert) -> Result<GpuBert> {
        let l = Loader::new(f, false);
        let hp = m.hp.clone();
        let (e, ff) = (hp.n_embd, hp.n_ff);
        check_heads(f, e / hp.n_head)?;
        let mut layers = Vec::new();
        for i in 0..hp.n_layer {
            let p = |s: &str| format!("blk.{i}.{s}");
            layers.push(BertLayer {
                q: lin(g, f, &l, &p("attn_q"), e, e)?,
                k: lin(g, f, &l, &p("attn_k"), e, e)?,
                v: lin(g, f, &l, &p("attn_v"), e, e)?,
                o: lin(g, f, &l, &p("attn_output"), e, e)?,
                attn_out_norm: GNorm::load(g, &l, &p("attn_output_norm"), e)?,
                up: lin(g, f, &l, &p("ffn_up"), e, ff)?,
                down: lin(g, f, &l, &p("ffn_down"), ff, e)?,
                out_norm: GNorm::load(g, &l, &p("layer_output_norm"), e)?,
            });
        }
        let n_types = f
            .tensor("token_types.weight")
            .map_or(0, |t| t.dims.get(1).copied().unwrap_or(1) as usize);
        let n_labels = m.labels.len().max(1);
        Ok(GpuBert {
            token_embd: l.lookup_table("token_embd.weight", e, hp.n_vocab)?,
            pos_embd: l.mat("position_embd.weight", e, hp.n_ctx)?,
            type_embd: if n_types > 0 {
                Some(l.mat("token_types.weight", e, n_types)?)
            } else {
                None
            },
            embd_norm: GNorm::load(g, &l, "token_embd_norm", e)?,
            layers,
            pooling: m.pooling,
            pooler: opt_lin(g, f, &l, "cls", e, e)?,
            cls_out: opt_lin(g, f, &l, "cls.output", e, n_labels)?,
            scratch: Mutex::new(Scratch::default()),
            hp,
        })
    }
}

impl EncoderOffload for GpuBert {
    fn encode(&self, f: &GgufFile, batch: &Batch) -> Result<EncoderOutput> {
        let g = gpu()?;
        g.bind()?;
        let hp = &self.hp;
        let (e, ff, n) = (hp.n_embd, hp.n_ff, batch.n_tokens());
        let heads = Heads {
            n_head: hp.n_head,
            n_head_kv: hp.n_head,
            head_dim: e / hp.n_head,
        };
        // Embeddings on the host, summed in the CPU model's order.
        let mut x = vec![0.0f32; n * e];
        let mut row = vec![0.0f32; e];
        for seq in &batch.seqs {
            if seq.len() > hp.n_ctx {
                bail!(
                    "an input of {} tokens exceeds the model's {} positions",
                    seq.len(),
                    hp.n_ctx
                );
            }
            for (p, t) in seq.clone().enumerate() {
                let tok = batch.tokens[t] as usize;
                if tok >= hp.n_vocab {
                    bail!("token id {tok} is outside the vocabulary ({})", hp.n_vocab);
                }
                let xt = &mut x[t * e..(t + 1) * e];
                self.token_embd.row(f, tok, xt)?;
                self.pos_embd.row(f, p, &mut row)?;
                xt.iter_mut().zip(&row).for_each(|(a, b)| *a += b);
                if let Some(te) = &self.type_embd {
                    te.row(f, 0, &mut row)?;
                    xt.iter_mut().zip(&row).for_each(|(a, b)| *a += b);
                }
            }
        }
        let mut guard = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let sc = &mut *guard;
        let xbuf = sc.x.get(g, n * e * 4)?;
        g.upload(xbuf, 0, &x)?;
        let xb = xbuf.ptr();
        let (qb, kb, vb) = (
            sc.q.ptr(g, n * e * 4)?,
            sc.k.ptr(g, n * e * 4)?,
            sc.v.ptr(g, n * e * 4)?,
        );
        let ab = sc.att.ptr(g, n * e * 4)?;
        let fb = sc.ff.ptr(g, n * ff * 4)?;
        self.embd_norm.apply(g, xb, xb, n, e, hp.eps)?;
        for l in &self.layers {
            l.q.forward(g, xb, n, qb, false, &mut sc.gemm)?;
            l.k.forward(g, xb, n, kb, false, &mut sc.gemm)?;
            l.v.forward(g, xb, n, vb, false, &mut sc.gemm)?;
            attention::bidirectional(
                g,
                (qb, kb, vb),
                e,
                ab,
                &batch.seqs,
                None,
                heads,
                &mut sc.attn,
            )?;
            l.o.forward(g, ab, n, xb, true, &mut sc.gemm)?;
            l.attn_out_norm.apply(g, xb, xb, n, e, hp.eps)?;
            l.up.forward(g, xb, n, fb, false, &mut sc.gemm)?;
            ops::gelu(g, fb, n * ff)?;
            l.down.forward(g, fb, n, xb, true, &mut sc.gemm)?;
            l.out_norm.apply(g, xb, xb, n, e, hp.eps)?;
        }
        let ns = batch.seqs.len();
        pool(g, sc, xb, &batch.seqs, e, pool_mode(self.pooling), false)?;
        let mut logits = Vec::new();
        let mut n_labels = 0;
        if let Some(cls_out) = &self.cls_out {
            // BERT's classifier reads the [CLS] token through the pooler (dense + tanh).
            n_labels = cls_out.rows();
            let mut first = pool(g, sc, xb, &batch.seqs, e, 1, true)?;
            if let Some(p) = &self.pooler {
                let t = sc.a.ptr(g, ns * e * 4)?;
                p.forward(g, first, ns, t, false, &mut sc.gemm)?;
                ops::tanh(g, t, ns * e)?;
                first = t;
            }
            let lb = sc.logits.ptr(g, ns * n_labels * 4)?;
            cls_out.forward(g, first, ns, lb, false, &mut sc.gemm)?;
            logits = vec![0.0; ns * n_labels];
            g.download(sc.logits.get(g, ns * n_labels * 4)?, 0, &mut logits)?;
        }
        let mut hidden = vec![0.0; n * e];
        g.download(sc.x.get(g, n * e * 4)?, 0, &mut hidden)?;
        let mut pooled = vec![0.0; ns * e];
        g.download(sc.pooled.get(g, ns * e * 4)?, 0, &mut pooled)?;
        Ok(EncoderOutput {
            hidden,
            pooled,
            logits,
            dim: e,
            n_labels,
        })
    }
}

struct MbLayer {
    attn_norm: Option<GNorm>,
    qkv: GpuLinear,
    o: GpuLinear,
    mlp_norm: GNorm,
    up: GpuLinear,
    down: GpuLinear,
}

pub struct GpuModernBert {
    hp: ModernBertParams,
    token_embd: Mat,
    embd_norm: GNorm,
    layers: Vec<MbLayer>,
    final_norm: GNorm,
    head: Option<(GpuLinear, GNorm)>,
    cls_out: Option<GpuLinear>,
    pooling: Pooling,
    scratch: Mutex<Scratch>,
}

impl GpuModernBert {
    pub fn load(g: &Gpu, f: &GgufFile, m: &ModernBert) -> Result<GpuModernBert> {
        let l = Loader::new(f, false);
        let hp = m.hp.clone();
        let (e, ff) = (hp.n_embd, hp.n_ff);
        check_heads(f, e / hp.n_head)?;
        let mut layers = Vec::new();
        for i in 0..hp.n_layer {
            let p = |s: &str| format!("blk.{i}.{s}");
            layers.push(MbLayer {
                attn_norm: if l.has(&p("attn_norm.weight")) {
                    Some(GNorm::load(g, &l, &p("attn_norm"), e)?)
                } else {
                    None
                },
                qkv: lin(g, f, &l, &p("attn_qkv"), e, 3 * e)?,
                o: lin(g, f, &l, &p("attn_output"), e, e)?,
                mlp_norm: GNorm::load(g, &l, &p("ffn_norm"), e)?,
                up: lin(g, f, &l, &p("ffn_up"), e, 2 * ff)?,
                down: lin(g, f, &l, &p("ffn_down"), ff, e)?,
            });
        }
        let n_labels = m.labels.len().max(1);
        let head = if l.has("cls.weight") {
            Some((
                lin(g, f, &l, "cls", e, e)?,
                GNorm::load(g, &l, "cls.norm", e)?,
            ))
        } else {
            None
        };
        Ok(GpuModernBert {
            token_embd: l.lookup_table("token_embd.weight", e, hp.n_vocab)?,
            embd_norm: GNorm::load(g, &l, "token_embd_norm", e)?,
            layers,
            final_norm: GNorm::load(g, &l, "output_norm", e)?,
            head,
            cls_out: opt_lin(g, f, &l, "cls.output", e, n_labels)?,
            pooling: m.pooling,
            scratch: Mutex::new(Scratch::default()),
            hp,
        })
    }
}

impl EncoderOffload for GpuModernBert {
    fn encode(&self, f: &GgufFile, batch: &Batch) -> Result<EncoderOutput> {
        let g = gpu()?;
        g.bind()?;
        let hp = &self.hp;
        let (e, ff, n) = (hp.n_embd, hp.n_ff, batch.n_tokens());
        let hd = e / hp.n_head;
        let heads = Heads {
            n_head: hp.n_head,
            n_head_kv: hp.n_head,
            head_dim: hd,
        };
        let mut x = vec![0.0f32; n * e];
        let mut pos = vec![0i32; n];
        for seq in &batch.seqs {
            if seq.len() > hp.n_ctx {
                bail!(
                    "an input of {} tokens exceeds the model's {} positions",
                    seq.len(),
                    hp.n_ctx
                );
            }
            for (p, t) in seq.clone().enumerate() {
                pos[t] = p as i32;
            }
        }
        for (t, &tok) in batch.tokens.iter().enumerate() {
            if tok as usize >= hp.n_vocab {
                bail!("token id {tok} is outside the vocabulary ({})", hp.n_vocab);
            }
            self.token_embd
                .row(f, tok as usize, &mut x[t * e..(t + 1) * e])?;
        }
        let mut guard = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let sc = &mut *guard;
        let xbuf = sc.x.get(g, n * e * 4)?;
        g.upload(xbuf, 0, &x)?;
        let xb = xbuf.ptr();
        let pbuf = sc.pos.get(g, n * 4)?;
        g.upload(pbuf, 0, &pos)?;
        let pb = pbuf.ptr();
        let ab = sc.a.ptr(g, n * e * 4)?;
        let qkv = sc.q.ptr(g, n * 3 * e * 4)?;
        let att = sc.att.ptr(g, n * e * 4)?;
        let wi = sc.ff.ptr(g, n * 2 * ff * 4)?;
        let act = sc.act.ptr(g, n * ff * 4)?;
        self.embd_norm.apply(g, xb, xb, n, e, hp.eps)?;
        for (i, l) in self.layers.iter().enumerate() {
            let global = i % hp.pattern == 0 || hp.window == 0;
            let theta = if global {
                hp.theta_global
            } else {
                hp.theta_local
            };
            let window = if global { None } else { Some(hp.window / 2) };
            let input = match &l.attn_norm {
                Some(nm) => {
                    nm.apply(g, xb, ab, n, e, hp.eps)?;
                    ab
                }
                None => xb,
            };
            l.qkv.forward(g, input, n, qkv, false, &mut sc.gemm)?;
            let (qp, kp, vp) = (qkv, qkv + (4 * e) as u64, qkv + (8 * e) as u64);
            ops::rope(g, qp, n, hp.n_head, hd, 3 * e, 0, Some(pb), theta)?;
            ops::rope(g, kp, n, hp.n_head, hd, 3 * e, 0, Some(pb), theta)?;
            attention::bidirectional(
                g,
                (qp, kp, vp),
                3 * e,
                att,
                &batch.seqs,
                window,
                heads,
                &mut sc.attn,
            )?;
            l.o.forward(g, att, n, xb, true, &mut sc.gemm)?;
            l.mlp_norm.apply(g, xb, ab, n, e, hp.eps)?;
            l.up.forward(g, ab, n, wi, false, &mut sc.gemm)?;
            ops::geglu(g, wi, act, n, ff)?;
            l.down.forward(g, act, n, xb, true, &mut sc.gemm)?;
        }
        self.final_norm.apply(g, xb, xb, n, e, hp.eps)?;
        let ns = batch.seqs.len();
        let pooled_b = pool(g, sc, xb, &batch.seqs, e, pool_mode(self.pooling), false)?;
        let mut logits = Vec::new();
        let mut n_labels = 0;
        if let Some(cls_out) = &self.cls_out {
            n_labels = cls_out.rows();
            let mut h = pooled_b;
            if let Some((dense, norm)) = &self.head {
                let t = sc.tmp.ptr(g, ns * e * 4)?;
                dense.forward(g, pooled_b, ns, t, false, &mut sc.gemm)?;
                ops::gelu(g, t, ns * e)?;
                let hn = sc.a.ptr(g, ns * e * 4)?;
                norm.apply(g, t, hn, ns, e, hp.eps)?;
                h = hn;
            }
            let lb = sc.logits.ptr(g, ns * n_labels * 4)?;
            cls_out.forward(g, h, ns, lb, false, &mut sc.gemm)?;
            logits = vec![0.0; ns * n_labels];
            g.download(sc.logits.get(g, ns * n_labels * 4)?, 0, &mut logits)?;
        }
        let mut hidden = vec![0.0; n * e];
        g.download(sc.x.get(g, n * e * 4)?, 0, &mut hidden)?;
        let mut pooled = vec![0.0; ns * e];
        g.download(sc.pooled.get(g, ns * e * 4)?, 0, &mut pooled)?;
        Ok(EncoderOutput {
            hidden,
            pooled,
            logits,
            dim: e,
            n_labels,
        })
    }
}
