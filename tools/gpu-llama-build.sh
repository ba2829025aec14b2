#!/usr/bin/env bash
# On the GPU machine: unpacks llama.cpp's source (carried as FOLDER/llama-src.tar.xz, see
# tools/gpu-table.sh for how it is made) and builds its CUDA tools in the background, in a process
# session of its own, so that a later call on the still-warm machine finds them in
# /tmp/llama-cuda/build/bin (the file /tmp/llama-cuda/done appears when the build ends).
#   bash tools/gpu-llama-build.sh FOLDER
set -uo pipefail
src=${1:?usage: gpu-llama-build.sh FOLDER}/llama-src.tar.xz
W=/tmp/llama-cuda
[ -e $W/build/bin/llama-bench ] && { echo "llama.cpp CUDA tools already built"; exit 0; }
mkdir -p $W && tar xJf "$src" -C $W || exit 1
export PATH=/usr/local/cuda/bin:$PATH
setsid bash -c "cd $W && cmake -B build -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_SERVER=OFF > $W/cfg.log 2>&1 && cmake --build build -j12 --target llama-bench \
  llama-perplexity > $W/build.log 2>&1; touch $W/done" < /dev/null > /dev/null 2>&1 &
echo "llama.cpp CUDA build started in the background ($W)"
