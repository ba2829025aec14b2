//! Launchers of the element-wise and row-wise kernels (kernels/ops.cu). Pointers are f32 device
//! arrays unless said otherwise.

use super::device::{Arg, Gpu};
use anyhow::Result;

/// Threads per block of the row kernels (norms, softmax).
const ROW_BLOCK: u32 = 256;

pub fn rms_norm(g: &Gpu, x: u64, w: u64, out: u64, n: usize, dim: usize, eps: f32) -> Result<()> {
    g.launch(
        "rms_norm",
        (n as u32, 1, 1),
        ROW_BLOCK,
        &[
            Arg::P(x),
            Arg::P(w),
            Arg::P(out),
            Arg::I(dim as i32),
            Arg::F(eps),
        ],
    )
}

/// Layer norm of n rows; `b` may be absent; `out` may be `x`.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm(
    g: &Gpu,
    x: u64,
    w: u64,
    b: Option<u64>,
    out: u64,
    n: usize,
    dim: usize,
    eps: f32,
) -> Result<()> {
    g.launch(
        "layer_norm",
        (n as u32, 1, 1),
        ROW_BLOCK,
        &[
            Arg::P(x),
            Arg::P(w),
            Arg::P(b.unwrap_or(0)),
            Arg::P(out),
            Arg::I(dim as i32),
            Arg::F(eps),
        ],
    )
}

/// gate = silu(gate) * up over `total` values.
pub fn silu_mul(g: &Gpu, gate: u64, up: u64, total: usize) -> Result<()> {
    g.launch_1d(
        "silu_mul",
        total,
        &[Arg::P(gate), Arg::P(up), Arg::L(total as i64)],
    )
}

pub fn gelu(g: &Gpu, x: u64, total: usize) -> Result<()> {
    g.launch_1d("gelu_inplace", total, &[Arg::P(x), Arg::L(total as i64)])
}

pub fn tanh(g: &Gpu, x: u64, total: usize) -> Result<()> {
    g.launch_1d("tanh_inplace", total, &[Arg::P(x), Arg::L(total as i64)])
}

/// out (n x ff) = gelu(wi[:, :ff]) * wi[:, ff:] with wi n x 2ff.
pub fn geglu(g: &Gpu, wi: u64, out: u64, n: usize, ff: usize) -> Result<()> {
    g.launch_1d(
        "geglu",
        n * ff,
        &[Arg::P(wi), Arg::P(out), Arg::I(n as i32), Arg::I(ff as i32)],
    )
}

/// NEOX RoPE in place on `heads` vectors of `hd` at the start of each of n rows of `stride`
/// values; positions `pos` (device i32 array) or pos0 + t.
#[allow(clippy::too_many_arguments)]
pub fn rope(
    g: &Gpu,
    x: u64,
    n: usize,
    heads: usize,
    hd: usize,
    stride: usize,
    pos0: usize,
    pos: Option<u64>,
    theta: f32,
) -> Result<()> {
    g.launch_1d(
        "rope_neox",
        n * hd / 2,
        &[
            Arg::P(x),
            Arg::I(n as i32),
            Arg::I(heads as i32),
            Arg::I(hd as i32),
            Arg::I(stride as i32),
            Arg::I(pos0 as i32),
            Arg::P(pos.unwrap_or(0)),
            Arg::F(theta),
        ],
    )
}

/// Writes n rows of keys and values (kvd values each) at position pos0 of f16 caches.
#[allow(clippy::too_many_arguments)]
pub fn kv_store(
    g: &Gpu,
    k: u64,
    v: u64,
    kc: u64,
    vc: u64,
    n: usize,
    kvd: usize,
    pos0: usize,
) -> Result<()> {
    g.launch_1d(
        "kv_store",
        n * kvd,
        &[
            Arg::P(k),
            Arg::P(v),
            Arg::P(kc),
            Arg::P(vc),
            Arg::I(n as i32),
            Arg::I(kvd as i32),
            Arg::I(pos0 as i32),
        ],
    )
}

/// n rows of `width` f32 values (row stride `src_stride`) to f16 (row stride `dst_stride`).
pub fn to_f16(
    g: &Gpu,
    src: u64,
    src_stride: usize,
    dst: u64,
    dst_stride: usize,
    n: usize,
    width: usize,
) -> Result<()> {
    g.launch_1d(
        "to_f16",
        n * width,
        &[
            Arg::P(src),
            Arg::I(src_stride as i32),
            Arg::P(dst),
            Arg::I(dst_stride as i32),
            Arg::I(n as i32),
            Arg::I(width as i32),
        ],
    )
}

/// Pools `seqs` sequences of `hidden` (start/end: device i32 arrays): 0 mean, 1 first, 2 last.
#[allow(clippy::too_many_arguments)]
pub fn pool(
    g: &Gpu,
    hidden: u64,
    starts: u64,
    ends: u64,
    out: u64,
    seqs: usize,
    dim: usize,
    mode: i32,
) -> Result<()> {
    g.launch(
        "pool",
        (seqs as u32, 1, 1),
        ROW_BLOCK,
        &[
            Arg::P(hidden),
            Arg::P(starts),
            Arg::P(ends),
            Arg::P(out),
            Arg::I(dim as i32),
            Arg::I(mode),
        ],
    )
}

/// Softmax rows for the cuBLAS attention path (see kernels/ops.cu, softmax_scores).
#[allow(clippy::too_many_arguments)]
pub fn softmax_scores(
    g: &Gpu,
    s: u64,
    p: u64,
    rows: usize,
    keys: usize,
    nq: usize,
    q0: usize,
    window: Option<usize>,
    scale: f32,
) -> Result<()> {
    g.launch(
        "softmax_scores",
        (rows as u32, 1, 1),
        ROW_BLOCK,
        &[
            Arg::P(s),
            Arg::P(p),
            Arg::I(keys as i32),
            Arg::I(nq as i32),
            Arg::I(q0 as i32),
            Arg::I(window.map_or(-1, |w| w as i32)),
            Arg::F(scale),
        ],
    )
}
