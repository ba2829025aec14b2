//! NVIDIA GPUs through cudarc (feature `cuda`): the driver, NVRTC and cuBLAS are loaded at run
//! time, so this builds without CUDA; kernels are CUDA C (kernels/*.cu) compiled by NVRTC for the
//! device's architecture, written for sm_75 (T4) and up.
//!
//! Decoding (up to 8 tokens a pass) runs fused matrix-vector kernels on int8 activations
//! (`matvec`): a layer is about five launches (norm + Q/K/V + bias + RoPE + cache store;
//! attention; output projection + residual; norm + gate/up + SwiGLU; down projection +
//! residual). A decoded token's launches are captured once as a CUDA graph and replayed, its
//! position and token id read from the pass's Step block in device memory, and sampling runs on
//! the device: a token costs one graph launch, a small copy in and a token id out. Prompts and
//! encoder batches run cuBLAS products (`gemm`) and tensor-core attention.
//!
//! - `device`: context, stream, kernel module, launches, memory, transfers, cuBLAS, capture.
//! - `kernels`: kernel names and per-type handles.
//! - `tensors`: weights, activation buffers, KV caches, rotary tables.
//! - `matvec`, `gemm`, `attention`, `sample`: the launches of those kernels.

pub mod attention;
pub mod device;
pub mod gemm;
pub mod kernels;
pub mod matvec;
pub mod sample;
pub mod tensors;

pub use device::{gpu, vram_stats, Gpu, VramStats};

use crate::backend::cpu::sized;
use crate::backend::{
    AttnIn, Backend, FfnIn, GpuOptions, Heads, KvType, Pooling, Qkv, Rows, SampleSpec, SeqAttn,
    Span, TensorRef, Use,
};
use crate::gguf::GgufFile;
use anyhow::{anyhow, bail, Context, Result};
use attention::{DecodeScratch, FlashParams, FLASH_QUERIES};
use device::{pinned_at_least, Arg, DBuf, Grow, Pinned};
use gemm::GemmScratch;
use kernels::Kernels;
use matvec::{Input, Kind, Part, MV_MAX_TOKENS};
use sample::{SampleScratch, MAX_PENALIZED};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::OnceLock;
use tensors::{DevBuf, GpuCache, GpuLinear, GpuMat, GpuRope, Weights};

/// The CUDA backend (one per graph setting, over the process's one GPU).
pub struct Cuda {
    g: &'static Gpu,
    k: Kernels,
    opts: GpuOptions,
}

static WITH_GRAPHS: OnceLock<std::result::Result<Cuda, String>> = OnceLock::new();
static WITHOUT_GRAPHS: OnceLock<std::result::Result<Cuda, String>> = OnceLock::new();

impl Cuda {
    pub fn get(opts: GpuOptions) -> Result<&'static Cuda> {
        let cell = if opts.graphs {
            &WITH_GRAPHS
        } else {
            &WITHOUT_GRAPHS
        };
        cell.get_or_init(|| {
            let g = gpu().map_err(|e| format!("{e:#}"))?;
            let k = Kernels::resolve(g).map_err(|e| format!("{e:#}"))?;
            Ok(Cuda { g, k, opts })
        })
        .as_ref()
        .map_err(|e| anyhow!("{e}"))
    }

    pub fn gpu(&self) -> &'static Gpu {
        self.g
    }

    pub fn kernels(&self) -> &Kernels {
        &self.k
    }
}

/// Ints of the Step block: pos0, n, token, the penalty id count, the draw (f32 bits), three
/// spare, then the penalty ids.
const STEP_HEAD: usize = 8;
const STEP_INTS: usize = STEP_HEAD + MAX_PENALIZED;

/// A captured pass, replayed on the stream it was captured on.
struct Graph(cudarc::driver::CudaGraph);
// SAFETY: a graph is only used through the &mut CudaWork that owns it (never from two threads
// at once), which is what CUDA requires of graph objects; moving it between threads is allowed.
unsafe impl Send for Graph {}

/// Where the encoder batch's integer inputs sit in `CudaWork::batch` (offsets in ints).
#[derive(Clone, Copy, Default)]
struct BatchLayout {
    n: usize,
    seqs: usize,
    tiles: usize,
    pos: usize,
    starts: usize,
    ends: usize,
    tile_list: usize,
}

/// A sampling step that runs on the host (settings the device does not take).
struct HostSample {
    cfg: crate::sampling::SamplerConfig,
    draw: f32,
    penalized: Vec<u32>,
    logits: u64,
    vocab: usize,
}

