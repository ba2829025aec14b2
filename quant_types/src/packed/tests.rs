use super::*;
use crate::dynamic;

/// Deterministic floats with some outliers, like a model's weights and activations.
fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|i| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = ((s >> 40) as f32) / (1u64 << 24) as f32 - 0.5;
            if i % 97 == 3 {
                u * 40.0
            } else {
                u
            }
        })
        .collect()
}

/// Reference: per-row dot products on ggml's blocks (scalar), activations quantized as the
/// packed path quantizes them.
fn reference(ty: GgmlType, w: &[u8], rows: usize, cols: usize, x: &[f32], n: usize) -> Vec<f32> {
    let row_bytes = ty.row_bytes(cols).unwrap();
    let mut out = vec![0f32; rows * n];
    for t in 0..n {
        let acts = dynamic::quantize_acts_for(ty, &x[t * cols..(t + 1) * cols]).unwrap();
        for r in 0..rows {
            let wr = &w[r * row_bytes..(r + 1) * row_bytes];
            out[r * n + t] =
                dynamic::vec_dot(ty, crate::SimdPath::Scalar, cols, wr, &acts).unwrap();
        }
    }
    out
}

fn check_close(what: &str, got: &[f32], want: &[f32]) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 2e-4 * (1.0 + w.abs()),
            "{what}: element {i}: {g} vs {w}"
        );
    }
}

