//! The decoder's KV cache: per layer, keys and values of every cached position, in f16 (the
//! default, as llama.cpp's `-ctk f16 -ctv f16`) or f32 (exact against f32 references).

use super::attention::{self, Heads};
use anyhow::{bail, Result};
use half::f16;
use half::slice::HalfFloatSliceExt;

pub use crate::backend::KvType;

enum Store {
    F16(Vec<Vec<f16>>, Vec<Vec<f16>>),
    F32(Vec<Vec<f32>>, Vec<Vec<f32>>),
}

/// Keys and values for `layers` layers, `ctx` positions of `row` values each.
pub struct KvCache {
    store: Store,
    row: usize,
    ctx: usize,
    /// f32 copies of one layer's f16 keys and values for the attention kernels.
    k32: Vec<f32>,
    v32: Vec<f32>,
}

impl KvCache {
    pub fn new(ty: KvType, layers: usize, ctx: usize, row: usize) -> KvCache {
        fn alloc<T: Clone>(zero: T, layers: usize, n: usize) -> Vec<Vec<T>> {
            (0..layers).map(|_| vec![zero.clone(); n]).collect()
        }
        let n = ctx * row;
        let store = match ty {
            KvType::F16 => Store::F16(alloc(f16::ZERO, layers, n), alloc(f16::ZERO, layers, n)),
            KvType::F32 => Store::F32(alloc(0.0, layers, n), alloc(0.0, layers, n)),
        };
        KvCache {
            store,
            row,
            ctx,
            k32: Vec::new(),
            v32: Vec::new(),
        }
    }

    /// Like [`KvCache::new`], but a cache too large to allocate is an error (naming its size)
    /// rather than an abort: its size comes from `-c` and from the model file.
    pub fn try_new(ty: KvType, layers: usize, ctx: usize, row: usize) -> Result<KvCache> {
        fn alloc<T: Clone>(zero: T, layers: usize, n: usize) -> Option<Vec<Vec<T>>> {
            let mut out = Vec::new();
            out.try_reserve_exact(layers).ok()?;
            for _ in 0..layers {
                let mut v = Vec::new();
                v.try_reserve_exact(n).ok()?;
                v.resize(n, zero.clone());
                out.push(v);
            }
            Some(out)
        }
        let elem = match ty {
            KvType::F16 => 2,
            KvType::F32 => 4,
        };
        let n = ctx.checked_mul(row);
        let bytes = n
            .and_then(|n| n.checked_mul(2 * elem))
            .and_then(|b| b.checked_mul(layers));
        let too_big = || {
            let mib = bytes.map_or(f64::INFINITY, |b| b as f64 / (1 << 20) as f64);
            anyhow::anyhow!(
                "cannot allocate a KV cache of {mib:.0} MiB ({layers} layers x {ctx} positions x {row} values x 2): lower -c"
            )
        };
        let n = n.filter(|_| bytes.is_some()).ok_or_else(too_big)?;
        let store = match ty {
            KvType::F16 => {
                let k = alloc(f16::ZERO, layers, n).ok_or_else(too_big)?;
                Store::F16(k, alloc(f16::ZERO, layers, n).ok_or_else(too_big)?)
            }
            KvType::F32 => {
                let k = alloc(0.0, layers, n).ok_or_else(too_big)?;
                Store::F32(k, alloc(0.0, layers, n).ok_or_else(too_big)?)
            }
        };
        Ok(KvCache {
            store,
            row,
            ctx,
            k32: Vec::new(),
            v32: Vec::new(),
        })
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        let (layers, elem) = match &self.store {
            Store::F16(k, _) => (k.len(), 2),
            Store::F32(k, _) => (k.len(), 4),
        };
        2 * layers * self.ctx * self.row * elem
    }

    /// Stores the keys and values of `k.len() / row` positions from `pos0` in `layer`.
    pub fn write(&mut self, layer: usize, pos0: usize, k: &[f32], v: &[f32]) -> Result<()> {
        let n = k.len() / self.row;
        if pos0 + n > self.ctx || v.len() != k.len() {
            bail!(
                "KV cache of {} positions: cannot write {n} at position {pos0}",
                self.ctx
            );
        }
        let range = pos0 * self.row..(pos0 + n) * self.row;
        match &mut self.store {
            Store::F16(ks, vs) => {
                ks[layer][range.clone()].convert_from_f32_slice(k);
                vs[layer][range].convert_from_f32_slice(v);
            }
            Store::F32(ks, vs) => {
                ks[layer][range.clone()].copy_from_slice(k);
                vs[layer][range].copy_from_slice(v);
            }
        }
        Ok(())
    }

