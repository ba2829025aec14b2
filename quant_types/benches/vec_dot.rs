//! Throughput of every dot-product kernel, per type and SIMD path, in GB/s of weight bytes
//! consumed: 16 rows of 4096 weights against one activation row, a working set that stays in L2,
//! so the figures measure the kernels rather than DRAM.
//!
//! cargo bench -p quant_types --bench vec_dot

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use quant_types::*;
use std::hint::black_box;
use std::time::Duration;

const N: usize = 4096;
const ROWS: usize = 16;

fn floats(seed: u32, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32 - 0.5) * 0.1
        })
        .collect()
}

fn bench_type<B: BlockFormat>(c: &mut Criterion) {
    let mut weights = vec![<B as bytemuck::Zeroable>::zeroed(); ROWS * N / B::BLOCK_ELEMS];
    B::quantize_row(&floats(1, ROWS * N), &mut weights);
    let mut act =
        vec![<B::Act as bytemuck::Zeroable>::zeroed(); N / <B::Act as BlockFormat>::BLOCK_ELEMS];
    <B::Act as BlockFormat>::quantize_row(&floats(2, N), &mut act);
    let per_row = N / B::BLOCK_ELEMS;

    let mut group = c.benchmark_group(format!("vec_dot/{}", B::TYPE));
    group.throughput(Throughput::Bytes((ROWS * per_row * B::BLOCK_BYTES) as u64));
    for path in SimdPath::available() {
        group.bench_with_input(BenchmarkId::from_parameter(path), &path, |b, &path| {
            b.iter(|| {
                let mut sum = 0.0f32;
                for row in weights.chunks_exact(per_row) {
                    sum += B::vec_dot_on(path, black_box(row), black_box(&act));
                }
                sum
            })
        });
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    bench_type::<BlockQ4_0>(c);
    bench_type::<BlockQ4_1>(c);
    bench_type::<BlockQ5_0>(c);
    bench_type::<BlockQ5_1>(c);
    bench_type::<BlockQ8_0>(c);
    bench_type::<BlockQ4K>(c);
    bench_type::<BlockQ5K>(c);
    bench_type::<BlockQ6K>(c);
    bench_type::<BlockIQ4NL>(c);
    bench_type::<BlockNF4>(c);
    bench_type::<BlockF16>(c);
    bench_type::<BlockBF16>(c);
    bench_type::<BlockF32>(c);
}

criterion_group! {
    name = vec_dot;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20);
    targets = benches
}
criterion_main!(vec_dot);
