//! BERT (llama.cpp's `bert`; MiniLM, BGE...): absolute position and token-type embeddings,
//! post-norm layers with biased projections and GELU, mean or CLS pooling, and optionally a
//! classifier (`cls` + tanh as BERT's pooler, then `cls.output`).

use super::encoder::{Batch, EncoderOutput, EncoderState, Pooling};
use super::weights::{sized, Linear, Loader, Mat, Norm};
use crate::backend::cpu::attention::{self, Heads};
use crate::backend::cpu::ops;
use crate::gguf::GgufFile;
use anyhow::{bail, Result};
use rayon::prelude::*;

#[derive(Clone, Debug)]
pub struct BertParams {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_ff: usize,
    pub n_ctx: usize,
    pub n_vocab: usize,
    pub eps: f32,
}

struct Layer {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    attn_out_norm: Norm,
    up: Linear,
    down: Linear,
    out_norm: Norm,
}

pub struct Bert {
    pub hp: BertParams,
    token_embd: Mat,
    pos_embd: Mat,
    type_embd: Option<Mat>,
    embd_norm: Norm,
    layers: Vec<Layer>,
    pub pooling: Pooling,
    pooler: Option<Linear>,
    cls_out: Option<Linear>,
    pub labels: Vec<String>,
}

impl Bert {
    pub fn load(f: &GgufFile) -> Result<Bert> {
        Self::load_with(f, super::weights::packing_enabled())
    }

