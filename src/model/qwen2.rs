//! Qwen2 (llama.cpp's `qwen2`): pre-norm decoder with RMSNorm, grouped-query attention with
//! biased Q/K/V projections and NEOX-style RoPE, SwiGLU feed-forward; tied or separate output
//! head; optionally a sequence-classification head on the last token (`cls.output`).
//!
//! The graph is [`block`] and [`Stack::pass`], written once over [`Backend`]. The layers run as
//! one or more stacks of consecutive layers, each on one backend: all on the CPU, or with
//! `-ngl N` the first layers on the CPU and the last N on the GPU (and the output head on the
//! GPU when N covers every layer, else on the CPU after them). The residual stream crosses
//! between stacks once per pass.

use super::weights::Loader;
use super::LoadOptions;
use crate::backend::{
    self, AttnIn, Backend, FfnIn, Heads, KvType, Rows, SampleSpec, Span, Use, WithBackend,
};
use crate::gguf::scan::ScanLog;
use crate::gguf::GgufFile;
use crate::sampling::Sampler;
use anyhow::{bail, Context, Result};
use std::any::Any;
use std::ops::Range;

#[derive(Clone, Debug)]
pub struct Qwen2Params {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub n_vocab: usize,
    pub n_ctx_train: usize,
    pub rope_theta: f32,
    pub eps: f32,
}

impl Qwen2Params {
    fn heads(&self) -> Heads {
        Heads {
            n_head: self.n_head,
            n_head_kv: self.n_head_kv,
            head_dim: self.head_dim,
        }
    }
}

/// What a forward pass leaves in [`DecoderState`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Logits of the last token only.
    LastLogits,
    /// Logits of every token of the batch (perplexity, KL divergence).
    AllLogits,
    /// Final-norm hidden states of every token (tests).
    AllHidden,
    /// The classification head's logits on the last token.
    ClassLogits,
}

pub struct Qwen2 {
    pub hp: Qwen2Params,
    pub labels: Vec<String>,
    pub has_cls: bool,
    stacks: Vec<Box<dyn DecoderStack>>,
}

/// KV caches and buffers of one sequence being decoded.
pub struct DecoderState {
    /// Positions filled in the cache.
    pub len: usize,
    pub ctx: usize,
    /// Results of the last pass (see [`Output`]).
    pub logits: Vec<f32>,
    pub hidden: Vec<f32>,
    /// The residual stream between stacks.
    x: Vec<f32>,
    stacks: Vec<Box<dyn Any + Send>>,
    penalized: Vec<u32>,
}

impl DecoderState {
    pub fn reset(&mut self) {
        self.len = 0;
    }
}

impl Qwen2 {
    pub fn load(f: &GgufFile, opts: &LoadOptions, log: &ScanLog) -> Result<Qwen2> {
        let l = Loader::new(f, log);
        let a = "qwen2";
        let n_embd = l.hp(a, "embedding_length")?;
        let n_head = l.hp(a, "attention.head_count")?;
        let n_head_kv = l.hp_opt(a, "attention.head_count_kv")?.unwrap_or(n_head);
        if n_head == 0 || n_head_kv == 0 || n_embd % n_head != 0 || n_head % n_head_kv != 0 {
            bail!(
                "{}: head counts {n_head}/{n_head_kv} do not fit embedding length {n_embd}",
                f.path().display()
            );
        }
        let token_info = f.tensor("token_embd.weight");
        let n_vocab = token_info.map_or(0, |t| t.dims.get(1).copied().unwrap_or(1) as usize);
        let hp = Qwen2Params {
            n_layer: l.hp(a, "block_count")?,
            n_embd,
            n_head,
            n_head_kv,
            head_dim: n_embd / n_head,
            n_ff: l.hp(a, "feed_forward_length")?,
            n_vocab,
            n_ctx_train: l.hp(a, "context_length")?,
            rope_theta: f.get_f32("qwen2.rope.freq_base").unwrap_or(10000.0),
            eps: l.hp_f32(a, "attention.layer_norm_rms_epsilon")?,
        };
        let labels = l.labels(a);
        let has_cls = l.has("cls.output.weight");
        if has_cls && labels.is_empty() {
            bail!(
                "{}: a classification head without qwen2.classifier.output_labels",
                f.path().display()
            );
        }
        let n = hp.n_layer;
        let on_gpu = opts.ngl.min(n);
        let first_gpu = n - on_gpu;
        let plan = |layers: Range<usize>, head: bool| StackPlan {
            f,
            log,
            hp: &hp,
            labels: labels.len(),
            layers,
            head,
        };
        let mut stacks = Vec::new();
        if on_gpu == 0 {
            stacks.push(backend::with_cpu(plan(0..n, true), opts.pack)?);
        } else {
            let head_on_gpu = opts.ngl >= n;
            match backend::with_gpu(plan(first_gpu..n, head_on_gpu), opts.gpu) {
                Ok(gpu) => {
                    if first_gpu > 0 {
                        stacks.push(backend::with_cpu(plan(0..first_gpu, false), opts.pack)?);
                    }
                    stacks.push(gpu);
                    if !head_on_gpu {
                        stacks.push(backend::with_cpu(plan(n..n, true), opts.pack)?);
                    }
                }
                Err(e) if opts.gpu_fallback => {
                    eprintln!("qrun: warning: {e:#}; running on the CPU (--gpu-fallback)");
                    stacks.push(backend::with_cpu(plan(0..n, true), opts.pack)?);
                }
                Err(e) => return Err(super::gpu_error(e, opts.ngl, n)),
            }
        }
        Ok(Qwen2 {
            hp,
            labels,
            has_cls,
            stacks,
        })
    }

