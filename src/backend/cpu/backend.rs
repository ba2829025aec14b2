//! [`Backend`] for the CPU: the fused operations composed from the CPU's parts, which are the
//! products of `matmul` (grouped where they share an input, so one fork-join serves Q, K and V),
//! the attention of `attention` and `kv_cache`, and the element-wise operations of `ops`.

use super::attention;
use super::kv_cache::KvCache;
use super::matmul::Scratch;
use super::ops::{self, RopeTable};
use super::simd_f32;
use super::weights::{Linear, Mat};
use crate::backend::{
    AttnIn, Backend, FfnIn, Heads, KvType, Pooling, Qkv, Rows, SampleSpec, SeqAttn, Span,
    TensorRef, Use,
};
use crate::gguf::GgufFile;
use crate::sampling;
use anyhow::{bail, Result};
use quant_types::packed::Arena;
use rayon::prelude::*;
use std::ops::Range;

/// The CPU backend; `pack` says whether products' weights are packed at load for the SIMD
/// kernels (where the CPU and type allow) or read in place from the file's map.
pub struct Cpu {
    pack: bool,
}

static PACKED: Cpu = Cpu { pack: true };
static IN_PLACE: Cpu = Cpu { pack: false };

impl Cpu {
    /// The CPU backend, packing weights when `pack` (and the CPU has the kernels).
    pub fn get(pack: bool) -> &'static Cpu {
        if pack && super::weights::packing_available() {
            &PACKED
        } else {
            &IN_PLACE
        }
    }
}

/// Working memory of the CPU's operations for one sequence or batch.
#[derive(Default)]
pub struct CpuWork {
    scratch: Scratch,
    span: Span0,
    tokens: Vec<u32>,
    seqs: Vec<Range<usize>>,
    /// Each token's position in its sequence (encoder batches).
    positions: Vec<usize>,
    h: Vec<f32>,
    kn: Vec<f32>,
    vn: Vec<f32>,
    up: Vec<f32>,
    o: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    row: Vec<f32>,
    token: Option<u32>,
    candidates: Vec<(u32, f32)>,
}

#[derive(Clone, Copy, Default)]
struct Span0 {
    n: usize,
    pos0: usize,
}

/// Grows a buffer to `n` values without shrinking its allocation (no per-token allocation).
pub fn sized(buf: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if buf.len() < n {
        buf.resize(n, 0.0);
    }
    &mut buf[..n]
}

/// A matrix's view of the file, or an error naming it when a buffer is shorter than the call.
fn check_len(what: &str, have: usize, need: usize) -> Result<()> {
    if have < need {
        bail!("{what}: a buffer of {have} values where {need} are needed");
    }
    Ok(())
}

impl Backend for Cpu {
    type Linear = Linear;
    type Vector = Vec<f32>;
    type Buf = Vec<f32>;
    type Work = CpuWork;
    type Cache = KvCache;
    type Rope = RopeTable;
    type Session = Arena;

    fn describe(&self) -> String {
        "the CPU".into()
    }

    fn encode_part_tokens(&self) -> Option<usize> {
        Some(ENCODE_PART_TOKENS)
    }

    fn session(&self) -> Arena {
        Arena::new()
    }

    fn linear(
        &self,
        s: &Arena,
        f: &GgufFile,
        w: TensorRef,
        bias: Option<Vec<f32>>,
        usage: Use,
    ) -> Result<Linear> {
        let pack = self.pack && matches!(usage, Use::Product | Use::Both);
        // A table used only for lookups hands its pages back after each lookup; one that is
        // also a head keeps them mapped between tokens.
        let mut m = Mat {
            info: w.info.clone(),
            ty: w.ty,
            rows: w.rows,
            cols: w.cols,
            packed: None,
            lookup_only: matches!(usage, Use::Lookup | Use::LookupOnHost),
            scan: None,
        };
        if pack {
            m.pack(f, s);
        }
        Ok(Linear { w: m, b: bias })
    }

    fn vector(&self, v: Vec<f32>) -> Result<Vec<f32>> {
        Ok(v)
    }

