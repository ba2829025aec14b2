//! Weight rows re-laid out at load time for the CPU's integer matrix kernels, and activations
//! unpacked to match. The file format stays llama.cpp's: this is an in-memory copy, the same
//! size as the file's blocks to within a few percent, built once per model load.
//!
//! Why: a dot product on ggml's own blocks spends most of its instructions on bookkeeping that
//! does not depend on the activations: converting one f16 scale per 32 weights, splitting nibbles
//! that ggml stores in an order made for 128-bit registers, gathering the fifth bits of Q5 types.
//! The packed layouts put sixteen block scales side by side (one conversion instruction for all
//! of them), store nibbles so that one broadcast, one shift and one mask give 64 weights in
//! element order, and store high bits as 64-bit masks. Every weight becomes an unsigned level
//! `u` with `w = A * u + B` per sub-block, so one `vpdpbusd` multiplies 64 of them by 64 signed
//! activation levels; the `B` terms (offsets and minimums) are applied once per sub-block
//! through the activation sums that ggml's activation blocks already carry.
//!
//! Two layouts ([`Layout`]): rows (described above and in `layout.rs`), and 16 rows woven
//! together (`interleaved.rs`), which the x86 kernels read: AVX-512 VNNI (`x86_i16.rs`: one
//! `vpdpbusd` serves 16 rows, block sums stay in integers, outputs come token-major; about 3x
//! the row kernels' prefill throughput) and AVX2 + FMA + F16C (`x86_woven_avx2.rs`: one
//! `vpmaddubsw` serves 8 rows, sub-block sums in i16; 1.5-3.5x the AVX2 row kernels). Kernels
//! on the row layout, kept for measuring the difference (`QGGUF_PACK_LAYOUT=rows`): AVX-512
//! VNNI (`x86.rs`) and AVX2 (`x86_avx2.rs`). Elsewhere none ([`available`] is false and
//! callers keep ggml's blocks).
//!
//! Numerics: activations are quantized exactly as for [`crate::BlockFormat::vec_dot`] (the
//! weight type's own activation format, ggml's rounding), and every sub-block product is exact
//! in integers, so results equal the scalar reference up to the order of float additions.
//!
//! [`gemm_ref`] is a plain-Rust implementation over the packed layout: the reference the SIMD
//! kernels are tested against, and the proof that packing loses nothing.

mod arena;
#[cfg(target_arch = "x86_64")]
mod drive;
pub(crate) mod interleaved;
mod layout;
#[cfg(target_arch = "x86_64")]
mod x86;
#[cfg(target_arch = "x86_64")]
mod x86_avx2;
#[cfg(target_arch = "x86_64")]
mod x86_i16;
#[cfg(target_arch = "x86_64")]
mod x86_woven_avx2;

pub use arena::{Arena, ArenaSlice};
pub use layout::{pack_row, pack_unit, packed_row_bytes, Layout, PackedMatrix};

use crate::formats::*;
use crate::{BlockFormat, GgmlType};
use std::ops::Range;

/// Elements per packed group, the unit of the kernels' scale and bias vectors; activation rows
/// are padded to a multiple of it.
pub const GROUP: usize = 512;

/// Whether `ty` has a packed layout.
pub fn supports(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | IQ4_NL | NF4 | Q4_K | Q5_K | Q6_K | F16
    )
}

/// Whether this CPU runs the packed kernels: x86-64 with AVX-512 F/BW/VL/DQ and VNNI, or with
/// AVX2, FMA and F16C. Elsewhere callers keep ggml's blocks and [`crate::BlockFormat::vec_dot`].
pub fn available() -> bool {
    Kernels::best() != Kernels::Reference
}

