#!/usr/bin/env python3
"""Fetches llama.cpp's tokenizer test vocabularies (models/ggml-vocab-*.gguf with their .inp/.out
test vectors) from the llama-cpp-python sdist on PyPI, which vendors llama.cpp, and prints the
folder holding them. Idempotent; cached in $QGGUF_CACHE (default ~/.cache/qgguf).

Only the standard library is used, so CI can run it before `cargo test`. The archive's sha256 is
checked against the one PyPI's simple index publishes.
"""
import hashlib
import os
import re
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

VERSION = "0.3.36"
WANTED = ("qwen2", "gpt-2", "bert-bge", "llama-spm", "gpt-neox")
INDEX = "https://pypi.org/simple/llama-cpp-python/"


def main() -> None:
    cache = Path(os.environ.get("QGGUF_CACHE", Path.home() / ".cache" / "qgguf"))
    out = cache / f"llama-vocab-{VERSION}"
    # gpt-neox has no test vectors; its vocabulary seeds ModernBERT-shaped tokenizers.
    names = [f"ggml-vocab-{w}.gguf{ext}" for w in WANTED for ext in ("", ".inp", ".out")
             if not (w == "gpt-neox" and ext)]
    if all((out / n).exists() for n in names):
        print(out)
        return
    html = urllib.request.urlopen(INDEX, timeout=60).read().decode()
    links = [l for l in re.findall(r'href="([^"]+)"', html) if f"-{VERSION}.tar.gz" in l]
    if not links:
        sys.exit(f"llama-cpp-python {VERSION} sdist not found on {INDEX}")
    url, _, digest = links[0].partition("#sha256=")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "sdist.tar.gz"
        h = hashlib.sha256()
        with urllib.request.urlopen(url, timeout=300) as r, open(archive, "wb") as f:
            while chunk := r.read(1 << 20):
                h.update(chunk)
                f.write(chunk)
        if digest and h.hexdigest() != digest:
            sys.exit(f"sha256 mismatch for {url}")
        with tarfile.open(archive) as t:
            for m in t.getmembers():
                base = m.name.rsplit("/", 1)[-1]
                if "/vendor/llama.cpp/models/" in m.name and base in names and m.isfile():
                    src = t.extractfile(m)
                    (out / base).write_bytes(src.read())
    missing = [w for w in WANTED if not (out / f"ggml-vocab-{w}.gguf").exists()]
    if missing:
        sys.exit(f"vocabularies missing from the sdist: {missing}")
    print(out)


if __name__ == "__main__":
    main()
