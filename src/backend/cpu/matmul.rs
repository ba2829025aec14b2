//! Matrix products on quantized weights, as ggml computes them on CPU: activations are quantized
//! once per product to the weight type's activation format (Q8_0, Q8_1 or Q8_K; f32 for float
//! weights), then every output is a block dot product from `quant_types`, spread over threads
//! by output rows. Weights are read in place from the memory map.

use anyhow::{bail, Result};
use quant_types::packed::{self, PackedActs, PackedMatrix};
use quant_types::*;
use rayon::prelude::*;

use super::team;

/// A weight matrix in GGUF layout: `rows` output features, each a row of `cols` inputs stored as
/// contiguous blocks.
#[derive(Clone, Copy)]
pub struct WeightView<'a> {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    /// The blocks as in the file (empty when `packed` holds the weights).
    pub data: &'a [u8],
    pub packed: Option<&'a PackedMatrix>,
}

/// Reusable buffers of one forward pass, so that decoding allocates nothing per token.
#[derive(Default)]
pub struct Scratch {
    /// Quantized activations (u32 storage keeps every block type aligned).
    acts: Vec<u32>,
    /// Outputs in row-major [rows][n] order before transposition.
    transposed: Vec<f32>,
    /// Weight rows copied when the map is not aligned for the block type (rare).
    aligned_weights: Vec<u32>,
    /// Activations unpacked for the packed kernels, and the input they were made from.
    packed_acts: PackedActs,
    packed_from: Option<(usize, usize, usize)>,
    /// A group's activations in its other formats (see [`matmul_group`]).
    group_acts: Vec<PackedActs>,
}

fn as_blocks<'a, B: bytemuck::Pod>(bytes: &'a [u8], storage: &'a mut Vec<u32>) -> &'a [B] {
    match bytemuck::try_cast_slice::<u8, B>(bytes) {
        Ok(b) => b,
        Err(_) => {
            storage.clear();
            storage.resize(bytes.len().div_ceil(4), 0);
            bytemuck::cast_slice_mut::<u32, u8>(storage)[..bytes.len()].copy_from_slice(bytes);
            bytemuck::cast_slice(&bytemuck::cast_slice::<u32, u8>(storage)[..bytes.len()])
        }
    }
}

/// y[t][o] = sum_i W[o][i] * x[t][i] for t in 0..n. `x` is n rows of `cols`, `y` n rows of `rows`.
pub fn matmul(w: &WeightView, x: &[f32], n: usize, y: &mut [f32], s: &mut Scratch) -> Result<()> {
    s.packed_from = None;
    matmul_same_input(w, x, n, y, s)
}

/// As [`matmul`], but reuses the activations quantized by the previous call on `s` when it had
/// the same `x` (same buffer and length) and the same activation format: for the projections
/// that share an input (Q, K and V; gate and up). The caller guarantees `x` was not modified
/// since that call.
pub fn matmul_same_input(
    w: &WeightView,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    s: &mut Scratch,
) -> Result<()> {
    check_shapes(w, x, n, y)?;
    if let Some(p) = w.packed {
        return packed_matmul(p, x, n, y, s);
    }
    s.packed_from = None;
    macro_rules! go {
        ($B:ty) => {
            typed::<$B>(w, x, n, y, s)
        };
    }
    match w.ty {
        GgmlType::F32 => go!(BlockF32),
        GgmlType::F16 => go!(BlockF16),
        GgmlType::BF16 => go!(BlockBF16),
        GgmlType::Q4_0 => go!(BlockQ4_0),
        GgmlType::Q4_1 => go!(BlockQ4_1),
        GgmlType::Q5_0 => go!(BlockQ5_0),
        GgmlType::Q5_1 => go!(BlockQ5_1),
        GgmlType::Q8_0 => go!(BlockQ8_0),
        GgmlType::Q4_K => go!(BlockQ4K),
        GgmlType::Q5_K => go!(BlockQ5K),
        GgmlType::Q6_K => go!(BlockQ6K),
        GgmlType::IQ4_NL => go!(BlockIQ4NL),
        GgmlType::NF4 => go!(BlockNF4),
        other => bail!("{other} is an activation format, not a weight type"),
    }
}

fn check_shapes(w: &WeightView, x: &[f32], n: usize, y: &[f32]) -> Result<()> {
    if x.len() != n * w.cols || y.len() != n * w.rows {
        bail!(
            "matmul shapes: weight [{} x {}], input {} values for {n} rows, output {}",
            w.rows,
            w.cols,
            x.len(),
            y.len()
        );
    }
    Ok(())
}

