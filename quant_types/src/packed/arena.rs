//! Memory for a model's packed matrices, in transparent huge pages.
//!
//! Why: decoding streams every weight once per token, and with 4 KiB pages each page costs a
//! TLB miss (a two-level page walk in a virtual machine). On the 2-core Xeon VM the read
//! bandwidth probe went from 23 to 33 GB/s on 2 MiB pages. A matrix of its own rarely gets
//! them (Qwen2.5-0.5B's attention matrices are under 1 MiB, and huge pages need 2 MiB-aligned
//! ranges), so matrices are carved one after another out of large anonymous maps advised as
//! huge pages. Pages are zero-filled on first touch, so a map's unused tail costs address
//! space only.

use memmap2::MmapMut;
use std::sync::{Arc, Mutex};

/// Huge page size on x86-64 and most AArch64 kernels.
const HUGE: usize = 2 << 20;
/// Address space reserved per map; larger matrices get a map of their own size.
const CHUNK: usize = 256 << 20;
/// Matrices start on cache lines.
const ALIGN: usize = 64;

/// One anonymous map; slices of it are handed out once each.
struct Chunk {
    /// Kept only to unmap on drop.
    _map: MmapMut,
    /// The map's first byte, taken once: slices are made from it, never from a reference to
    /// the whole map (which would alias other slices' mutable borrows).
    ptr: *mut u8,
    size: usize,
    /// Where the bytes handed out start: the first 2 MiB boundary in the map.
    base: usize,
}

// SAFETY: `ptr` points into `map`, which is Send and Sync; `Chunk` itself never writes.
unsafe impl Send for Chunk {}
unsafe impl Sync for Chunk {}

/// Hands out disjoint byte ranges of huge-page maps. Shared by the matrices of one model.
#[derive(Default)]
pub struct Arena {
    open: Mutex<Option<(Arc<Chunk>, usize)>>,
}

/// `len` bytes of a map, owned alone: no other slice overlaps them.
pub struct ArenaSlice {
    chunk: Arc<Chunk>,
    start: usize,
    len: usize,
}

impl Arena {
    pub fn new() -> Arena {
        Arena::default()
    }

    /// `len` zeroed bytes, or None when the system refuses the address space (the caller
    /// then allocates on the heap).
    pub fn take(&self, len: usize) -> Option<ArenaSlice> {
        let len_aligned = len.checked_next_multiple_of(ALIGN)?;
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let fits = |(c, next): &(Arc<Chunk>, usize)| next + len_aligned <= c.size - c.base;
        if !open.as_ref().is_some_and(fits) {
            let size = len_aligned.max(CHUNK).checked_add(HUGE)?;
            *open = Some((Arc::new(Chunk::new(size)?), 0));
        }
        let (chunk, next) = open.as_mut().expect("just opened");
        debug_assert!(chunk.base + *next + len <= chunk.size);
        let slice = ArenaSlice {
            chunk: chunk.clone(),
            start: chunk.base + *next,
            len,
        };
        *next += len_aligned;
        Some(slice)
    }
}

impl Chunk {
    fn new(size: usize) -> Option<Chunk> {
        let mut map = MmapMut::map_anon(size).ok()?;
        #[cfg(target_os = "linux")]
        {
            // Refused on kernels without transparent huge pages: 4 KiB pages then.
            let _ = map.advise(memmap2::Advice::HugePage);
        }
        let ptr = map.as_mut_ptr();
        let base = (ptr as usize).next_multiple_of(HUGE) - ptr as usize;
        Some(Chunk {
            _map: map,
            ptr,
            size,
            base,
        })
    }
}

impl ArenaSlice {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `Arena::take` placed `start..start + len` inside the map, which lives as long
        // as `self.chunk`, and hands every byte to one slice only: these bytes are reached
        // through `self` alone, and `&self` rules out a mutable borrow.
        unsafe { std::slice::from_raw_parts(self.chunk.ptr.add(self.start), self.len) }
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and `&mut self` makes this the only borrow.
        unsafe { std::slice::from_raw_parts_mut(self.chunk.ptr.add(self.start), self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_are_disjoint_zeroed_and_keep_their_bytes() {
        let arena = Arena::new();
        let sizes = [1usize, 63, 64, 1000, 5 << 20, 3, CHUNK, 17];
        let mut slices: Vec<ArenaSlice> = sizes.iter().map(|&n| arena.take(n).unwrap()).collect();
        for (i, s) in slices.iter_mut().enumerate() {
            assert_eq!(s.len(), sizes[i]);
            assert!(s.bytes().iter().all(|&b| b == 0), "slice {i} not zeroed");
            assert_eq!(
                s.bytes().as_ptr() as usize % ALIGN,
                0,
                "slice {i} unaligned"
            );
            s.bytes_mut().fill(i as u8 + 1);
        }
        drop(arena);
        for (i, s) in slices.iter().enumerate() {
            assert!(
                s.bytes().iter().all(|&b| b == i as u8 + 1),
                "slice {i} overwritten"
            );
        }
        let mut ranges: Vec<_> = slices.iter().map(|s| s.bytes().as_ptr_range()).collect();
        ranges.sort_by_key(|r| r.start);
        for w in ranges.windows(2) {
            assert!(w[0].end <= w[1].start, "overlap");
        }
        // The first slice starts a map, on a huge page boundary.
        assert_eq!(slices[0].bytes().as_ptr() as usize % HUGE, 0);
    }
}
