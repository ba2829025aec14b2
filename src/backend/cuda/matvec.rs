//! Launches of the matrix-vector kernels (kernels/matvec.cu) for up to [`MV_MAX_TOKENS`]
//! tokens: the parameter block shared with the kernels, and the split of a launch's tokens when
//! their quantized inputs would not fit in shared memory.

use super::device::Gpu;
use super::kernels::Kernels;
use super::tensors::GpuMat;
use anyhow::{bail, Result};
use quant_types::GgmlType;

/// Largest token count the matrix-vector kernels take; larger passes use cuBLAS.
pub const MV_MAX_TOKENS: usize = 8;

/// What the epilogue does with a part's dot products (kernels/matvec.cu, MV_*).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum Kind {
    Store = 0,
    Add = 1,
    Rope = 2,
    RopeCache = 3,
    Cache = 4,
    Swiglu = 5,
    SwigluUp = 6,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct MvPart {
    w: u64,
    bias: u64,
    out: u64,
    row_bytes: i64,
    rows: i32,
    kind: i32,
    items: i32,
    out_stride: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct MvParams {
    x: u64,
    norm: u64,
    step: u64,
    rope: u64,
    x_stride: i32,
    k: i32,
    n: i32,
    eps: f32,
    head_dim: i32,
    n_parts: i32,
    items_total: i32,
    t0: i32,
    parts: [MvPart; 3],
}

// The kernels assert the same sizes (static_assert in matvec.cu).
const _: () = assert!(std::mem::size_of::<MvPart>() == 48);
const _: () = assert!(std::mem::size_of::<MvParams>() == 208);

/// One matrix of a launch: its rows go to `out` (rows of `out_stride` per token) as `kind` says.
pub struct Part<'a> {
    pub m: &'a GpuMat,
    pub bias: u64,
    pub kind: Kind,
    pub out: u64,
    pub out_stride: usize,
}

/// The launch's input: `n` rows of `k` f32 values `stride` apart, normalized by RMS with
/// `norm` (weight pointer, eps) first when given.
pub struct Input {
    pub x: u64,
    pub stride: usize,
    pub n: usize,
    pub norm: Option<(u64, f32)>,
}

fn items(p: &Part) -> usize {
    match p.kind {
        Kind::Rope | Kind::RopeCache => p.m.rows / 2,
        Kind::Swiglu => p.m.rows,
        _ => p.m.rows.div_ceil(2),
    }
}

fn is_float(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
}

/// Shared memory of one block for `n` tokens of `k` inputs.
fn smem_bytes(ty: GgmlType, k: usize, n: usize) -> usize {
    if is_float(ty) {
        n * k * 4
    } else {
        n * (k + 8 * (k / 32))
    }
}

/// Runs the parts (all of one type, the same columns; a SwiGLU gate part is followed by its up
/// part) over the input. `step` is the pass's Step block, `rope` the (cos, sin) table and the
/// head size for the RoPE kinds.
pub fn launch(
    g: &Gpu,
    kern: &Kernels,
    input: &Input,
    parts: &[Part],
    step: u64,
    rope: Option<(u64, usize)>,
) -> Result<()> {
    let Some(first) = parts.first() else {
        return Ok(());
    };
    if parts.len() > 3 {
        bail!("a matrix-vector launch takes at most 3 matrices");
    }
    let (ty, k) = (first.m.ty, first.m.cols);
    if parts.iter().any(|p| p.m.ty != ty || p.m.cols != k) {
        bail!("the matrices of one launch must share type and columns");
    }
    if input.n == 0 || input.n > MV_MAX_TOKENS {
        bail!("{} tokens for a matrix-vector product", input.n);
    }
    let limit = g.smem_limit();
    let per_token = smem_bytes(ty, k, 1);
    if per_token > limit {
        bail!(
            "rows of {k} {ty} weights need {per_token} bytes of shared memory per token, more than this GPU's {limit}"
        );
    }
    let chunk = (limit / per_token).clamp(1, input.n);
    let mut p = MvParams {
        norm: input.norm.map_or(0, |n| n.0),
        eps: input.norm.map_or(0.0, |n| n.1),
        step,
        rope: rope.map_or(0, |r| r.0),
        head_dim: rope.map_or(0, |r| r.1 as i32),
        x_stride: input.stride as i32,
        k: k as i32,
        n_parts: parts.len() as i32,
        ..Default::default()
    };
    let mut total = 0;
    for (dst, src) in p.parts.iter_mut().zip(parts) {
        let it = if src.kind == Kind::Swiglu || total == 0 || parts[0].kind != Kind::Swiglu {
            items(src)
        } else {
            // The up part of a SwiGLU pair: its rows are the gate's items.
            0
        };
        *dst = MvPart {
            w: src.m.ptr(),
            bias: src.bias,
            out: src.out,
            row_bytes: src.m.row_bytes as i64,
            rows: src.m.rows as i32,
            kind: src.kind as i32,
            items: it as i32,
            out_stride: src.out_stride as i32,
        };
        total += it;
    }
    p.items_total = total as i32;
    let blocks = total.div_ceil(4).clamp(1, g.sm_count * 16) as u32;
    let mut t0 = 0;
    while t0 < input.n {
        let n = chunk.min(input.n - t0);
        let mut q = p;
        q.x = input.x + (t0 * input.stride * 4) as u64;
        q.n = n as i32;
        q.t0 = t0 as i32;
        for (i, part) in parts.iter().enumerate() {
            // Per-token outputs move with the chunk; cache kinds write at Step.pos0 + t0 + t.
            if !matches!(part.kind, Kind::RopeCache | Kind::Cache) {
                q.parts[i].out = part.out + (t0 * part.out_stride * 4) as u64;
            }
        }
        let f = if n == 1 {
            kern.mv1[first.m.ti]
        } else {
            kern.mv8[first.m.ti]
        };
        g.launch_struct(f, (blocks, 1, 1), 128, smem_bytes(ty, k, n) as u32, &q)?;
        t0 += n;
    }
    Ok(())
}
