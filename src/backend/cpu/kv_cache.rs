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
