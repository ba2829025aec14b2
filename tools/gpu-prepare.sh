#!/usr/bin/env bash
# Packs what tools/gpu-table.sh needs on the GPU machine (which has no Rust and no network):
#   .carry/gpu/qgguf-bin.tar.xz     qrun, qconvert and the GPU test binary (built here with
#                                   --features cuda, stripped) and llama.cpp's test vocabularies
#   .carry/llama/llama-cuda-bin.tar.xz  llama.cpp's CUDA llama-bench and libraries (sm_90), built
#                                   here by tools/llama-cuda-build.sh with the CUDA toolkit from PyPI
# Usage: bash tools/gpu-prepare.sh   (QGGUF_VOCAB_DIR: the vocabularies; default: fetched)
set -euo pipefail
cd "$(dirname "$0")/.."
export QGGUF_VOCAB_DIR=${QGGUF_VOCAB_DIR:-$(python3 tools/fetch-llama-vocab.py)}
cargo build --release --features cuda --bin qrun --bin qconvert
gpu_test=$(cargo test --release --features cuda --test gpu --no-run 2>&1 | sed -n 's/.*Executable tests\/gpu.rs (\(.*\))/\1/p')
S=$(mktemp -d); trap 'rm -rf "$S"' EXIT
mkdir -p "$S/vocab" .carry/gpu .carry/llama
cp target/release/qrun target/release/qconvert "$S/"
cp "$gpu_test" "$S/gpu"
strip "$S/qrun" "$S/qconvert" "$S/gpu"
cp "$QGGUF_VOCAB_DIR"/ggml-vocab-{qwen2,gpt-neox,bert-bge}.gguf "$S/vocab/"
tar cJf .carry/gpu/qgguf-bin.tar.xz -C "$S" .
if [ ! -f .carry/llama/llama-cuda-bin.tar.xz ]; then
  bash tools/llama-cuda-build.sh .carry/llama/llama-cuda-bin.tar.xz
fi
du -sh .carry/gpu .carry/llama