    fn rows(&self, l: &Linear) -> usize {
        l.rows()
    }

    fn weight_scan(&self, l: &Linear) -> Option<quant_types::scan::Scan> {
        l.w.scan
    }

    fn device_bytes(&self, _: &Linear) -> usize {
        0
    }

    fn work(&self) -> Result<CpuWork> {
        Ok(CpuWork::default())
    }

    fn buf(&self) -> Vec<f32> {
        Vec::new()
    }

    fn cache(&self, ty: KvType, layers: usize, ctx: usize, row: usize) -> Result<KvCache> {
        KvCache::try_new(ty, layers, ctx, row)
    }

    fn cache_bytes(&self, c: &KvCache) -> usize {
        c.bytes()
    }

    fn rope(&self) -> RopeTable {
        RopeTable::default()
    }

    fn rope_ensure(
        &self,
        r: &mut RopeTable,
        hd: usize,
        theta: f32,
        positions: usize,
    ) -> Result<()> {
        r.ensure(hd, theta, positions);
        Ok(())
    }

    fn begin_pass(
        &self,
        w: &mut CpuWork,
        span: Span,
        tokens: &[u32],
        _: Option<&SampleSpec>,
    ) -> Result<()> {
        w.span = Span0 {
            n: span.n,
            pos0: span.pos0,
        };
        w.tokens.clear();
        w.tokens.extend_from_slice(tokens);
        w.token = None;
        Ok(())
    }

    fn stage_rows(
        &self,
        _: &GgufFile,
        _: &mut CpuWork,
        _: &Linear,
        _: Rows,
        _: usize,
    ) -> Result<()> {
        Ok(())
    }

    fn begin_batch(&self, w: &mut CpuWork, tokens: &[u32], seqs: &[Range<usize>]) -> Result<()> {
        w.tokens.clear();
        w.tokens.extend_from_slice(tokens);
        w.seqs.clear();
        w.seqs.extend_from_slice(seqs);
        w.positions.clear();
        w.positions.resize(tokens.len(), 0);
        for seq in seqs {
            for (p, t) in seq.clone().enumerate() {
                w.positions[t] = p;
            }
        }
        w.span = Span0 {
            n: tokens.len(),
            pos0: 0,
        };
        Ok(())
    }

    fn run_pass(
        &self,
        w: &mut CpuWork,
        _key: u64,
        f: &mut dyn FnMut(&mut CpuWork) -> Result<()>,
    ) -> Result<()> {
        f(w)
    }

    fn upload(&self, _: &mut CpuWork, host: &[f32], dst: &mut Vec<f32>) -> Result<()> {
        sized(dst, host.len()).copy_from_slice(host);
        Ok(())
    }

    fn download(
        &self,
        _: &mut CpuWork,
        src: &Vec<f32>,
        len: usize,
        host: &mut Vec<f32>,
    ) -> Result<()> {
        check_len("download", src.len(), len)?;
        sized(host, len).copy_from_slice(&src[..len]);
        Ok(())
    }

    fn embed(
        &self,
        f: &GgufFile,
        w: &mut CpuWork,
        table: &Linear,
        which: Rows,
        n: usize,
        add: bool,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let t = &table.w;
        let cols = t.cols;
        let out = sized(out, n * cols);
        let index = |i: usize, w: &CpuWork| -> usize {
            match which {
                Rows::Tokens => w.tokens[i] as usize,
                Rows::Positions => w.positions[i],
                Rows::Fixed(r) => r,
            }
        };
        for i in 0..n {
            let r = index(i, w);
            if r >= t.rows {
                bail!(
                    "row {r} of '{}' is outside its {} rows{}",
                    t.info.name,
                    t.rows,
                    if which == Rows::Tokens {
                        " (a token id outside the vocabulary)"
                    } else {
                        ""
                    }
                );
            }
        }
        if !add && which == Rows::Tokens {
            // Each row's pages go back as soon as it is read (see Mat::rows_then_release).
            return t.rows_then_release(f, &w.tokens[..n], out);
        }
        let row = sized(&mut w.row, cols);
        for (i, o) in out.chunks_exact_mut(cols).enumerate() {
            let r = match which {
                Rows::Tokens => w.tokens[i] as usize,
                Rows::Positions => w.positions[i],
                Rows::Fixed(r) => r,
            };
            if add {
                t.row(f, r, row)?;
                ops::add_inplace(o, row);
            } else {
                t.row(f, r, o)?;
            }
        }
        t.release_if_mapped(f);
        Ok(())
    }

