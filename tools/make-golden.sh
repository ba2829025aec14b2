#!/usr/bin/env bash
# Rebuilds tests/fixtures/golden: quantized bytes from llama.cpp's own ggml (ggml_quantize_chunk,
# the path llama-quantize takes without an importance matrix) and dequantized floats from ggml and
# from the `gguf` package on PyPI. Needs network access to PyPI (llama.cpp's source comes from the
# llama-cpp-python sdist through ../shared/peers/llama-cpp.sh) and a C compiler. The peer is built
# in its cache, never in this repository; only the small fixture files are committed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
peers=${QGGUF_PEERS:-$root/../shared/peers/llama-cpp.sh}
out=$root/tests/fixtures/golden
venv=${QGGUF_VENV:-$HOME/.cache/qgguf-tools-venv}

bin=$("$peers")              # builds llama.cpp's CPU tools and libggml once, prints bin/
src=$("$peers" py)           # llama.cpp source folder (for ggml.h)
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q numpy "gguf==0.19.0"

rm -rf "$out" && mkdir -p "$out"
"$venv/bin/python" "$root/tools/golden/make_inputs.py" "$out"
rows=$("$venv/bin/python" -c "import json,sys; print(sum(c['rows'] for c in json.load(open(sys.argv[1]))['cases']))" "$out/manifest.json")
n=$("$venv/bin/python" -c "import json,sys; print(json.load(open(sys.argv[1]))['n_per_row'])" "$out/manifest.json")
tmp=$(mktemp -d)
gcc -O2 -o "$tmp/ggml_golden" "$root/tools/golden/ggml_golden.c" -I"$src/ggml/include" -L"$bin" -lggml-base -Wl,-rpath,"$bin"
"$tmp/ggml_golden" "$out" "$rows" "$n"
"$venv/bin/python" "$root/tools/golden/dequant_gguf.py" "$out"
rm -rf "$tmp"
echo "golden fixtures in $out:" && du -sh "$out"
