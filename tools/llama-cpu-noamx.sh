#!/usr/bin/env bash
# Builds llama.cpp's CPU tools like ../shared/peers/llama-cpp.sh does (same source: the
# llama-cpp-python 0.3.36 sdist; GGML_NATIVE=ON), but with the AMX instructions turned off, and
# prints their bin/ folder (use it as LLAMA_CPP_BIN).
#
# Why: on a Xeon whose /proc/cpuinfo lists amx_tile / amx_int8 (the development VM of
# 2026-12-04), -march=native compiles ggml's AMX matrix path, and there llama-bench dies with
# SIGSEGV at `ldtilecfg` in ggml_backend_amx_mul_mat: the VM does not grant the AMX tile state.
# Everything else -march=native enables (AVX-512, VNNI, BF16) stays on, and llama.cpp's CPU
# repacking (--repack, on by default) too, so this is llama.cpp's fastest build that runs there.
#
# Usage: tools/llama-cpu-noamx.sh    (about 8 minutes on 2 cores; cached in the source tree)
set -euo pipefail
src=$("$(dirname "$0")/../../shared/peers/llama-cpp.sh" py)
build=$src/build-noamx
if [ ! -x "$build/bin/llama-bench" ] || [ ! -x "$build/bin/llama-perplexity" ]; then
  flags="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
  cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DGGML_NATIVE=ON \
    -DLLAMA_BUILD_TESTS=OFF -DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags" >&2
  cmake --build "$build" -j"$(nproc)" --target llama-bench llama-quantize llama-perplexity \
    llama-cli llama-embedding llama-simple >&2
fi
echo "$build/bin"