fn typed<B: BlockFormat>(
    w: &WeightView,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    s: &mut Scratch,
) -> Result<()> {
    type A<B> = <B as BlockFormat>::Act;
    let bpr = w.cols / B::BLOCK_ELEMS;
    let apr = w.cols / A::<B>::BLOCK_ELEMS;
    if !w.cols.is_multiple_of(B::BLOCK_ELEMS) || w.data.len() != w.rows * bpr * B::BLOCK_BYTES {
        bail!(
            "{} weight of [{} x {}] has {} bytes",
            B::TYPE,
            w.rows,
            w.cols,
            w.data.len()
        );
    }
    // Activations: quantized once for all output rows (f32 weights read x as it is).
    let acts: &[A<B>] = if A::<B>::TYPE == GgmlType::F32 {
        bytemuck::cast_slice(x)
    } else {
        let bytes = n * apr * A::<B>::BLOCK_BYTES;
        s.acts.clear();
        s.acts.resize(bytes.div_ceil(4), 0);
        let blocks: &mut [A<B>] = bytemuck::cast_slice_mut(
            &mut bytemuck::cast_slice_mut::<u32, u8>(&mut s.acts)[..bytes],
        );
        blocks
            .par_chunks_mut(apr)
            .zip(x.par_chunks(w.cols))
            .for_each(|(dst, src)| A::<B>::quantize_act_row(src, dst));
        bytemuck::cast_slice(&bytemuck::cast_slice::<u32, u8>(&s.acts)[..bytes])
    };
    let weights: &[B] = as_blocks(w.data, &mut s.aligned_weights);
    let path = SimdPath::best();
    let threads = rayon::current_num_threads().max(1);
    // Enough chunks to balance threads, few enough to keep scheduling cheap.
    let rows_per_chunk = w.rows.div_ceil(threads * 4).max(1);
    let out: &mut [f32] = if n == 1 {
        y
    } else {
        row_major_buffer(&mut s.transposed, n * w.rows)
    };
    out.par_chunks_mut(rows_per_chunk * n)
        .enumerate()
        .for_each(|(c, chunk)| {
            for (j, dst) in chunk.chunks_mut(n).enumerate() {
                let o = c * rows_per_chunk + j;
                let wr = &weights[o * bpr..(o + 1) * bpr];
                for (t, v) in dst.iter_mut().enumerate() {
                    *v = B::vec_dot_on(path, wr, &acts[t * apr..(t + 1) * apr]);
                }
            }
        });
    if n > 1 {
        transpose_into(&s.transposed[..n * w.rows], w.rows, n, y);
    }
    Ok(())
}

/// The first `len` values of `buf`, grown when short. Not cleared: every product writes each
/// value of its output before reading it (zeroing 10 MB per ModernBERT product cost 1.5%).
fn row_major_buffer(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    &mut buf[..len]
}

/// `y[t][o] = src[o][t]` for `rows` x `n` values: the kernels' row-major output into the
/// graph's token-major one. Blocks of 16 tokens run in parallel; within one, each output row's
/// 16 values are read as one cache line and written to 16 lines that stay in L1. The plain
/// loop this replaces wrote with a stride of `rows` floats on one thread: 21% of a ModernBERT
/// batch (perf, 32 x 128 tokens, Q8_0).
fn transpose_into(src: &[f32], rows: usize, n: usize, y: &mut [f32]) {
    const TOKENS: usize = 16;
    y[..n * rows]
        .par_chunks_mut(TOKENS * rows)
        .enumerate()
        .for_each(|(b, yb)| {
            let t0 = b * TOKENS;
            let tn = yb.len() / rows;
            for (o, col) in src.chunks_exact(n).enumerate() {
                for (t, &v) in col[t0..t0 + tn].iter().enumerate() {
                    yb[t * rows + o] = v;
                }
            }
        });
}

