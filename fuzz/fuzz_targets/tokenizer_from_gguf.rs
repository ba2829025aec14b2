#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Errors are the expected outcome for most inputs; only panics, aborts, hangs and
    // out-of-memory count as findings.
    let _ = qgguf_fuzz::tokenizer_from_gguf(data, qgguf_fuzz::scratch_dir());
});