pub struct CudaWork {
    /// The pass's token ids (for rows gathered on the host).
    tokens: Vec<u32>,
    step: DBuf,
    step_host: Pinned,
    span: Span,
    ids: Grow,
    ids_host: Option<Pinned>,
    batch: Grow,
    batch_host: Option<Pinned>,
    layout: BatchLayout,
    staged: DevBuf,
    staged_host: Option<Pinned>,
    io_host: Option<Pinned>,
    gemm: GemmScratch,
    decode: DecodeScratch,
    sample: SampleScratch,
    token_host: Pinned,
    host_sample: Option<HostSample>,
    sample_on_host: bool,
    h: DevBuf,
    k: DevBuf,
    v: DevBuf,
    up: DevBuf,
    /// Captured passes by key; None: seen once (run eagerly, captured the next time).
    graphs: HashMap<u64, Option<Graph>>,
    failed: Vec<u64>,
}

impl CudaWork {
    fn step_ptr(&self) -> u64 {
        self.step.ptr()
    }

    /// Token ids of the pass: the Step block's token for one, the ids buffer for more.
    fn token_ids(&self) -> u64 {
        if self.span.n == 1 && self.layout.n == 0 {
            self.step.ptr() + 8
        } else {
            self.ids.current().0
        }
    }

    fn batch_at(&self, off: usize) -> u64 {
        self.batch.current().0 + 4 * off as u64
    }
}

impl Cuda {
    /// Uploads `values` (ints) through a pinned staging buffer into `dst`.
    fn upload_ints(
        &self,
        staging: &mut Option<Pinned>,
        dst: &mut Grow,
        values: &[i32],
    ) -> Result<()> {
        let g = self.g;
        let p = pinned_at_least(g, staging, values.len() * 4)?;
        p.write::<i32>(g, values.len())?.copy_from_slice(values);
        let d = dst.ptr(g, values.len() * 4)?;
        g.copy_in(d, p, values.len() * 4)?;
        p.mark_queued();
        Ok(())
    }

    fn mat_of<'a>(&self, l: &'a GpuLinear) -> Result<&'a GpuMat> {
        l.device()
    }

    /// rms_norm rows of x (f32) into out: f32 and/or f16.
    #[allow(clippy::too_many_arguments)]
    fn norm_rows(
        &self,
        x: u64,
        rows: usize,
        dim: usize,
        (gw, eps): (u64, f32),
        out: u64,
        out16: u64,
    ) -> Result<()> {
        self.g.launch(
            "rms_norm",
            (rows as u32, 1, 1),
            256,
            &[
                Arg::P(x),
                Arg::P(gw),
                Arg::P(out),
                Arg::P(out16),
                Arg::I(dim as i32),
                Arg::F(eps),
                Arg::I(dim as i32),
                Arg::I(dim as i32),
            ],
        )
    }

    /// y = x W^T (+ b) through cuBLAS, x as f16 rows.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        w: &mut CudaWork,
        x16: u64,
        n: usize,
        m: &GpuLinear,
        (y, ldy): (u64, usize),
        add: bool,
        bias: bool,
    ) -> Result<()> {
        let d = self.mat_of(m)?;
        let b = if bias { m.bias_ptr() } else { 0 };
        gemm::matmul(self.g, &self.k, &mut w.gemm, d, x16, n, (y, ldy), b, add)
    }
}

/// Matrices grouped by type for one matrix-vector launch each (a launch takes one type).
fn by_type<T>(items: Vec<(&GpuMat, T)>) -> Vec<Vec<(&GpuMat, T)>> {
    let mut groups: Vec<Vec<(&GpuMat, T)>> = Vec::new();
    for it in items {
        match groups.iter_mut().find(|g| g[0].0.ty == it.0.ty) {
            Some(g) => g.push(it),
            None => groups.push(vec![it]),
        }
    }
    groups
}

fn pool_mode(p: Pooling) -> i32 {
    match p {
        Pooling::Mean => 0,
        Pooling::Cls => 1,
        Pooling::Last => 2,
    }
}

impl Backend for Cuda {
    type Linear = GpuLinear;
    type Vector = DBuf;
    type Buf = DevBuf;
    type Work = CudaWork;
    type Cache = GpuCache;
    type Rope = GpuRope;
    type Session = ();

    fn describe(&self) -> String {
        let g = self.g;
        format!(
            "{} (sm_{}{}, kernels for compute_{}{})",
            g.name,
            g.compute_capability.0,
            g.compute_capability.1,
            g.arch,
            if self.opts.graphs {
                ""
            } else {
                ", no CUDA graphs"
            }
        )
    }

    fn encode_part_tokens(&self) -> Option<usize> {
        None
    }

    fn session(&self) {}