/// Products of one input `x` (one token) by several weights, e.g. Q, K and V, or gate and up:
/// `ys[i] = ws[i] x`. When every weight is packed, the activations are quantized once per
/// activation format among the weights (a mix such as IQ4_NL's Q and K with a Q5_1 V has two)
/// and the products run as one parallel loop, so decoding pays one fork-join for the group
/// instead of one per matrix (the workers would otherwise idle between the products).
/// Otherwise, and for several tokens, the products run one by one.
pub fn matmul_group(
    ws: &[WeightView],
    x: &[f32],
    n: usize,
    ys: &mut [&mut [f32]],
    s: &mut Scratch,
) -> Result<()> {
    if ws.len() != ys.len() || ws.is_empty() {
        bail!("matmul group: {} weights, {} outputs", ws.len(), ys.len());
    }
    // `x` is new to `s`; within the group it stays unchanged, so every product may reuse the
    // activations an earlier one quantized.
    s.packed_from = None;
    let packed: Option<Vec<&PackedMatrix>> = ws.iter().map(|w| w.packed).collect();
    if let (1, Some(packed)) = (n, packed) {
        for (w, y) in ws.iter().zip(ys.iter()) {
            check_shapes(w, x, n, y)?;
        }
        quantize_packed_acts(packed[0], x, n, s);
        let mut others = 0;
        for w in &packed {
            let served = s.packed_acts.serves(w.ty())
                || s.group_acts[..others].iter().any(|a| a.serves(w.ty()));
            if !served {
                if s.group_acts.len() == others {
                    s.group_acts.push(PackedActs::default());
                }
                s.group_acts[others].quantize(w.ty(), x, n, w.cols());
                others += 1;
            }
        }
        let (first, rest) = (&s.packed_acts, &s.group_acts[..others]);
        let acts_for = |w: &PackedMatrix| -> &PackedActs {
            std::iter::once(first)
                .chain(rest)
                .find(|a| a.serves(w.ty()))
                .expect("quantized above for every format of the group")
        };
        if let Some(team) = team::global() {
            let parts = packed.iter().zip(ys.iter_mut()).flat_map(|(&w, y)| {
                let acts = acts_for(w);
                row_chunks(w, y, team.helpers() + 1).map(move |(w, r, y)| (w, r, y, acts))
            });
            products_on_team(team, parts.collect());
            return Ok(());
        }
        let threads = rayon::current_num_threads().max(1);
        ys.par_iter_mut()
            .zip(packed.par_iter())
            .for_each(|(y, &w)| packed_rows_parallel(w, acts_for(w), 1, y, threads));
        return Ok(());
    }
    for (w, y) in ws.iter().zip(ys.iter_mut()) {
        matmul_same_input(w, x, n, y, s)?;
    }
    Ok(())
}

/// Quantizes `x` for `w`'s activation format unless `s` holds it already (same input, and a
/// format that serves `w`).
fn quantize_packed_acts(w: &PackedMatrix, x: &[f32], n: usize, s: &mut Scratch) {
    let key = (x.as_ptr() as usize, x.len(), n);
    if s.packed_from != Some(key) || !s.packed_acts.serves(w.ty()) {
        s.packed_acts.quantize(w.ty(), x, n, w.cols());
        s.packed_from = Some(key);
    }
}

/// Rows per chunk of a packed product split over `threads` in about `per_thread` chunks each
/// (enough to balance the threads), each whole register tiles (12 rows) or whole interleaved
/// units (16 rows).
fn rows_per_chunk(w: &PackedMatrix, threads: usize, per_thread: usize) -> usize {
    let tile = if w.layout().token_major() { 16 } else { 12 };
    w.rows()
        .div_ceil(threads * per_thread)
        .div_ceil(tile)
        .max(1)
        * tile
}

/// A chunk of one token's product: the matrix, the chunk's first row, its outputs.
type RowChunk<'a> = (&'a PackedMatrix, usize, &'a mut [f32]);

/// One token's output `y` of `w` cut into chunks of rows for `threads`.
fn row_chunks<'a>(
    w: &'a PackedMatrix,
    y: &'a mut [f32],
    threads: usize,
) -> impl Iterator<Item = RowChunk<'a>> {
    // One chunk per thread: each thread streams one run of weights. Threads that finish early
    // leave the memory bandwidth to the others, so finer chunks do not pay for their restarts:
    // on Qwen2.5-0.5B two per thread were 1-4% slower (four, 3-5% slower again), and pieces
    // of 16-64 KiB, each thread working its share in order and then taking the others' last
    // pieces, 5-8% slower.
    let rpc = rows_per_chunk(w, threads, 1);
    y.chunks_mut(rpc)
        .enumerate()
        .map(move |(c, chunk)| (w, c * rpc, chunk))
}

