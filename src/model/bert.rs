//! BERT (llama.cpp's `bert`; MiniLM, BGE...): absolute position and token-type embeddings,
//! post-norm layers with biased projections and GELU, mean or CLS pooling, and optionally a
//! classifier (`cls` + tanh as BERT's pooler, then `cls.output`).

use super::encoder::{check_batch, in_parts, Batch, EncoderGraph, EncoderOutput, EncoderState};
use super::encoder::{Pooling, Wants};
use super::weights::{Loader, Norm};
use super::LoadOptions;
use crate::backend::{Backend, Heads, Qkv, Rows, SeqAttn, Use, WithBackend};
use crate::gguf::scan::ScanLog;
use crate::gguf::GgufFile;
use anyhow::{bail, Context, Result};

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

pub struct Bert {
    pub hp: BertParams,
    pub pooling: Pooling,
    pub labels: Vec<String>,
    has_cls: bool,
    pub(crate) graph: Box<dyn EncoderGraph>,
}

impl Bert {
    pub fn load(f: &GgufFile, opts: &LoadOptions, log: &ScanLog) -> Result<Bert> {
        let l = Loader::new(f, log);
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
        let labels = l.labels(a);
        let pooling = l
            .hp_opt(a, "pooling_type")?
            .and_then(Pooling::from_gguf)
            .unwrap_or(Pooling::Mean);
        let plan = Plan {
            f,
            log,
            hp: &hp,
            pooling,
            n_labels: labels.len().max(1),
        };
        let graph = super::on_backend(plan, opts, hp.n_layer)?;
        Ok(Bert {
            has_cls: l.has("cls.output.weight"),
            hp,
            pooling,
            labels,
            graph,
        })
    }

    pub fn has_classifier(&self) -> bool {
        self.has_cls
    }
}

struct Layer<B: Backend> {
    q: B::Linear,
    k: B::Linear,
    v: B::Linear,
    o: B::Linear,
    attn_out_norm: Norm<B>,
    up: B::Linear,
    down: B::Linear,
    out_norm: Norm<B>,
}

struct Graph<B: Backend> {
    b: &'static B,
    hp: BertParams,
    token_embd: B::Linear,
    pos_embd: B::Linear,
    type_embd: Option<B::Linear>,
    embd_norm: Norm<B>,
    layers: Vec<Layer<B>>,
    pooling: Pooling,
    pooler: Option<B::Linear>,
    cls_out: Option<B::Linear>,
}

struct State<B: Backend> {
    work: B::Work,
    x: B::Buf,
    q: B::Buf,
    k: B::Buf,
    v: B::Buf,
    att: B::Buf,
    ff: B::Buf,
    pooled: B::Buf,
    first: B::Buf,
    t: B::Buf,
    logits: B::Buf,
}

struct Plan<'a> {
    f: &'a GgufFile,
    log: &'a ScanLog,
    hp: &'a BertParams,
    pooling: Pooling,
    n_labels: usize,
}

impl WithBackend for Plan<'_> {
    type Out = Box<dyn EncoderGraph>;

    fn with<B: Backend>(self, b: &'static B) -> Result<Box<dyn EncoderGraph>> {
        let (f, hp) = (self.f, self.hp);
        let l = Loader::new(f, self.log);
        let s = b.session();
        let (e, ff) = (hp.n_embd, hp.n_ff);
        // Not with_capacity(n_layer): the count comes from the file, and each layer's
        // tensors are checked as it is loaded (a missing one ends the loop).
        let mut layers = Vec::new();
        for i in 0..hp.n_layer {
            let p = |s: &str| format!("blk.{i}.{s}");
            layers.push(Layer {
                q: l.linear(b, &s, &p("attn_q"), e, e)?,
                k: l.linear(b, &s, &p("attn_k"), e, e)?,
                v: l.linear(b, &s, &p("attn_v"), e, e)?,
                o: l.linear(b, &s, &p("attn_output"), e, e)?,
                attn_out_norm: l.norm(b, &p("attn_output_norm"), e)?,
                up: l.linear(b, &s, &p("ffn_up"), e, ff)?,
                down: l.linear(b, &s, &p("ffn_down"), ff, e)?,
                out_norm: l.norm(b, &p("layer_output_norm"), e)?,
            });
        }
        let n_types = f
            .tensor("token_types.weight")
            .map_or(0, |t| t.dims.get(1).copied().unwrap_or(1) as usize);
        Ok(Box::new(Graph {
            b,
            token_embd: l.mat(b, &s, "token_embd.weight", e, hp.n_vocab, Use::Lookup)?,
            pos_embd: l.mat(b, &s, "position_embd.weight", e, hp.n_ctx, Use::Lookup)?,
            type_embd: if n_types > 0 {
                Some(l.mat(b, &s, "token_types.weight", e, n_types, Use::Lookup)?)
            } else {
                None
            },
            embd_norm: l.norm(b, "token_embd_norm", e)?,
            layers,
            pooling: self.pooling,
            pooler: l.opt_linear(b, &s, "cls", e, e)?,
            cls_out: l.opt_linear(b, &s, "cls.output", e, self.n_labels)?,
            hp: hp.clone(),
        }))
    }
}

