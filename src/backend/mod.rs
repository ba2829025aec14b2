//! Compute backends, below the models: the CPU (always) and NVIDIA GPUs through cudarc (feature
//! `cuda`). A backend knows tensors, activations and operations, never an architecture: each
//! model describes its graph once, in `model/`, as calls to [`Backend`], and runs that one
//! graph on whichever backend holds its layers (`-ngl` splits a decoder's layers between the
//! CPU and the GPU).
//!
//! The operations are the small set the graphs need: products with weights, norms, attention,
//! activations, embedding lookups, pooling and sampling. Some are fused, because fusing them is
//! where a GPU's speed lies (norm + products + RoPE + KV-cache store; norm + gate/up + SwiGLU);
//! they belong to no architecture, and the CPU composes them from its parts.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;

use crate::gguf::{GgufFile, TensorInfo};
use crate::sampling::SamplerConfig;
use anyhow::Result;
use quant_types::GgmlType;
use std::ops::Range;

/// Shapes of one attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heads {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
}

impl Heads {
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
}

/// Element type of a decoder's KV cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum KvType {
    #[default]
    F16,
    F32,
}

/// How token states become one vector per sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    Mean,
    Cls,
    Last,
}

impl Pooling {
    /// llama.cpp's pooling type numbers (0 none, 1 mean, 2 cls, 3 last).
    pub fn from_gguf(v: usize) -> Option<Pooling> {
        match v {
            1 => Some(Pooling::Mean),
            2 => Some(Pooling::Cls),
            3 => Some(Pooling::Last),
            _ => None,
        }
    }
}

/// A tensor of the file, checked by the model's loader: its type and its shape as rows of
/// `cols` values.
#[derive(Clone, Copy, Debug)]
pub struct TensorRef<'a> {
    pub info: &'a TensorInfo,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
}

/// What a weight matrix is used for, so that a backend keeps it where its use is cheapest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    /// Products.
    Product,
    /// Products and row lookups (a tied embedding that is also the output head).
    Both,
    /// Row lookups, and now and then products (a classifier's tied vocabulary, whose head
    /// serves only an occasional generate): not repacked for products.
    MostlyLookup,
    /// Row lookups only, many rows per pass (an encoder's embeddings).
    Lookup,
    /// Row lookups only, a few rows per pass (a decoder's untied vocabulary): a backend with
    /// memory of its own may leave it in host memory and upload the rows.
    LookupOnHost,
}

/// Which rows of a table [`Backend::embed`] reads, one per token of the pass or batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rows {
    /// The tokens' ids.
    Tokens,
    /// Each token's position in its sequence (encoders' absolute position embeddings).
    Positions,
    /// The same row for every token (BERT's token type 0).
    Fixed(usize),
}

/// A decoder pass: `n` tokens at positions `pos0..pos0 + n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub n: usize,
    pub pos0: usize,
}

/// Sampling the next token on the device that computed the logits.
#[derive(Clone, Copy, Debug)]
pub struct SampleSpec<'a> {
    pub cfg: &'a SamplerConfig,
    /// The uniform draw in [0, 1) of this step (the host's generator keeps the sequence).
    pub draw: f32,
    /// Distinct recent token ids, sorted, that the repetition penalty applies to.
    pub penalized: &'a [u32],
}

/// Inputs of a decoder layer's attention half: its norm, Q/K/V products and rotary table.
pub struct AttnIn<'a, B: Backend + ?Sized> {
    pub norm: &'a B::Vector,
    pub eps: f32,
    pub q: &'a B::Linear,
    pub k: &'a B::Linear,
    pub v: &'a B::Linear,
    pub rope: &'a B::Rope,
    pub heads: Heads,
}

/// Inputs of a SwiGLU feed-forward's first half: norm, gate and up products.
pub struct FfnIn<'a, B: Backend + ?Sized> {
    pub norm: &'a B::Vector,
    pub eps: f32,
    pub gate: &'a B::Linear,
    pub up: &'a B::Linear,
}