    fn linear(
        &self,
        _: &(),
        f: &GgufFile,
        w: TensorRef,
        bias: Option<Vec<f32>>,
        usage: Use,
    ) -> Result<GpuLinear> {
        self.g.bind()?;
        GpuLinear::load(self.g, f, w, bias, usage == Use::LookupOnHost)
    }

    fn vector(&self, v: Vec<f32>) -> Result<DBuf> {
        self.g.bind()?;
        DBuf::from_slice(self.g, &v)
    }

    fn rows(&self, l: &GpuLinear) -> usize {
        l.rows
    }

    fn device_bytes(&self, l: &GpuLinear) -> usize {
        l.device_bytes()
    }

    fn work(&self) -> Result<CudaWork> {
        let g = self.g;
        g.bind()?;
        Ok(CudaWork {
            tokens: Vec::new(),
            step: DBuf::new(g, STEP_INTS * 4)?,
            step_host: Pinned::new(g, STEP_INTS * 4)?,
            span: Span { n: 0, pos0: 0 },
            ids: Grow::default(),
            ids_host: None,
            batch: Grow::default(),
            batch_host: None,
            layout: BatchLayout::default(),
            staged: DevBuf::default(),
            staged_host: None,
            io_host: None,
            gemm: GemmScratch::default(),
            decode: DecodeScratch::default(),
            sample: SampleScratch::default(),
            token_host: Pinned::new(g, 64)?,
            host_sample: None,
            sample_on_host: false,
            h: DevBuf::default(),
            k: DevBuf::default(),
            v: DevBuf::default(),
            up: DevBuf::default(),
            graphs: HashMap::new(),
            failed: Vec::new(),
        })
    }

    fn buf(&self) -> DevBuf {
        DevBuf::default()
    }

    fn cache(&self, _ty: KvType, layers: usize, ctx: usize, row: usize) -> Result<GpuCache> {
        self.g.bind()?;
        GpuCache::new(self.g, layers, ctx, row)
    }

    fn cache_bytes(&self, c: &GpuCache) -> usize {
        c.bytes()
    }

    fn rope(&self) -> GpuRope {
        GpuRope::default()
    }

    fn rope_ensure(&self, r: &mut GpuRope, hd: usize, theta: f32, positions: usize) -> Result<()> {
        self.g.bind()?;
        r.ensure(self.g, hd, theta, positions)
    }

    fn begin_pass(
        &self,
        w: &mut CudaWork,
        span: Span,
        tokens: &[u32],
        sample: Option<&SampleSpec>,
    ) -> Result<()> {
        let g = self.g;
        g.bind()?;
        w.span = span;
        w.layout = BatchLayout::default();
        w.host_sample = None;
        w.sample_on_host = sample.is_some_and(|s| !sample::on_device(s));
        w.tokens.clear();
        w.tokens.extend_from_slice(tokens);
        let pen = sample.map_or(&[][..], |s| s.penalized);
        let n_pen = pen.len().min(MAX_PENALIZED);
        let ints = STEP_HEAD + n_pen;
        let head = [
            span.pos0 as i32,
            span.n as i32,
            tokens.first().map_or(0, |&t| t as i32),
            n_pen as i32,
            sample.map_or(0, |s| s.draw.to_bits() as i32),
            0,
            0,
            0,
        ];
        let buf = w.step_host.write::<i32>(g, ints)?;
        buf[..STEP_HEAD].copy_from_slice(&head);
        for (d, &t) in buf[STEP_HEAD..].iter_mut().zip(pen) {
            *d = t as i32;
        }
        g.copy_in(w.step.ptr(), &w.step_host, ints * 4)?;
        w.step_host.mark_queued();
        if span.n > 1 {
            let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
            self.upload_ints(&mut w.ids_host, &mut w.ids, &ids)?;
        }
        Ok(())
    }

    fn stage_rows(
        &self,
        f: &GgufFile,
        w: &mut CudaWork,
        table: &GpuLinear,
        which: Rows,
        n: usize,
    ) -> Result<()> {
        let Weights::Host(m) = &table.w else {
            return Ok(());
        };
        if which != Rows::Tokens {
            bail!("'{}': only token rows are staged from the host", table.name);
        }
        let g = self.g;
        let cols = m.cols;
        if w.tokens.len() < n {
            bail!(
                "'{}': {n} rows staged for a pass of {} tokens",
                table.name,
                w.tokens.len()
            );
        }
        let p = pinned_at_least(g, &mut w.staged_host, n * cols * 4)?;
        let rows = p.write::<f32>(g, n * cols)?;
        for (i, &t) in w.tokens[..n].iter().enumerate() {
            m.row(f, t as usize, &mut rows[i * cols..(i + 1) * cols])?;
        }
        m.release_if_mapped(f);
        let d = w.staged.out(g, n * cols)?;
        g.copy_in(d, p, n * cols * 4)?;
        p.mark_queued();
        Ok(())
    }

