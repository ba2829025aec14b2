#!/usr/bin/env bash
# Runs on the GPU machine, in the repository root (see README.md beside this file).
#
#   device.sh stash N        copy .carry/ftN/payload.partNN into /tmp/ft (idempotent; checks
#                            its size and sha256 against the manifest, lists the parts held)
#   device.sh check          torch, transformers, peft, tokenizers, the GPU
#   device.sh train [ARGS]   reassemble and verify the payload, export the GGUF to an F16 HF
#                            folder with qconvert, then train.py (ARGS go to it); the files that
#                            come back are written to $OUT as they are made
#   device.sh fetch GROUP    copy the outputs of an earlier train to $OUT again: main (the
#                            train call's files) or bbc (the MiniLM bbc model, which does not fit
#                            in the train call's 8 files / 64 MiB)
#   device.sh prepare        on a later warm machine (parts stashed again): reassemble and
#                            export only, no training
#   device.sh restore GROUP FOLDER   copy the train call's files, carried back from here in
#                            FOLDER, into /tmp/ft/out-GROUP (for tools/gpu-qbench.sh)
#
# /tmp/ft lasts only while the machine stays warm (about 30 s between calls).
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
FT=${FT_DIR:-/tmp/ft}
OUT=${OUT:-/tmp/out}
mkdir -p "$FT/parts" "$OUT"
t0=$(date +%s)
say() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
die() { echo "device.sh: $*" >&2; exit 1; }

manifest() {  # the manifest of any carried folder, or the copy kept in /tmp/ft
  local m
  for m in "$root"/.carry/ft*/manifest.json "$FT/manifest.json"; do
    [ -f "$m" ] && { echo "$m"; return; }
  done
  die "no manifest: carry a .carry/ftN folder"
}

# jq-free manifest reading
mget() { python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$1" "$2"; }

held() {
  local m n i have=""
  m=$(manifest)
  n=$(mget "$m" 'len(m["parts"])')
  for i in $(seq 0 $((n - 1))); do
    [ -f "$FT/parts/$(printf 'payload.part%02d' "$i")" ] && have="$have $i" || have="$have -"
  done
  echo "parts held (of $n):$have"
}

stash() {
  local n=$1 d="$root/.carry/ft$1" name want wsize
  [ -d "$d" ] || die "$d was not carried (carry [\".carry/ft$n\"])"
  cp "$d/manifest.json" "$FT/manifest.json"
  name=$(printf 'payload.part%02d' "$n")
  want=$(mget "$d/manifest.json" "m['parts'][$n]['sha256']")
  wsize=$(mget "$d/manifest.json" "m['parts'][$n]['size']")
  if [ -f "$FT/parts/$name" ] && [ "$(stat -c %s "$FT/parts/$name")" = "$wsize" ] &&
     [ "$(sha256sum < "$FT/parts/$name" | cut -d' ' -f1)" = "$want" ]; then
    say "part $n already held ($wsize bytes)"
  else
    cp "$d/$name" "$FT/parts/$name.tmp" && mv "$FT/parts/$name.tmp" "$FT/parts/$name"
    local got
    got=$(sha256sum < "$FT/parts/$name" | cut -d' ' -f1)
    [ "$got" = "$want" ] || { rm -f "$FT/parts/$name"; die "part $n: sha256 $got, manifest says $want"; }
    say "part $n stashed: $wsize bytes, sha256 ${got:0:16}"
  fi
  held
}

check() {
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  python3 - <<'EOF'
import importlib
for m in ("torch", "transformers", "peft", "tokenizers", "safetensors"):
    try:
        print(m, importlib.import_module(m).__version__)
    except Exception as e:
        print(m, "MISSING:", e)
import torch
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF
}

assemble() {
  local m n i sha size work="$FT/work"
  m=$(manifest)
  sha=$(mget "$m" 'm["sha256"]')
  if [ -f "$work/.done" ] && [ "$(cat "$work/.done")" = "$sha" ]; then
    say "payload already unpacked"
    return
  fi
  n=$(mget "$m" 'len(m["parts"])')
  for i in $(seq 0 $((n - 1))); do
    [ -f "$FT/parts/$(printf 'payload.part%02d' "$i")" ] || die "part $i missing ($(held)): stash it first"
  done
  rm -rf "$work" && mkdir -p "$work"
  cat "$FT"/parts/payload.part* > "$FT/payload.tar"
  size=$(stat -c %s "$FT/payload.tar")
  [ "$size" = "$(mget "$m" 'm["total_size"]')" ] || die "payload is $size bytes, manifest says otherwise"
  [ "$(sha256sum < "$FT/payload.tar" | cut -d' ' -f1)" = "$sha" ] || die "payload sha256 differs from the manifest"
  tar xf "$FT/payload.tar" -C "$work" && rm -f "$FT/payload.tar"
  [ "$(stat -c %s "$work/qwen.gguf")" = 491400064 ] || die "qwen.gguf is not 491400064 bytes"
  tar xJf "$work/data.tar.xz" -C "$work" || die "data.tar.xz"
  echo "$sha" > "$work/.done"
  say "payload unpacked and verified ($size bytes, sha256 ${sha:0:16}); qwen.gguf 491400064 bytes"
}

train() {
  local work="$FT/work" hf="$FT/qwen-hf" deadline
  # the call's 600 s, less what went before this, less a margin for copying the files back
  deadline=$(( t0 + ${FT_BUDGET_S:-540} ))
  exec > >(tee -a "$OUT/log.txt") 2>&1
  prepare
  mkdir -p "$FT/out-bbc"
  PYTHONUNBUFFERED=1 python3 "$root/tools/finetune/train.py" --data "$work" --minilm "$work/minilm" \
    --qwen "$hf" --out "$OUT" --extra "$FT/out-bbc" --deadline "$deadline" "$@"
  local rc=$?
  # keep copies for `fetch main` (log.txt is copied at the end, so it is complete)
  mkdir -p "$FT/out-main" && cp "$OUT"/* "$FT/out-main/" 2>/dev/null
  ls -l "$OUT"
  say "train finished (rc $rc)"
  return $rc
}

prepare() {  # unpack the payload and export the GGUF to an F16 HF folder (train's first step;
  # alone on a later warm machine, without training)
  local hf="$FT/qwen-hf"
  assemble
  if [ ! -f "$hf/model.safetensors" ]; then
    rm -rf "$hf"
    "$FT/work/qconvert" export "$FT/work/qwen.gguf" -o "$hf" --dtype f16 --force 2>&1 | tail -3
    [ -f "$hf/model.safetensors" ] || die "qconvert export wrote no model.safetensors"
    say "GGUF exported to $hf (F16)"
  fi
}

restore() {  # restore GROUP FOLDER: copy carried train outputs into out-GROUP
  mkdir -p "$FT/out-$1" && cp "$2"/* "$FT/out-$1/" && ls -l "$FT/out-$1"
}

fetch() {
  local g=${1:?fetch main|bbc} src
  src="$FT/out-$g"
  [ -d "$src" ] && [ -n "$(ls -A "$src")" ] || die "nothing to fetch for $g ($src): the machine was not kept warm, or train did not get there"
  cp "$src"/* "$OUT"/
  ls -l "$OUT"
}

cmd=${1:-}
shift || true
case "$cmd" in
  stash) stash "${1:?stash N}" ;;
  check) check ;;
  train) train "$@" ;;
  fetch) fetch "$@" ;;
  prepare) prepare "$@" ;;
  restore) restore "$@" ;;
  *) die "usage: device.sh stash N | check | train [train.py args] | fetch main|bbc" ;;
esac
