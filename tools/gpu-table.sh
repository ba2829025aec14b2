#!/usr/bin/env bash
# The GPU speed/memory table (issue 6): qgguf's CUDA backend, llama.cpp's CUDA build and HF
# transformers fp16 / bitsandbytes int8 / NF4, on the same synthetic checkpoints (Qwen2.5-0.5B's
# shape as a causal LM; ModernBERT-base's shape with a 113-class head), one GPU machine, one run.
# Random weights: these rows measure speed and memory only.
#
# Prepare here (the GPU machine has no Rust and no network):
#   cargo build --release --features cuda
#   D=.carry/gpu; mkdir -p $D/vocab; cp target/release/{qrun,qconvert} $D/; strip $D/qrun $D/qconvert
#   cp $QGGUF_VOCAB_DIR/ggml-vocab-{qwen2,gpt-neox}.gguf $D/vocab/
#   mkdir -p .carry/llama; tar cJf .carry/llama/llama-src.tar.xz -C "$(../shared/peers/llama-cpp.sh py)" --exclude=build \
#     CMakeLists.txt cmake common ggml src include tools vendor examples pocs app licenses LICENSE
#   bitsandbytes 0.50.2 (PyPI wheel), only its CUDA 13.0 library: unzip the wheel into a folder,
#   delete the other libbitsandbytes_*.so, tar cJf $D/bnb-site.tar.xz -C FOLDER .
# Run there (device tool, carry [".carry/gpu", ".carry/llama"]):  bash tools/gpu-table.sh .carry/gpu
# A second call on the still-warm machine, `bash tools/gpu-table.sh .carry/gpu second`, runs the
# GPU tests (tests/gpu.rs, carried as $D/gpu) and llama.cpp's rows if the first call ran out of
# time for them (it waits for the build).
# Writes $OUT/qgguf.jsonl, $OUT/hf.jsonl, $OUT/llama.jsonl and $OUT/log.txt; tools/gpu_table.py
# turns them into the Markdown table.
set -uo pipefail
D=$(cd "${1:?usage: gpu-table.sh FOLDER [llama]}" && pwd)
MODE=${2:-all}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
[ -d /usr/local/cuda/lib64 ] && export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PATH=/usr/local/cuda/bin:$PATH
W=/tmp/gpu-table
mkdir -p $W
TYPES="f16 q8_0 q4_k_m q5_k_s iq4_nl nf4"

if [ "$MODE" = all ]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  # llama.cpp's CUDA tools, built in the background (a process session of its own, so a
  # second call can use it) while qgguf and transformers measure.
  if [ ! -e $W/llama/build/bin/llama-bench ]; then
    LSRC=$D/llama-src.tar.xz; [ -f "$LSRC" ] || LSRC=$D/../llama/llama-src.tar.xz
    mkdir -p $W/llama && tar xJf "$LSRC" -C $W/llama
    setsid bash -c "cd $W/llama && cmake -B build -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
      -DGGML_CUDA_FA=OFF -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
      -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF > $W/llama-cfg.log 2>&1 && \
      cmake --build build -j12 --target llama-bench > $W/llama-build.log 2>&1; \
      touch $W/llama-build.done" < /dev/null > /dev/null 2>&1 &
  fi
  echo "== models"
  "$D/qconvert" synth qwen2.5-0.5b -o $W/q05 --vocab "$D/vocab/ggml-vocab-qwen2.gguf" --dtype f16 2>&1 | tail -1
  "$D/qconvert" synth modernbert-base-cls113 -o $W/mb --vocab "$D/vocab/ggml-vocab-gpt-neox.gguf" --dtype f16 2>&1 | tail -1
  for t in $TYPES; do
    "$D/qconvert" $W/q05 -o $W/q-$t.gguf --type $t -t 4 --force 2>&1 | tail -1
    "$D/qconvert" $W/mb -o $W/mb-$t.gguf --type $t -t 4 --force 2>&1 | tail -1
  done
  echo "== qgguf on the GPU"
  for t in $TYPES; do
    "$D/qrun" bench -m $W/q-$t.gguf -p 512 -n 128 -r 3 --json -ngl 99 2>/dev/null | tail -1 >> "$OUT/qgguf.jsonl"
    "$D/qrun" bench -m $W/mb-$t.gguf -p 128 --batch 32 -r 5 --json -ngl 99 2>/dev/null | tail -1 >> "$OUT/qgguf.jsonl"
    tail -2 "$OUT/qgguf.jsonl" | cut -c1-200
  done
  echo "== transformers + bitsandbytes"
  mkdir -p $W/bnb && tar xJf "$D/bnb-site.tar.xz" -C $W/bnb
  PYTHONPATH=$W/bnb timeout 300 python3 tools/gpu_hf_speed.py --decoder $W/q05 --encoder $W/mb | tee "$OUT/hf.jsonl"
fi

if [ "$MODE" != all ] && [ -x "$D/gpu" ]; then
  echo "== GPU tests (kernels vs CPU for every type; tiny models full and partial offload)"
  (cd "$D" && QGGUF_VOCAB_DIR="$D/vocab" QGGUF_TEST_GPU=1 timeout 240 ./gpu --test-threads=2 2>&1 \
    | grep -E -A4 "^test |panicked|result|assert" | tee "$OUT/gpu-tests.txt")
fi

echo "== llama.cpp (CUDA, sm_90, -fa 0)"
# Wait for the build while this call has time left (the second call waits longer).
LIMIT=$([ "$MODE" = all ] && echo 530 || echo 400)
while [ ! -e $W/llama-build.done ] && [ $SECONDS -lt $LIMIT ]; do sleep 3; done
[ -e $W/llama-rows.done ] && exit 0
if [ ! -x $W/llama/build/bin/llama-bench ]; then
  echo "llama.cpp's build has not finished:"; tail -n 15 $W/llama-cfg.log $W/llama-build.log
  exit 0
fi
for t in f16 q8_0 q4_k_m q5_k_s iq4_nl; do
  $W/llama/build/bin/llama-bench -m $W/q-$t.gguf -ngl 99 -fa 0 -p 512 -n 128 -r 3 -o jsonl 2>/dev/null >> "$OUT/llama.jsonl"
  $W/llama/build/bin/llama-bench -m $W/mb-$t.gguf -ngl 99 -fa 0 -p 128 -n 0 -embd 1 -r 5 -o jsonl 2>/dev/null >> "$OUT/llama.jsonl"
done
touch $W/llama-rows.done
wc -l "$OUT"/*.jsonl
