#!/usr/bin/env bash
# The project's test command (README, and .ci/run): formatting, lints, and every test.
# llama.cpp's tokenizer vocabularies are fetched from PyPI (the llama-cpp-python sdist) into a
# cache first, so the tests that read them run; set QGGUF_VOCAB_DIR to use a copy you have.
set -euo pipefail
cd "$(dirname "$0")/.."
export QGGUF_VOCAB_DIR=${QGGUF_VOCAB_DIR:-$(python3 tools/fetch-llama-vocab.py)}
echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo clippy --features cuda"
cargo clippy --workspace --all-targets --features cuda -- -D warnings
echo "== cargo test"
cargo test --workspace --release
