//! Element-wise and row-wise operations of the transformer graphs, in f32.

/// Values from which a row-wise operation runs on the rayon pool: a prompt's rows, not a
/// decoded token's (for which waking the pool would cost more than the work).
pub const PARALLEL_FROM: usize = 1 << 15;

/// out = x / rms(x) * w, per row of `dim`. The sum of squares is accumulated in f64, as ggml
/// does: Qwen2's residual stream carries a few values in the thousands. Rows are independent:
/// a prompt's are normalized in parallel, with the same results.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let dim = w.len();
    if x.len() >= PARALLEL_FROM && x.len() > dim {
        use rayon::prelude::*;
        let rows = (PARALLEL_FROM / 4 / dim).max(1) * dim;
        x.par_chunks(rows)
            .zip(out.par_chunks_mut(rows))
            .for_each(|(x, out)| rms_norm_rows(x, w, eps, out));
        return;
    }
    rms_norm_rows(x, w, eps, out)
}

fn rms_norm_rows(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let dim = w.len();
    for (xr, or) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        let ss: f64 = xr.iter().map(|v| (v * v) as f64).sum::<f64>();
        let mean = (ss / dim as f64) as f32;
        let inv = 1.0 / (mean + eps).sqrt();
        for ((o, &v), &g) in or.iter_mut().zip(xr).zip(w) {
            *o = v * inv * g;
        }
    }
}

/// out = (x - mean) / sqrt(var + eps) * w + b, per row of `dim` (b optional).
pub fn layer_norm(x: &[f32], w: &[f32], b: Option<&[f32]>, eps: f32, out: &mut [f32]) {
    let dim = w.len();
    for (xr, or) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        let mean = xr.iter().sum::<f32>() / dim as f32;
        let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / dim as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for (i, (o, &v)) in or.iter_mut().zip(xr).enumerate() {
            *o = (v - mean) * inv * w[i] + b.map_or(0.0, |b| b[i]);
        }
    }
}

/// In-place layer norm.
pub fn layer_norm_inplace(x: &mut [f32], w: &[f32], b: Option<&[f32]>, eps: f32) {
    let dim = w.len();
    for xr in x.chunks_exact_mut(dim) {
        let mean = xr.iter().sum::<f32>() / dim as f32;
        let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / dim as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for (i, v) in xr.iter_mut().enumerate() {
            *v = (*v - mean) * inv * w[i] + b.map_or(0.0, |b| b[i]);
        }
    }
}

/// y += b, per row.
pub fn add_bias(y: &mut [f32], b: &[f32]) {
    for row in y.chunks_exact_mut(b.len()) {
        for (v, &c) in row.iter_mut().zip(b) {
            *v += c;
        }
    }
}

pub fn add_inplace(y: &mut [f32], x: &[f32]) {
    for (a, &b) in y.iter_mut().zip(x) {
        *a += b;
    }
}

#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// GELU with the exact error function (PyTorch's and Hugging Face's "gelu").
#[inline]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// Sine and cosine of the rotary angle of pair `i` at position `pos`: pos * theta^(-2i/dim),
/// in f64, rounded to f32 (the one definition both [`rope_neox`] and [`RopeTable`] use).
#[inline]
fn rope_angle(pos: usize, i: usize, dim: usize, theta: f32) -> (f32, f32) {
    let freq = 1.0 / (theta as f64).powf(2.0 * i as f64 / dim as f64);
    let angle = pos as f64 * freq;
    (angle.sin() as f32, angle.cos() as f32)
}

/// Rotary embedding in the "NEOX" / rotate-half layout used by Qwen2 and ModernBERT: dimension i
/// pairs with i + d/2. `x` holds `heads` vectors of `dim`, all at position `pos`. The reference
/// for [`RopeTable::apply`], which the models use.
pub fn rope_neox(x: &mut [f32], dim: usize, pos: usize, theta: f32) {
    let half = dim / 2;
    for head in x.chunks_exact_mut(dim) {
        for i in 0..half {
            let (s, c) = rope_angle(pos, i, dim, theta);
            let (a, b) = (head[i], head[i + half]);
            head[i] = a * c - b * s;
            head[i + half] = a * s + b * c;
        }
    }
}

/// The rotary angles' sines and cosines for positions 0..n, computed once per model state
/// instead of once per head, layer and token: `rope_neox` spent a `powf`, a `sin` and a `cos`
/// in f64 on every pair, which for a ModernBERT batch of 32 x 128 tokens is 6 million of each
/// per layer, on one thread. Same values as [`rope_neox`], so the same results to the bit.
#[derive(Clone, Debug, Default)]
pub struct RopeTable {
    dim: usize,
    theta: f32,
    /// `positions * dim/2` entries each, position-major.
    sin: Vec<f32>,
    cos: Vec<f32>,
}

