//! Qwen2 (llama.cpp's `qwen2`): pre-norm decoder with RMSNorm, grouped-query attention with
//! biased Q/K/V projections and NEOX-style RoPE, SwiGLU feed-forward; tied or separate output
//! head; optionally a sequence-classification head on the last token (`cls.output`).

use super::weights::{sized, Linear, Loader, Mat};
use crate::backend::cpu::attention::Heads;
use crate::backend::cpu::kv_cache::{KvCache, KvType};
use crate::backend::cpu::matmul::Scratch;
use crate::backend::cpu::ops;
use crate::backend::offload::{DecoderOffload, OffloadState};
use crate::gguf::GgufFile;
use anyhow::{bail, Result};

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

struct Layer {
    attn_norm: Vec<f32>,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ffn_norm: Vec<f32>,
    gate: Linear,
    up: Linear,
    down: Linear,
}

pub struct Qwen2 {
    pub hp: Qwen2Params,
    token_embd: Mat,
    output: Mat,
    output_norm: Vec<f32>,
    layers: Vec<Layer>,
    /// Sequence-classification head (score), applied to the last token.
    pub cls: Option<Linear>,
    pub labels: Vec<String>,
    /// The last layers (and maybe the head) on a GPU (`backend::offload::attach`).
    pub offload: Option<Box<dyn DecoderOffload>>,
}

/// What a forward pass leaves in [`DecoderState`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Logits of the last token only (generation).
    LastLogits,
    /// Logits of every token of the batch (perplexity, KL divergence).
    AllLogits,
    /// Final-norm hidden states of every token (tests, classification).
    AllHidden,
}

/// KV cache and buffers of one sequence being decoded.
pub struct DecoderState {
    kv: KvCache,
    /// Positions filled in the cache.
    pub len: usize,
    pub ctx: usize,
    x: Vec<f32>,
    h: Vec<f32>,
    q: Vec<f32>,
    kn: Vec<f32>,
    vn: Vec<f32>,
    att: Vec<f32>,
    o: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    /// Results of the last pass (see [`Output`]).
    pub logits: Vec<f32>,
    pub hidden: Vec<f32>,
    scratch: Scratch,
    /// Rotary angles of the positions seen so far.
    rope: ops::RopeTable,
    /// KV cache of the offloaded layers.
    offload: OffloadState,
}

impl DecoderState {
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Bytes held by the KV cache.
    pub fn kv_bytes(&self) -> usize {
        self.kv.bytes()
    }
}

impl Qwen2 {
    pub fn load(f: &GgufFile) -> Result<Qwen2> {
        Self::load_with(f, super::weights::packing_enabled())
    }

    /// Loads with packed weights (`pack`, where the CPU has the kernels) or weights in place.
    pub fn load_with(f: &GgufFile, pack: bool) -> Result<Qwen2> {
        let l = Loader::new(f, pack);
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
        let (e, kv, ff) = (hp.n_embd, hp.n_head_kv * hp.head_dim, hp.n_ff);
        // A tied vocabulary serves as the output head too: packed then, unless the model is a
        // classifier (its head is `cls.output`; the tied one then serves only an occasional
        // `generate`, from the file's blocks). Otherwise the vocabulary is only looked up.
        let (token_embd, output) = if l.has("output.weight") {
            (
                l.lookup_table("token_embd.weight", e, hp.n_vocab)?,
                l.mat("output.weight", e, hp.n_vocab)?,
            )
        } else {
            let t = if l.has("cls.output.weight") {
                let mut t = l.lookup_table("token_embd.weight", e, hp.n_vocab)?;
                // Also the head of a generate: its pages stay mapped between tokens.
                t.lookup_only = false;
                t
            } else {
                l.mat("token_embd.weight", e, hp.n_vocab)?
            };
            (t.clone(), t)
        };
        // Not with_capacity(n_layer): the count comes from the file, and each layer's
        // tensors are checked as it is loaded (a missing one ends the loop).
        let mut layers = Vec::new();
        for i in 0..hp.n_layer {
            let p = |s: &str| format!("blk.{i}.{s}");
            layers.push(Layer {
                attn_norm: l.vec(&p("attn_norm.weight"), e)?,
                q: l.linear(&p("attn_q"), e, e)?,
                k: l.linear(&p("attn_k"), e, kv)?,
                v: l.linear(&p("attn_v"), e, kv)?,
                o: l.linear(&p("attn_output"), e, e)?,
                ffn_norm: l.vec(&p("ffn_norm.weight"), e)?,
                gate: l.linear(&p("ffn_gate"), e, ff)?,
                up: l.linear(&p("ffn_up"), e, ff)?,
                down: l.linear(&p("ffn_down"), ff, e)?,
            });
        }
        let labels = l.labels(a);
        let cls = if l.has("cls.output.weight") {
            if labels.is_empty() {
                bail!(
                    "{}: a classification head without qwen2.classifier.output_labels",
                    f.path().display()
                );
            }
            Some(l.linear("cls.output", e, labels.len())?)
        } else {
            None
        };
        Ok(Qwen2 {
            token_embd,
            output,
            output_norm: l.vec("output_norm.weight", e)?,
            layers,
            cls,
            labels,
            hp,
            offload: None,
        })
    }

