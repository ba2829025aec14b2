#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Errors are the expected outcome for most inputs; only panics, aborts, hangs and
    // out-of-memory count as findings.
    let _ = qgguf_fuzz::gguf_reader(data, qgguf_fuzz::scratch_dir());
});
