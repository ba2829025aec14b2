//! Every SIMD path of every weight type against the scalar reference, on random data: blocks
//! quantized from random floats of many magnitudes, and blocks of random bytes (every bit pattern
//! of the level and scale fields, with the f16 scales kept finite).

use half::f16;
use quant_types::*;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Roughly normal (sum of uniforms), times a random power-of-ten magnitude.
    fn floats(&mut self, n: usize) -> Vec<f32> {
        let scale = 10f32.powi((self.next() % 7) as i32 - 3);
        (0..n)
            .map(|_| ((0..4).map(|_| self.unit()).sum::<f32>() - 2.0) * scale)
            .collect()
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn small_f16(&mut self) -> f16 {
        f16::from_f32((self.unit() - 0.5) * 0.2)
    }
}

/// Blocks from random bytes, with the f16 scale fields replaced by finite values.
fn random_blocks<B: BlockFormat>(
    rng: &mut Rng,
    n_blocks: usize,
    fix: impl Fn(&mut B, &mut Rng),
) -> Vec<B> {
    let raw = rng.bytes(n_blocks * B::BLOCK_BYTES);
    let mut blocks: Vec<B> = bytemuck::pod_collect_to_vec(&raw);
    for b in &mut blocks {
        fix(b, rng);
    }
    blocks
}

fn quantized<B: BlockFormat>(x: &[f32]) -> Vec<B> {
    let mut b = vec![<B as bytemuck::Zeroable>::zeroed(); x.len() / B::BLOCK_ELEMS];
    B::quantize_row(x, &mut b);
    b
}

/// sum |w_i * a_i| from the dequantized rows: the scale of the rounding error one may expect.
fn abs_dot<B: BlockFormat>(w: &[B], a: &[B::Act]) -> f64 {
    let n = w.len() * B::BLOCK_ELEMS;
    let mut wf = vec![0.0f32; n];
    let mut af = vec![0.0f32; n];
    B::dequantize_row(w, &mut wf);
    <B::Act as BlockFormat>::dequantize_row(a, &mut af);
    wf.iter()
        .zip(&af)
        .map(|(x, y)| (*x as f64 * *y as f64).abs())
        .sum()
}

fn check_paths<B: BlockFormat>(w: &[B], a: &[B::Act], what: &str) {
    let reference = B::vec_dot_scalar(w, a);
    let tolerance = 2e-6 * abs_dot(w, a) + 1e-30;
    for path in SimdPath::available() {
        let got = B::vec_dot_on(path, w, a);
        assert!(
            ((got - reference) as f64).abs() <= tolerance,
            "{} on {path} ({what}, {} blocks): {got} vs scalar {reference} (tolerance {tolerance})",
            B::TYPE,
            w.len()
        );
    }
}

fn run<B: BlockFormat>(block_counts: &[usize], fix: impl Fn(&mut B, &mut Rng)) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ B::TYPE.id() as u64);
    for &nb in block_counts {
        let n = nb * B::BLOCK_ELEMS;
        for _ in 0..8 {
            let a: Vec<B::Act> = quantized(&rng.floats(n));
            let w: Vec<B> = quantized(&rng.floats(n));
            check_paths(&w, &a, "quantized");
            let w = random_blocks(&mut rng, nb, &fix);
            check_paths(&w, &a, "random bytes");
        }
    }
}

#[test]
fn q8_0() {
    run::<BlockQ8_0>(&[1, 2, 3, 8, 129], |b, r| {
        b.d = r.small_f16();
        // Q8_0 weights written by the quantizer never hold -128 (see mul_sum_i8); keep to that.
        for q in &mut b.qs {
            *q = (*q).max(-127);
        }
    });
}

#[test]
fn q4_0() {
    run::<BlockQ4_0>(&[1, 2, 3, 8, 129], |b, r| b.d = r.small_f16());
}

#[test]
fn q4_1() {
    run::<BlockQ4_1>(&[1, 2, 3, 8, 129], |b, r| {
        b.d = r.small_f16();
        b.m = r.small_f16();
    });
}

#[test]
fn q5_0() {
    run::<BlockQ5_0>(&[1, 2, 3, 8, 129], |b, r| b.d = r.small_f16());
}

