//! ModernBERT (llama.cpp's `modern-bert`): pre-norm layers without biases, fused QKV, RoPE with
//! separate bases for global and local layers, local layers attending within a symmetric window
//! (global every `sliding_window_pattern` layers, starting with layer 0), GeGLU feed-forward, a
//! final norm; optional classification head (dense, GELU, norm, linear) on mean or CLS pooling.

use super::encoder::{check_batch, in_parts, Batch, EncoderGraph, EncoderOutput, EncoderState};
use super::encoder::{Pooling, Wants};
use super::weights::{Loader, Norm};
use super::LoadOptions;
use crate::backend::{Backend, Heads, Qkv, Rows, SeqAttn, Use, WithBackend};
use crate::gguf::scan::ScanLog;
use crate::gguf::GgufFile;
use anyhow::{bail, Context, Result};

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

impl ModernBertParams {
    /// Whether layer `i` attends globally (else within the window).
    fn global(&self, i: usize) -> bool {
        i.is_multiple_of(self.pattern) || self.window == 0
    }
}

pub struct ModernBert {
    pub hp: ModernBertParams,
    pub pooling: Pooling,
    pub labels: Vec<String>,
    has_cls: bool,
    pub(crate) graph: Box<dyn EncoderGraph>,
}

impl ModernBert {
    pub fn load(f: &GgufFile, opts: &LoadOptions, log: &ScanLog) -> Result<ModernBert> {
        let l = Loader::new(f, log);
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
        let labels = l.labels(a);
        let pooling = l
            .hp_opt(a, "pooling_type")?
            .or(l.hp_opt(a, "classifier.pooling_type")?)
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
        Ok(ModernBert {
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
    attn_norm: Option<Norm<B>>,
    qkv: B::Linear,
    o: B::Linear,
    mlp_norm: Norm<B>,
    up: B::Linear,
    down: B::Linear,
}

struct Graph<B: Backend> {
    b: &'static B,
    hp: ModernBertParams,
    token_embd: B::Linear,
    embd_norm: Norm<B>,
    layers: Vec<Layer<B>>,
    final_norm: Norm<B>,
    head: Option<(B::Linear, Norm<B>)>,
    cls_out: Option<B::Linear>,
    pooling: Pooling,
}

/// Buffers are shared by values that do not live at the same time, as in the CPU's original
/// layout (a smaller working set: the products read these activations from cache): `att` holds
/// the attention input norm, then the attention output, then the feed-forward norm; `ff` the
/// fused Q/K/V rows, then the feed-forward's up rows.
struct State<B: Backend> {
    work: B::Work,
    /// Rotary angles of global and local layers (different bases).
    rope: [B::Rope; 2],
    x: B::Buf,
    att: B::Buf,
    ff: B::Buf,
    act: B::Buf,
    pooled: B::Buf,
    t: B::Buf,
    h: B::Buf,
    logits: B::Buf,
}

struct Plan<'a> {
    f: &'a GgufFile,
    log: &'a ScanLog,
    hp: &'a ModernBertParams,
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
                attn_norm: if l.has(&p("attn_norm.weight")) {
                    Some(l.norm(b, &p("attn_norm"), e)?)
                } else {
                    None
                },
                qkv: l.linear(b, &s, &p("attn_qkv"), e, 3 * e)?,
                o: l.linear(b, &s, &p("attn_output"), e, e)?,
                mlp_norm: l.norm(b, &p("ffn_norm"), e)?,
                up: l.linear(b, &s, &p("ffn_up"), e, 2 * ff)?,
                down: l.linear(b, &s, &p("ffn_down"), ff, e)?,
            });
        }
        let head = if l.has("cls.weight") {
            Some((l.linear(b, &s, "cls", e, e)?, l.norm(b, "cls.norm", e)?))
        } else {
            None
        };
        Ok(Box::new(Graph {
            b,
            token_embd: l.mat(b, &s, "token_embd.weight", e, hp.n_vocab, Use::Lookup)?,
            embd_norm: l.norm(b, "token_embd_norm", e)?,
            layers,
            final_norm: l.norm(b, "output_norm", e)?,
            head,
            cls_out: l.opt_linear(b, &s, "cls.output", e, self.n_labels)?,
            pooling: self.pooling,
            hp: hp.clone(),
        }))
    }
}