    /// A sequence state with an f16 KV cache of `ctx` positions (llama.cpp's default).
    pub fn new_state(&self, ctx: usize) -> DecoderState {
        self.new_state_with(ctx, KvType::F16)
    }

    pub fn new_state_with(&self, ctx: usize, kv_type: KvType) -> DecoderState {
        let kv = self.hp.n_head_kv * self.hp.head_dim;
        // Offloaded layers keep their cache on the device.
        self.state_around(KvCache::new(kv_type, self.n_cpu_layers(), ctx, kv), ctx)
    }

    /// Like [`Qwen2::new_state_with`], but a KV cache too large to allocate is an error, not an
    /// abort (qrun sizes it from `-c` and the file).
    pub fn try_new_state_with(&self, ctx: usize, kv_type: KvType) -> Result<DecoderState> {
        let kv = self.hp.n_head_kv * self.hp.head_dim;
        let cache = KvCache::try_new(kv_type, self.n_cpu_layers(), ctx, kv)?;
        Ok(self.state_around(cache, ctx))
    }

    fn state_around(&self, kv: KvCache, ctx: usize) -> DecoderState {
        DecoderState {
            kv,
            len: 0,
            ctx,
            x: Vec::new(),
            h: Vec::new(),
            q: Vec::new(),
            kn: Vec::new(),
            vn: Vec::new(),
            att: Vec::new(),
            o: Vec::new(),
            gate: Vec::new(),
            up: Vec::new(),
            logits: Vec::new(),
            hidden: Vec::new(),
            scratch: Scratch::default(),
            rope: ops::RopeTable::default(),
            offload: None,
        }
    }

    /// Layers computed on the CPU (all of them unless some are offloaded).
    pub fn n_cpu_layers(&self) -> usize {
        self.offload
            .as_ref()
            .map_or(self.hp.n_layer, |o| o.first_layer())
    }

