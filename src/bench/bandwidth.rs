//! Memory read bandwidth with a given number of threads: the roofline of decoding, which reads
//! every weight once per token. Each thread sums its share of a buffer far larger than the
//! caches; the best of several passes is reported, as STREAM does.

use rayon::prelude::*;
use std::hint::black_box;
use std::time::Instant;

/// Bytes per second of reading `bytes` (rounded to 4 KiB) with the current rayon pool, best of
/// `passes` passes after one warm-up pass that also faults the pages in. With `huge_pages`, the
/// buffer comes from the same huge-page arena as packed weights (see
/// `quant_types::packed::Arena`), so the probe reads memory as decoding does.
pub fn read_bandwidth(bytes: usize, passes: usize, huge_pages: bool) -> f64 {
    let words = (bytes / 4096).max(1) * 512;
    let arena = quant_types::packed::Arena::new();
    let mut slice = huge_pages.then(|| arena.take(words * 8)).flatten();
    let mut heap = Vec::new();
    let buf: &mut [u64] = match &mut slice {
        Some(s) => bytemuck::cast_slice_mut(s.bytes_mut()),
        None => {
            heap.resize(words, 0u64);
            &mut heap
        }
    };
    for (i, w) in buf.iter_mut().enumerate() {
        *w = i as u64;
    }
    let buf = &*buf;
    let threads = rayon::current_num_threads().max(1);
    let per = words.div_ceil(threads);
    let pass = |prefetch: bool| {
        let t0 = Instant::now();
        let sum: u64 = buf
            .par_chunks(per)
            .map(|c| {
                // Eight independent sums keep the loads in flight.
                let mut acc = [0u64; 8];
                for (i, w) in c.chunks_exact(8).enumerate() {
                    if prefetch {
                        quant_types::packed::prefetch_hint(
                            c.as_ptr().wrapping_add(8 * i + AHEAD_WORDS) as *const u8,
                        );
                    }
                    for k in 0..8 {
                        acc[k] = acc[k].wrapping_add(w[k]);
                    }
                }
                acc.iter().fold(0u64, |a, &b| a.wrapping_add(b))
            })
            .reduce(|| 0, u64::wrapping_add);
        black_box(sum);
        t0.elapsed().as_secs_f64()
    };
    pass(false);
    let best = (0..passes.max(1))
        .flat_map(|_| [pass(false), pass(true)])
        .fold(f64::INFINITY, f64::min);
    (words * 8) as f64 / best
}

/// How far ahead (in u64 words) the prefetching passes ask for data: 4 KiB, as the decode
/// kernels do (the hardware prefetchers stop at 4 KiB pages).
const AHEAD_WORDS: usize = 512;
