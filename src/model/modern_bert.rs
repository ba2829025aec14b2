//! ModernBERT (llama.cpp's `modern-bert`): pre-norm layers without biases, fused QKV, RoPE with
//! separate bases for global and local layers, local layers attending within a symmetric window
//! (global every `sliding_window_pattern` layers, starting with layer 0), GeGLU feed-forward, a
//! final norm; optional classification head (dense, GELU, norm, linear) on mean or CLS pooling.

use super::encoder::{Batch, EncoderOutput, EncoderState, Pooling};
use super::weights::{sized, Linear, Loader, Mat, Norm};
use crate::backend::cpu::attention::{self, Heads};
use crate::backend::cpu::ops;
use crate::gguf::GgufFile;
use anyhow::{bail, Result};
use rayon::prelude::*;

#[derive(Clone, Debug)]
pub struct ModernBertParams {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_ff: usize,
    pub n_ctx: usize,
    pub n_vocab: usize,
    pub eps: f32,
    /// Local attention span (tokens on both sides together); 0 disables local layers.
    pub window: usize,
    pub pattern: usize,
    pub theta_global: f32,
    pub theta_local: f32,
}

struct Layer {
    attn_norm: Option<Norm>,
    qkv: Linear,
    o: Linear,
    mlp_norm: Norm,
    up: Linear,
    down: Linear,
}

pub struct ModernBert {
    pub hp: ModernBertParams,
    token_embd: Mat,
    embd_norm: Norm,
    layers: Vec<Layer>,
    final_norm: Norm,
    head: Option<(Linear, Norm)>,
    cls_out: Option<Linear>,
    pub pooling: Pooling,
    pub labels: Vec<String>,
}

impl ModernBert {
    pub fn load(f: &GgufFile) -> Result<ModernBert> {
        Self::load_with(f, super::weights::packing_enabled())
    }

    /// Loads with packed weights (`pack`, where the CPU has the kernels) or weights in place.
    pub fn load_with(f: &GgufFile, pack: bool) -> Result<ModernBert> {
        let l = Loader::new(f, pack);
        let a = "modern-bert";
        let n_embd = l.hp(a, "embedding_length")?;
        let n_head = l.hp(a, "attention.head_count")?;
        if n_head == 0 || n_embd % n_head != 0 {
            bail!(
                "{}: {n_head} heads do not divide embedding length {n_embd}",
                f.path().display()
            );
        }
        let eps = l
            .hp_f32(a, "attention.layer_norm_epsilon")
            .or_else(|_| l.hp_f32(a, "attention.layer_norm_rms_epsilon"))?;
        let n_vocab = f
            .tensor("token_embd.weight")
            .map_or(0, |t| t.dims.get(1).copied().unwrap_or(1) as usize);
        let hp = ModernBertParams {
            n_layer: l.hp(a, "block_count")?,
            n_embd,
            n_head,
            n_ff: l.hp(a, "feed_forward_length")?,
            n_ctx: l.hp(a, "context_length")?,
            n_vocab,
            eps,
            window: l.hp_opt(a, "attention.sliding_window")?.unwrap_or(0),
            pattern: l
                .hp_opt(a, "attention.sliding_window_pattern")?
                .unwrap_or(3)
                .max(1),
            theta_global: f.get_f32("modern-bert.rope.freq_base").unwrap_or(160_000.0),
            theta_local: f
                .get_f32("modern-bert.rope.freq_base_swa")
                .unwrap_or(10_000.0),
        };
        if let Ok(act) = f.get_str("modern-bert.hidden_activation") {
            if act != "gelu" {
                bail!(
                    "{}: hidden_activation '{act}' is not supported (gelu is)",
                    f.path().display()
                );
            }
        }
        let (e, ff) = (hp.n_embd, hp.n_ff);
        // Not with_capacity(n_layer): the count comes from the file, and each layer's
        // tensors are checked as it is loaded (a missing one ends the loop).
        let mut layers = Vec::new();
        for i in 0..hp.n_layer {
            let p = |s: &str| format!("blk.{i}.{s}");
            layers.push(Layer {
                attn_norm: if l.has(&p("attn_norm.weight")) {
                    Some(l.norm(&p("attn_norm"), e)?)
                } else {
                    None
                },
                qkv: l.linear(&p("attn_qkv"), e, 3 * e)?,
                o: l.linear(&p("attn_output"), e, e)?,
                mlp_norm: l.norm(&p("ffn_norm"), e)?,
                up: l.linear(&p("ffn_up"), e, 2 * ff)?,
                down: l.linear(&p("ffn_down"), ff, e)?,
            });
        }
        let labels = l.labels(a);
        let n_labels = if labels.is_empty() { 1 } else { labels.len() };
        let pooling = l
            .hp_opt(a, "pooling_type")?
            .or(l.hp_opt(a, "classifier.pooling_type")?)
            .and_then(Pooling::from_gguf)
            .unwrap_or(Pooling::Mean);
        let head = if l.has("cls.weight") {
            Some((l.linear("cls", e, e)?, l.norm("cls.norm", e)?))
        } else {
            None
        };
        Ok(ModernBert {
            token_embd: l.lookup_table("token_embd.weight", e, hp.n_vocab)?,
            embd_norm: l.norm("token_embd_norm", e)?,
            layers,
            final_norm: l.norm("output_norm", e)?,
            head,
            cls_out: if l.has("cls.output.weight") {
                Some(l.linear("cls.output", e, n_labels)?)
            } else {
                None
            },
            pooling,
            labels,
            hp,
        })
    }

    pub fn has_classifier(&self) -> bool {
        self.cls_out.is_some()
    }

