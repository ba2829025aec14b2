//! The loop both x86 kernel sets run around their register tiles: rows of the caller's range in
//! tiles of R, tokens in cache-sized blocks and, within a block, in tiles of T (then one by one).

use super::{token_block, PackedActs, PackedMatrix};
use std::ops::Range;

/// One register tile of a kernel set for one packed type: rows `w` (packed row pointers) times
/// activation rows `t0..t0+T`.
pub(super) trait RegisterTile {
    /// # Safety
    /// The CPU runs the kernel set's instructions; the row pointers and `t0..t0+T` lie inside
    /// a matrix and activations that passed `super::check`.
    unsafe fn tile<const R: usize, const T: usize>(
        w: [*const u8; R],
        a: &PackedActs,
        t0: usize,
        cols: usize,
    ) -> [[f32; T]; R];
}

/// `out` (`[rows][a.n]`, rows from `rows.start`) = `w[rows]` times the activations. Tokens
/// come in blocks of [`token_block`] so that every row tile of a block reads their activations
/// from L2.
///
/// # Safety
/// As [`RegisterTile::tile`]; inlined into the caller's `#[target_feature]` function.
#[inline(always)]
pub(super) unsafe fn drive<K: RegisterTile, const R: usize, const T: usize>(
    w: &PackedMatrix,
    rows: Range<usize>,
    a: &PackedActs,
    out: &mut [f32],
) {
    let n = a.n;
    let cols = w.cols();
    let row = |r: usize| w.row(r).as_ptr();
    let block = token_block(a.kp, T);
    let mut t_lo = 0;
    while t_lo < n {
        let t_hi = (t_lo + block).min(n);
        let mut r = rows.start;
        while r < rows.end {
            let base = (r - rows.start) * n;
            if r + R <= rows.end {
                let ptrs: [*const u8; R] = std::array::from_fn(|i| row(r + i));
                let mut t = t_lo;
                while t + T <= t_hi {
                    let v = K::tile::<R, T>(ptrs, a, t, cols);
                    for i in 0..R {
                        for j in 0..T {
                            out[base + i * n + t + j] = v[i][j];
                        }
                    }
                    t += T;
                }
                while t < t_hi {
                    let v = K::tile::<R, 1>(ptrs, a, t, cols);
                    for i in 0..R {
                        out[base + i * n + t] = v[i][0];
                    }
                    t += 1;
                }
                r += R;
            } else {
                let mut t = t_lo;
                while t + T <= t_hi {
                    let v = K::tile::<1, T>([row(r)], a, t, cols);
                    out[base + t..base + t + T].copy_from_slice(&v[0]);
                    t += T;
                }
                while t < t_hi {
                    out[base + t] = K::tile::<1, 1>([row(r)], a, t, cols)[0][0];
                    t += 1;
                }
                r += 1;
            }
        }
        t_lo = t_hi;
    }
}
