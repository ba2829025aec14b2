//! The packed kernels against ggml-layout dot products, one thread:
//! - `gemv/{type}`: one activation row (decode), GB/s of the file's weight bytes, for the best
//!   `vec_dot` path on ggml's blocks and for the packed kernel. 16 rows of 4096 weights stay in
//!   L2, so the figures measure instructions, not DRAM.
//! - `gemv_dram/{type}`: one activation row against 64 MiB of weights in the shape of Qwen2.5-0.5B's
//!   FFN up-projection (896 inputs per row), packed into huge pages as qrun packs them: decode
//!   as it runs, one thread, streaming from DRAM (on a host whose L3 holds 64 MiB, partly from
//!   L3: the Xeon VM's 2 threads read it at 45-50 GiB/s, above `qrun bandwidth`'s DRAM figure).
//! - `gemm/{type}`: 64 activation rows (prefill), billions of multiply-adds per second, for
//!   `vec_dot` per (row, token) and for the packed kernel: `packed` in the layout this CPU reads
//!   fastest, and where that is the interleaved one, `packed-rows` in the row layout.
//!
//! cargo bench -p quant_types --bench packed

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use quant_types::packed::{self, PackedActs, PackedMatrix};
use quant_types::*;
use std::hint::black_box;
use std::time::Duration;

const N: usize = 4096;
const ROWS: usize = 16;
const TOKENS: usize = 64;

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

/// The fallback without packed kernels for one activation row: one `vec_dot` per weight row of
/// `cols` weights (summed so that none is optimized away).
fn vec_dot_rows(ty: GgmlType, path: SimdPath, cols: usize, w: &[u8], acts: &[u8]) -> f32 {
    w.chunks_exact(ty.row_bytes(cols).unwrap())
        .map(|row| dynamic::vec_dot(ty, path, cols, black_box(row), black_box(acts)).unwrap())
        .sum()
}

fn bench_type(c: &mut Criterion, ty: GgmlType) {
    let row_bytes = ty.row_bytes(N).unwrap();
    let mut w = vec![0u8; ROWS * row_bytes];
    dynamic::quantize(ty, &floats(1, ROWS * N), &mut w).unwrap();
    let path = SimdPath::best();
    let x = floats(2, TOKENS * N);
    let acts_one = dynamic::quantize_acts_for(ty, &x[..N]).unwrap();

    let mut g = c.benchmark_group(format!("gemv/{ty}"));
    g.throughput(Throughput::Bytes(w.len() as u64));
    g.bench_function(BenchmarkId::new("vec_dot", path), |b| {
        b.iter(|| vec_dot_rows(ty, path, N, &w, &acts_one))
    });
    let Some(m) = PackedMatrix::pack(ty, ROWS, N, &w).filter(|_| packed::available()) else {
        g.finish();
        return;
    };
    let mut acts = PackedActs::default();
    acts.quantize(ty, &x[..N], 1, N);
    let mut out = vec![0f32; ROWS];
    g.bench_function("packed", |b| {
        b.iter(|| packed::gemm(black_box(&m), 0..ROWS, black_box(&acts), &mut out))
    });
    g.finish();

    let mut g = c.benchmark_group(format!("gemm/{ty}"));
    g.throughput(Throughput::Elements((ROWS * N * TOKENS) as u64));
    // The fallback without packed kernels: one vec_dot per (row, token).
    let acts_all: Vec<_> = x
        .chunks_exact(N)
        .map(|xt| dynamic::quantize_acts_for(ty, xt).unwrap())
        .collect();
    g.bench_function(BenchmarkId::new("vec_dot", path), |b| {
        b.iter(|| {
            let mut sum = 0.0f32;
            for row in w.chunks_exact(row_bytes) {
                for a in &acts_all {
                    sum += dynamic::vec_dot(ty, path, N, black_box(row), black_box(a)).unwrap();
                }
            }
            sum
        })
    });
    let mut acts = PackedActs::default();
    acts.quantize(ty, &x, TOKENS, N);
    let mut out = vec![0f32; ROWS * TOKENS];
    // Each layout in the output order its kernels write natively.
    let token_major = m.layout().token_major();
    g.bench_function("packed", |b| {
        b.iter(|| {
            if token_major {
                packed::gemm_token_major(black_box(&m), 0..ROWS, black_box(&acts), &mut out)
            } else {
                packed::gemm(black_box(&m), 0..ROWS, black_box(&acts), &mut out)
            }
        })
    });
    if m.layout() != packed::Layout::Rows {
        if let Some(rows) = PackedMatrix::pack_with(ty, ROWS, N, &w, packed::Layout::Rows) {
            g.bench_function("packed-rows", |b| {
                b.iter(|| packed::gemm(black_box(&rows), 0..ROWS, black_box(&acts), &mut out))
            });
        }
    }
    g.finish();
}

/// Decode from DRAM: many short rows, as in a 0.5B model, too many bytes for any cache.
fn bench_dram(c: &mut Criterion, ty: GgmlType) {
    // Q5_0 and Q8_0 are what 896-wide rows get in llama.cpp's K-quant mixes; K-quants need
    // 256-multiples, so they take the 4864-wide down-projection's shape instead.
    let cols = if ty.block_elems() == 256 { 4864 } else { 896 };
    let row_bytes = ty.row_bytes(cols).unwrap();
    let rows = (64 << 20) / row_bytes;
    let mut w = vec![0u8; rows * row_bytes];
    let f = floats(3, 64 * cols);
    for (i, dst) in w.chunks_exact_mut(row_bytes * 64).enumerate() {
        dynamic::quantize(ty, &f, dst).unwrap_or_else(|e| panic!("{ty} chunk {i}: {e}"));
    }
    let x = floats(4, cols);
    let path = SimdPath::best();
    let acts_one = dynamic::quantize_acts_for(ty, &x).unwrap();
    let mut g = c.benchmark_group(format!("gemv_dram/{ty}"));
    g.throughput(Throughput::Bytes(w.len() as u64));
    g.bench_function(BenchmarkId::new("vec_dot", path), |b| {
        b.iter(|| vec_dot_rows(ty, path, cols, &w, &acts_one))
    });
    // The packed weights live in huge pages, as qrun's do (see `packed::Arena`).
    let arena = packed::Arena::new();
    let layout = packed::Layout::best_for(ty);
    if let Some(mut m) =
        PackedMatrix::alloc_in(Some(&arena), ty, rows, cols, layout).filter(|_| packed::available())
    {
        let (ub, per_unit) = (m.unit_bytes(), row_bytes * layout.unit_rows());
        for (dst, src) in m.bytes_mut().chunks_exact_mut(ub).zip(w.chunks(per_unit)) {
            packed::pack_unit(ty, cols, layout, src, dst);
        }
        drop(w);
        let mut acts = PackedActs::default();
        acts.quantize(ty, &x, 1, cols);
        let mut out = vec![0f32; rows];
        g.bench_function("packed", |b| {
            b.iter(|| packed::gemm(black_box(&m), 0..rows, black_box(&acts), &mut out))
        });
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    use GgmlType::*;
    for ty in [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, NF4, Q4_K, Q5_K, Q6_K] {
        bench_type(c, ty);
    }
    for ty in [Q5_0, Q8_0, IQ4_NL, NF4, Q4_K, Q5_K, Q6_K] {
        bench_dram(c, ty);
    }
}

criterion_group! {
    name = packed_kernels;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20);
    targets = benches
}
criterion_main!(packed_kernels);
