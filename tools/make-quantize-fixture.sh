#!/usr/bin/env bash
# Rebuilds tests/fixtures/llama_quantize: a tiny Qwen2 GGUF in F16 (written by gguf-py from PyPI)
# and what llama.cpp's own llama-quantize makes of it in Q4_K_M, Q5_K_S and Q8_0. Tests check
# that qgguf reads these files and that its quantizers reproduce llama-quantize's bytes tensor by
# tensor. Needs PyPI and a C/C++ toolchain (llama.cpp is built in its cache by
# ../shared/peers/llama-cpp.sh); only the small outputs are committed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
peers=${QGGUF_PEERS:-$root/../shared/peers/llama-cpp.sh}
out=$root/tests/fixtures/llama_quantize
venv=${QGGUF_VENV:-$HOME/.cache/qgguf-tools-venv}

bin=$("$peers")
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q numpy "gguf==0.19.0"
rm -rf "$out" && mkdir -p "$out"
"$venv/bin/python" "$root/tools/golden/tiny_qwen2.py" "$out/tiny-qwen2-f16.gguf"
for t in Q4_K_M Q5_K_S Q8_0; do
  "$bin/llama-quantize" "$out/tiny-qwen2-f16.gguf" "$out/tiny-qwen2-$t.gguf" "$t" > "$out/.log-$t" 2>&1 \
    || { cat "$out/.log-$t"; exit 1; }
  rm "$out/.log-$t"
done
ls -la "$out"
