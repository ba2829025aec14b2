//! Read-only memory maps of model files, in one place because creating and trimming a map are
//! the only `unsafe` operations outside the compute kernels.
//!
//! Weights are read straight from the map (zero copy). Pages of a map count towards the
//! process's resident memory once touched, so streaming jobs (conversion, export) hand back the
//! pages of each tensor they are done with ([`MappedFile::release`]); the kernel reads them from
//! the file again if they are ever touched anew.

use memmap2::{Advice, Mmap, UncheckedAdvice};
use std::fs::File;
use std::io;
use std::ops::Deref;
use std::path::Path;

pub struct MappedFile {
    map: Mmap,
}

impl MappedFile {
    pub fn open(path: &Path) -> io::Result<MappedFile> {
        let file = File::open(path)?;
        // Opening a folder succeeds on Linux; mapping it fails with a puzzling "No such device".
        if file.metadata()?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                "is a folder, not a file",
            ));
        }
        // SAFETY: the map is read-only. Mapped files must not be truncated or rewritten while
        // in use, the contract of every mmap-based model loader (llama.cpp's included); qgguf
        // itself never modifies a file in place (outputs are renamed into place).
        let map = unsafe { Mmap::map(&file)? };
        Ok(MappedFile { map })
    }

    /// Tells the kernel the map will be read front to back (larger read-ahead).
    pub fn advise_sequential(&self) {
        let _ = self.map.advise(Advice::Sequential);
    }

    /// Drops the pages of `range` from this process (they stay in the page cache).
    pub fn release(&self, range: std::ops::Range<usize>) {
        let page = page_size();
        let start = range.start / page * page;
        let end = range.end.min(self.map.len());
        if end <= start {
            return;
        }
        // SAFETY: MADV_DONTNEED on a read-only, file-backed shared mapping only unmaps the
        // pages: later reads fault them back in from the file with identical contents, and no
        // reference into the range can observe anything different.
        let _ = unsafe {
            self.map
                .unchecked_advise_range(UncheckedAdvice::DontNeed, start, end - start)
        };
    }
}

/// An alignment that is a multiple of every page size Linux uses (4, 16 and 64 KiB): rounding the
/// start down to it may release pages of data already processed, which is harmless.
fn page_size() -> usize {
    64 << 10
}

impl Deref for MappedFile {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.map
    }
}