/// Asks the CPU to bring the cache line at `p` into the caches (a hint: never faults, reads
/// nothing, so any address is allowed). For probes that stream memory the way the decode
/// kernels do (4 KiB ahead); does nothing off x86-64.
#[inline(always)]
pub fn prefetch_hint(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is part of SSE (baseline on x86-64) and is a hint: it cannot fault or
    // change memory, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// The implementations of [`gemm`]; [`Kernels::best`] is the one it takes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kernels {
    /// [`gemm_ref`]: plain Rust.
    Reference,
    /// AVX2 + FMA + F16C (`vpmaddubsw`).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Avx2,
    /// AVX-512 with VNNI (`vpdpbusd`).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Avx512Vnni,
}

impl Kernels {
    /// The fastest kernels this CPU runs (and `SimdPath`'s overrides allow).
    pub(crate) fn best() -> Kernels {
        #[cfg(target_arch = "x86_64")]
        {
            if x86::available() {
                return Kernels::Avx512Vnni;
            }
            if x86_avx2::available() {
                return Kernels::Avx2;
            }
        }
        Kernels::Reference
    }

    /// Whether these kernels read [`Layout::Interleaved16`] (for the types it serves).
    pub(crate) fn interleaves(self) -> bool {
        matches!(self, Kernels::Avx512Vnni | Kernels::Avx2)
    }

    /// Whether these kernels read `ty`'s interleaved blocks as this process packs them: the
    /// fifth bits of Q5 types come as bit planes for the AVX2 kernels, as masks for AVX-512
    /// (`interleaved::fifth_planes`); the others fall back to [`gemm_ref`]. (Only x86-64 has
    /// interleaving kernels; elsewhere the tests alone ask.)
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn weaves(self, ty: GgmlType) -> bool {
        self.interleaves()
            && (!interleaved::has_fifth(ty)
                || (self == Kernels::Avx2) == interleaved::fifth_planes())
    }