    /// Causal attention of `n` queries at `pos0..pos0+n` over the cached positions of `layer`.
    pub fn attend(
        &mut self,
        layer: usize,
        q: &[f32],
        n: usize,
        pos0: usize,
        heads: Heads,
        out: &mut [f32],
    ) {
        let end = (pos0 + n) * self.row;
        match &self.store {
            Store::F16(k, v) if n == 1 => {
                attention::decode_f16(q, &k[layer][..end], &v[layer][..end], pos0, heads, out)
            }
            Store::F16(k, v) => {
                // Converted once per call rather than once per (query, key) pair.
                self.k32.resize(end, 0.0);
                self.v32.resize(end, 0.0);
                k[layer][..end].convert_to_f32_slice(&mut self.k32);
                v[layer][..end].convert_to_f32_slice(&mut self.v32);
                attention::causal(q, &self.k32, &self.v32, n, pos0, heads, out)
            }
            Store::F32(k, v) => {
                attention::causal(q, &k[layer][..end], &v[layer][..end], n, pos0, heads, out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::attention::tests::{data, naive};

    #[test]
    fn f16_cache_attends_over_rounded_keys_and_values() {
        let h = Heads {
            n_head: 4,
            n_head_kv: 2,
            head_dim: 16,
        };
        let row = h.n_head_kv * h.head_dim;
        let q_dim = h.n_head * h.head_dim;
        let mut cache = KvCache::new(KvType::F16, 2, 8, row);
        assert_eq!(cache.bytes(), 2 * 2 * 8 * row * 2);
        let k = data(6 * row, 3);
        let v = data(6 * row, 5);
        // Two calls: 4 positions, then 2 more at positions 4 and 5.
        cache.write(1, 0, &k[..4 * row], &v[..4 * row]).unwrap();
        cache.write(1, 4, &k[4 * row..], &v[4 * row..]).unwrap();
        assert!(cache.write(1, 7, &k[..2 * row], &v[..2 * row]).is_err());
        let q = data(2 * q_dim, 9);
        let mut out = vec![0.0; 2 * q_dim];
        cache.attend(1, &q, 2, 4, h, &mut out);
        let round =
            |x: &[f32]| -> Vec<f32> { x.iter().map(|&v| f16::from_f32(v).to_f32()).collect() };
        let (kr, vr) = (round(&k), round(&v));
        for t in 0..2 {
            for head in 0..4 {
                let want = naive(&q, &kr, &vr, h, t, head, 0..4 + t + 1);
                for (a, b) in out[t * q_dim + head * 16..][..16].iter().zip(&want) {
                    assert!((a - b).abs() < 1e-5, "t{t} head{head}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn a_decoded_token_reads_the_f16_cache_in_place_with_the_numbers_of_f32_copies() {
        // Head sizes that take the SIMD path (64, 16) and the portable one (24); one token
        // after 37 cached positions, against `causal` on the same rows converted to f32.
        for hd in [64, 16, 24] {
            let h = Heads {
                n_head: 6,
                n_head_kv: 2,
                head_dim: hd,
            };
            let (row, q_dim, pos0) = (h.n_head_kv * hd, h.n_head * hd, 37);
            let mut cache = KvCache::new(KvType::F16, 1, 40, row);
            let (k, v) = (data((pos0 + 1) * row, 3), data((pos0 + 1) * row, 5));
            cache.write(0, 0, &k, &v).unwrap();
            let q = data(q_dim, 9);
            let mut got = vec![0.0; q_dim];
            cache.attend(0, &q, 1, pos0, h, &mut got);
            let Store::F16(ks, vs) = &cache.store else {
                unreachable!()
            };
            let end = (pos0 + 1) * row;
            let mut k32 = vec![0.0; end];
            let mut v32 = vec![0.0; end];
            ks[0][..end].convert_to_f32_slice(&mut k32);
            vs[0][..end].convert_to_f32_slice(&mut v32);
            let mut want = vec![0.0; q_dim];
            attention::causal(&q, &k32, &v32, 1, pos0, h, &mut want);
            assert_eq!(got, want, "head_dim {hd}");
        }
    }

    #[test]
    fn a_cache_too_large_is_an_error_naming_its_size() {
        // The element count overflows usize.
        let e = KvCache::try_new(KvType::F16, 2, usize::MAX / 2, 64)
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .contains("cannot allocate a KV cache of inf MiB"),
            "{e}"
        );
        // Representable, but 16 PiB: the allocator refuses.
        let e = KvCache::try_new(KvType::F32, 1024, 1 << 31, 1 << 10)
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .contains("cannot allocate a KV cache of 17179869184 MiB (1024 layers x 2147483648 positions x 1024 values x 2)"),
            "{e}"
        );
        let ok = KvCache::try_new(KvType::F16, 2, 8, 4).unwrap();
        assert_eq!(ok.bytes(), 2 * 2 * 8 * 4 * 2);
    }
}
