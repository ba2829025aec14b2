#!/usr/bin/env bash
# Prints a python3 that has numpy and safetensors (the CPU side of the fine-tuning kit needs
# nothing else: no torch). Uses python3 itself when it has them, else a venv it makes once in
# ${QGGUF_VENV:-~/.cache/qgguf/venv-ft} with both from PyPI.
set -euo pipefail
if python3 -c 'import numpy, safetensors' 2>/dev/null; then
  command -v python3
  exit
fi
venv=${QGGUF_VENV:-$HOME/.cache/qgguf/venv-ft}
if ! "$venv/bin/python" -c 'import numpy, safetensors' 2>/dev/null; then
  echo "making $venv (numpy, safetensors from PyPI)" >&2
  python3 -m venv "$venv" >&2
  "$venv/bin/python" -m pip install -q numpy safetensors >&2
fi
echo "$venv/bin/python"