#[test]
fn q5_1() {
    run::<BlockQ5_1>(&[1, 2, 3, 8, 129], |b, r| {
        b.d = r.small_f16();
        b.m = r.small_f16();
    });
}

#[test]
fn iq4_nl() {
    run::<BlockIQ4NL>(&[1, 2, 3, 8, 129], |b, r| b.d = r.small_f16());
}

#[test]
fn nf4() {
    run::<BlockNF4>(&[1, 2, 3, 8, 65], |b, r| b.d = r.small_f16());
}

#[test]
fn q4_k() {
    run::<BlockQ4K>(&[1, 2, 3, 19], |b, r| {
        b.d = r.small_f16();
        b.dmin = r.small_f16();
    });
}

#[test]
fn q5_k() {
    run::<BlockQ5K>(&[1, 2, 3, 19], |b, r| {
        b.d = r.small_f16();
        b.dmin = r.small_f16();
    });
}

#[test]
fn q6_k() {
    run::<BlockQ6K>(&[1, 2, 3, 19], |b, r| b.d = r.small_f16());
}

#[test]
fn f32_rows() {
    run::<BlockF32>(&[1, 7, 8, 15, 16, 33, 64, 100, 1000], |b, r| {
        b.0 = r.unit() - 0.5
    });
}

#[test]
fn f16_rows() {
    run::<BlockF16>(&[1, 7, 8, 15, 16, 33, 64, 100, 1000], |b, r| {
        b.0 = r.small_f16()
    });
}

#[test]
fn bf16_rows() {
    run::<BlockBF16>(&[1, 7, 8, 15, 16, 33, 64, 100, 1000], |b, r| {
        b.0 = half::bf16::from_f32(r.unit() - 0.5)
    });
}

/// The scalar references themselves against the float dot product of the dequantized rows: the
/// integer paths compute the same sum, except that Q4_1/Q5_1 take the activation sums from Q8_1's
/// f16 `s` (relative rounding 2^-11), and NF4's int8 levels differ from its f32 levels by at most
/// 0.5/127 of the block scale.
#[test]
fn scalar_reference_matches_dequantized_dot() {
    fn check<B: BlockFormat>(rel: f64, level_error: f64) {
        let mut rng = Rng(42 ^ B::TYPE.id() as u64);
        let n = 4 * B::BLOCK_ELEMS.max(256);
        for _ in 0..16 {
            let w: Vec<B> = quantized(&rng.floats(n));
            let a: Vec<B::Act> = quantized(&rng.floats(n));
            let mut wf = vec![0.0f32; n];
            let mut af = vec![0.0f32; n];
            B::dequantize_row(&w, &mut wf);
            <B::Act as BlockFormat>::dequantize_row(&a, &mut af);
            let exact: f64 = wf.iter().zip(&af).map(|(x, y)| *x as f64 * *y as f64).sum();
            let abs: f64 = wf
                .iter()
                .zip(&af)
                .map(|(x, y)| (*x as f64 * *y as f64).abs())
                .sum();
            let wmax = wf.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64));
            let asum: f64 = af.iter().map(|v| v.abs() as f64).sum();
            let got = B::vec_dot_scalar(&w, &a) as f64;
            let tol = rel * abs + level_error * wmax * asum + 1e-30;
            assert!((got - exact).abs() <= tol, "{}: {got} vs {exact}", B::TYPE);
        }
    }
    check::<BlockQ8_0>(1e-5, 0.0);
    check::<BlockQ4_0>(1e-5, 0.0);
    check::<BlockQ4_1>(1e-3, 0.0);
    check::<BlockQ5_0>(1e-5, 0.0);
    check::<BlockQ5_1>(1e-3, 0.0);
    check::<BlockIQ4NL>(1e-5, 0.0);
    check::<BlockQ4K>(1e-5, 0.0);
    check::<BlockQ5K>(1e-5, 0.0);
    check::<BlockQ6K>(1e-5, 0.0);
    check::<BlockF16>(1e-5, 0.0);
    check::<BlockBF16>(1e-5, 0.0);
    check::<BlockF32>(1e-5, 0.0);
    check::<BlockNF4>(1e-5, 0.5 / 127.0);
}