    /// Where the layers run, one line per stack.
    pub fn placement(&self) -> String {
        self.stacks
            .iter()
            .map(|s| s.describe())
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Layers computed on the CPU.
    pub fn n_cpu_layers(&self) -> usize {
        self.stacks
            .iter()
            .filter(|s| s.on_cpu())
            .map(|s| s.layers().len())
            .sum()
    }

    /// A sequence state with an f16 KV cache of `ctx` positions (llama.cpp's default).
    pub fn new_state(&self, ctx: usize) -> Result<DecoderState> {
        self.new_state_with(ctx, KvType::F16)
    }

    /// A sequence state; a KV cache too large to allocate is an error naming its size.
    pub fn new_state_with(&self, ctx: usize, kv_type: KvType) -> Result<DecoderState> {
        let stacks = self
            .stacks
            .iter()
            .map(|s| s.new_state(ctx, kv_type))
            .collect::<Result<_>>()?;
        Ok(DecoderState {
            len: 0,
            ctx,
            logits: Vec::new(),
            hidden: Vec::new(),
            x: Vec::new(),
            stacks,
            penalized: Vec::new(),
        })
    }

    fn check(&self, st: &DecoderState, tokens: &[u32]) -> Result<()> {
        let n = tokens.len();
        if n == 0 {
            bail!("no tokens to evaluate");
        }
        if st.len + n > st.ctx {
            bail!(
                "the context holds {} tokens: {} are cached and {n} more do not fit (raise -c)",
                st.ctx,
                st.len
            );
        }
        if let Some(&tok) = tokens.iter().find(|&&t| t as usize >= self.hp.n_vocab) {
            bail!(
                "token id {tok} is outside the vocabulary ({})",
                self.hp.n_vocab
            );
        }
        Ok(())
    }

    fn run(
        &self,
        f: &GgufFile,
        st: &mut DecoderState,
        tokens: &[u32],
        want: Want,
    ) -> Result<Option<u32>> {
        self.check(st, tokens)?;
        let span = Span {
            n: tokens.len(),
            pos0: st.len,
        };
        let mut token = None;
        for (stack, sst) in self.stacks.iter().zip(st.stacks.iter_mut()) {
            let mut io = PassIo {
                tokens,
                span,
                x: &mut st.x,
                want,
                logits: &mut st.logits,
                hidden: &mut st.hidden,
                token: &mut token,
            };
            stack
                .forward(f, sst.as_mut(), &mut io)
                .with_context(|| format!("layers on {}", stack.describe()))?;
        }
        st.len += tokens.len();
        Ok(token)
    }

    /// Runs `tokens` at the next positions of `st`, appending to its KV cache.
    pub fn forward(
        &self,
        f: &GgufFile,
        st: &mut DecoderState,
        tokens: &[u32],
        out: Output,
    ) -> Result<()> {
        if out == Output::ClassLogits && !self.has_cls {
            bail!(
                "{}: the model has no classification head",
                f.path().display()
            );
        }
        self.run(f, st, tokens, Want::Output(out)).map(|_| ())
    }

    /// Runs `tokens` and samples the next token where the logits are (on the GPU, only the
    /// token comes back); `history` is what the repetition penalty looks at.
    pub fn forward_sample(
        &self,
        f: &GgufFile,
        st: &mut DecoderState,
        tokens: &[u32],
        sampler: &mut Sampler,
        history: &[u32],
    ) -> Result<u32> {
        let mut ids = std::mem::take(&mut st.penalized);
        let draw = sampler.next_step(history, &mut ids);
        let cfg = sampler.cfg.clone();
        let spec = SampleSpec {
            cfg: &cfg,
            draw,
            penalized: &ids,
        };
        let r = self.run(f, st, tokens, Want::Sample(spec));
        st.penalized = ids;
        r?.context("no token was sampled")
    }

    /// Class logits of one sequence: the score head on its last token's final hidden state.
    pub fn classify(
        &self,
        f: &GgufFile,
        st: &mut DecoderState,
        tokens: &[u32],
    ) -> Result<Vec<f32>> {
        st.reset();
        self.forward(f, st, tokens, Output::ClassLogits)?;
        Ok(st.logits[..self.labels.len()].to_vec())
    }
}

/// What the last stack produces.
#[derive(Clone, Copy)]
enum Want<'a> {
    Output(Output),
    Sample(SampleSpec<'a>),
}

/// One pass's inputs and outputs as they cross the stacks.
struct PassIo<'a, 'b> {
    tokens: &'a [u32],
    span: Span,
    /// The residual stream: the previous stack's output, this stack's input.
    x: &'a mut Vec<f32>,
    want: Want<'b>,
    logits: &'a mut Vec<f32>,
    hidden: &'a mut Vec<f32>,
    token: &'a mut Option<u32>,
}

/// Layers of the model on one backend, behind an object so that the model holds stacks of
/// different backends.
trait DecoderStack: Send + Sync {
    fn layers(&self) -> Range<usize>;
    fn on_cpu(&self) -> bool;
    fn describe(&self) -> String;
    fn new_state(&self, ctx: usize, kv: KvType) -> Result<Box<dyn Any + Send>>;
    fn forward(&self, f: &GgufFile, st: &mut (dyn Any + Send), io: &mut PassIo) -> Result<()>;
}

/// One decoder block's weights.
struct Block<B: Backend> {
    attn_norm: B::Vector,
    q: B::Linear,
    k: B::Linear,
    v: B::Linear,
    o: B::Linear,
    ffn_norm: B::Vector,
    gate: B::Linear,
    up: B::Linear,
    down: B::Linear,
}

struct Head<B: Backend> {
    norm: B::Vector,
    /// The output matrix, None when it is the stack's (tied) embedding table.
    output: Option<B::Linear>,
    cls: Option<B::Linear>,
}

struct Stack<B: Backend> {
    b: &'static B,
    hp: Qwen2Params,
    layers: Range<usize>,
    blocks: Vec<Block<B>>,
    /// The token embedding table, in the stack that holds layer 0.
    embed: Option<B::Linear>,
    head: Option<Head<B>>,
    n_labels: usize,
}

struct StackState<B: Backend> {
    work: B::Work,
    cache: B::Cache,
    rope: B::Rope,
    bufs: Bufs<B>,
}

struct Bufs<B: Backend> {
    x: B::Buf,
    q: B::Buf,
    att: B::Buf,
    act: B::Buf,
    h: B::Buf,
    logits: B::Buf,
}

/// What a stack is built from.
struct StackPlan<'a> {
    f: &'a GgufFile,
    log: &'a ScanLog,
    hp: &'a Qwen2Params,
    labels: usize,
    layers: Range<usize>,
    head: bool,
}