impl RopeTable {
    /// Makes the table hold positions 0..`positions` for (`dim`, `theta`): extends it, or
    /// rebuilds it when the head size or base changed.
    pub fn ensure(&mut self, dim: usize, theta: f32, positions: usize) {
        let half = dim / 2;
        if self.dim != dim || self.theta.to_bits() != theta.to_bits() {
            *self = RopeTable {
                dim,
                theta,
                ..Default::default()
            };
        }
        let have = self.sin.len().checked_div(half).unwrap_or(positions);
        for pos in have..positions {
            for i in 0..half {
                let (s, c) = rope_angle(pos, i, dim, theta);
                self.sin.push(s);
                self.cos.push(c);
            }
        }
    }

    /// Positions the table holds.
    pub fn positions(&self) -> usize {
        self.sin.len().checked_div(self.dim / 2).unwrap_or(0)
    }

    /// The table as (cos, sin) pairs, position-major: what the GPU's kernels read.
    pub fn cos_sin_pairs(&self) -> Vec<f32> {
        self.cos
            .iter()
            .zip(&self.sin)
            .flat_map(|(&c, &s)| [c, s])
            .collect()
    }

    /// [`rope_neox`] of `x` (whole heads) at `pos`, which [`RopeTable::ensure`] must cover.
    pub fn apply(&self, x: &mut [f32], pos: usize) {
        let half = self.dim / 2;
        let (sin, cos) = (
            &self.sin[pos * half..(pos + 1) * half],
            &self.cos[pos * half..(pos + 1) * half],
        );
        for head in x.chunks_exact_mut(self.dim) {
            let (lo, hi) = head.split_at_mut(half);
            for (((a, b), &s), &c) in lo.iter_mut().zip(hi.iter_mut()).zip(sin).zip(cos) {
                let (x0, x1) = (*a, *b);
                *a = x0 * c - x1 * s;
                *b = x0 * s + x1 * c;
            }
        }
    }
}

/// In-place softmax; `x` may hold -inf for masked entries.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        x.fill(0.0);
        return;
    }
    let mut sum = 0.0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Four partial sums: the compiler vectorizes this.
    let mut acc = [0.0f32; 8];
    let chunks = a.len() / 8 * 8;
    for (ca, cb) in a[..chunks].chunks_exact(8).zip(b[..chunks].chunks_exact(8)) {
        for k in 0..8 {
            acc[k] += ca[k] * cb[k];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in chunks..a.len() {
        s += a[i] * b[i];
    }
    s
}

/// y += a * x
#[inline]
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (v, &u) in y.iter_mut().zip(x) {
        *v += a * u;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn norms_and_activations() {
        let x = [1.0f32, 2.0, 3.0, 4.0];
        let mut o = [0.0; 4];
        rms_norm(&x, &[1.0; 4], 0.0, &mut o);
        let rms = (30.0f32 / 4.0).sqrt();
        assert!((o[3] - 4.0 / rms).abs() < 1e-6);
        layer_norm(&x, &[1.0; 4], Some(&[0.5; 4]), 0.0, &mut o);
        assert!((o.iter().sum::<f32>() - 2.0).abs() < 1e-5);
        assert!((gelu(1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((silu(2.0) - 1.761_594_2).abs() < 1e-6);
        let mut s = [1.0f32, 2.0, f32::NEG_INFINITY];
        softmax(&mut s);
        assert!((s[0] + s[1] - 1.0).abs() < 1e-6 && s[2] == 0.0);
    }

    #[test]
    fn rope_rotates_pairs_and_keeps_norm() {
        let mut x = [1.0f32, 0.0, 0.0, 0.0];
        rope_neox(&mut x, 4, 1, 10000.0);
        // pair (0, 2) rotates by angle 1 (frequency 1 for i = 0)
        assert!((x[0] - 1f32.cos()).abs() < 1e-6 && (x[2] - 1f32.sin()).abs() < 1e-6);
    }

    #[test]
    fn rope_table_equals_rope_neox_to_the_bit() {
        let mut table = RopeTable::default();
        // Grown in steps, as decoding does, then rebuilt for another base.
        for (theta, steps) in [(10000.0f32, [1usize, 7, 300]), (160000.0, [64, 64, 129])] {
            for n in steps {
                table.ensure(64, theta, n);
            }
            for pos in [0usize, 1, 63, 128, 299.min(steps[2] - 1)] {
                let x: Vec<f32> = (0..3 * 64).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
                let (mut a, mut b) = (x.clone(), x);
                rope_neox(&mut a, 64, pos, theta);
                table.apply(&mut b, pos);
                assert_eq!(
                    a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    b.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "theta {theta} pos {pos}"
                );
            }
        }
    }
}