impl<B: Backend> Graph<B> {
    fn new_state(&self) -> Result<State<B>> {
        let b = self.b;
        Ok(State {
            work: b.work()?,
            rope: [b.rope(), b.rope()],
            x: b.buf(),
            att: b.buf(),
            ff: b.buf(),
            act: b.buf(),
            pooled: b.buf(),
            t: b.buf(),
            h: b.buf(),
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
        let hd = e / hp.n_head;
        let heads = Heads {
            n_head: hp.n_head,
            n_head_kv: hp.n_head,
            head_dim: hd,
        };
        let w = &mut st.work;
        b.begin_batch(w, &batch.tokens, &batch.seqs)?;
        b.embed(f, w, &self.token_embd, Rows::Tokens, n, false, &mut st.x)?;
        let (g, bias) = self.embd_norm.parts();
        b.layer_norm(w, &mut st.x, n, e, g, bias, hp.eps)?;
        let longest = batch.seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        b.rope_ensure(&mut st.rope[0], hd, hp.theta_global, longest)?;
        b.rope_ensure(&mut st.rope[1], hd, hp.theta_local, longest)?;
        for (i, l) in self.layers.iter().enumerate() {
            let global = hp.global(i);
            let input = match &l.attn_norm {
                Some(nm) => {
                    let (g, bias) = nm.parts();
                    b.layer_norm_into(w, &st.x, n, e, g, bias, hp.eps, &mut st.att)?;
                    &st.att
                }
                None => &st.x,
            };
            b.matmul(f, w, input, n, &l.qkv, &mut st.ff, false)?;
            let attn = SeqAttn {
                qkv: Qkv::Fused(&st.ff),
                rope: Some(&st.rope[usize::from(!global)]),
                window: if global { None } else { Some(hp.window / 2) },
                heads,
            };
            b.attend_seqs(w, &attn, &mut st.att)?;
            b.matmul(f, w, &st.att, n, &l.o, &mut st.x, true)?;
            let (g, bias) = l.mlp_norm.parts();
            b.layer_norm_into(w, &st.x, n, e, g, bias, hp.eps, &mut st.att)?;
            b.matmul(f, w, &st.att, n, &l.up, &mut st.ff, false)?;
            // GeGLU: the first half of each row goes through GELU and gates the second.
            b.geglu(w, &st.ff, n, ff, &mut st.act)?;
            b.matmul(f, w, &st.act, n, &l.down, &mut st.x, true)?;
        }
        let (g, bias) = self.final_norm.parts();
        b.layer_norm(w, &mut st.x, n, e, g, bias, hp.eps)?;
        let mut out = EncoderOutput {
            dim: e,
            ..Default::default()
        };
        if wants.hidden {
            b.download(w, &st.x, n * e, &mut out.hidden)?;
        }
        let head_wanted = wants.logits && self.cls_out.is_some();
        if wants.pooled || head_wanted {
            b.pool(w, &st.x, e, self.pooling, &mut st.pooled)?;
        }
        if wants.pooled {
            b.download(w, &st.pooled, ns * e, &mut out.pooled)?;
        }
        if let (Some(cls_out), true) = (&self.cls_out, wants.logits) {
            out.n_labels = b.rows(cls_out);
            let input = match &self.head {
                Some((dense, nm)) => {
                    b.matmul(f, w, &st.pooled, ns, dense, &mut st.t, false)?;
                    b.gelu(w, &mut st.t, ns * e)?;
                    let (g, bias) = nm.parts();
                    b.layer_norm_into(w, &st.t, ns, e, g, bias, hp.eps, &mut st.h)?;
                    &st.h
                }
                None => &st.pooled,
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