    fn rms_norm(
        &self,
        _: &mut CpuWork,
        x: &Vec<f32>,
        rows: Range<usize>,
        dim: usize,
        g: &Vec<f32>,
        eps: f32,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let r = rows.start * dim..rows.end * dim;
        check_len("rms_norm", x.len(), r.end)?;
        ops::rms_norm(&x[r.clone()], g, eps, &mut sized(out, r.end)[r]);
        Ok(())
    }

    fn layer_norm(
        &self,
        _: &mut CpuWork,
        x: &mut Vec<f32>,
        n: usize,
        dim: usize,
        g: &Vec<f32>,
        b: Option<&Vec<f32>>,
        eps: f32,
    ) -> Result<()> {
        check_len("layer_norm", x.len(), n * dim)?;
        ops::layer_norm_inplace(&mut x[..n * dim], g, b.map(|b| b.as_slice()), eps);
        Ok(())
    }

    fn layer_norm_into(
        &self,
        _: &mut CpuWork,
        x: &Vec<f32>,
        n: usize,
        dim: usize,
        g: &Vec<f32>,
        b: Option<&Vec<f32>>,
        eps: f32,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        check_len("layer_norm", x.len(), n * dim)?;
        ops::layer_norm(
            &x[..n * dim],
            g,
            b.map(|b| b.as_slice()),
            eps,
            sized(out, n * dim),
        );
        Ok(())
    }

    fn matmul(
        &self,
        f: &GgufFile,
        w: &mut CpuWork,
        x: &Vec<f32>,
        n: usize,
        m: &Linear,
        y: &mut Vec<f32>,
        add: bool,
    ) -> Result<()> {
        let (rows, cols) = (m.rows(), m.w.cols);
        check_len(&m.w.info.name, x.len(), n * cols)?;
        if add {
            let o = sized(&mut w.o, n * rows);
            m.forward(f, &x[..n * cols], n, o, &mut w.scratch)?;
            ops::add_inplace(sized(y, n * rows), o);
        } else {
            m.forward(f, &x[..n * cols], n, sized(y, n * rows), &mut w.scratch)?;
        }
        Ok(())
    }

    fn norm_matmul_row(
        &self,
        f: &GgufFile,
        w: &mut CpuWork,
        x: &Vec<f32>,
        row: usize,
        (g, eps): (&Vec<f32>, f32),
        m: &Linear,
        y: &mut Vec<f32>,
    ) -> Result<()> {
        let dim = g.len();
        check_len("norm", x.len(), (row + 1) * dim)?;
        let h = sized(&mut w.h, dim);
        ops::rms_norm(&x[row * dim..(row + 1) * dim], g, eps, h);
        m.forward(f, h, 1, sized(y, m.rows()), &mut w.scratch)
    }

    fn matmul_many(
        &self,
        f: &GgufFile,
        w: &mut CpuWork,
        x: &Vec<f32>,
        n: usize,
        ms: &[&Linear],
        ys: &mut [&mut Vec<f32>],
    ) -> Result<()> {
        let cols = ms.first().map_or(0, |m| m.w.cols);
        check_len("matmul", x.len(), n * cols)?;
        let x = &x[..n * cols];
        match (ms, ys) {
            ([a, b], [ya, yb]) => {
                let mut out = [sized(ya, n * a.rows()), sized(yb, n * b.rows())];
                Linear::forward_group([*a, *b], f, x, n, &mut out, &mut w.scratch)
            }
            ([a, b, c], [ya, yb, yc]) => {
                let mut out = [
                    sized(ya, n * a.rows()),
                    sized(yb, n * b.rows()),
                    sized(yc, n * c.rows()),
                ];
                Linear::forward_group([*a, *b, *c], f, x, n, &mut out, &mut w.scratch)
            }
            (ms, ys) => {
                if ms.len() != ys.len() {
                    bail!("{} matrices and {} outputs", ms.len(), ys.len());
                }
                for (m, y) in ms.iter().zip(ys.iter_mut()) {
                    m.forward(f, x, n, sized(y, n * m.rows()), &mut w.scratch)?;
                }
                Ok(())
            }
        }
    }