    fn begin_batch(&self, w: &mut CudaWork, tokens: &[u32], seqs: &[Range<usize>]) -> Result<()> {
        let g = self.g;
        g.bind()?;
        let n = tokens.len();
        let mut v: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        let mut pos = vec![0i32; n];
        for s in seqs {
            for (p, t) in s.clone().enumerate() {
                pos[t] = p as i32;
            }
        }
        let mut tiles = Vec::new();
        for s in seqs {
            for q0 in (0..s.len()).step_by(FLASH_QUERIES) {
                tiles.extend_from_slice(&[
                    s.start as i32,
                    s.len() as i32,
                    (s.start + q0) as i32,
                    FLASH_QUERIES.min(s.len() - q0) as i32,
                ]);
            }
        }
        let layout = BatchLayout {
            n,
            seqs: seqs.len(),
            tiles: tiles.len() / 4,
            pos: n,
            starts: 2 * n,
            ends: 2 * n + seqs.len(),
            tile_list: 2 * n + 2 * seqs.len(),
        };
        v.extend_from_slice(&pos);
        v.extend(seqs.iter().map(|s| s.start as i32));
        v.extend(seqs.iter().map(|s| s.end as i32));
        v.extend_from_slice(&tiles);
        self.upload_ints(&mut w.batch_host, &mut w.batch, &v)?;
        // The ids sit at the batch buffer's start.
        w.span = Span { n, pos0: 0 };
        w.layout = layout;
        Ok(())
    }

    fn run_pass(
        &self,
        w: &mut CudaWork,
        key: u64,
        f: &mut dyn FnMut(&mut CudaWork) -> Result<()>,
    ) -> Result<()> {
        let capturable = self.opts.graphs
            && w.span.n == 1
            && w.layout.n == 0
            && !w.sample_on_host
            && !w.failed.contains(&key);
        if !capturable {
            return f(w);
        }
        let g = self.g;
        match w.graphs.get(&key) {
            Some(Some(graph)) => graph
                .0
                .launch()
                .map_err(|e| anyhow!("replaying a CUDA graph: {e:?}")),
            Some(None) => {
                g.begin_capture()?;
                let r = f(w);
                let end = g.end_capture();
                match (r, end) {
                    (Ok(()), Ok(Some(graph))) => {
                        graph
                            .launch()
                            .map_err(|e| anyhow!("replaying a CUDA graph: {e:?}"))?;
                        w.graphs.insert(key, Some(Graph(graph)));
                        Ok(())
                    }
                    // The pass could not be captured (nothing of it ran): run it, and from
                    // now on this key, eagerly.
                    _ => {
                        w.graphs.remove(&key);
                        w.failed.push(key);
                        f(w)
                    }
                }
            }
            None => {
                w.graphs.insert(key, None);
                f(w)
            }
        }
    }

    fn upload(&self, w: &mut CudaWork, host: &[f32], dst: &mut DevBuf) -> Result<()> {
        let g = self.g;
        g.bind()?;
        let p = pinned_at_least(g, &mut w.io_host, std::mem::size_of_val(host))?;
        p.write::<f32>(g, host.len())?.copy_from_slice(host);
        let d = dst.out(g, host.len())?;
        g.copy_in(d, p, host.len() * 4)?;
        p.mark_queued();
        Ok(())
    }

    fn download(
        &self,
        w: &mut CudaWork,
        src: &DevBuf,
        len: usize,
        host: &mut Vec<f32>,
    ) -> Result<()> {
        let g = self.g;
        let s = src.input(len)?;
        let p = pinned_at_least(g, &mut w.io_host, len * 4)?;
        g.copy_out(p, s, len * 4)?;
        p.mark_queued();
        sized(host, len).copy_from_slice(p.read::<f32>(g, len)?);
        host.truncate(len);
        Ok(())
    }