impl WithBackend for StackPlan<'_> {
    type Out = Box<dyn DecoderStack>;

    fn with<B: Backend>(self, b: &'static B) -> Result<Box<dyn DecoderStack>> {
        let (f, hp) = (self.f, self.hp);
        let l = Loader::new(f, self.log);
        let s = b.session();
        let (e, kv, ff) = (hp.n_embd, hp.n_head_kv * hp.head_dim, hp.n_ff);
        let tied = !l.has("output.weight");
        let has_cls = l.has("cls.output.weight");
        let first = self.layers.start == 0;
        // A tied vocabulary is the output head too. In a classifier it serves only an
        // occasional generate, so it is not repacked for products.
        let embed = if first {
            let usage = match (tied && self.head, has_cls) {
                (false, _) => Use::LookupOnHost,
                (true, false) => Use::Both,
                (true, true) => Use::MostlyLookup,
            };
            Some(l.mat(b, &s, "token_embd.weight", e, hp.n_vocab, usage)?)
        } else {
            None
        };
        // Not with_capacity(n_layer): the count comes from the file, and each layer's
        // tensors are checked as it is loaded (a missing one ends the loop).
        let mut blocks = Vec::new();
        for i in self.layers.clone() {
            let p = |s: &str| format!("blk.{i}.{s}");
            blocks.push(Block {
                attn_norm: l.vector(b, &p("attn_norm.weight"), e)?,
                q: l.linear(b, &s, &p("attn_q"), e, e)?,
                k: l.linear(b, &s, &p("attn_k"), e, kv)?,
                v: l.linear(b, &s, &p("attn_v"), e, kv)?,
                o: l.linear(b, &s, &p("attn_output"), e, e)?,
                ffn_norm: l.vector(b, &p("ffn_norm.weight"), e)?,
                gate: l.linear(b, &s, &p("ffn_gate"), e, ff)?,
                up: l.linear(b, &s, &p("ffn_up"), e, ff)?,
                down: l.linear(b, &s, &p("ffn_down"), ff, e)?,
            });
        }
        let head = if self.head {
            let output = if !tied {
                Some(l.mat(b, &s, "output.weight", e, hp.n_vocab, Use::Product)?)
            } else if first {
                None
            } else {
                let usage = if has_cls {
                    Use::MostlyLookup
                } else {
                    Use::Product
                };
                Some(l.mat(b, &s, "token_embd.weight", e, hp.n_vocab, usage)?)
            };
            Some(Head {
                norm: l.vector(b, "output_norm.weight", e)?,
                output,
                cls: if has_cls {
                    Some(l.linear(b, &s, "cls.output", e, self.labels)?)
                } else {
                    None
                },
            })
        } else {
            None
        };
        Ok(Box::new(Stack {
            b,
            hp: hp.clone(),
            layers: self.layers,
            blocks,
            embed,
            head,
            n_labels: self.labels,
        }))
    }
}

