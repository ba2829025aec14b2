#!/usr/bin/env bash
# GPU check of qrun's CUDA backend (the figures in docs/gpu.md come from this script, run on an
# H100). The GPU machine has no Rust: prepare a folder here, carry it there, run this script
# there with the folder as its argument.
#
# Prepare (on the build machine):
#   cargo build --release --features cuda
#   cargo test --release --features cuda --test gpu --no-run   # prints the test binary's path
#   D=.carry/cuda; mkdir -p $D/vocab
#   cp target/release/qrun target/release/qconvert $D/; cp <gpu test binary> $D/gpu; strip $D/*
#   cp $QGGUF_VOCAB_DIR/ggml-vocab-{qwen2,bert-bge,gpt-neox}.gguf $D/vocab/
#   cp <MiniLM GGUF, e.g. qconvert's Q8_0 of all-MiniLM-L6-v2> $D/minilm.gguf
#   cat README.md ../shared/specs/*.md src/model/qwen2.rs src/model/bert.rs > $D/text.txt; grep -v '^\s*$' $D/text.txt | head -96 > $D/texts.txt
# On the GPU machine: tools/gpu-check.sh .carry/cuda
set -uo pipefail
D=${1:?usage: gpu-check.sh FOLDER}
cd "$D"
[ -d /usr/local/cuda/lib64 ] && export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export QGGUF_VOCAB_DIR=$PWD/vocab
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
echo "== GPU tests, kernels compiled for the device's architecture"
QGGUF_TEST_GPU=1 ./gpu --test-threads=2 --nocapture 2>&1 | grep -E "^test |qwen2 |panicked|result|element"
echo "== kernel tests compiled for compute_75 (the T4 baseline)"
QGGUF_CUDA_ARCH=75 QGGUF_TEST_GPU=1 ./gpu --test-threads=2 dequant products causal encoder norms 2>&1 | grep -E "^test |result"
echo "== MiniLM: embeddings CPU vs GPU, and encoder speed at batch 32"
./qrun embed -m minilm.gguf --input texts.txt -o /tmp/cpu.jsonl 2>&1 | tail -1
./qrun embed -m minilm.gguf --input texts.txt -o /tmp/gpu.jsonl -ngl 1 2>&1 | tail -2
python3 - <<'PY'
import json, math
a = [json.loads(l)["embedding"] for l in open("/tmp/cpu.jsonl")]
b = [json.loads(l)["embedding"] for l in open("/tmp/gpu.jsonl")]
cs = [sum(x * y for x, y in zip(u, v)) / math.sqrt(sum(x * x for x in u) * sum(y * y for y in v)) for u, v in zip(a, b)]
print(f"MiniLM embeddings: {len(cs)} texts, min cosine {min(cs):.6f}, mean {sum(cs) / len(cs):.6f}")
PY
./qrun bench -m minilm.gguf -p 128 --batch 32 -r 5 --json -ngl 1 2>&1 | tail -1
echo "== Qwen2.5-0.5B shape (seeded random weights): KLD of the GPU against the CPU, speed, VRAM"
./qconvert synth qwen2.5-0.5b -o /tmp/q05 --vocab vocab/ggml-vocab-qwen2.gguf 2>&1 | tail -1
for t in q4_k_m q8_0 f16 nf4 iq4_nl q5_k_s; do
  f=/tmp/q-$t.gguf
  ./qconvert /tmp/q05 -o $f --type $t --force 2>&1 | tail -1
  ./qrun perplexity -m $f -f text.txt -c 512 --chunks 4 --kl-divergence-base /tmp/base-$t.kld --json 2>/dev/null
  for ngl in 99 12; do
    echo "-- $t -ngl $ngl"
    ./qrun perplexity -m $f -f text.txt -c 512 --chunks 4 --kl-divergence-base /tmp/base-$t.kld --kl-divergence -ngl $ngl --json 2>&1 | grep -v chunk
  done
  ./qrun bench -m $f -p 512 -n 128 -r 3 --json -ngl 99 2>&1 | tail -1
done