    fn embed(
        &self,
        _: &GgufFile,
        w: &mut CudaWork,
        table: &GpuLinear,
        which: Rows,
        n: usize,
        add: bool,
        out: &mut DevBuf,
    ) -> Result<()> {
        let g = self.g;
        let cols = table.cols;
        match &table.w {
            Weights::Host(_) => {
                if add {
                    bail!("'{}': host rows are not added", table.name);
                }
                let src = w.staged.input(n * cols)?;
                let dst = out.out(g, n * cols)?;
                g.copy_dd(dst, src, n * cols * 4)
            }
            Weights::Device(m) => {
                let (ids, fixed) = match which {
                    Rows::Tokens if w.layout.n > 0 => (w.batch_at(0), 0),
                    Rows::Tokens => (w.token_ids(), 0),
                    Rows::Positions => (w.batch_at(w.layout.pos), 0),
                    Rows::Fixed(r) => {
                        if r >= m.rows {
                            bail!("row {r} of '{}' is outside its {} rows", table.name, m.rows);
                        }
                        (0, r as i32)
                    }
                };
                let o = if add {
                    out.input(n * cols)?;
                    out.out(g, n * cols)?
                } else {
                    out.out(g, n * cols)?
                };
                let f = self.k.embed[m.ti];
                let (t, rb, c, a) = (m.ptr(), m.row_bytes as i64, cols as i32, add as i32);
                let mut params = [
                    &t as *const u64 as *mut std::ffi::c_void,
                    &rb as *const i64 as *mut _,
                    &c as *const i32 as *mut _,
                    &ids as *const u64 as *mut _,
                    &fixed as *const i32 as *mut _,
                    &o as *const u64 as *mut _,
                    &a as *const i32 as *mut _,
                ];
                g.launch_raw(f, (n as u32, 1, 1), 128, 0, &mut params)
            }
        }
    }

    fn rms_norm(
        &self,
        _: &mut CudaWork,
        x: &DevBuf,
        rows: Range<usize>,
        dim: usize,
        gw: &DBuf,
        eps: f32,
        out: &mut DevBuf,
    ) -> Result<()> {
        let g = self.g;
        let xp = x.input(rows.end * dim)?;
        let o = out.out(g, rows.end * dim)?;
        let o16 = out.out16(g, rows.end * dim)?;
        let off = (rows.start * dim) as u64;
        self.norm_rows(
            xp + 4 * off,
            rows.len(),
            dim,
            (gw.ptr(), eps),
            o + 4 * off,
            o16 + 2 * off,
        )
    }

    fn layer_norm(
        &self,
        _: &mut CudaWork,
        x: &mut DevBuf,
        n: usize,
        dim: usize,
        gw: &DBuf,
        b: Option<&DBuf>,
        eps: f32,
    ) -> Result<()> {
        let g = self.g;
        let p = x.input(n * dim)?;
        let o = x.out(g, n * dim)?;
        let o16 = x.out16(g, n * dim)?;
        debug_assert_eq!(p, o);
        g.launch(
            "layer_norm",
            (n as u32, 1, 1),
            256,
            &[
                Arg::P(p),
                Arg::P(0),
                Arg::P(gw.ptr()),
                Arg::P(b.map_or(0, |b| b.ptr())),
                Arg::P(o),
                Arg::P(o16),
                Arg::I(dim as i32),
                Arg::F(eps),
            ],
        )
    }

    fn layer_norm_into(
        &self,
        _: &mut CudaWork,
        x: &DevBuf,
        n: usize,
        dim: usize,
        gw: &DBuf,
        b: Option<&DBuf>,
        eps: f32,
        out: &mut DevBuf,
    ) -> Result<()> {
        let g = self.g;
        let p = x.input(n * dim)?;
        let o = out.out(g, n * dim)?;
        let o16 = out.out16(g, n * dim)?;
        g.launch(
            "layer_norm",
            (n as u32, 1, 1),
            256,
            &[
                Arg::P(p),
                Arg::P(0),
                Arg::P(gw.ptr()),
                Arg::P(b.map_or(0, |b| b.ptr())),
                Arg::P(o),
                Arg::P(o16),
                Arg::I(dim as i32),
                Arg::F(eps),
            ],
        )
    }

    fn matmul(
        &self,
        _: &GgufFile,
        w: &mut CudaWork,
        x: &DevBuf,
        n: usize,
        m: &GpuLinear,
        y: &mut DevBuf,
        add: bool,
    ) -> Result<()> {
        let g = self.g;
        let d = self.mat_of(m)?;
        if add {
            y.input(n * m.rows)?;
        }
        if n <= MV_MAX_TOKENS {
            let xp = x.input(n * m.cols)?;
            let out = y.out(g, n * m.rows)?;
            let part = Part {
                m: d,
                bias: m.bias_ptr(),
                kind: if add { Kind::Add } else { Kind::Store },
                out,
                out_stride: m.rows,
            };
            let input = Input {
                x: xp,
                stride: m.cols,
                n,
                norm: None,
            };
            return matvec::launch(g, &self.k, &input, &[part], w.step_ptr(), None);
        }
        let x16 = gemm::f16_input(g, &mut w.gemm, x, n, m.cols)?;
        let out = y.out(g, n * m.rows)?;
        self.gemm(w, x16, n, m, (out, m.rows), add, true)
    }