/// One decoder block: attention, then the feed-forward, each added to the residual stream.
fn block<B: Backend>(
    cx: &PassCtx<B>,
    w: &mut B::Work,
    l: &Block<B>,
    (cache, layer): (&mut B::Cache, usize),
    s: &mut Bufs<B>,
) -> Result<()> {
    let (b, f, hp, n) = (cx.b, cx.f, cx.hp, cx.n);
    let attn = AttnIn {
        norm: &l.attn_norm,
        eps: hp.eps,
        q: &l.q,
        k: &l.k,
        v: &l.v,
        rope: cx.rope,
        heads: hp.heads(),
    };
    b.qkv_rope_store(f, w, &s.x, &attn, cache, layer, &mut s.q)?;
    b.attend_causal(w, &s.q, cache, layer, hp.heads(), &mut s.att)?;
    b.matmul(f, w, &s.att, n, &l.o, &mut s.x, true)?;
    let ffn = FfnIn {
        norm: &l.ffn_norm,
        eps: hp.eps,
        gate: &l.gate,
        up: &l.up,
    };
    b.ffn_swiglu(f, w, &s.x, &ffn, &mut s.act)?;
    b.matmul(f, w, &s.act, n, &l.down, &mut s.x, true)
}

/// What every operation of a pass shares.
struct PassCtx<'a, B: Backend> {
    b: &'a B,
    f: &'a GgufFile,
    hp: &'a Qwen2Params,
    n: usize,
    rope: &'a B::Rope,
}

impl<B: Backend> Stack<B> {
    /// The pass's operations: embedding (first stack), blocks, head (last stack).
    fn pass(
        &self,
        cx: &PassCtx<B>,
        w: &mut B::Work,
        cache: &mut B::Cache,
        s: &mut Bufs<B>,
        want: Want,
    ) -> Result<()> {
        let (b, f, hp, n) = (cx.b, cx.f, cx.hp, cx.n);
        if let Some(t) = &self.embed {
            b.embed(f, w, t, Rows::Tokens, n, false, &mut s.x)?;
        }
        for (i, l) in self.blocks.iter().enumerate() {
            block(cx, w, l, (&mut *cache, i), s)?;
        }
        let Some(head) = &self.head else {
            return Ok(());
        };
        let output = head.output.as_ref().or(self.embed.as_ref());
        let norm = (&head.norm, hp.eps);
        match want {
            Want::Output(Output::LastLogits) | Want::Sample(_) => {
                let out = output.context("the model has no output head")?;
                b.norm_matmul_row(f, w, &s.x, n - 1, norm, out, &mut s.logits)?;
                if let Want::Sample(spec) = want {
                    b.sample(w, &mut s.logits, hp.n_vocab, &spec)?;
                }
            }
            Want::Output(Output::AllLogits) => {
                let out = output.context("the model has no output head")?;
                b.rms_norm(w, &s.x, 0..n, hp.n_embd, &head.norm, hp.eps, &mut s.h)?;
                b.matmul(f, w, &s.h, n, out, &mut s.logits, false)?;
            }
            Want::Output(Output::AllHidden) => {
                b.rms_norm(w, &s.x, 0..n, hp.n_embd, &head.norm, hp.eps, &mut s.h)?;
            }
            Want::Output(Output::ClassLogits) => {
                let cls = head
                    .cls
                    .as_ref()
                    .context("the model has no classification head")?;
                b.norm_matmul_row(f, w, &s.x, n - 1, norm, cls, &mut s.logits)?;
            }
        }
        Ok(())
    }
}