/// An encoder's queries, keys and values: three buffers of rows of `n_head * head_dim`, or one
/// of rows `[q | k | v]`.
pub enum Qkv<'a, B: Backend + ?Sized> {
    Split(&'a B::Buf, &'a B::Buf, &'a B::Buf),
    Fused(&'a B::Buf),
}

/// Bidirectional attention within each sequence of the batch; with `rope`, queries and keys are
/// rotated at their positions first; with `window = Some(w)`, token i sees j when |i - j| <= w.
pub struct SeqAttn<'a, B: Backend + ?Sized> {
    pub qkv: Qkv<'a, B>,
    pub rope: Option<&'a B::Rope>,
    pub window: Option<usize>,
    pub heads: Heads,
}

/// A compute backend. Buffers hold rows of f32 activations; they grow to what a pass needs and
/// live in a sequence's state, as do the backend's working memory (`Work`), the KV cache and
/// the rotary tables. Operations on `rows` rows read and write the first `rows` rows.
pub trait Backend: Send + Sync + 'static {
    /// A weight matrix (with its optional bias) as this backend computes with it.
    type Linear: Send + Sync;
    /// A vector of f32 (a norm's scale or shift).
    type Vector: Send + Sync;
    /// Rows of f32 activations.
    type Buf: Send;
    /// Per-sequence working memory: scratch, the pass's inputs, captured graphs.
    type Work: Send;
    /// Keys and values of one sequence for the layers this backend runs.
    type Cache: Send;
    /// Sines and cosines of rotary embeddings.
    type Rope: Send;
    /// What one model's weights share while they load (the CPU packs them into one arena).
    type Session;

    /// A one-line description (device, kernels).
    fn describe(&self) -> String;
    /// Token count per encoder pass (a big batch runs in parts of whole sequences), or None
    /// for the whole batch at once.
    fn encode_part_tokens(&self) -> Option<usize>;

    // Weights.
    fn session(&self) -> Self::Session;
    fn linear(
        &self,
        s: &Self::Session,
        f: &GgufFile,
        w: TensorRef,
        bias: Option<Vec<f32>>,
        usage: Use,
    ) -> Result<Self::Linear>;
    fn vector(&self, v: Vec<f32>) -> Result<Self::Vector>;
    fn rows(&self, l: &Self::Linear) -> usize;
    /// What the backend found scanning the matrix's values while it read them (see
    /// `gguf::scan`), or None when it did not read them all (the loader scans them then).
    fn weight_scan(&self, _l: &Self::Linear) -> Option<quant_types::scan::Scan> {
        None
    }
    /// Bytes of memory of this backend's own that the matrix takes (0 when it is read in
    /// place from the file's map).
    fn device_bytes(&self, l: &Self::Linear) -> usize;

    // State.
    fn work(&self) -> Result<Self::Work>;
    fn buf(&self) -> Self::Buf;
    fn cache(&self, ty: KvType, layers: usize, ctx: usize, row: usize) -> Result<Self::Cache>;
    fn cache_bytes(&self, c: &Self::Cache) -> usize;
    fn rope(&self) -> Self::Rope;
    /// Makes `r` hold the angles of positions 0..`positions` for (head_dim, theta).
    fn rope_ensure(
        &self,
        r: &mut Self::Rope,
        head_dim: usize,
        theta: f32,
        positions: usize,
    ) -> Result<()>;

    // A pass's inputs and its replay.
    /// Starts a decoder pass over `tokens` at `span` (and a sampling step's inputs).
    fn begin_pass(
        &self,
        w: &mut Self::Work,
        span: Span,
        tokens: &[u32],
        sample: Option<&SampleSpec>,
    ) -> Result<()>;
    /// Before [`Backend::run_pass`]: makes the rows that [`Backend::embed`] will read from a
    /// table kept in host memory ([`Use::LookupOnHost`]) ready on the device.
    fn stage_rows(
        &self,
        f: &GgufFile,
        w: &mut Self::Work,
        table: &Self::Linear,
        which: Rows,
        n: usize,
    ) -> Result<()>;
    /// Starts an encoder pass over a batch of packed sequences.
    fn begin_batch(&self, w: &mut Self::Work, tokens: &[u32], seqs: &[Range<usize>]) -> Result<()>;
    /// Runs `f`, the operations of a pass. A backend may capture them on their first run with
    /// a key and replay the capture for later passes with the same key (same shapes and
    /// buffers; the pass's inputs are read where `begin_pass` put them).
    fn run_pass(
        &self,
        w: &mut Self::Work,
        key: u64,
        f: &mut dyn FnMut(&mut Self::Work) -> Result<()>,
    ) -> Result<()>;

    // Host transfers.
    fn upload(&self, w: &mut Self::Work, host: &[f32], dst: &mut Self::Buf) -> Result<()>;
    fn download(
        &self,
        w: &mut Self::Work,
        src: &Self::Buf,
        len: usize,
        host: &mut Vec<f32>,
    ) -> Result<()>;

    // Operations.
    /// out[t] = table row of token t (or out[t] += it with `add`).
    #[allow(clippy::too_many_arguments)]
    fn embed(
        &self,
        f: &GgufFile,
        w: &mut Self::Work,
        table: &Self::Linear,
        which: Rows,
        n: usize,
        add: bool,
        out: &mut Self::Buf,
    ) -> Result<()>;
    /// out[r] = rms_norm(x[r]) * g for r in `rows` (written at the same rows).
    #[allow(clippy::too_many_arguments)]
    fn rms_norm(
        &self,
        w: &mut Self::Work,
        x: &Self::Buf,
        rows: Range<usize>,
        dim: usize,
        g: &Self::Vector,
        eps: f32,
        out: &mut Self::Buf,
    ) -> Result<()>;
    /// Layer norm of `n` rows in place: x = (x - mean) / std * g + b.
    #[allow(clippy::too_many_arguments)]
    fn layer_norm(
        &self,
        w: &mut Self::Work,
        x: &mut Self::Buf,
        n: usize,
        dim: usize,
        g: &Self::Vector,
        b: Option<&Self::Vector>,
        eps: f32,
    ) -> Result<()>;
    /// Layer norm of `n` rows of x into out.
    #[allow(clippy::too_many_arguments)]
    fn layer_norm_into(
        &self,
        w: &mut Self::Work,
        x: &Self::Buf,
        n: usize,
        dim: usize,
        g: &Self::Vector,
        b: Option<&Self::Vector>,
        eps: f32,
        out: &mut Self::Buf,
    ) -> Result<()>;
    /// y = x W^T + b for `n` rows, or y += that with `add` (a residual stream).
    #[allow(clippy::too_many_arguments)]
    fn matmul(
        &self,
        f: &GgufFile,
        w: &mut Self::Work,
        x: &Self::Buf,
        n: usize,
        m: &Self::Linear,
        y: &mut Self::Buf,
        add: bool,
    ) -> Result<()>;
    /// y = rms_norm(x[row]) W^T for one row `row` of x (an output head on the last token).
    #[allow(clippy::too_many_arguments)]
    fn norm_matmul_row(
        &self,
        f: &GgufFile,
        w: &mut Self::Work,
        x: &Self::Buf,
        row: usize,
        norm: (&Self::Vector, f32),
        m: &Self::Linear,
        y: &mut Self::Buf,
    ) -> Result<()>;
    /// Products of several matrices on the same `n` rows of x: ys[i] = x W_i^T + b_i.
    fn matmul_many(
        &self,
        f: &GgufFile,
        w: &mut Self::Work,
        x: &Self::Buf,
        n: usize,
        ms: &[&Self::Linear],
        ys: &mut [&mut Self::Buf],
    ) -> Result<()>;
    /// A decoder layer's attention inputs: q = RoPE(norm(x) W_q^T + b_q), and the keys
    /// (rotated) and values of the pass written to `layer` of the cache at the pass's
    /// positions.
    #[allow(clippy::too_many_arguments)]
    fn qkv_rope_store(
        &self,
        f: &GgufFile,
        w: &mut Self::Work,
        x: &Self::Buf,
        a: &AttnIn<Self>,
        cache: &mut Self::Cache,
        layer: usize,
        q: &mut Self::Buf,
    ) -> Result<()>;
    /// Causal attention of the pass's queries over `layer` of the cache.
    fn attend_causal(
        &self,
        w: &mut Self::Work,
        q: &Self::Buf,
        cache: &mut Self::Cache,
        layer: usize,
        heads: Heads,
        out: &mut Self::Buf,
    ) -> Result<()>;
    /// out = silu(norm(x) W_gate^T) * (norm(x) W_up^T).
    fn ffn_swiglu(
        &self,
        f: &GgufFile,
        w: &mut Self::Work,
        x: &Self::Buf,
        ffn: &FfnIn<Self>,
        out: &mut Self::Buf,
    ) -> Result<()>;
    /// Attention within each sequence of the batch.
    fn attend_seqs(&self, w: &mut Self::Work, a: &SeqAttn<Self>, out: &mut Self::Buf)
        -> Result<()>;
    /// x = gelu(x) over the first `len` values.
    fn gelu(&self, w: &mut Self::Work, x: &mut Self::Buf, len: usize) -> Result<()>;
    /// x = tanh(x) over the first `len` values.
    fn tanh(&self, w: &mut Self::Work, x: &mut Self::Buf, len: usize) -> Result<()>;
    /// out[t][j] = gelu(x[t][j]) * x[t][ff + j] for `n` rows of 2 * ff.
    fn geglu(
        &self,
        w: &mut Self::Work,
        x: &Self::Buf,
        n: usize,
        ff: usize,
        out: &mut Self::Buf,
    ) -> Result<()>;
    /// One vector of `dim` per sequence of the batch.
    fn pool(
        &self,
        w: &mut Self::Work,
        x: &Self::Buf,
        dim: usize,
        mode: Pooling,
        out: &mut Self::Buf,
    ) -> Result<()>;
    /// Samples a token from the first `vocab` logits (the step's inputs from `begin_pass`);
    /// [`Backend::sampled`] returns it once the pass has run.
    fn sample(
        &self,
        w: &mut Self::Work,
        logits: &mut Self::Buf,
        vocab: usize,
        s: &SampleSpec,
    ) -> Result<()>;
    fn sampled(&self, w: &mut Self::Work) -> Result<u32>;
}