/// One token's products on the decoding team: each part is (matrix, first row, its outputs,
/// the activations), the first three as [`row_chunks`] cuts them.
fn products_on_team(
    team: &team::Team,
    parts: Vec<(&PackedMatrix, usize, &mut [f32], &PackedActs)>,
) {
    team.for_each(parts, |(w, start, y, acts)| {
        packed::gemm(w, start..start + y.len(), acts, y)
    });
}

/// `out` (`[rows][n]`, or `[n][rows]` when `n` is 1) = `w` times the activations, rows split
/// over the threads in chunks ([`rows_per_chunk`]); each chunk runs the register-tiled kernel
/// over all tokens. One token goes to the decoding team (see [`team`]) when there is one.
fn packed_rows_parallel(
    w: &PackedMatrix,
    acts: &PackedActs,
    n: usize,
    out: &mut [f32],
    threads: usize,
) {
    if n == 1 {
        if let Some(team) = team::global() {
            let parts = row_chunks(w, out, team.helpers() + 1).map(|(w, r, y)| (w, r, y, acts));
            products_on_team(team, parts.collect());
            return;
        }
    }
    let rows_per_chunk = rows_per_chunk(w, threads, 4);
    out.par_chunks_mut(rows_per_chunk * n)
        .enumerate()
        .for_each(|(c, chunk)| {
            let start = c * rows_per_chunk;
            packed::gemm(w, start..start + chunk.len() / n, acts, chunk);
        });
}

/// `y` (`[n][rows]`) = `w` times the activations for a layout whose kernels write token-major:
/// each chunk of rows writes its `[n][chunk rows]` block of `buf`, then the blocks are copied
/// into place by token (contiguous runs, no transpose).
fn packed_token_major_parallel(
    w: &PackedMatrix,
    acts: &PackedActs,
    n: usize,
    y: &mut [f32],
    buf: &mut Vec<f32>,
    threads: usize,
) {
    let rows = w.rows();
    let rpc = rows_per_chunk(w, threads, 4);
    let blocks = row_major_buffer(buf, n * rows);
    blocks
        .par_chunks_mut(rpc * n)
        .enumerate()
        .for_each(|(c, chunk)| {
            let start = c * rpc;
            packed::gemm_token_major(w, start..start + chunk.len() / n, acts, chunk);
        });
    let blocks = &*blocks;
    y[..n * rows]
        .par_chunks_mut(rows)
        .enumerate()
        .for_each(|(t, yt)| {
            for (c, dst) in yt.chunks_mut(rpc).enumerate() {
                let m = dst.len();
                let at = c * rpc * n + t * m;
                dst.copy_from_slice(&blocks[at..at + m]);
            }
        });
}

/// Tokens per thread from which a token-major product splits its batch by tokens instead of
/// by rows (see [`packed_by_tokens`]).
const TOKEN_SPLIT_MIN: usize = 64;

/// `y` (`[n][rows]`) = `w` times the activations, the batch split by tokens: each chunk of
/// tokens is a contiguous block of `y`, written in place by the kernel (no block buffer and
/// no copy, as [`packed_token_major_parallel`] needs). Every thread then reads all of `w`,
/// which only pays with enough tokens per thread to keep the product compute-bound. Returns
/// false, writing nothing, where the kernels here do not read `w`'s layout natively.
fn packed_by_tokens(
    w: &PackedMatrix,
    acts: &PackedActs,
    n: usize,
    y: &mut [f32],
    threads: usize,
) -> bool {
    let rows = w.rows();
    // Two chunks per thread for balance, each a multiple of 8 tokens (the 32-weight types'
    // token tile; K-quants tile 6 and finish a chunk with smaller tiles).
    let per = n.div_ceil(2 * threads).div_ceil(8) * 8;
    let native = std::sync::atomic::AtomicBool::new(true);
    y[..n * rows]
        .par_chunks_mut(per * rows)
        .enumerate()
        .for_each(|(c, block)| {
            let t0 = c * per;
            let tokens = t0..t0 + block.len() / rows;
            if !packed::gemm_token_major_tokens(w, 0..rows, acts, tokens, block) {
                native.store(false, std::sync::atomic::Ordering::Relaxed);
            }
        });
    native.into_inner()
}

/// Tokens per pass of an F16 product over a batch (its float activations are copied per pass).
const F16_TOKENS: usize = 512;

