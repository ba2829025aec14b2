//! The decoder's KV cache: per layer, keys and values of every cached position, in f16 (the
//! default, as llama.cpp's `-ctk f16 -ctv f16`) or f32 (exact against f32 references).

use super::attention::{self, Heads, KvElem};
use anyhow::{bail, Result};
use half::f16;

/// Element type of the cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum KvType {
    #[default]
    F16,
    F32,
}

enum Store {
    F16(Vec<Vec<f16>>, Vec<Vec<f16>>),
    F32(Vec<Vec<f32>>, Vec<Vec<f32>>),
}

/// Keys and values for `layers` layers, `ctx` positions of `row` values each.
pub struct KvCache {
    store: Store,
    row: usize,
    ctx: usize,
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
        KvCache { store, row, ctx }
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
        Ok(KvCache { store, row, ctx })
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
                f16::write(k, &mut ks[layer][range.clone()]);
                f16::write(v, &mut vs[layer][range]);
            }
            Store::F32(ks, vs) => {
                f32::write(k, &mut ks[layer][range.clone()]);
                f32::write(v, &mut vs[layer][range]);
            }
        }
        Ok(())
    }

    /// Causal attention of `n` queries at `pos0..pos0+n` over the cached positions of `layer`.
    pub fn attend(
        &self,
        layer: usize,
        q: &[f32],
        n: usize,
        pos0: usize,
        heads: Heads,
        out: &mut [f32],
    ) {
        let end = (pos0 + n) * self.row;
        match &self.store {
            Store::F16(k, v) => {
                attention::causal(q, &k[layer][..end], &v[layer][..end], n, pos0, heads, out)
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
