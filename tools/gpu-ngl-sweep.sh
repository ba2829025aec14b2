#!/usr/bin/env bash
# On the GPU machine: KLD of partial offload against the CPU, swept over -ngl (1..99), with the
# CPU's weights in both packed layouts. Tells whether a change in the -ngl 12 figures of
# docs/gpu.md comes from the CPU's kernels (the CPU layers and the CPU base round activations
# to 8 bits) or from the offload path. FOLDER is the one tools/gpu-check.sh takes (CUDA builds
# of qrun and qconvert, vocab/, text.txt).
#
#   bash tools/gpu-ngl-sweep.sh .carry/cuda        (carry [".carry/cuda"])
cd "${1:?usage: gpu-ngl-sweep.sh FOLDER}"
[ -d /usr/local/cuda/lib64 ] && export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
lscpu | grep -E 'Model name|Flags' | sed 's/Flags:.*\(avx512_vnni\).*/Flags: has \1/' | cut -c1-120
./qconvert synth qwen2.5-0.5b -o /tmp/q05 --vocab vocab/ggml-vocab-qwen2.gguf 2>&1 | tail -1
for t in q8_0 q4_k_m; do
  f=/tmp/q-$t.gguf
  ./qconvert /tmp/q05 -o $f --type $t --force 2>&1 | tail -1
  for lay in interleaved rows; do
    export QGGUF_PACK_LAYOUT=$lay
    ./qrun perplexity -m $f -f text.txt -c 512 --chunks 4 --kl-divergence-base /tmp/base-$t-$lay.kld --json 2>/dev/null | cut -c1-150
    for ngl in ${NGLS:-1 6 12 18 23 99}; do
      echo -n "$t $lay ngl $ngl: "
      ./qrun perplexity -m $f -f text.txt -c 512 --chunks 4 --kl-divergence-base /tmp/base-$t-$lay.kld --kl-divergence -ngl $ngl --json 2>/dev/null | python3 -c 'import json,sys; k=json.loads(sys.stdin.read())["kld"]; print("%.3e top1 %.1f" % (k["mean"], k["same_top_pct"]))'
    done
  done
done