    /// Whether this CPU runs these kernels.
    pub(crate) fn runs_here(self) -> bool {
        match self {
            Kernels::Reference => true,
            #[cfg(target_arch = "x86_64")]
            Kernels::Avx2 => x86_avx2::available(),
            #[cfg(target_arch = "x86_64")]
            Kernels::Avx512Vnni => x86::available(),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
}

/// Tokens per pass of a kernel over its rows when several come (prefill): as many as fit their
/// int8 activations (`kp` bytes each) in about 256 KiB, a multiple of the tile's `t` tokens.
/// Without the blocking every register tile of rows read all tokens' activations again, and
/// those of a 4864-wide product (2.4 MiB for 512 tokens) do not stay in a 2 MiB L2.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // only the x86 kernels block
pub(crate) fn token_block(kp: usize, t: usize) -> usize {
    ((256 << 10) / kp.max(1)).max(t) / t * t
}

/// Activation rows unpacked for the packed kernels: levels, the scale of every 32 levels, and
/// per sub-block `scale * sum(levels)` (the factor of the weights' offset and minimum terms).
#[derive(Default, Clone)]
pub struct PackedActs {
    pub(crate) n: usize,
    pub(crate) cols: usize,
    /// Padded row length: a multiple of [`GROUP`].
    pub(crate) kp: usize,
    pub(crate) q: Vec<i8>,
    /// Scale of each 32 levels (for 256-blocks, the block's scale repeated).
    pub(crate) s32: Vec<f32>,
    /// scale * sum of levels, per 32 levels (Q8_1: ggml's f16-rounded `s`).
    pub(crate) c32: Vec<f32>,
    /// scale * sum of levels, per 16 levels (Q8_K's `bsums`; Q6_K's offsets need them).
    pub(crate) c16: Vec<f32>,
    /// -128 * sum of levels, per 32 levels: the offset term of interleaved kernels, in integers.
    pub(crate) off32: Vec<i32>,
    /// -sum of levels, per 16 levels (interleaved Q6_K's offset term, shifted).
    pub(crate) off16: Vec<i32>,
    /// F16 weights: the activations as they are (f32, as `BlockF16::vec_dot` takes them; the
    /// other arrays stay empty).
    pub(crate) xf: Vec<f32>,
    /// The weight type these were quantized for.
    pub(crate) for_type: Option<GgmlType>,
    blocks: Vec<u32>,
}

impl PackedActs {
    pub fn n(&self) -> usize {
        self.n
    }

    /// Whether these activations serve weights of type `ty` (same activation format).
    pub fn serves(&self, ty: GgmlType) -> bool {
        let act = crate::dynamic::activation_type;
        self.for_type.map(act) == Some(act(ty))
    }

    /// Quantizes `n` rows of `cols` floats for products with weights of type `ty`, reusing this
    /// value's buffers.
    pub fn quantize(&mut self, ty: GgmlType, x: &[f32], n: usize, cols: usize) {
        assert!(supports(ty), "{ty} has no packed layout");
        assert_eq!(x.len(), n * cols, "activation shape");
        let kp = cols.div_ceil(GROUP) * GROUP;
        self.n = n;
        self.cols = cols;
        self.kp = kp;
        self.for_type = Some(ty);
        if ty == GgmlType::F16 {
            resize(&mut self.xf, n * kp, 0.0);
            for (dst, src) in self.xf.chunks_exact_mut(kp).zip(x.chunks_exact(cols)) {
                dst[..cols].copy_from_slice(src);
            }
            return;
        }
        resize(&mut self.q, n * kp, 0);
        resize(&mut self.s32, n * kp / 32, 0.0);
        resize(&mut self.c32, n * kp / 32, 0.0);
        resize(&mut self.c16, n * kp / 16, 0.0);
        match ty {
            GgmlType::Q4_1 | GgmlType::Q5_1 => self.fill::<BlockQ8_1>(x, |b, q, s32, c32, c16| {
                let d = crate::fp::f16_to_f32(b.d);
                q.copy_from_slice(&b.qs);
                s32[0] = d;
                c32[0] = crate::fp::f16_to_f32(b.s);
                for (h, c) in c16.iter_mut().enumerate() {
                    c[0] = d * b.qs[16 * h..16 * h + 16]
                        .iter()
                        .map(|&v| v as i32)
                        .sum::<i32>() as f32;
                }
            }),
            GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K => {
                self.fill::<BlockQ8K>(x, |b, q, s32, c32, c16| {
                    q.copy_from_slice(&b.qs);
                    for j in 0..8 {
                        s32[j] = b.d;
                        c32[j] = b.d * (b.bsums[2 * j] as i32 + b.bsums[2 * j + 1] as i32) as f32;
                    }
                    for (c, &s) in c16.iter_mut().zip(&b.bsums) {
                        c[0] = b.d * s as f32;
                    }
                })
            }
            _ => self.fill::<BlockQ8_0>(x, |b, q, s32, c32, c16| {
                let d = crate::fp::f16_to_f32(b.d);
                q.copy_from_slice(&b.qs);
                s32[0] = d;
                let sum =
                    |r: std::ops::Range<usize>| b.qs[r].iter().map(|&v| v as i32).sum::<i32>();
                c32[0] = d * sum(0..32) as f32;
                c16[0][0] = d * sum(0..16) as f32;
                c16[1][0] = d * sum(16..32) as f32;
            }),
        }
    }

    /// Quantizes every row to blocks of `A` (ggml's activation rounding), then hands each block
    /// to `unpack` with its slices of the packed arrays, and sums each row's levels for the
    /// interleaved kernels' offset terms. Rows run in parallel when several come (a prompt's
    /// activations are megabytes; one thread quantizing them left the other idle).
    fn fill<A: BlockFormat>(
        &mut self,
        x: &[f32],
        unpack: impl Fn(&A, &mut [i8], &mut [f32], &mut [f32], &mut [[f32; 1]]) + Sync,
    ) {
        use rayon::prelude::*;
        let (cols, kp) = (self.cols, self.kp);
        resize(&mut self.off32, self.n * kp / 32, 0);
        resize(&mut self.off16, self.n * kp / 16, 0);
        let row = |blocks: &mut Vec<u32>, (x, q, s32, c32, c16, off32, off16): ActRow| {
            let per_row = cols / A::BLOCK_ELEMS;
            let bytes = per_row * A::BLOCK_BYTES;
            resize(blocks, bytes.div_ceil(4), 0);
            let e = A::BLOCK_ELEMS;
            let blocks: &mut [A] =
                bytemuck::cast_slice_mut(&mut bytemuck::cast_slice_mut::<u32, u8>(blocks)[..bytes]);
            A::quantize_act_row(x, blocks);
            // Padding past `cols` stays zero: padded weights meet zero activations.
            q[cols..].fill(0);
            s32[cols / 32..].fill(0.0);
            c32[cols / 32..].fill(0.0);
            c16[cols / 16..].fill(0.0);
            let c16: &mut [[f32; 1]] = bytemuck::cast_slice_mut(c16);
            for (i, b) in blocks.iter().enumerate() {
                unpack(
                    b,
                    &mut q[i * e..(i + 1) * e],
                    &mut s32[i * e / 32..(i + 1) * e / 32],
                    &mut c32[i * e / 32..(i + 1) * e / 32],
                    &mut c16[i * e / 16..(i + 1) * e / 16],
                );
            }
            let sum = |b: &[i8]| b.iter().map(|&v| v as i32).sum::<i32>();
            for (o, b) in off32.iter_mut().zip(q.chunks_exact(32)) {
                *o = -128 * sum(b);
            }
            for (o, b) in off16.iter_mut().zip(q.chunks_exact(16)) {
                *o = -sum(b);
            }
        };
        if self.n > 1 {
            (
                x.par_chunks(cols),
                self.q.par_chunks_mut(kp),
                self.s32.par_chunks_mut(kp / 32),
                self.c32.par_chunks_mut(kp / 32),
                self.c16.par_chunks_mut(kp / 16),
                self.off32.par_chunks_mut(kp / 32),
                self.off16.par_chunks_mut(kp / 16),
            )
                .into_par_iter()
                .for_each_init(Vec::new, row);
        } else if self.n == 1 {
            let mut blocks = std::mem::take(&mut self.blocks);
            let one = (
                x,
                &mut self.q[..],
                &mut self.s32[..],
                &mut self.c32[..],
                &mut self.c16[..],
                &mut self.off32[..],
                &mut self.off16[..],
            );
            row(&mut blocks, one);
            self.blocks = blocks;
        }
    }
}

/// One activation row's input and its slices of [`PackedActs`]' arrays.
type ActRow<'a> = (
    &'a [f32],
    &'a mut [i8],
    &'a mut [f32],
    &'a mut [f32],
    &'a mut [f32],
    &'a mut [i32],
    &'a mut [i32],
);

fn resize<T: Copy>(v: &mut Vec<T>, n: usize, zero: T) {
    v.clear();
    v.resize(n, zero);
}

/// The shapes of a product of `w`'s `rows` with `a`, whatever its output.
fn check_operands(w: &PackedMatrix, rows: &Range<usize>, a: &PackedActs) {
    assert!(rows.end <= w.rows(), "row range past the matrix");
    assert!(
        a.serves(w.ty()),
        "activations quantized for {:?}, not for {}",
        a.for_type,
        w.ty()
    );
    assert_eq!(a.cols, w.cols(), "activation length");
}

fn check(w: &PackedMatrix, rows: &Range<usize>, a: &PackedActs, out: &[f32]) {
    check_operands(w, rows, a);
    assert_eq!(out.len(), rows.len() * a.n, "output length");
}

/// out[(r - rows.start) * n + t] = row r of `w` . activation row t, on the packed kernels.
pub fn gemm(w: &PackedMatrix, rows: Range<usize>, a: &PackedActs, out: &mut [f32]) {
    gemm_on(Kernels::best(), w, rows, a, out)
}

/// The same products token-major: out[t * rows.len() + (r - rows.start)]. Native for
/// [`Layout::Interleaved16`] (whose `rows.start` must then be a multiple of its 16 rows);
/// other layouts go through [`gemm`] and a transpose.
pub fn gemm_token_major(w: &PackedMatrix, rows: Range<usize>, a: &PackedActs, out: &mut [f32]) {
    gemm_token_major_on(Kernels::best(), w, rows, a, out)
}

/// [`gemm_token_major`] for the tokens `tokens` of the activations only:
/// `out[(t - tokens.start) * rows.len() + (r - rows.start)]`, so that threads may split a batch
/// by tokens, each writing a contiguous block of a token-major output. Only where this CPU's
/// kernels read `w`'s layout natively (interleaved; `rows.start` a multiple of its 16 rows):
/// returns false, writing nothing, elsewhere.
pub fn gemm_token_major_tokens(
    w: &PackedMatrix,
    rows: Range<usize>,
    a: &PackedActs,
    tokens: Range<usize>,
    out: &mut [f32],
) -> bool {
    check_operands(w, &rows, a);
    assert!(
        tokens.start <= tokens.end && tokens.end <= a.n,
        "token range"
    );
    assert_eq!(out.len(), rows.len() * tokens.len(), "output length");
    let m = rows.len();
    woven(
        Kernels::best(),
        w,
        &rows,
        a,
        out,
        Placement {
            tokens,
            tok: m,
            row: 1,
        },
    )
}

pub(crate) fn gemm_token_major_on(
    k: Kernels,
    w: &PackedMatrix,
    rows: Range<usize>,
    a: &PackedActs,
    out: &mut [f32],
) {
    check(w, &rows, a, out);
    let m = rows.len();
    if w.layout() == Layout::Interleaved16 && k.interleaves() && k.runs_here() {
        assert!(
            rows.start.is_multiple_of(interleaved::ROWS),
            "interleaved rows start at a multiple of {}",
            interleaved::ROWS
        );
    }
    if woven(
        k,
        w,
        &rows,
        a,
        out,
        Placement {
            tokens: 0..a.n,
            tok: m,
            row: 1,
        },
    ) {
        return;
    }
    let mut rm = vec![0f32; out.len()];
    gemm_on(k, w, rows, a, &mut rm);
    for (r, row) in rm.chunks_exact(a.n.max(1)).enumerate() {
        for (t, &v) in row.iter().enumerate() {
            out[t * m + r] = v;
        }
    }
}

/// Which tokens a woven product computes, and where: token t, row i of the call's range at
/// `out[(t - tokens.start) * tok + i * row]`.
struct Placement {
    tokens: Range<usize>,
    tok: usize,
    row: usize,
}

/// Runs the interleaved kernels, writing as `place` says, when `w` is interleaved, `k` reads
/// that layout and runs here, and `rows` starts at a unit; returns whether it did.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn woven(
    k: Kernels,
    w: &PackedMatrix,
    rows: &Range<usize>,
    a: &PackedActs,
    out: &mut [f32],
    place: Placement,
) -> bool {
    let Placement { tokens, tok, row } = place;
    #[cfg(target_arch = "x86_64")]
    if w.layout() == Layout::Interleaved16
        && k.weaves(w.ty())
        && k.runs_here()
        && rows.start.is_multiple_of(interleaved::ROWS)
    {
        // Callers pass (rows.len(), 1) or (1, tokens.len()): with t in `tokens` and
        // i < rows.len() every write lands inside `out` (tokens.len() * rows.len() values,
        // checked by the callers).
        debug_assert!(
            (tok, row) == (rows.len(), 1) || (tok, row) == (1, tokens.len()),
            "strides"
        );
        assert!(
            tokens.start <= tokens.end && tokens.end <= a.n,
            "token range"
        );
        let s = x86_i16::Strides {
            tok,
            row,
            first: tokens.start,
            end: tokens.end,
        };
        // SAFETY: the CPU has the instructions (`runs_here`); shapes were checked,
        // `rows.start` is a unit boundary, and the strides keep every write inside `out`.
        unsafe {
            if k == Kernels::Avx2 {
                x86_woven_avx2::gemm(w, rows.clone(), a, out, s)
            } else {
                x86_i16::gemm(w, rows.clone(), a, out, s)
            }
        };
        return true;
    }
    false
}

