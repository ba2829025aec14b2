#!/usr/bin/env bash
# Stages the fine-tuning inputs for the GPU machine as carry folders .carry/ft0 .. .carry/ftK
# (gitignored), and prints the calls that run the fine-tuning there (see README.md beside this).
#
# One tar stream holds everything the GPU machine lacks, small things first:
#   data.tar.xz     sotu/ and bbc/ splits (tools/fetch-data.sh)
#   qconvert        target/release/qconvert, stripped (exports the GGUF to a HF folder there)
#   minilm/         all-MiniLM-L6-v2 as F16 safetensors + config.json, tokenizer files
#   qwen.gguf       the real Qwen2.5-Coder-0.5B Q4_K_M GGUF (491,400,064 bytes)
# cut into parts that, with the working tree, fit one call's 64 MiB. Each .carry/ftN holds
# payload.partNN and manifest.json (every part's size and sha256, the whole stream's sha256).
#
# Usage: tools/finetune/stage.sh [--force]
set -euo pipefail
root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
cd "$root"
models=${QGGUF_MODELS:-$HOME/.cache/qgguf/models}
data=${QGGUF_DATA:-$HOME/.cache/qgguf/data}
gguf=$models/qwen2.5-coder-0.5b-q4_k_m.gguf
qconvert=${QCONVERT:-$root/target/release/qconvert}
want=491400064
[ -f "$gguf" ] && [ "$(stat -c %s "$gguf")" = $want ] || {
  echo "$gguf missing or not $want bytes: run tools/fetch-models.sh real" >&2; exit 1; }
[ -f "$models/minilm-l6/model.safetensors" ] || {
  echo "$models/minilm-l6 missing: run tools/fetch-models.sh real" >&2; exit 1; }
[ -x "$qconvert" ] || { echo "$qconvert missing: cargo build --release --bin qconvert" >&2; exit 1; }
[ -f "$data/sotu/meta.json" ] && [ -f "$data/bbc/meta.json" ] || bash "$root/tools/fetch-data.sh"
git check-ignore -q .carry/ft0 || { echo ".carry/ is not gitignored here" >&2; exit 1; }

# What travels besides a carry folder: tracked and untracked-not-ignored files.
tree=$( { git ls-files -z; git ls-files -z --others --exclude-standard; } \
  | xargs -0 -r stat -c %s 2>/dev/null | awk '{s+=$1} END {print s+0}')
limit=$((64 * 1024 * 1024))
margin=$((2 * 1024 * 1024))  # manifest, and room for the tree to grow a little
chunk=$(( (limit - tree - margin) / 1048576 * 1048576 ))
[ $chunk -ge $((8 * 1048576)) ] || { echo "the working tree ($tree bytes) leaves no room" >&2; exit 1; }

# Inputs' identity: restage only when one changes.
stamp=$(printf '%s\n' "$(stat -c '%s %Y' "$gguf" "$qconvert" "$models/minilm-l6/model.safetensors" \
  "$data"/sotu/*.jsonl "$data"/bbc/*.jsonl)" "$chunk" | sha256sum | cut -c1-16)
if [ "${1:-}" != --force ] && [ -f .carry/ft0/manifest.json ] && grep -q "\"stamp\": \"$stamp\"" .carry/ft0/manifest.json; then
  echo "staged already (.carry/ft*, stamp $stamp); --force restages" >&2
else
  py=$("$root/tools/finetune/pyenv.sh")
  rm -rf .carry/ft[0-9]* .carry/.ft-stage
  s=.carry/.ft-stage
  mkdir -p $s/p/minilm
  tar cJf $s/p/data.tar.xz -C "$data" sotu/train.jsonl sotu/val.jsonl sotu/test.jsonl \
    sotu/labels.json sotu/meta.json bbc/train.jsonl bbc/val.jsonl bbc/test.jsonl bbc/labels.json bbc/meta.json
  strip -o $s/p/qconvert "$qconvert"
  "$py" "$root/tools/finetune/kit.py" minilm-f16 "$models/minilm-l6" $s/p/minilm
  ln -s "$gguf" $s/p/qwen.gguf
  # GGUF last, so a short stream is obvious; -h stores the file, not the link
  tar cf $s/payload.tar -h -C $s/p --owner=0 --group=0 data.tar.xz qconvert minilm qwen.gguf
  total=$(stat -c %s $s/payload.tar)
  sha=$(sha256sum $s/payload.tar | cut -d' ' -f1)
  split -b $chunk -d -a 2 $s/payload.tar $s/payload.part
  rm $s/payload.tar
  n=$(ls $s/payload.part* | wc -l)
  "$py" - "$s" "$n" "$total" "$sha" "$stamp" "$chunk" <<'EOF'
import hashlib, json, os, sys
s, n, total, sha, stamp, chunk = sys.argv[1:]
parts = []
for i in range(int(n)):
    p = os.path.join(s, f"payload.part{i:02d}")
    h = hashlib.sha256(open(p, "rb").read()).hexdigest()
    parts.append({"name": f"payload.part{i:02d}", "size": os.path.getsize(p), "sha256": h})
m = {"stamp": stamp, "parts": parts, "total_size": int(total), "sha256": sha,
     "chunk": int(chunk), "gguf_size": 491400064}
for i in range(int(n)):
    d = f".carry/ft{i}"
    os.makedirs(d)
    os.replace(os.path.join(s, f"payload.part{i:02d}"), os.path.join(d, f"payload.part{i:02d}"))
    json.dump(m, open(os.path.join(d, "manifest.json"), "w"), indent=1)
EOF
  rm -rf $s
fi

n=$(ls -d .carry/ft[0-9]* | wc -l)
last=$((n - 1))
echo "== staged: $n carry folders (.carry/ft0 .. .carry/ft$last), parts of at most $((chunk / 1048576)) MiB; working tree $((tree / 1024)) KiB"
du -sh .carry/ft[0-9]* | sed 's/^/   /'
cat <<EOF
== calls for the device tool (kind nvidia-h100-x1), one after the other, each started within
   ~30 s of the previous one's reply (the machine keeps /tmp/ft only while it stays warm):
EOF
for i in $(seq 0 $((last - 1))); do
  extra=""
  [ $i = 0 ] && extra=" && bash tools/finetune/device.sh check"
  echo "  $((i + 1)). command: bash tools/finetune/device.sh stash $i$extra"
  echo "     carry: [\".carry/ft$i\"]   timeout_s: 120"
done
echo "  $n. command: bash tools/finetune/device.sh stash $last && bash tools/finetune/device.sh train"
echo "     carry: [\".carry/ft$last\"]   timeout_s: 600   (about 4-6 minutes, at most 9; \$OUT: minilm-sotu.*, qwen-sotu-lora.*, metrics.json, log.txt)"
echo "  $((n + 1)). command: bash tools/finetune/device.sh fetch bbc"
echo "     carry: []   timeout_s: 60   (\$OUT: minilm-bbc.*, metrics.json)"
echo "== then here: tools/finetune/collect.sh DIR (the files of call $n, and of call $((n + 1)) if you have them)"