    /// Runs `tokens` at the next positions of `st`, appending to its KV cache.
    pub fn forward(
        &self,
        f: &GgufFile,
        st: &mut DecoderState,
        tokens: &[u32],
        out: Output,
    ) -> Result<()> {
        let hp = &self.hp;
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
        let (e, kv, ff) = (hp.n_embd, hp.n_head_kv * hp.head_dim, hp.n_ff);
        let heads = Heads {
            n_head: hp.n_head,
            n_head_kv: hp.n_head_kv,
            head_dim: hp.head_dim,
        };
        let pos0 = st.len;
        st.rope.ensure(hp.head_dim, hp.rope_theta, pos0 + n);
        let x = sized(&mut st.x, n * e);
        if let Some(&tok) = tokens.iter().find(|&&t| t as usize >= hp.n_vocab) {
            bail!("token id {tok} is outside the vocabulary ({})", hp.n_vocab);
        }
        self.token_embd.rows_then_release(f, tokens, x)?;
        for (li, layer) in self.layers[..self.n_cpu_layers()].iter().enumerate() {
            let h = sized(&mut st.h, n * e);
            ops::rms_norm(&st.x[..n * e], &layer.attn_norm, hp.eps, h);
            let mut qkv = [
                sized(&mut st.q, n * e),
                sized(&mut st.kn, n * kv),
                sized(&mut st.vn, n * kv),
            ];
            Linear::forward_group(
                [&layer.q, &layer.k, &layer.v],
                f,
                h,
                n,
                &mut qkv,
                &mut st.scratch,
            )?;
            let [q, kn, vn] = qkv;
            for t in 0..n {
                st.rope.apply(&mut q[t * e..(t + 1) * e], pos0 + t);
                st.rope.apply(&mut kn[t * kv..(t + 1) * kv], pos0 + t);
            }
            st.kv.write(li, pos0, kn, vn)?;
            let att = sized(&mut st.att, n * e);
            st.kv.attend(li, q, n, pos0, heads, att);
            let o = sized(&mut st.o, n * e);
            layer.o.forward(f, att, n, o, &mut st.scratch)?;
            ops::add_inplace(&mut st.x[..n * e], o);
            let h = sized(&mut st.h, n * e);
            ops::rms_norm(&st.x[..n * e], &layer.ffn_norm, hp.eps, h);
            let mut gate_up = [sized(&mut st.gate, n * ff), sized(&mut st.up, n * ff)];
            Linear::forward_group(
                [&layer.gate, &layer.up],
                f,
                h,
                n,
                &mut gate_up,
                &mut st.scratch,
            )?;
            let [gate, up] = gate_up;
            crate::backend::cpu::simd_f32::swiglu(gate, up);
            let o = sized(&mut st.o, n * e);
            layer.down.forward(f, gate, n, o, &mut st.scratch)?;
            ops::add_inplace(&mut st.x[..n * e], o);
        }
        if let Some(off) = &self.offload {
            // The hidden state crosses to the device and back (or the device finishes).
            let x = &mut st.x[..n * e];
            if off.forward(
                &mut st.offload,
                st.ctx,
                x,
                n,
                pos0,
                out,
                &mut st.logits,
                &mut st.hidden,
            )? {
                st.len += n;
                return Ok(());
            }
        }
        st.len += n;
        let h = sized(&mut st.h, n * e);
        ops::rms_norm(&st.x[..n * e], &self.output_norm, hp.eps, h);
        match out {
            Output::LastLogits => {
                let logits = sized(&mut st.logits, hp.n_vocab);
                self.project(f, &st.h[(n - 1) * e..n * e], 1, logits, &mut st.scratch)?;
            }
            Output::AllLogits => {
                let logits = sized(&mut st.logits, n * hp.n_vocab);
                self.project(f, &st.h[..n * e], n, logits, &mut st.scratch)?;
            }
            Output::AllHidden => {
                let hidden = sized(&mut st.hidden, n * e);
                hidden.copy_from_slice(&st.h[..n * e]);
            }
        }
        Ok(())
    }

    fn project(
        &self,
        f: &GgufFile,
        h: &[f32],
        n: usize,
        logits: &mut [f32],
        s: &mut Scratch,
    ) -> Result<()> {
        crate::backend::cpu::matmul::matmul(&self.output.view(f), h, n, logits, s)
    }

    /// Class logits of one sequence: the score head on its last token's final hidden state.
    pub fn classify(
        &self,
        f: &GgufFile,
        st: &mut DecoderState,
        tokens: &[u32],
    ) -> Result<Vec<f32>> {
        let Some(cls) = &self.cls else {
            bail!(
                "{}: the model has no classification head",
                f.path().display()
            );
        };
        st.reset();
        self.forward(f, st, tokens, Output::AllHidden)?;
        let e = self.hp.n_embd;
        let n = tokens.len();
        let mut logits = vec![0.0; cls.rows()];
        cls.forward(
            f,
            &st.hidden[(n - 1) * e..n * e],
            1,
            &mut logits,
            &mut st.scratch,
        )?;
        Ok(logits)
    }
}
