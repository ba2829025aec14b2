#!/usr/bin/env bash
# The GPU comparison: qgguf's CUDA backend, llama.cpp's CUDA build (from the source that
# ../shared/peers/llama-cpp.sh gives, at its default settings) and HF transformers fp16, on the
# same synthetic checkpoints (Qwen2.5-0.5B's shape as a causal LM; ModernBERT-base's with a
# 113-class head), on one warm GPU machine in two calls. Random weights: speed and memory only.
#
# Prepare here (the GPU machine has no Rust and no network): bash tools/gpu-prepare.sh
# Then, with the device tool, on one machine (one call, or calls right after each other):
#   bash tools/gpu-table.sh .carry/gpu qgguf    GPU tests (kernels for compute_75 and for the
#                                               device), the models, qgguf's rows
#   bash tools/gpu-table.sh .carry/llama llama  llama.cpp's rows on the same models
#   bash tools/gpu-table.sh .carry/gpu extras   transformers fp16 rows, per-kernel times (ncu)
# carry [".carry/gpu", ".carry/llama"]; BUDGET (seconds, default 560) makes late steps skip.
# Each writes JSON lines and logs to $OUT; `python3 tools/gpu_table.py DIR...` makes the table.
set -uo pipefail
D=$(cd "${1:?usage: gpu-table.sh FOLDER qgguf|llama}" && pwd)
MODE=${2:?usage: gpu-table.sh FOLDER qgguf|llama}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
[ -d /usr/local/cuda/lib64 ] && export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PATH=/usr/local/cuda/bin:$PATH
W=/tmp/gpu-table
mkdir -p $W
TYPES="f16 q8_0 q4_k_m q5_k_s iq4_nl nf4"
# Seconds this call may use (the device tool's limit is 600): later steps are skipped, not cut.
BUDGET=${BUDGET:-560}
step() { echo "== [$SECONDS s] $*"; }
left() { [ $SECONDS -lt "$1" ] || { echo "-- skipped (past ${1}s of this call)"; return 1; }; }

if [ "$MODE" = qgguf ]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
  B=$W/bin; mkdir -p $B
  tar xJf "$D/qgguf-bin.tar.xz" -C $B
  export QGGUF_VOCAB_DIR=$B/vocab QGGUF_CACHE=$W/cache
  step "GPU tests, kernels for compute_75 (the T4's code) and for the device"
  for arch in 75 native; do
    ( cd $B && if [ $arch = 75 ]; then export QGGUF_CUDA_ARCH=75; fi
      QGGUF_TEST_GPU=1 timeout 150 ./gpu --test-threads=1 --nocapture 2>&1 ) \
      | grep -E "^test |panicked|result:|KLD|distance|assert|cosine" | sed "s/^/[$arch] /" | tee -a "$OUT/gpu-tests.txt"
  done
  step "models"
  $B/qconvert synth qwen2.5-0.5b -o $W/q05 --vocab $B/vocab/ggml-vocab-qwen2.gguf --dtype f16 2>&1 | tail -1
  $B/qconvert synth modernbert-base-cls113 -o $W/mb --vocab $B/vocab/ggml-vocab-gpt-neox.gguf --dtype f16 2>&1 | tail -1
  for t in $TYPES; do
    $B/qconvert $W/q05 -o $W/q-$t.gguf --type $t -t 16 --force 2>&1 | tail -1
    $B/qconvert $W/mb -o $W/mb-$t.gguf --type $t -t 16 --force 2>&1 | tail -1
  done
  step "qgguf on the GPU (-ngl 99)"
  Q="$B/qrun bench --json -ngl 99"
  for t in $TYPES; do
    timeout 120 $Q -m $W/q-$t.gguf -p 512 -n 128 -r 3 2>/dev/null | tail -1 >> "$OUT/qgguf.jsonl"
    timeout 120 $Q -m $W/q-$t.gguf -p 0 -n 128 -d 4096 -r 2 2>/dev/null | tail -1 >> "$OUT/qgguf.jsonl"
    timeout 60 $Q -m $W/mb-$t.gguf -p 128 --batch 32 -r 5 2>/dev/null | tail -1 >> "$OUT/qgguf.jsonl"
    tail -3 "$OUT/qgguf.jsonl" | cut -c1-240
  done
  step "qgguf: the same Q4_K_M decode without CUDA graphs, and with kernels for compute_75"
  timeout 120 $Q --no-cuda-graphs -m $W/q-q4_k_m.gguf -p 512 -n 128 -r 3 2>/dev/null | tail -1 \
    | sed 's/^{/{"variant":"no-graphs",/' >> "$OUT/qgguf.jsonl"
  QGGUF_CUDA_ARCH=75 timeout 120 $Q -m $W/q-q4_k_m.gguf -p 512 -n 128 -r 3 2>/dev/null | tail -1 \
    | sed 's/^{/{"variant":"compute_75",/' >> "$OUT/qgguf.jsonl"
  tail -2 "$OUT/qgguf.jsonl" | cut -c1-240
  step "done"