    /// Loads with packed weights (`pack`, where the CPU has the kernels) or weights in place.
    pub fn load_with(f: &GgufFile, pack: bool) -> Result<Bert> {
        let l = Loader::new(f, pack);
        let a = "bert";
        let n_embd = l.hp(a, "embedding_length")?;
        let n_head = l.hp(a, "attention.head_count")?;
        if n_head == 0 || n_embd % n_head != 0 {
            bail!(
                "{}: {n_head} heads do not divide embedding length {n_embd}",
                f.path().display()
            );
        }
        let n_vocab = f
            .tensor("token_embd.weight")
            .map_or(0, |t| t.dims.get(1).copied().unwrap_or(1) as usize);
        let hp = BertParams {
            n_layer: l.hp(a, "block_count")?,
            n_embd,
            n_head,
            n_ff: l.hp(a, "feed_forward_length")?,
            n_ctx: l.hp(a, "context_length")?,
            n_vocab,
            eps: l.hp_f32(a, "attention.layer_norm_epsilon")?,
        };
        let (e, ff) = (hp.n_embd, hp.n_ff);
        let n_types = f
            .tensor("token_types.weight")
            .map_or(0, |t| t.dims.get(1).copied().unwrap_or(1) as usize);
        // Not with_capacity(n_layer): the count comes from the file, and each layer's
        // tensors are checked as it is loaded (a missing one ends the loop).
        let mut layers = Vec::new();
        for i in 0..hp.n_layer {
            let p = |s: &str| format!("blk.{i}.{s}");
            layers.push(Layer {
                q: l.linear(&p("attn_q"), e, e)?,
                k: l.linear(&p("attn_k"), e, e)?,
                v: l.linear(&p("attn_v"), e, e)?,
                o: l.linear(&p("attn_output"), e, e)?,
                attn_out_norm: l.norm(&p("attn_output_norm"), e)?,
                up: l.linear(&p("ffn_up"), e, ff)?,
                down: l.linear(&p("ffn_down"), ff, e)?,
                out_norm: l.norm(&p("layer_output_norm"), e)?,
            });
        }
        let labels = l.labels(a);
        let n_labels = if labels.is_empty() { 1 } else { labels.len() };
        let pooling = l
            .hp_opt(a, "pooling_type")?
            .and_then(Pooling::from_gguf)
            .unwrap_or(Pooling::Mean);
        Ok(Bert {
            token_embd: l.lookup_table("token_embd.weight", e, hp.n_vocab)?,
            pos_embd: l.lookup_table("position_embd.weight", e, hp.n_ctx)?,
            type_embd: if n_types > 0 {
                Some(l.lookup_table("token_types.weight", e, n_types)?)
            } else {
                None
            },
            embd_norm: l.norm("token_embd_norm", e)?,
            layers,
            pooling,
            pooler: if l.has("cls.weight") {
                Some(l.linear("cls", e, e)?)
            } else {
                None
            },
            cls_out: if l.has("cls.output.weight") {
                Some(l.linear("cls.output", e, n_labels)?)
            } else {
                None
            },
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
        let heads = Heads {
            n_head: hp.n_head,
            n_head_kv: hp.n_head,
            head_dim: e / hp.n_head,
        };
        let x = sized(&mut st.x, n * e);
        let row = sized(&mut st.row, e);
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
                self.pos_embd.row(f, p, row)?;
                ops::add_inplace(xt, row);
                if let Some(te) = &self.type_embd {
                    te.row(f, 0, row)?;
                    ops::add_inplace(xt, row);
                }
            }
        }
        // The lookup tables' pages go back to the page cache (see `Mat::rows_then_release`).
        for table in [
            Some(&self.token_embd),
            Some(&self.pos_embd),
            self.type_embd.as_ref(),
        ] {
            table.into_iter().for_each(|t| t.release_if_mapped(f));
        }
        ops::layer_norm_inplace(x, &self.embd_norm.w, self.embd_norm.b.as_deref(), hp.eps);
        for layer in &self.layers {
            let (q, k, v) = (
                sized(&mut st.q, n * e),
                sized(&mut st.k, n * e),
                sized(&mut st.v, n * e),
            );
            // One parallel product for the three: workers do not idle between them.
            Linear::forward_group(
                [&layer.q, &layer.k, &layer.v],
                f,
                &st.x[..n * e],
                n,
                &mut [q, k, v],
                &mut st.scratch,
            )?;
            let (q, k, v) = (&st.q[..n * e], &st.k[..n * e], &st.v[..n * e]);
            let att = sized(&mut st.att, n * e);
            for seq in &batch.seqs {
                let r = seq.start * e..seq.end * e;
                attention::bidirectional(
                    &q[r.clone()],
                    &k[r.clone()],
                    &v[r.clone()],
                    seq.len(),
                    None,
                    heads,
                    &mut att[r],
                );
            }
            let o = sized(&mut st.o, n * e);
            layer.o.forward(f, att, n, o, &mut st.scratch)?;
            ops::add_inplace(&mut st.x[..n * e], o);
            ops::layer_norm_inplace(
                &mut st.x[..n * e],
                &layer.attn_out_norm.w,
                layer.attn_out_norm.b.as_deref(),
                hp.eps,
            );
            let h = sized(&mut st.ff, n * ff);
            layer.up.forward(f, &st.x[..n * e], n, h, &mut st.scratch)?;
            h.par_chunks_mut(ff)
                .for_each(|r| r.iter_mut().for_each(|v| *v = ops::gelu(*v)));
            let o = sized(&mut st.o, n * e);
            layer.down.forward(f, h, n, o, &mut st.scratch)?;
            ops::add_inplace(&mut st.x[..n * e], o);
            ops::layer_norm_inplace(
                &mut st.x[..n * e],
                &layer.out_norm.w,
                layer.out_norm.b.as_deref(),
                hp.eps,
            );
        }
        let hidden = st.x[..n * e].to_vec();
        let mut pooled = vec![0.0; batch.seqs.len() * e];
        for (s, seq) in batch.seqs.iter().enumerate() {
            self.pooling
                .pool(&hidden, e, seq, &mut pooled[s * e..(s + 1) * e]);
        }
        let mut logits = Vec::new();
        let mut n_labels = 0;
        if let Some(cls_out) = &self.cls_out {
            // BERT's classifier reads the [CLS] token through the pooler (dense + tanh).
            n_labels = cls_out.rows();
            let ns = batch.seqs.len();
            let mut first = vec![0.0; ns * e];
            for (s, seq) in batch.seqs.iter().enumerate() {
                Pooling::Cls.pool(&hidden, e, seq, &mut first[s * e..(s + 1) * e]);
            }
            if let Some(p) = &self.pooler {
                let mut t = vec![0.0; ns * e];
                p.forward(f, &first, ns, &mut t, &mut st.scratch)?;
                first = t.into_iter().map(f32::tanh).collect();
            }
            logits = vec![0.0; ns * n_labels];
            cls_out.forward(f, &first, ns, &mut logits, &mut st.scratch)?;
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
