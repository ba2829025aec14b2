#!/usr/bin/env bash
# Here, on the CPU (numpy + safetensors; no torch): turns what came back from the GPU machine
# into Hugging Face folders in $QGGUF_MODELS (default ~/.cache/qgguf/models), then checks that
# qconvert converts each to F16 GGUF and that qrun runs it.
#
#   minilm-sotu-cls/  minilm-bbc-cls/  qwen-sotu-cls/  qwen-sotu-lm/   (see kit.py)
#
# Usage: tools/finetune/collect.sh DIR [DIR...]   (the folders holding the train call's files and,
#        if fetched, the bbc call's: *.safetensors.partN and metrics.json)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
models=${QGGUF_MODELS:-$HOME/.cache/qgguf/models}
[ $# -ge 1 ] || { echo "usage: collect.sh DIR [DIR...]" >&2; exit 2; }
for d in "$@"; do [ -d "$d" ] || { echo "$d: not a folder" >&2; exit 1; }; done
[ -f "$models/qwen2.5-coder-0.5b/model.safetensors" ] && [ -f "$models/minilm-l6/model.safetensors" ] || {
  echo "$models lacks qwen2.5-coder-0.5b/ or minilm-l6/: run tools/fetch-models.sh real" >&2; exit 1; }
py=$("$root/tools/finetune/pyenv.sh")
QGGUF_MODELS=$models "$py" "$root/tools/finetune/kit.py" collect "$@"

qconvert=${QCONVERT:-$root/target/release/qconvert}
qrun=${QRUN:-$root/target/release/qrun}
if [ ! -x "$qconvert" ] || [ ! -x "$qrun" ]; then
  echo "no $qconvert / $qrun: skipping the GGUF check (cargo build --release)" >&2
  exit 0
fi
data=${QGGUF_DATA:-$HOME/.cache/qgguf/data}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
check() {  # DIR TASK: F16 GGUF, then classify a few test texts and compare with the labels
  local dir=$models/$1 task=$2 gguf=$tmp/$1.gguf
  [ -d "$dir" ] || return 0
  "$qconvert" "$dir" -o "$gguf" --type f16 --force 2>&1 | tail -1
  if [ -n "$task" ]; then
    head -n 16 "$data/$task/test.jsonl" > "$tmp/$task.jsonl"
    "$qrun" classify -m "$gguf" --input "$tmp/$task.jsonl" -o "$tmp/$1.out.jsonl" 2>/dev/null
    "$py" - "$tmp/$task.jsonl" "$tmp/$1.out.jsonl" "$data/$task/labels.json" "$1" "$dir/reference.json" <<'EOF'
import json, os, sys
gold = [json.loads(l)["label"] for l in open(sys.argv[1])]
out = [json.loads(l) for l in open(sys.argv[2])]
names = json.load(open(sys.argv[3]))
got = [o["label_id"] for o in out]
ok = sum(1 for g, p in zip(gold, got) if g == p)
print(f"{sys.argv[4]}: qrun classify ran on {len(out)} test texts; {ok}/{len(gold)} match the gold labels"
      f" (first: {out[0]['label']!r}, p={max(out[0]['probabilities']):.3f}; gold {names[gold[0]]!r})")
if os.path.exists(sys.argv[5]):
    ref = json.load(open(sys.argv[5]))["test_pred"][:len(got)]
    agree = sum(1 for a, b in zip(ref, got) if a == b)
    print(f"{sys.argv[4]}: qrun F16 agrees with the GPU side's fp32 predictions on {agree}/{len(ref)}")
    if agree < len(ref) - 1:
        sys.exit(f"{sys.argv[4]}: qrun and the reference disagree on {len(ref) - agree} of {len(ref)} texts")
EOF
  else
    "$qrun" generate -m "$gguf" -p "Call me Ishmael. Some years ago" -n 8 2>/dev/null | tail -2
  fi
  rm -f "$gguf"
}
check minilm-sotu-cls sotu
check minilm-bbc-cls bbc
check qwen-sotu-cls sotu
check qwen-sotu-lm ""