/// Something to build with a backend chosen at run time ([`with_cpu`], [`with_gpu`]): the
/// models' layer stacks are generic over the backend and built through this.
pub trait WithBackend {
    type Out;
    fn with<B: Backend>(self, b: &'static B) -> Result<Self::Out>;
}

/// Builds `w` with the CPU backend (`pack`: see [`cpu::Cpu::get`]).
pub fn with_cpu<W: WithBackend>(w: W, pack: bool) -> Result<W::Out> {
    w.with(cpu::Cpu::get(pack))
}

/// Options of the GPU backend.
#[derive(Clone, Copy, Debug)]
pub struct GpuOptions {
    /// Capture a decoded token's launches once as a CUDA graph and replay it (off: launch
    /// every kernel every token, to compare).
    pub graphs: bool,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions { graphs: true }
    }
}

/// Builds `w` with the GPU backend; an error says why none can be used.
pub fn with_gpu<W: WithBackend>(w: W, opts: GpuOptions) -> Result<W::Out> {
    #[cfg(feature = "cuda")]
    {
        w.with(cuda::Cuda::get(opts)?)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (w, opts);
        anyhow::bail!("this qrun was built without GPU support (build with --features cuda)")
    }
}

/// Device memory figures, in MiB.
#[derive(Clone, Copy, Debug)]
pub struct VramReport {
    /// Most memory qgguf's own buffers held at once (weights, KV caches, activations).
    pub peak_mib: f64,
    /// Device memory in use beyond what was in use when qgguf's GPU context was ready, at its
    /// highest sample (adds cuBLAS's workspace and allocator slack).
    pub device_mib: f64,
    pub total_mib: f64,
}

/// VRAM figures of this process, when a GPU is in use.
pub fn vram() -> Option<VramReport> {
    #[cfg(feature = "cuda")]
    {
        cuda::vram_stats().map(|v| VramReport {
            peak_mib: v.peak_allocated as f64 / 1048576.0,
            device_mib: v.device_used as f64 / 1048576.0,
            total_mib: v.device_total as f64 / 1048576.0,
        })
    }
    #[cfg(not(feature = "cuda"))]
    {
        None
    }
}