impl<B: Backend> Graph<B> {
    fn new_state(&self) -> Result<State<B>> {
        let b = self.b;
        Ok(State {
            work: b.work()?,
            x: b.buf(),
            q: b.buf(),
            k: b.buf(),
            v: b.buf(),
            att: b.buf(),
            ff: b.buf(),
            pooled: b.buf(),
            first: b.buf(),
            t: b.buf(),
            logits: b.buf(),
        })
    }

    fn pass(
        &self,
        f: &GgufFile,
        st: &mut State<B>,
        batch: &Batch,
        wants: Wants,
    ) -> Result<EncoderOutput> {
        let (b, hp) = (self.b, &self.hp);
        let (e, ff, n, ns) = (hp.n_embd, hp.n_ff, batch.n_tokens(), batch.seqs.len());
        let heads = Heads {
            n_head: hp.n_head,
            n_head_kv: hp.n_head,
            head_dim: e / hp.n_head,
        };
        let w = &mut st.work;
        b.begin_batch(w, &batch.tokens, &batch.seqs)?;
        b.embed(f, w, &self.token_embd, Rows::Tokens, n, false, &mut st.x)?;
        b.embed(f, w, &self.pos_embd, Rows::Positions, n, true, &mut st.x)?;
        if let Some(te) = &self.type_embd {
            b.embed(f, w, te, Rows::Fixed(0), n, true, &mut st.x)?;
        }
        let (g, bias) = self.embd_norm.parts();
        b.layer_norm(w, &mut st.x, n, e, g, bias, hp.eps)?;
        for l in &self.layers {
            // One parallel product for the three: workers do not idle between them.
            b.matmul_many(
                f,
                w,
                &st.x,
                n,
                &[&l.q, &l.k, &l.v],
                &mut [&mut st.q, &mut st.k, &mut st.v],
            )?;
            let attn = SeqAttn {
                qkv: Qkv::Split(&st.q, &st.k, &st.v),
                rope: None,
                window: None,
                heads,
            };
            b.attend_seqs(w, &attn, &mut st.att)?;
            b.matmul(f, w, &st.att, n, &l.o, &mut st.x, true)?;
            let (g, bias) = l.attn_out_norm.parts();
            b.layer_norm(w, &mut st.x, n, e, g, bias, hp.eps)?;
            b.matmul(f, w, &st.x, n, &l.up, &mut st.ff, false)?;
            b.gelu(w, &mut st.ff, n * ff)?;
            b.matmul(f, w, &st.ff, n, &l.down, &mut st.x, true)?;
            let (g, bias) = l.out_norm.parts();
            b.layer_norm(w, &mut st.x, n, e, g, bias, hp.eps)?;
        }
        let mut out = EncoderOutput {
            dim: e,
            ..Default::default()
        };
        if wants.hidden {
            b.download(w, &st.x, n * e, &mut out.hidden)?;
        }
        if wants.pooled {
            b.pool(w, &st.x, e, self.pooling, &mut st.pooled)?;
            b.download(w, &st.pooled, ns * e, &mut out.pooled)?;
        }
        if let (Some(cls_out), true) = (&self.cls_out, wants.logits) {
            // BERT's classifier reads the [CLS] token through the pooler (dense + tanh).
            out.n_labels = b.rows(cls_out);
            b.pool(w, &st.x, e, Pooling::Cls, &mut st.first)?;
            let input = match &self.pooler {
                Some(p) => {
                    b.matmul(f, w, &st.first, ns, p, &mut st.t, false)?;
                    b.tanh(w, &mut st.t, ns * e)?;
                    &st.t
                }
                None => &st.first,
            };
            b.matmul(f, w, input, ns, cls_out, &mut st.logits, false)?;
            b.download(w, &st.logits, ns * out.n_labels, &mut out.logits)?;
        }
        Ok(out)
    }
}

impl<B: Backend> EncoderGraph for Graph<B> {
    fn describe(&self) -> String {
        format!("the whole encoder on {}", self.b.describe())
    }

    fn part_tokens(&self) -> Option<usize> {
        self.b.encode_part_tokens()
    }

    fn encode(
        &self,
        f: &GgufFile,
        st: &mut EncoderState,
        batch: &Batch,
        wants: Wants,
    ) -> Result<EncoderOutput> {
        check_batch(batch, self.hp.n_ctx, self.hp.n_vocab)?;
        if st.inner.as_ref().is_none_or(|s| !s.is::<State<B>>()) {
            st.inner = Some(Box::new(self.new_state()?));
        }
        let s = st
            .inner
            .as_mut()
            .and_then(|s| s.downcast_mut::<State<B>>())
            .context("encoder state")?;
        in_parts(batch, self.part_tokens(), |part| {
            self.pass(f, s, part, wants)
        })
    }
}
