#!/usr/bin/env bash
# Rebuilds tests/fixtures/hf_golden: Hugging Face transformers' float32 outputs (hidden states,
# logits, pooled embeddings, class logits) for the tiny synthetic checkpoints `qconvert synth`
# makes, which tests/qrun_golden.rs compares qrun against. Needs PyPI (torch + transformers,
# cached in $QGGUF_TORCH_VENV; several GB).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${QGGUF_TORCH_VENV:-$HOME/.cache/qgguf-torch-venv}
vocab=$(python3 "$root/tools/fetch-llama-vocab.py")
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q torch "transformers==4.57.6" numpy sentencepiece safetensors protobuf
fi
(cd "$root" && cargo build --release -q --bin qconvert)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
out=$root/tests/fixtures/hf_golden
mkdir -p "$out"
for fx in tiny-qwen2 tiny-qwen2-cls tiny-bert tiny-bert-cls tiny-modernbert tiny-modernbert-cls; do
  case $fx in
    *qwen2*) v=qwen2 ;;
    *modernbert*) v=gpt-neox ;;
    *) v=bert-bge ;;
  esac
  "$root/target/release/qconvert" synth "$fx" -o "$work/$fx" --vocab "$vocab/ggml-vocab-$v.gguf"
  "$venv/bin/python" "$root/tools/golden/hf_outputs.py" "$work/$fx" "$out/$fx.json"
done
du -sh "$out"