/// [`gemm`] on the given kernels; those this CPU cannot run, or that do not read `w`'s
/// layout, fall back to [`gemm_ref`].
pub(crate) fn gemm_on(
    k: Kernels,
    w: &PackedMatrix,
    rows: Range<usize>,
    a: &PackedActs,
    out: &mut [f32],
) {
    check(w, &rows, a, out);
    if !k.runs_here() {
        return gemm_ref(w, rows, a, out);
    }
    if w.layout() == Layout::Interleaved16 {
        if !woven(
            k,
            w,
            &rows,
            a,
            out,
            Placement {
                tokens: 0..a.n,
                tok: 1,
                row: a.n,
            },
        ) {
            gemm_ref(w, rows, a, out);
        }
        return;
    }
    match k {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has the instructions (`runs_here`); shapes were checked by `check`,
        // and packed rows and activation rows are padded as the kernels read them.
        Kernels::Avx512Vnni => unsafe { x86::gemm(w, rows, a, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, for AVX2/FMA/F16C.
        Kernels::Avx2 => unsafe { x86_avx2::gemm(w, rows, a, out) },
        _ => gemm_ref(w, rows, a, out),
    }
}

/// The same product in plain Rust over the packed layout.
pub fn gemm_ref(w: &PackedMatrix, rows: Range<usize>, a: &PackedActs, out: &mut [f32]) {
    check(w, &rows, a, out);
    if w.ty() == GgmlType::F16 {
        let mut row = vec![0f32; a.cols];
        for (ri, r) in rows.enumerate() {
            w.dequantize_row(r, &mut row);
            for t in 0..a.n {
                let x = &a.xf[t * a.kp..t * a.kp + a.cols];
                out[ri * a.n + t] = row.iter().zip(x).map(|(w, x)| w * x).sum();
            }
        }
        return;
    }
    let mut u = vec![0u8; a.kp];
    let mut scale = vec![0f32; a.kp / 16];
    let mut bias = vec![0f32; a.kp / 16];
    for (ri, r) in rows.enumerate() {
        // Per row: levels, the weight scale of every 16 levels, and the bias of every 16 levels
        // (each bias counts once per 16, against c16; 32-granular biases are split in halves
        // that share the scale, which is exact).
        layout::unpack_row(w, r, &mut u, &mut scale, &mut bias);
        for t in 0..a.n {
            let q = &a.q[t * a.kp..(t + 1) * a.kp];
            let s32 = &a.s32[t * a.kp / 32..(t + 1) * a.kp / 32];
            let c16 = &a.c16[t * a.kp / 16..(t + 1) * a.kp / 16];
            let c32 = &a.c32[t * a.kp / 32..(t + 1) * a.kp / 32];
            let mut sum = 0f32;
            for g in 0..a.kp / 16 {
                let isum: i32 = (0..16)
                    .map(|i| u[16 * g + i] as i32 * q[16 * g + i] as i32)
                    .sum();
                sum += isum as f32 * (scale[g] * s32[g / 2]);
            }
            sum += layout::bias_dot(w.ty(), &bias, c16, c32);
            out[ri * a.n + t] = sum;
        }
    }
}

#[cfg(test)]
mod tests;