fi

if [ "$MODE" = extras ]; then
  B=$W/bin
  [ -x $B/qrun ] || { echo "no binaries in $B: run the qgguf call first on this machine"; exit 1; }
  export QGGUF_CACHE=$W/cache
  step "transformers fp16"
  left $((BUDGET - 120)) && PYTHONUNBUFFERED=1 timeout 150 python3 tools/gpu_hf_speed.py \
    --precisions fp16 --decoder $W/q05 --encoder $W/mb | tee "$OUT/hf.jsonl"
  step "per-kernel times of one decoded Q4_K_M token (ncu, graphs off: the same kernels)"
  NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  if [ -n "$NCU" ] && left $((BUDGET - 60)); then
    timeout 60 "$NCU" --csv --metrics gpu__time_duration.sum --launch-skip 600 --launch-count 140 \
      $B/qrun bench -m $W/q-q4_k_m.gguf -p 0 -n 16 -r 1 -ngl 99 --no-cuda-graphs \
      > "$OUT/ncu-q4_k_m.csv" 2>/dev/null
    python3 - "$OUT/ncu-q4_k_m.csv" <<'PY' || true
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
if rows:
    h = rows[0]; k = h.index("Kernel Name"); v = h.index("Metric Value")
    tot = collections.defaultdict(float); cnt = collections.Counter()
    for r in rows[1:]:
        try: tot[r[k].split("(")[0]] += float(r[v].replace(",", "")); cnt[r[k].split("(")[0]] += 1
        except ValueError: pass
    for name, t in sorted(tot.items(), key=lambda x: -x[1]):
        print(f"{name:28s} {cnt[name]:4d} launches {t/1000:9.1f} us")
    print(f"total {sum(tot.values())/1000:.1f} us over {sum(cnt.values())} launches")
PY
  fi
  step "done"
fi

if [ "$MODE" = llama ]; then
  [ -e $W/q-f16.gguf ] || { echo "no models in $W: run the qgguf call first on this machine"; exit 1; }
  L=$W/llama; mkdir -p $L
  tar xJf "$D/llama-cuda-bin.tar.xz" -C $L --strip-components=1
  export LD_LIBRARY_PATH=$L:$LD_LIBRARY_PATH
  $L/llama-bench --list-devices 2>&1 | tail -3
  step "llama.cpp CUDA (default settings: flash attention auto)"
  for t in f16 q8_0 q4_k_m q5_k_s iq4_nl; do
    left $BUDGET || break
    timeout 120 $L/llama-bench -m $W/q-$t.gguf -ngl 99 -p 512 -n 128 -r 3 -o jsonl 2>/dev/null >> "$OUT/llama.jsonl"
    timeout 120 $L/llama-bench -m $W/q-$t.gguf -ngl 99 -p 0 -n 128 -d 4096 -r 2 -o jsonl 2>/dev/null >> "$OUT/llama.jsonl"
    timeout 60 $L/llama-bench -m $W/mb-$t.gguf -ngl 99 -p 128 -n 0 -embd 1 -r 5 -o jsonl 2>/dev/null >> "$OUT/llama.jsonl"
    tail -3 "$OUT/llama.jsonl" | cut -c1-200
  done
  step "done"
fi
wc -l "$OUT"/*.jsonl 2>/dev/null