/// The product on packed weights: activations quantized once, then a long batch on the
/// interleaved kernels split over threads by tokens ([`packed_by_tokens`]), anything else by
/// rows in chunks, each chunk running the register-tiled kernel over all tokens.
fn packed_matmul(
    w: &PackedMatrix,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    s: &mut Scratch,
) -> Result<()> {
    let rows = w.rows();
    if w.ty() == GgmlType::F16 && n > F16_TOKENS {
        // F16 products take their activations as floats: a copy of a whole batch (32 x 128
        // tokens x 4864 inputs) would add 80 MiB to peak memory. Token-major outputs make the
        // blocks of tokens independent.
        let cols = w.cols();
        for t0 in (0..n).step_by(F16_TOKENS) {
            let t1 = (t0 + F16_TOKENS).min(n);
            let (xs, ys) = (&x[t0 * cols..t1 * cols], &mut y[t0 * rows..t1 * rows]);
            packed_matmul(w, xs, t1 - t0, ys, s)?;
        }
        return Ok(());
    }
    quantize_packed_acts(w, x, n, s);
    let threads = rayon::current_num_threads().max(1);
    if n > 1 && w.layout().token_major() {
        let long = n >= TOKEN_SPLIT_MIN * threads && rows > 0;
        if long && packed_by_tokens(w, &s.packed_acts, n, y, threads) {
            return Ok(());
        }
        packed_token_major_parallel(w, &s.packed_acts, n, y, &mut s.transposed, threads);
        return Ok(());
    }
    let out: &mut [f32] = if n == 1 {
        y
    } else {
        row_major_buffer(&mut s.transposed, n * rows)
    };
    packed_rows_parallel(w, &s.packed_acts, n, out, threads);
    if n > 1 {
        transpose_into(&s.transposed[..n * rows], rows, n, y);
    }
    Ok(())
}