    pub fn encode(
        &self,
        f: &GgufFile,
        batch: &Batch,
        st: &mut EncoderState,
    ) -> Result<EncoderOutput> {
        let hp = &self.hp;
        let (e, ff, n) = (hp.n_embd, hp.n_ff, batch.n_tokens());
        let hd = e / hp.n_head;
        let heads = Heads {
            n_head: hp.n_head,
            n_head_kv: hp.n_head,
            head_dim: hd,
        };
        let x = sized(&mut st.x, n * e);
        for seq in &batch.seqs {
            if seq.len() > hp.n_ctx {
                bail!(
                    "an input of {} tokens exceeds the model's {} positions",
                    seq.len(),
                    hp.n_ctx
                );
            }
        }
        if let Some(&tok) = batch.tokens.iter().find(|&&t| t as usize >= hp.n_vocab) {
            bail!("token id {tok} is outside the vocabulary ({})", hp.n_vocab);
        }
        self.token_embd.rows_then_release(f, &batch.tokens, x)?;
        ops::layer_norm_inplace(x, &self.embd_norm.w, self.embd_norm.b.as_deref(), hp.eps);
        // Each token's position in its sequence, and the rotary angles up to the longest.
        let mut positions = vec![0usize; n];
        for seq in &batch.seqs {
            for (p, t) in seq.clone().enumerate() {
                positions[t] = p;
            }
        }
        let longest = batch.seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        st.rope[0].ensure(hd, hp.theta_global, longest);
        st.rope[1].ensure(hd, hp.theta_local, longest);
        for (i, layer) in self.layers.iter().enumerate() {
            let global = i % hp.pattern == 0 || hp.window == 0;
            let window = if global { None } else { Some(hp.window / 2) };
            let a = sized(&mut st.att, n * e);
            match &layer.attn_norm {
                Some(nm) => ops::layer_norm(&st.x[..n * e], &nm.w, nm.b.as_deref(), hp.eps, a),
                None => a.copy_from_slice(&st.x[..n * e]),
            }
            let qkv = sized(&mut st.ff, n * 3 * e);
            layer.qkv.forward(f, a, n, qkv, &mut st.scratch)?;
            let (q, k, v) = (
                sized(&mut st.q, n * e),
                sized(&mut st.k, n * e),
                sized(&mut st.v, n * e),
            );
            // Split each token's q|k|v row and rotate q and k, tokens in parallel.
            let rope = &st.rope[usize::from(!global)];
            let qkv = &*qkv;
            q.par_chunks_mut(e)
                .zip(k.par_chunks_mut(e))
                .zip(v.par_chunks_mut(e))
                .zip(positions.par_iter())
                .enumerate()
                .for_each(|(t, (((q, k), v), &p))| {
                    let row = &qkv[t * 3 * e..(t + 1) * 3 * e];
                    q.copy_from_slice(&row[..e]);
                    k.copy_from_slice(&row[e..2 * e]);
                    v.copy_from_slice(&row[2 * e..]);
                    rope.apply(q, p);
                    rope.apply(k, p);
                });
            let att = sized(&mut st.att, n * e);
            for seq in &batch.seqs {
                let r = seq.start * e..seq.end * e;
                attention::bidirectional(
                    &q[r.clone()],
                    &k[r.clone()],
                    &v[r.clone()],
                    seq.len(),
                    window,
                    heads,
                    &mut att[r],
                );
            }
            let o = sized(&mut st.o, n * e);
            layer.o.forward(f, att, n, o, &mut st.scratch)?;
            ops::add_inplace(&mut st.x[..n * e], o);

            let m = sized(&mut st.att, n * e);
            ops::layer_norm(
                &st.x[..n * e],
                &layer.mlp_norm.w,
                layer.mlp_norm.b.as_deref(),
                hp.eps,
                m,
            );
            let wi = sized(&mut st.ff, n * 2 * ff);
            layer.up.forward(f, m, n, wi, &mut st.scratch)?;
            // GeGLU: the first half of each row goes through GELU and gates the second.
            let act = sized(&mut st.row, n * ff);
            act.par_chunks_mut(ff)
                .zip(wi.par_chunks(2 * ff))
                .for_each(|(a, r)| {
                    for ((a, &g), &u) in a.iter_mut().zip(&r[..ff]).zip(&r[ff..]) {
                        *a = ops::gelu(g) * u;
                    }
                });
            let o = sized(&mut st.o, n * e);
            layer.down.forward(f, act, n, o, &mut st.scratch)?;
            ops::add_inplace(&mut st.x[..n * e], o);
        }
        ops::layer_norm_inplace(
            &mut st.x[..n * e],
            &self.final_norm.w,
            self.final_norm.b.as_deref(),
            hp.eps,
        );
        let hidden = st.x[..n * e].to_vec();
        let ns = batch.seqs.len();
        let mut pooled = vec![0.0; ns * e];
        for (s, seq) in batch.seqs.iter().enumerate() {
            self.pooling
                .pool(&hidden, e, seq, &mut pooled[s * e..(s + 1) * e]);
        }
        let mut logits = Vec::new();
        let mut n_labels = 0;
        if let Some(cls_out) = &self.cls_out {
            n_labels = cls_out.rows();
            let mut h = pooled.clone();
            if let Some((dense, norm)) = &self.head {
                let mut t = vec![0.0; ns * e];
                dense.forward(f, &pooled, ns, &mut t, &mut st.scratch)?;
                t.iter_mut().for_each(|v| *v = ops::gelu(*v));
                ops::layer_norm(&t, &norm.w, norm.b.as_deref(), hp.eps, &mut h);
            }
            logits = vec![0.0; ns * n_labels];
            cls_out.forward(f, &h, ns, &mut logits, &mut st.scratch)?;
        }
        Ok(EncoderOutput {
            hidden,
            pooled,
            logits,
            dim: e,
            n_labels,
        })
    }
}
