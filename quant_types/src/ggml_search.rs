//! The scale searches of ggml's reference quantizers, written so that every floating-point
//! operation happens in the same order and precision as in ggml's C (x86-64, SSE, no FMA
//! contraction): that is what makes the bytes equal. Each function notes which ggml routine's
//! behaviour it reproduces; changing an expression's order changes the bytes.

/// Rounds to the nearest integer, ties to even, the way ggml's `nearest_int` does it: by adding
/// 1.5 * 2^23 and reading the mantissa. Valid for |x| <= 2^22; outside that (and for NaN) it
/// returns the same garbage ggml's trick does, which keeps degenerate inputs byte-identical too.
#[inline(always)]
pub(crate) fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0;
    (v.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// C's float-to-integer conversion as x86-64 performs it (`cvttss2si`): truncation toward zero,
/// and the "integer indefinite" value `i32::MIN` for NaN and out-of-range inputs, where Rust's
/// `as` would saturate instead.
#[inline(always)]
pub(crate) fn c_trunc_i32(x: f32) -> i32 {
    if x.is_nan() || !(-2_147_483_648.0..2_147_483_648.0).contains(&x) {
        i32::MIN
    } else {
        x as i32
    }
}

/// `(int8_t)x` for a float, then widened: truncation and wrap-around as in C on x86-64.
#[inline(always)]
pub(crate) fn c_float_to_i8(x: f32) -> i32 {
    c_trunc_i32(x) as i8 as i32
}

/// `(uint8_t)x` for a float, then widened.
#[inline(always)]
pub(crate) fn c_float_to_u8(x: f32) -> i32 {
    c_trunc_i32(x) as u8 as i32
}

/// ggml's GROUP_MAX_EPS: below this absolute maximum a group counts as all zero.
pub(crate) const GROUP_MAX_EPS: f32 = 1e-15;

/// Symmetric quantization of `x` to levels `-nmax..nmax-1` (stored shifted by `nmax` in `l`),
/// with ggml's `make_qx_quants` search for the scale that minimises the weighted squared error.
/// Only the weightings qgguf's reference paths use are supported: `rmse_type` 1 (weights x^2),
/// without an importance matrix.
pub(crate) fn make_qx_quants_rmse1(nmax: i32, x: &[f32], l: &mut [i8]) -> f32 {
    let n = x.len();
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l[..n].fill(0);
        return 0.0;
    }
    let clamp = |q: i32| q.clamp(-nmax, nmax - 1);
    let mut iscale = -(nmax as f32) / max;
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for i in 0..n {
        let q = clamp(nearest_int(iscale * x[i]));
        l[i] = (q + nmax) as i8;
        let w = x[i] * x[i];
        let qf = q as f32;
        sumlx += w * x[i] * qf;
        suml2 += w * qf * qf;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1f32 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &xi in x {
            let qf = clamp(nearest_int(iscale * xi)) as f32;
            let w = xi * xi;
            sumlx += w * xi * qf;
            suml2 += w * qf * qf;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for i in 0..n {
                l[i] = (nmax + clamp(nearest_int(iscale * x[i]))) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Asymmetric quantization of `x` to levels `0..=nmax` with a minimum, ggml's
/// `make_qkx2_quants`: a first guess from the range, then `nstep + 1` trial scales around it,
/// each refined by weighted least squares for scale and min, keeping the lowest weighted squared
/// error. Returns the scale and writes `-min` (a non-negative offset) to `the_min`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    the_min: &mut f32,
    laux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> f32 {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l[..n].fill(0);
        *the_min = -min;
        return 0.0;
    }
    let nmax_f = nmax as f32;
    let mut iscale = nmax_f / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l[i] = q as u8;
        let diff = scale * q as f32 + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    if nstep < 1 {
        *the_min = -min;
        return scale;
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax_f) / (max - min);
        let mut sum_l = 0.0f32;
        let mut sum_l2 = 0.0f32;
        let mut sum_xl = 0.0f32;
        for i in 0..n {
            let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = q as u8;
            let w = weights[i];
            let qf = q as f32;
            sum_l += w * qf;
            sum_l2 += w * qf * qf;
            sum_xl += w * qf * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * (diff * diff);
            }
            if cur_error < best_error {
                l[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    scale
}

/// Index of the table entry nearest to `x` in a sorted table of 16 int8 levels, as ggml's
/// `best_index_int8` decides it (binary search; an exact tie goes to the upper entry).
#[inline]
pub(crate) fn best_index_int8(values: &[i8; 16], x: f32) -> usize {
    let n = values.len();
    if x <= values[0] as f32 {
        return 0;
    }
    if x >= values[n - 1] as f32 {
        return n - 1;
    }
    let mut ml = 0usize;
    let mut mu = n - 1;
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < values[mav] as f32 {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - (values[mu - 1] as f32) < values[mu] as f32 - x {
        mu - 1
    } else {
        mu
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(-0.5), 0);
        assert_eq!(nearest_int(-1.5), -2);
        assert_eq!(nearest_int(-3.49), -3);
        assert_eq!(nearest_int(4_194_303.0), 4_194_303);
    }

    #[test]
    fn c_conversions_follow_x86() {
        assert_eq!(c_float_to_i8(8.99), 8);
        assert_eq!(c_float_to_i8(-0.99), 0);
        assert_eq!(c_float_to_i8(200.0), -56);
        assert_eq!(c_trunc_i32(f32::NAN), i32::MIN);
        assert_eq!(c_trunc_i32(3e9), i32::MIN);
        assert_eq!(c_float_to_u8(255.9), 255);
    }

    #[test]
    fn best_index_picks_nearest_with_ties_low() {
        let v: [i8; 16] = [
            -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
        ];
        assert_eq!(best_index_int8(&v, -200.0), 0);
        assert_eq!(best_index_int8(&v, 200.0), 15);
        assert_eq!(best_index_int8(&v, 0.0), 8);
        assert_eq!(best_index_int8(&v, 7.0), 9); // |7-1| = 6 = |13-7|: tie goes to the upper index
        assert_eq!(best_index_int8(&v, 6.9), 8);
    }
}
