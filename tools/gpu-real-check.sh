#!/usr/bin/env bash
# Real weights on the GPU against the CPU, on the same file: all-MiniLM-L6-v2 (real weights,
# tools/fetch-models.sh real; converted here by `qconvert minilm-l6 -o FOLDER/minilm-q8_0.gguf
# --type q8_0`) embeds the texts of FOLDER/texts.txt on both; prints the cosine between the
# GPU's and the CPU's embedding of each text (min, mean) and the GPU's ms per example at batch
# 32 x 128 tokens. The qrun binary comes from .carry/gpu (tools/gpu-prepare.sh).
#   bash tools/gpu-real-check.sh FOLDER     (device tool: carry [".carry/gpu", FOLDER])
set -uo pipefail
D=$(cd "${1:?usage: gpu-real-check.sh FOLDER}" && pwd)
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
[ -d /usr/local/cuda/lib64 ] && export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
B=/tmp/gpu-table/bin
[ -x $B/qrun ] || { mkdir -p $B && tar xJf .carry/gpu/qgguf-bin.tar.xz -C $B; }
export QGGUF_CACHE=/tmp/gpu-table/cache
for f in "$D"/minilm-*.gguf; do
  n=$(basename "$f" .gguf)
  $B/qrun embed -m "$f" --input "$D/texts.txt" -o /tmp/$n-cpu.jsonl 2>/dev/null
  $B/qrun embed -m "$f" --input "$D/texts.txt" -o /tmp/$n-gpu.jsonl -ngl 1 2>/dev/null
  python3 - /tmp/$n-cpu.jsonl /tmp/$n-gpu.jsonl "$n" <<'PY'
import json, sys, math
a = [json.loads(l)["embedding"] for l in open(sys.argv[1])]
b = [json.loads(l)["embedding"] for l in open(sys.argv[2])]
cos = [sum(x * y for x, y in zip(u, v)) / math.sqrt(sum(x * x for x in u) * sum(y * y for y in v))
       for u, v in zip(a, b)]
print(json.dumps({"model": sys.argv[3], "texts": len(cos), "cos_min": min(cos),
                  "cos_mean": sum(cos) / len(cos)}))
PY
  $B/qrun bench -m "$f" -p 128 --batch 32 -r 5 -ngl 1 --json 2>/dev/null | tail -1
done | tee "$OUT/real.jsonl"
