#!/usr/bin/env bash
# On the GPU machine, in the call right after `tools/finetune/device.sh train` (same warm machine,
# so /tmp/ft still holds the fine-tuned weights and the exported Qwen): merges the weights into
# Hugging Face folders (tools/finetune/collect.sh, numpy only), then runs `qbench --gpu` on the
# course models, with llama.cpp's CUDA build as a peer when tools/gpu-llama-build.sh (started
# in the train call) has finished, then the GPU tests.
#
#   bash tools/gpu-qbench.sh .carry/gpu      (carry [".carry/gpu"]; see tools/gpu-table.sh for
#                                            what that folder holds: CUDA builds of qbench, qrun,
#                                            qconvert, the gpu test binary, vocab/, moby.txt)
# $OUT gets qbench-gpu.tar.gz (table.md, results.csv, results.json, plots), qbench-log.txt and
# gpu-tests.txt.
set -uo pipefail
D=$(cd "${1:?usage: gpu-qbench.sh FOLDER}" && pwd)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/qbench-log.txt") 2>&1
[ -d /usr/local/cuda/lib64 ] && export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PATH=/usr/local/cuda/bin:$PATH
FT=${FT_DIR:-/tmp/ft}
# A later machine: the GGUF parts were stashed again (device.sh stash N) and the train call's
# files restored from carried copies (device.sh restore main .carry/ftout-X); unpack and export.
[ -f "$FT/qwen-hf/model.safetensors" ] || bash tools/finetune/device.sh prepare || exit 1
[ -d "$FT/out-main" ] || { echo "$FT/out-main missing: run device.sh train on this warm machine first"; exit 1; }
M=$FT/models
mkdir -p "$M"
ln -sfn "$FT/qwen-hf" "$M/qwen2.5-coder-0.5b"
ln -sfn "$FT/work/minilm" "$M/minilm-l6"
export QGGUF_MODELS=$M QGGUF_DATA=$FT/work QGGUF_CACHE=/tmp/qbench-cache
cp "$D/moby.txt" "$FT/work/moby.txt"
echo "== collect (merge the LoRA into the F16 base; MiniLM heads)"
dirs=("$FT/out-main")
[ -d "$FT/out-bbc" ] && [ -n "$(ls -A "$FT/out-bbc")" ] && dirs+=("$FT/out-bbc")
QCONVERT=$D/qconvert QRUN=$D/qrun bash tools/finetune/collect.sh "${dirs[@]}"
[ -d "$M/modernbert-base-cls113" ] || "$D/qconvert" synth modernbert-base-cls113 \
  -o "$M/modernbert-base-cls113" --vocab "$D/vocab/ggml-vocab-gpt-neox.gguf" 2>&1 | tail -1

echo "== qbench --gpu"
Q=/tmp/qbench-gpu
timeout "${QBENCH_S:-400}" "$D/qbench" --gpu -t 16 --out $Q
LL=/tmp/llama-cuda/build/bin
if [ -x $LL/llama-bench ] && [ $SECONDS -lt 480 ]; then
  echo "== qbench --gpu with llama.cpp's CUDA build as a peer (rows above come from the cache)"
  timeout $((560 - SECONDS)) "$D/qbench" --gpu -t 16 --out $Q --llama-cpp $LL
else
  echo "llama.cpp's CUDA build is not ready: $(tail -n 3 /tmp/llama-cuda/build.log /tmp/llama-cuda/cfg.log 2>&1)"
fi
tar czf "$OUT/qbench-gpu.tar.gz" -C $Q --exclude=cache .
if [ -x "$D/gpu" ] && [ $SECONDS -lt 560 ]; then
  echo "== GPU tests"
  (cd "$D" && QGGUF_VOCAB_DIR="$D/vocab" QGGUF_TEST_GPU=1 timeout 30 ./gpu --test-threads=2 2>&1 \
    | grep -E -A4 "^test |panicked|result" > "$OUT/gpu-tests.txt")
fi