    fn norm_matmul_row(
        &self,
        _: &GgufFile,
        w: &mut CudaWork,
        x: &DevBuf,
        row: usize,
        (gw, eps): (&DBuf, f32),
        m: &GpuLinear,
        y: &mut DevBuf,
    ) -> Result<()> {
        let g = self.g;
        let d = self.mat_of(m)?;
        let xp = x.input((row + 1) * m.cols)? + (4 * row * m.cols) as u64;
        let out = y.out(g, m.rows)?;
        let part = Part {
            m: d,
            bias: m.bias_ptr(),
            kind: Kind::Store,
            out,
            out_stride: m.rows,
        };
        let input = Input {
            x: xp,
            stride: m.cols,
            n: 1,
            norm: Some((gw.ptr(), eps)),
        };
        matvec::launch(g, &self.k, &input, &[part], w.step_ptr(), None)
    }

    fn matmul_many(
        &self,
        f: &GgufFile,
        w: &mut CudaWork,
        x: &DevBuf,
        n: usize,
        ms: &[&GpuLinear],
        ys: &mut [&mut DevBuf],
    ) -> Result<()> {
        if ms.len() != ys.len() {
            bail!("{} matrices and {} outputs", ms.len(), ys.len());
        }
        if n <= MV_MAX_TOKENS {
            for (m, y) in ms.iter().zip(ys.iter_mut()) {
                self.matmul(f, w, x, n, m, y, false)?;
            }
            return Ok(());
        }
        let g = self.g;
        let cols = ms.first().map_or(0, |m| m.cols);
        let x16 = gemm::f16_input(g, &mut w.gemm, x, n, cols)?;
        for (m, y) in ms.iter().zip(ys.iter_mut()) {
            let out = y.out(g, n * m.rows)?;
            self.gemm(w, x16, n, m, (out, m.rows), false, true)?;
        }
        Ok(())
    }

    fn qkv_rope_store(
        &self,
        _: &GgufFile,
        w: &mut CudaWork,
        x: &DevBuf,
        a: &AttnIn<Self>,
        cache: &mut GpuCache,
        layer: usize,
        q: &mut DevBuf,
    ) -> Result<()> {
        let g = self.g;
        let n = w.span.n;
        let h = a.heads;
        let (e, kvd, hd) = (h.q_dim(), h.kv_dim(), h.head_dim);
        let dim = a.q.cols;
        let (kc, vc) = {
            let (k, v) = cache
                .layers
                .get(layer)
                .context("a layer past the GPU's KV cache")?;
            (k.ptr(), v.ptr())
        };
        let xp = x.input(n * dim)?;
        let rope = a.rope.ptr()?;
        if n <= MV_MAX_TOKENS {
            let qp = q.out(g, n * e)?;
            let parts = vec![
                (self.mat_of(a.q)?, (Kind::Rope, qp, e, a.q.bias_ptr())),
                (
                    self.mat_of(a.k)?,
                    (Kind::RopeCache, kc, kvd, a.k.bias_ptr()),
                ),
                (self.mat_of(a.v)?, (Kind::Cache, vc, kvd, a.v.bias_ptr())),
            ];
            let input = Input {
                x: xp,
                stride: dim,
                n,
                norm: Some((a.norm.ptr(), a.eps)),
            };
            for group in by_type(parts) {
                let ps: Vec<Part> = group
                    .iter()
                    .map(|(m, (kind, out, stride, bias))| Part {
                        m,
                        bias: *bias,
                        kind: *kind,
                        out: *out,
                        out_stride: *stride,
                    })
                    .collect();
                matvec::launch(g, &self.k, &input, &ps, w.step_ptr(), Some((rope, hd)))?;
            }
            return Ok(());
        }
        // A prompt: the norm as f16, three products, then biases, RoPE and the cache store.
        let h16 = w.h.out16_only(g, n * dim)?;
        self.norm_rows(xp, n, dim, (a.norm.ptr(), a.eps), 0, h16)?;
        let qp = q.out(g, n * e)?;
        let kp = w.k.out(g, n * kvd)?;
        let vp = w.v.out(g, n * kvd)?;
        self.gemm(w, h16, n, a.q, (qp, e), false, false)?;
        self.gemm(w, h16, n, a.k, (kp, kvd), false, false)?;
        self.gemm(w, h16, n, a.v, (vp, kvd), false, false)?;
        let total = n * (e / 2 + kvd / 2 + kvd);
        g.launch_1d(
            "bias_rope_store",
            total,
            &[
                Arg::P(qp),
                Arg::P(kp),
                Arg::P(vp),
                Arg::P(a.q.bias_ptr()),
                Arg::P(a.k.bias_ptr()),
                Arg::P(a.v.bias_ptr()),
                Arg::P(kc),
                Arg::P(vc),
                Arg::P(rope),
                Arg::P(w.step_ptr()),
                Arg::I(n as i32),
                Arg::I(e as i32),
                Arg::I(kvd as i32),
                Arg::I(hd as i32),
            ],
        )
    }