/// `rows` x `cols` weights of `ty` (from seed `seed`), as the file stores them and packed.
fn quantized(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> (Vec<u8>, PackedMatrix) {
    let wf = data(rows * cols, seed);
    let mut w = vec![0u8; ty.row_bytes(cols).unwrap() * rows];
    dynamic::quantize(ty, &wf, &mut w).unwrap();
    let m = PackedMatrix::pack_with(ty, rows, cols, &w, Layout::Rows).unwrap();
    (w, m)
}

/// The kernel sets this CPU runs (each is tested, not only the best one).
fn kernels_here() -> impl Iterator<Item = Kernels> {
    [Kernels::Avx2, Kernels::Avx512Vnni]
        .into_iter()
        .filter(|k| k.runs_here())
}

#[test]
fn packed_products_equal_the_reference_for_every_type() {
    use GgmlType::*;
    for ty in [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, NF4, Q4_K, Q5_K, Q6_K] {
        let shapes: &[usize] = if ty.block_elems() == 256 {
            &[256, 768, 1280]
        } else if ty.block_elems() == 64 {
            &[64, 896, 1600]
        } else {
            &[32, 864, 896, 1056]
        };
        for &cols in shapes {
            let rows = 7;
            let (w, m) = quantized(ty, rows, cols, cols as u64 + ty.id() as u64);
            assert_eq!(m.unit_bytes(), layout::packed_row_bytes(ty, cols));
            // Dequantizing from the packed copy gives ggml's floats exactly.
            let mut want = vec![0f32; cols];
            let mut got = vec![0f32; cols];
            let rb = ty.row_bytes(cols).unwrap();
            for r in 0..rows {
                dynamic::dequantize(ty, &w[r * rb..(r + 1) * rb], &mut want).unwrap();
                m.dequantize_row(r, &mut got);
                assert_eq!(got, want, "{ty} row {r} dequantized from the packed layout");
            }
            // 13 tokens: whole token tiles of every shape the kernels use, and a remainder.
            for n in [1usize, 5, 13] {
                let x = data(n * cols, 7 + n as u64);
                let want = reference(ty, &w, rows, cols, &x, n);
                let mut acts = PackedActs::default();
                acts.quantize(ty, &x, n, cols);
                let mut got = vec![0f32; rows * n];
                gemm_ref(&m, 0..rows, &acts, &mut got);
                check_close(&format!("{ty} {cols} cols, n={n}, reference"), &got, &want);
                let mut got = vec![0f32; rows * n];
                gemm(&m, 0..rows, &acts, &mut got);
                check_close(&format!("{ty} {cols} cols, n={n}, SIMD"), &got, &want);
                for k in kernels_here() {
                    let mut got = vec![0f32; rows * n];
                    gemm_on(k, &m, 0..rows, &acts, &mut got);
                    check_close(&format!("{ty} {cols} cols, n={n}, {k:?}"), &got, &want);
                    let mut part = vec![0f32; 3 * n];
                    gemm_on(k, &m, 2..5, &acts, &mut part);
                    check_close(
                        &format!("{ty} rows 2..5, {k:?}"),
                        &part,
                        &want[2 * n..5 * n],
                    );
                }
                // A sub-range of rows lands at the start of the output.
                let mut part = vec![0f32; 3 * n];
                gemm(&m, 2..5, &acts, &mut part);
                check_close(&format!("{ty} rows 2..5"), &part, &want[2 * n..5 * n]);
            }
        }
    }
}

/// Prefill long enough that the kernels split the tokens in several blocks (`token_block`),
/// with a remainder that is not a whole token tile: every kernel set still equals the reference.
#[test]
fn token_blocks_cover_every_token() {
    use GgmlType::*;
    let (rows, cols) = (5, 1024);
    for ty in [Q8_0, IQ4_NL, Q4_K, Q6_K] {
        let (w, m) = quantized(ty, rows, cols, 11 + ty.id() as u64);
        let mut acts = PackedActs::default();
        acts.quantize(ty, &data(cols, 1), 1, cols);
        let n = 2 * super::token_block(acts.kp, 4) + 5;
        let x = data(n * cols, 3);
        let want = reference(ty, &w, rows, cols, &x, n);
        acts.quantize(ty, &x, n, cols);
        for k in kernels_here() {
            let mut got = vec![0f32; rows * n];
            gemm_on(k, &m, 0..rows, &acts, &mut got);
            check_close(&format!("{ty} n={n}, {k:?}"), &got, &want);
        }
    }
}

#[test]
fn unsupported_types_are_refused() {
    assert!(PackedMatrix::pack(GgmlType::BF16, 1, 32, &[0u8; 64]).is_none());
    // F16 is woven or left as the file has it.
    assert!(PackedMatrix::alloc_with(GgmlType::F16, 1, 32, Layout::Rows).is_none());
    assert!(!supports(GgmlType::BF16));
}

/// The interleaved layout: every type it serves, a partial last unit of rows, token tiles of
/// 8, 4 and 1 and several token blocks, both output orders, a sub-range starting at a unit;
/// and ggml's floats back from `dequantize_row`.
#[test]
fn interleaved_products_equal_the_reference() {
    use GgmlType::*;
    for ty in [
        Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, NF4, Q4_K, Q5_K, Q6_K, F16,
    ] {
        let shapes = if ty.block_elems() == 256 {
            [(16, 256), (7, 768), (37, 1024)]
        } else {
            [(16, 64), (7, 896), (37, 1024)]
        };
        for (rows, cols) in shapes {
            let wf = data(rows * cols, 5 + cols as u64);
            let rb = ty.row_bytes(cols).unwrap();
            let mut w = vec![0u8; rb * rows];
            dynamic::quantize(ty, &wf, &mut w).unwrap();
            let m = PackedMatrix::pack_with(ty, rows, cols, &w, Layout::Interleaved16).unwrap();
            assert_eq!(
                m.bytes(),
                rows.div_ceil(16) * interleaved::unit_bytes(ty, cols)
            );
            let mut want = vec![0f32; cols];
            let mut got = vec![0f32; cols];
            for r in 0..rows {
                dynamic::dequantize(ty, &w[r * rb..(r + 1) * rb], &mut want).unwrap();
                m.dequantize_row(r, &mut got);
                assert_eq!(
                    got, want,
                    "{ty} row {r} dequantized from the interleaved layout"
                );
            }
            let mut acts = PackedActs::default();
            acts.quantize(ty, &data(cols, 1), 1, cols);
            let act_bytes = if ty == F16 { 4 * acts.kp } else { acts.kp };
            let long = 2 * super::token_block(act_bytes, 8) + 13;
            let ns: &[usize] = if rows == 37 {
                &[1, 4, 13, long]
            } else {
                &[1, 13]
            };
            for &n in ns {
                let x = data(n * cols, 9 + n as u64);
                let want = reference(ty, &w, rows, cols, &x, n);
                acts.quantize(ty, &x, n, cols);
                // (gemm_ref itself is checked above on the row layout; here it is the fallback
                // and its float offset terms cancel, hence the looser tolerance where it stands in.)
                for k in std::iter::once(Kernels::Reference).chain(kernels_here()) {
                    let what = format!("{ty} {rows}x{cols}, n={n}, {k:?}");
                    let close = |what: &str, got: &[f32]| {
                        let tol = if k.weaves(ty) { 2e-4 } else { 2e-3 };
                        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                            assert!(
                                (g - w).abs() <= tol * (1.0 + w.abs()),
                                "{what}: {i}: {g} vs {w}"
                            );
                        }
                    };
                    let mut got = vec![0f32; rows * n];
                    gemm_on(k, &m, 0..rows, &acts, &mut got);
                    close(&what, &got);
                    let mut tm = vec![0f32; rows * n];
                    gemm_token_major_on(k, &m, 0..rows, &acts, &mut tm);
                    let back: Vec<f32> =
                        (0..rows * n).map(|i| tm[(i % n) * rows + i / n]).collect();
                    close(&format!("{what}, token-major"), &back);
                    // A window of tokens, on the best kernels, bit for bit the full product's
                    // block (the window crosses tiles of 8 and token blocks where n is long).
                    if n > 4 && k == Kernels::best() {
                        let win = 3..n - 1;
                        let mut tw = vec![0f32; rows * win.len()];
                        let done = super::gemm_token_major_tokens(
                            &m,
                            0..rows,
                            &acts,
                            win.clone(),
                            &mut tw,
                        );
                        assert_eq!(done, k.interleaves(), "{what}: windowed product run");
                        if done {
                            assert_eq!(
                                tw,
                                tm[win.start * rows..win.end * rows],
                                "{what}, tokens {win:?}"
                            );
                        }
                    }
                    if rows > 16 {
                        let part = 16..rows;
                        let mut tm = vec![0f32; part.len() * n];
                        gemm_token_major_on(k, &m, part.clone(), &acts, &mut tm);
                        for (i, r) in part.clone().enumerate() {
                            for t in 0..n {
                                let (g, w) = (tm[t * part.len() + i], want[r * n + t]);
                                assert!(
                                    (g - w).abs() <= 2e-3 * (1.0 + w.abs()),
                                    "{what}, rows {part:?}: row {r} token {t}: {g} vs {w}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(PackedMatrix::alloc_with(BF16, 16, 256, Layout::Interleaved16).is_none());
}

/// Q8_0 levels of -128: ggml's quantizers never write them, but a file may hold them, and the
/// kernels' sign trick must still multiply them exactly (|w| = 128 fits the unsigned operand).
#[test]
fn q8_0_levels_of_minus_128_multiply_exactly() {
    let (rows, cols, n) = (16, 256, 5);
    let ty = GgmlType::Q8_0;
    let rb = ty.row_bytes(cols).unwrap();
    let mut w = vec![0u8; rows * rb];
    let f = data(rows * cols, 21);
    dynamic::quantize(ty, &f, &mut w).unwrap();
    // Every 7th level becomes -128 (bytes 2.. of each 34-byte block are the levels).
    for (i, blk) in w.chunks_exact_mut(34).enumerate() {
        for (j, q) in blk[2..].iter_mut().enumerate() {
            if (i + j) % 7 == 0 {
                *q = 0x80;
            }
        }
    }
    let x = data(n * cols, 22);
    let want = reference(ty, &w, rows, cols, &x, n);
    let mut acts = PackedActs::default();
    acts.quantize(ty, &x, n, cols);
    for layout in [Layout::Rows, Layout::Interleaved16] {
        let m = PackedMatrix::pack_with(ty, rows, cols, &w, layout).unwrap();
        for k in kernels_here() {
            let mut got = vec![0f32; rows * n];
            gemm_on(k, &m, 0..rows, &acts, &mut got);
            check_close(&format!("Q8_0 with -128, {layout:?}, {k:?}"), &got, &want);
        }
    }
}