    fn qkv_rope_store(
        &self,
        f: &GgufFile,
        w: &mut CpuWork,
        x: &Vec<f32>,
        a: &AttnIn<Self>,
        cache: &mut KvCache,
        layer: usize,
        q: &mut Vec<f32>,
    ) -> Result<()> {
        let Span0 { n, pos0 } = w.span;
        let (dim, e, kv) = (a.norm.len(), a.heads.q_dim(), a.heads.kv_dim());
        check_len("attention input", x.len(), n * dim)?;
        let h = sized(&mut w.h, n * dim);
        ops::rms_norm(&x[..n * dim], a.norm, a.eps, h);
        let mut qkv = [
            sized(q, n * e),
            sized(&mut w.kn, n * kv),
            sized(&mut w.vn, n * kv),
        ];
        Linear::forward_group([a.q, a.k, a.v], f, h, n, &mut qkv, &mut w.scratch)?;
        let [q, kn, vn] = qkv;
        for t in 0..n {
            a.rope.apply(&mut q[t * e..(t + 1) * e], pos0 + t);
            a.rope.apply(&mut kn[t * kv..(t + 1) * kv], pos0 + t);
        }
        cache.write(layer, pos0, kn, vn)
    }

    fn attend_causal(
        &self,
        w: &mut CpuWork,
        q: &Vec<f32>,
        cache: &mut KvCache,
        layer: usize,
        heads: Heads,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let Span0 { n, pos0 } = w.span;
        let e = heads.q_dim();
        check_len("attention", q.len(), n * e)?;
        cache.attend(layer, &q[..n * e], n, pos0, heads, sized(out, n * e));
        Ok(())
    }

    fn ffn_swiglu(
        &self,
        f: &GgufFile,
        w: &mut CpuWork,
        x: &Vec<f32>,
        ffn: &FfnIn<Self>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let n = w.span.n;
        let (dim, ff) = (ffn.norm.len(), ffn.gate.rows());
        check_len("feed-forward input", x.len(), n * dim)?;
        let h = sized(&mut w.h, n * dim);
        ops::rms_norm(&x[..n * dim], ffn.norm, ffn.eps, h);
        let mut gate_up = [sized(out, n * ff), sized(&mut w.up, n * ff)];
        Linear::forward_group([ffn.gate, ffn.up], f, h, n, &mut gate_up, &mut w.scratch)?;
        let [gate, up] = gate_up;
        simd_f32::swiglu(gate, up);
        Ok(())
    }