    fn attend_causal(
        &self,
        w: &mut CudaWork,
        q: &DevBuf,
        cache: &mut GpuCache,
        layer: usize,
        heads: Heads,
        out: &mut DevBuf,
    ) -> Result<()> {
        let g = self.g;
        let n = w.span.n;
        let e = heads.q_dim();
        let (k, v) = cache
            .layers
            .get(layer)
            .context("a layer past the GPU's KV cache")?;
        let qp = q.input(n * e)?;
        let op = out.out(g, n * e)?;
        if n <= MV_MAX_TOKENS {
            return attention::decode(
                g,
                &self.k,
                &mut w.decode,
                (qp, op),
                (k.ptr(), v.ptr(), cache.ctx),
                n,
                heads,
                w.step.ptr(),
            );
        }
        let o16 = out.out16(g, n * e)?;
        let p = FlashParams {
            q: qp,
            k: k.ptr(),
            v: v.ptr(),
            out: op,
            out16: o16,
            step: w.step.ptr(),
            q_stride: e as i32,
            k_stride: heads.kv_dim() as i32,
            v_stride: heads.kv_dim() as i32,
            out_stride: e as i32,
            n_head: heads.n_head as i32,
            n_kv: heads.n_head_kv as i32,
            window: -1,
            n_q: n as i32,
            scale: 1.0 / (heads.head_dim as f32).sqrt(),
            kv_f16: 1,
            causal: 1,
            ..Default::default()
        };
        attention::flash(g, &self.k, &p, n.div_ceil(FLASH_QUERIES), heads)
    }

    fn ffn_swiglu(
        &self,
        _: &GgufFile,
        w: &mut CudaWork,
        x: &DevBuf,
        ffn: &FfnIn<Self>,
        out: &mut DevBuf,
    ) -> Result<()> {
        let g = self.g;
        let n = w.span.n;
        let (dim, ff) = (ffn.gate.cols, ffn.gate.rows);
        let xp = x.input(n * dim)?;
        let (gm, um) = (self.mat_of(ffn.gate)?, self.mat_of(ffn.up)?);
        if n <= MV_MAX_TOKENS {
            let op = out.out(g, n * ff)?;
            let input = Input {
                x: xp,
                stride: dim,
                n,
                norm: Some((ffn.norm.ptr(), ffn.eps)),
            };
            let part = |m, kind, bias| Part {
                m,
                bias,
                kind,
                out: op,
                out_stride: ff,
            };
            let step = w.step_ptr();
            if gm.ty == um.ty {
                let parts = [
                    part(gm, Kind::Swiglu, ffn.gate.bias_ptr()),
                    part(um, Kind::Store, ffn.up.bias_ptr()),
                ];
                return matvec::launch(g, &self.k, &input, &parts, step, None);
            }
            let gate = [part(gm, Kind::Store, ffn.gate.bias_ptr())];
            matvec::launch(g, &self.k, &input, &gate, step, None)?;
            let up = [part(um, Kind::SwigluUp, ffn.up.bias_ptr())];
            return matvec::launch(g, &self.k, &input, &up, step, None);
        }
        let h16 = w.h.out16_only(g, n * dim)?;
        self.norm_rows(xp, n, dim, (ffn.norm.ptr(), ffn.eps), 0, h16)?;
        let gp = out.out(g, n * ff)?;
        let up = w.up.out(g, n * ff)?;
        self.gemm(w, h16, n, ffn.gate, (gp, ff), false, true)?;
        self.gemm(w, h16, n, ffn.up, (up, ff), false, true)?;
        let o16 = out.out16(g, n * ff)?;
        g.launch_1d(
            "swiglu",
            n * ff,
            &[Arg::P(gp), Arg::P(up), Arg::P(o16), Arg::L((n * ff) as i64)],
        )
    }