/// Dequantizes row `r` of a matrix (an embedding lookup).
pub fn dequantize_row(w: &WeightView, r: usize, out: &mut [f32]) -> Result<()> {
    if let Some(p) = w.packed {
        if r >= w.rows {
            bail!("row {r} out of range ({} rows)", w.rows);
        }
        p.dequantize_row(r, out);
        return Ok(());
    }
    let row_bytes = w.ty.row_bytes(w.cols).expect("validated at load");
    if r >= w.rows {
        bail!("row {r} out of range ({} rows)", w.rows);
    }
    dynamic::dequantize(w.ty, &w.data[r * row_bytes..(r + 1) * row_bytes], out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quantized(ty: GgmlType, rows: usize, cols: usize, seed: usize) -> Vec<u8> {
        let wf: Vec<f32> = (0..rows * cols)
            .map(|i| (((i + seed) * 7919 % 1000) as f32 / 1000.0 - 0.5) * 0.1)
            .collect();
        let row_bytes = ty.row_bytes(cols).unwrap();
        let mut data = vec![0u8; rows * row_bytes];
        for (dst, src) in data.chunks_mut(row_bytes).zip(wf.chunks(cols)) {
            dynamic::quantize(ty, src, dst).unwrap();
        }
        data
    }

    #[test]
    fn transpose_into_swaps_rows_and_tokens() {
        // Token counts below, at and across the 16-token blocks; a buffer longer than needed.
        for (rows, n) in [(1, 1), (3, 16), (7, 37), (33, 5)] {
            let src: Vec<f32> = (0..rows * n).map(|i| i as f32).collect();
            let mut y = vec![-1.0; rows * n + 3];
            transpose_into(&src, rows, n, &mut y);
            for t in 0..n {
                for o in 0..rows {
                    assert_eq!(y[t * rows + o], src[o * n + t], "rows {rows} n {n}");
                }
            }
            assert_eq!(y[rows * n..], [-1.0; 3]);
        }
    }

    /// A group equals its products one by one: fused (Q5_0 and Q8_0 share Q8_0 activations),
    /// and falling back when the formats differ (Q4_K takes Q8_K) or several tokens come.
    #[test]
    fn group_equals_separate_products() {
        let cols = 512;
        let shapes = [
            (GgmlType::Q5_0, 40),
            (GgmlType::Q8_0, 13),
            (GgmlType::Q4_K, 25),
            (GgmlType::Q5_1, 17),
        ];
        let data: Vec<Vec<u8>> = shapes
            .iter()
            .enumerate()
            .map(|(i, &(ty, rows))| quantized(ty, rows, cols, i))
            .collect();
        let packed: Vec<Option<PackedMatrix>> = shapes
            .iter()
            .zip(&data)
            .map(|(&(ty, rows), d)| {
                packed::available()
                    .then(|| PackedMatrix::pack(ty, rows, cols, d))
                    .flatten()
            })
            .collect();
        let views: Vec<WeightView> = shapes
            .iter()
            .zip(&data)
            .zip(&packed)
            .map(|((&(ty, rows), d), p)| WeightView {
                ty,
                rows,
                cols,
                data: if p.is_some() { &[] } else { d },
                packed: p.as_ref(),
            })
            .collect();
        // One scratch for every group: the buffers of an earlier group's formats must not leak
        // into a later one's products. Groups have one activation format (Q8_0), three
        // (Q8_0, Q8_K, Q8_1), or two starting with another.
        let mut scratch = Scratch::default();
        for n in [1, 3] {
            let x: Vec<f32> = (0..n * cols)
                .map(|i| (i * 104729 % 997) as f32 / 997.0 - 0.5)
                .collect();
            for group in [&views[..2], &views[..], &views[2..], &views[..2]] {
                let mut want: Vec<Vec<f32>> = Vec::new();
                for w in group {
                    let mut y = vec![0f32; n * w.rows];
                    matmul(w, &x, n, &mut y, &mut Scratch::default()).unwrap();
                    want.push(y);
                }
                let mut got: Vec<Vec<f32>> = group.iter().map(|w| vec![0f32; n * w.rows]).collect();
                let mut outs: Vec<&mut [f32]> = got.iter_mut().map(|v| &mut v[..]).collect();
                matmul_group(group, &x, n, &mut outs, &mut scratch).unwrap();
                assert_eq!(got, want, "n={n}, {} weights", group.len());
            }
        }
        // Shapes are checked.
        let mut short = [0f32; 3];
        let err = matmul_group(
            &views[..1],
            &[0.0; 512],
            1,
            &mut [&mut short[..]],
            &mut Scratch::default(),
        );
        assert!(err.is_err());
    }

    #[test]
    fn matmul_matches_dequantized_reference() {
        let (rows, cols, n) = (37, 256, 5);
        let wf: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * 0.1)
            .collect();
        let x: Vec<f32> = (0..n * cols)
            .map(|i| (i * 104729 % 997) as f32 / 997.0 - 0.5)
            .collect();
        for ty in [
            GgmlType::F32,
            GgmlType::F16,
            GgmlType::Q8_0,
            GgmlType::Q4_K,
            GgmlType::Q6_K,
            GgmlType::NF4,
        ] {
            let row_bytes = ty.row_bytes(cols).unwrap();
            let mut data = vec![0u8; rows * row_bytes];
            for (dst, src) in data.chunks_mut(row_bytes).zip(wf.chunks(cols)) {
                dynamic::quantize(ty, src, dst).unwrap();
            }
            let mut wq = vec![0f32; rows * cols];
            for (dst, src) in wq.chunks_mut(cols).zip(data.chunks(row_bytes)) {
                dynamic::dequantize(ty, src, dst).unwrap();
            }
            // Blocks in place, and the packed copy where this CPU and type have one.
            let packed = if packed::available() {
                PackedMatrix::pack(ty, rows, cols, &data)
            } else {
                None
            };
            for p in [None, packed.as_ref()] {
                let w = WeightView {
                    ty,
                    rows,
                    cols,
                    data: if p.is_some() { &[] } else { &data },
                    packed: p,
                };
                let mut y = vec![0f32; n * rows];
                matmul(&w, &x, n, &mut y, &mut Scratch::default()).unwrap();
                for t in 0..n {
                    for o in 0..rows {
                        let exact: f32 =
                            (0..cols).map(|i| wq[o * cols + i] * x[t * cols + i]).sum();
                        let scale: f32 = (0..cols)
                            .map(|i| (wq[o * cols + i] * x[t * cols + i]).abs())
                            .sum();
                        // Activations are quantized to 8 bits for quantized weights: 1% of the magnitude.
                        let tol = if matches!(ty, GgmlType::F32 | GgmlType::F16) {
                            1e-5
                        } else {
                            2e-2
                        } * scale;
                        assert!(
                            (y[t * rows + o] - exact).abs() <= tol,
                            "{ty} (packed: {}) t{t} o{o}: {} vs {exact}",
                            p.is_some(),
                            y[t * rows + o]
                        );
                    }
                }
            }
        }
    }
}