    fn attend_seqs(&self, w: &mut CpuWork, a: &SeqAttn<Self>, out: &mut Vec<f32>) -> Result<()> {
        let n = w.tokens.len();
        let e = a.heads.q_dim();
        let (q, k, v): (&[f32], &[f32], &[f32]) = match a.qkv {
            Qkv::Split(q, k, v) => {
                check_len("attention", q.len().min(k.len()).min(v.len()), n * e)?;
                (&q[..n * e], &k[..n * e], &v[..n * e])
            }
            Qkv::Fused(qkv) => {
                check_len("attention", qkv.len(), n * 3 * e)?;
                // Split each token's q|k|v row (rotating q and k), tokens in parallel.
                let (q, k, v) = (
                    sized(&mut w.q, n * e),
                    sized(&mut w.k, n * e),
                    sized(&mut w.v, n * e),
                );
                let qkv = &qkv[..n * 3 * e];
                let (rope, positions) = (a.rope, &w.positions);
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
                        if let Some(rope) = rope {
                            rope.apply(q, p);
                            rope.apply(k, p);
                        }
                    });
                (&w.q[..n * e], &w.k[..n * e], &w.v[..n * e])
            }
        };
        let att = sized(out, n * e);
        for seq in &w.seqs {
            let r = seq.start * e..seq.end * e;
            attention::bidirectional(
                &q[r.clone()],
                &k[r.clone()],
                &v[r.clone()],
                seq.len(),
                a.window,
                a.heads,
                &mut att[r],
            );
        }
        Ok(())
    }

    fn gelu(&self, _: &mut CpuWork, x: &mut Vec<f32>, len: usize) -> Result<()> {
        check_len("gelu", x.len(), len)?;
        x[..len]
            .par_chunks_mut(4096)
            .for_each(|r| r.iter_mut().for_each(|v| *v = ops::gelu(*v)));
        Ok(())
    }

    fn tanh(&self, _: &mut CpuWork, x: &mut Vec<f32>, len: usize) -> Result<()> {
        check_len("tanh", x.len(), len)?;
        x[..len].iter_mut().for_each(|v| *v = v.tanh());
        Ok(())
    }

    fn geglu(
        &self,
        _: &mut CpuWork,
        x: &Vec<f32>,
        n: usize,
        ff: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        check_len("geglu", x.len(), n * 2 * ff)?;
        // The first half of each row goes through GELU and gates the second.
        sized(out, n * ff)
            .par_chunks_mut(ff)
            .zip(x[..n * 2 * ff].par_chunks(2 * ff))
            .for_each(|(a, r)| {
                for ((a, &g), &u) in a.iter_mut().zip(&r[..ff]).zip(&r[ff..]) {
                    *a = ops::gelu(g) * u;
                }
            });
        Ok(())
    }

    fn pool(
        &self,
        w: &mut CpuWork,
        x: &Vec<f32>,
        dim: usize,
        mode: Pooling,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let out = sized(out, w.seqs.len() * dim);
        for (s, seq) in w.seqs.iter().enumerate() {
            pool_rows(mode, x, dim, seq, &mut out[s * dim..(s + 1) * dim]);
        }
        Ok(())
    }

    fn sample(
        &self,
        w: &mut CpuWork,
        logits: &mut Vec<f32>,
        vocab: usize,
        s: &SampleSpec,
    ) -> Result<()> {
        check_len("logits", logits.len(), vocab)?;
        w.token = Some(sampling::choose_with(
            &mut logits[..vocab],
            s.cfg,
            s.draw,
            s.penalized,
            &mut w.candidates,
        ));
        Ok(())
    }

    fn sampled(&self, w: &mut CpuWork) -> Result<u32> {
        w.token
            .take()
            .ok_or_else(|| anyhow::anyhow!("no token was sampled in this pass"))
    }
}

/// One sequence's pooled vector.
pub fn pool_rows(mode: Pooling, hidden: &[f32], dim: usize, seq: &Range<usize>, out: &mut [f32]) {
    match mode {
        Pooling::Cls => out.copy_from_slice(&hidden[seq.start * dim..(seq.start + 1) * dim]),
        Pooling::Last => out.copy_from_slice(&hidden[(seq.end - 1) * dim..seq.end * dim]),
        Pooling::Mean => {
            out.fill(0.0);
            for t in seq.clone() {
                for (o, &v) in out.iter_mut().zip(&hidden[t * dim..(t + 1) * dim]) {
                    *o += v;
                }
            }
            let inv = 1.0 / seq.len() as f32;
            out.iter_mut().for_each(|o| *o *= inv);
        }
    }
}

/// Tokens per pass of an encoder batch on the CPU: enough for the products to stay
/// compute-bound (each pass reads the weights once more), few enough that activation buffers
/// stay small (docs/results: the ModernBERT shape's peak memory in parts and in one pass).
pub const ENCODE_PART_TOKENS: usize = 512;