    fn attend_seqs(&self, w: &mut CudaWork, a: &SeqAttn<Self>, out: &mut DevBuf) -> Result<()> {
        let g = self.g;
        let l = w.layout;
        let h = a.heads;
        let e = h.q_dim();
        let n = l.n;
        let (q, k, v, stride) = match a.qkv {
            Qkv::Split(q, k, v) => (q.input(n * e)?, k.input(n * e)?, v.input(n * e)?, e),
            Qkv::Fused(qkv) => {
                let p = qkv.input(n * 3 * e)?;
                (p, p + 4 * e as u64, p + 8 * e as u64, 3 * e)
            }
        };
        let op = out.out(g, n * e)?;
        let o16 = out.out16(g, n * e)?;
        let p = FlashParams {
            q,
            k,
            v,
            out: op,
            out16: o16,
            tiles: w.batch_at(l.tile_list),
            pos: w.batch_at(l.pos),
            rope: match a.rope {
                Some(r) => r.ptr()?,
                None => 0,
            },
            step: w.step.ptr(),
            q_stride: stride as i32,
            k_stride: stride as i32,
            v_stride: stride as i32,
            out_stride: e as i32,
            n_head: h.n_head as i32,
            n_kv: h.n_head_kv as i32,
            window: a.window.map_or(-1, |w| w as i32),
            n_q: n as i32,
            scale: 1.0 / (h.head_dim as f32).sqrt(),
            kv_f16: 0,
            causal: 0,
            pad: 0,
        };
        attention::flash(g, &self.k, &p, l.tiles, h)
    }

    fn gelu(&self, _: &mut CudaWork, x: &mut DevBuf, len: usize) -> Result<()> {
        let g = self.g;
        let p = x.input(len)?;
        x.out(g, len)?;
        let o16 = x.out16(g, len)?;
        g.launch_1d(
            "gelu_bias",
            len,
            &[
                Arg::P(p),
                Arg::P(0),
                Arg::P(o16),
                Arg::L(len as i64),
                Arg::I(1),
            ],
        )
    }

    fn tanh(&self, _: &mut CudaWork, x: &mut DevBuf, len: usize) -> Result<()> {
        let g = self.g;
        let p = x.input(len)?;
        x.out(g, len)?;
        g.launch_1d("tanh_inplace", len, &[Arg::P(p), Arg::L(len as i64)])
    }

    fn geglu(
        &self,
        _: &mut CudaWork,
        x: &DevBuf,
        n: usize,
        ff: usize,
        out: &mut DevBuf,
    ) -> Result<()> {
        let g = self.g;
        let p = x.input(n * 2 * ff)?;
        let o = out.out(g, n * ff)?;
        let o16 = out.out16(g, n * ff)?;
        g.launch_1d(
            "geglu",
            n * ff,
            &[
                Arg::P(p),
                Arg::P(o),
                Arg::P(o16),
                Arg::I(n as i32),
                Arg::I(ff as i32),
            ],
        )
    }

    fn pool(
        &self,
        w: &mut CudaWork,
        x: &DevBuf,
        dim: usize,
        mode: Pooling,
        out: &mut DevBuf,
    ) -> Result<()> {
        let g = self.g;
        let l = w.layout;
        let p = x.input(l.n * dim)?;
        let o = out.out(g, l.seqs * dim)?;
        g.launch(
            "pool",
            (l.seqs as u32, 1, 1),
            256,
            &[
                Arg::P(p),
                Arg::P(w.batch_at(l.starts)),
                Arg::P(w.batch_at(l.ends)),
                Arg::P(o),
                Arg::I(dim as i32),
                Arg::I(pool_mode(mode)),
            ],
        )
    }

    fn sample(
        &self,
        w: &mut CudaWork,
        logits: &mut DevBuf,
        vocab: usize,
        s: &SampleSpec,
    ) -> Result<()> {
        let lp = logits.input(vocab)?;
        if w.sample_on_host {
            w.host_sample = Some(HostSample {
                cfg: s.cfg.clone(),
                draw: s.draw,
                penalized: s.penalized.to_vec(),
                logits: lp,
                vocab,
            });
            return Ok(());
        }
        let step = w.step.ptr();
        sample::launch(self.g, &mut w.sample, lp, vocab, s, step)
    }

    fn sampled(&self, w: &mut CudaWork) -> Result<u32> {
        let g = self.g;
        if let Some(hs) = w.host_sample.take() {
            // Settings the device does not take: the logits come back and the CPU samples.
            let p = pinned_at_least(g, &mut w.io_host, hs.vocab * 4)?;
            g.copy_out(p, hs.logits, hs.vocab * 4)?;
            p.mark_queued();
            let mut logits = p.read::<f32>(g, hs.vocab)?.to_vec();
            return Ok(crate::sampling::choose(
                &mut logits,
                &hs.cfg,
                hs.draw,
                &hs.penalized,
            ));
        }
        let (out, _) = w.sample.out.current();
        if out == 0 {
            bail!("no token was sampled in this pass");
        }
        g.copy_out(&w.token_host, out, 4)?;
        w.token_host.mark_queued();
        Ok(w.token_host.read::<u32>(g, 1)?[0])
    }
}