/// Passes with the same key run the same operations on the same buffers: the token count
/// (a decoded token is 1) and what the head produces.
fn pass_key(n: usize, want: &Want) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    n.hash(&mut h);
    match want {
        Want::Output(o) => (0u8, *o as u8).hash(&mut h),
        Want::Sample(s) => {
            1u8.hash(&mut h);
            let c = s.cfg;
            (c.temperature.to_bits(), c.top_k, c.top_p.to_bits()).hash(&mut h);
            (c.repeat_penalty.to_bits(), c.repeat_last_n).hash(&mut h);
        }
    }
    h.finish()
}

impl<B: Backend> DecoderStack for Stack<B> {
    fn layers(&self) -> Range<usize> {
        self.layers.clone()
    }

    fn on_cpu(&self) -> bool {
        std::any::TypeId::of::<B>() == std::any::TypeId::of::<crate::backend::cpu::Cpu>()
    }

    fn describe(&self) -> String {
        let what = match (self.layers.is_empty(), self.head.is_some()) {
            (true, _) => "the output head".to_string(),
            (false, true) if self.layers.end == self.hp.n_layer => format!(
                "layers {}..{} and the output head",
                self.layers.start, self.layers.end
            ),
            _ => format!("layers {}..{}", self.layers.start, self.layers.end),
        };
        format!("{what} on {}", self.b.describe())
    }

    fn new_state(&self, ctx: usize, kv: KvType) -> Result<Box<dyn Any + Send>> {
        let b = self.b;
        let mut rope = b.rope();
        // The whole context's angles at once, so that a captured pass never grows the table.
        b.rope_ensure(&mut rope, self.hp.head_dim, self.hp.rope_theta, ctx)?;
        let st = StackState::<B> {
            work: b.work()?,
            cache: b.cache(
                kv,
                self.blocks.len(),
                ctx,
                self.hp.n_head_kv * self.hp.head_dim,
            )?,
            rope,
            bufs: Bufs {
                x: b.buf(),
                q: b.buf(),
                att: b.buf(),
                act: b.buf(),
                h: b.buf(),
                logits: b.buf(),
            },
        };
        Ok(Box::new(st))
    }

    fn forward(&self, f: &GgufFile, st: &mut (dyn Any + Send), io: &mut PassIo) -> Result<()> {
        let st = st
            .downcast_mut::<StackState<B>>()
            .context("a decoder state made for another model")?;
        let b = self.b;
        let hp = &self.hp;
        let Span { n, pos0 } = io.span;
        let e = hp.n_embd;
        let sample = match (&io.want, self.head.is_some()) {
            (Want::Sample(s), true) => Some(s),
            _ => None,
        };
        b.begin_pass(&mut st.work, io.span, io.tokens, sample)?;
        b.rope_ensure(&mut st.rope, hp.head_dim, hp.rope_theta, pos0 + n)?;
        match &self.embed {
            Some(t) => b.stage_rows(f, &mut st.work, t, Rows::Tokens, n)?,
            None => b.upload(&mut st.work, &io.x[..n * e], &mut st.bufs.x)?,
        }
        let want = io.want;
        let key = pass_key(n, &want);
        let StackState {
            work,
            cache,
            rope,
            bufs,
        } = st;
        let cx = PassCtx {
            b,
            f,
            hp,
            n,
            rope: &*rope,
        };
        b.run_pass(work, key, &mut |w| self.pass(&cx, w, cache, bufs, want))?;
        if self.head.is_none() {
            return b.download(work, &bufs.x, n * e, io.x);
        }
        match want {
            Want::Output(Output::LastLogits) => {
                b.download(work, &bufs.logits, hp.n_vocab, io.logits)
            }
            Want::Output(Output::AllLogits) => {
                b.download(work, &bufs.logits, n * hp.n_vocab, io.logits)
            }
            Want::Output(Output::AllHidden) => b.download(work, &bufs.h, n * e, io.hidden),
            Want::Output(Output::ClassLogits) => {
                b.download(work, &bufs.logits, self.n_labels, io.logits)
            }
            Want::Sample(_) => {
                *io.token = Some(b.sampled(work)?);
                Ok(())
            }
        }
    }
}
