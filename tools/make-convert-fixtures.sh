#!/usr/bin/env bash
# Rebuilds tests/fixtures/convert: for each tiny synthetic checkpoint (made by `qconvert synth`,
# deterministic), llama.cpp's own converter (convert_hf_to_gguf.py, F16) and llama-quantize
# (Q8_0, Q4_K_M, Q5_K_S, IQ4_NL) are run, and the resulting files are committed as manifests
# (metadata, tensor types, shapes and data sha256s; `qconvert info --json`). CI regenerates the
# same checkpoints, converts them with qconvert and compares manifests, without torch or llama.cpp.
#
# Needs: PyPI (torch + transformers 4.57.6 for the converter; several GB, cached in
# $QGGUF_TORCH_VENV), a C++ toolchain (llama.cpp's tools, built by ../shared/peers/llama-cpp.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
peers=${QGGUF_PEERS:-$root/../shared/peers/llama-cpp.sh}
venv=${QGGUF_TORCH_VENV:-$HOME/.cache/qgguf-torch-venv}
out=$root/tests/fixtures/convert
bin=$("$peers")
src=$("$peers" py)
vocab=$(python3 "$root/tools/fetch-llama-vocab.py")
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q torch "transformers==4.57.6" numpy sentencepiece safetensors protobuf
fi
(cd "$root" && cargo build --release -q --bin qconvert)
q=$root/target/release/qconvert
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rm -rf "$out" && mkdir -p "$out"
for fx in tiny-qwen2 tiny-bert tiny-bert-cls tiny-modernbert tiny-modernbert-cls; do
  case $fx in
    *qwen2*) v=qwen2 ;;
    *modernbert*) v=gpt-neox ;;
    *) v=bert-bge ;;
  esac
  "$q" synth "$fx" -o "$work/$fx" --vocab "$vocab/ggml-vocab-$v.gguf"
  mkdir -p "$out/$fx"
  (cd "$work/$fx" && sha256sum config.json model.safetensors tokenizer.json tokenizer_config.json) > "$out/$fx/input.sha256"
  "$venv/bin/python" "$src/convert_hf_to_gguf.py" "$work/$fx" --outtype f16 --outfile "$work/$fx-F16.gguf" > "$work/$fx.log" 2>&1 \
    || { tail -20 "$work/$fx.log"; exit 1; }
  "$q" info --json "$work/$fx-F16.gguf" > "$out/$fx/F16.json"
  for t in Q8_0 Q4_K_M Q5_K_S IQ4_NL; do
    "$bin/llama-quantize" "$work/$fx-F16.gguf" "$work/$fx-$t.gguf" "$t" > "$work/$fx-$t.log" 2>&1 \
      || { tail -20 "$work/$fx-$t.log"; exit 1; }
    "$q" info --json "$work/$fx-$t.gguf" > "$out/$fx/$t.json"
  done
done
du -sh "$out"
