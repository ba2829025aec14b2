#!/usr/bin/env bash
# Runs the fuzz targets one after another (never in parallel: one core in all, at the lowest
# priority), SECS seconds each (default 3600), after building them with cargo-fuzz (nightly,
# AddressSanitizer, debug assertions so integer overflows count as crashes).
#
#   fuzz/run-all.sh [SECS] [TARGET...]        logs in $LOG_DIR (default fuzz/logs)
#
# Each target reads the committed seeds (fuzz/corpus/T, never written) and grows a working
# corpus in fuzz/work/T. Crashes land in fuzz/artifacts/T/. With -jobs=1 libFuzzer runs the
# fuzzing in a child whose live output is fuzz/work/T.run/fuzz-0.log; the parent copies it into
# $LOG_DIR/fuzz-T.log when the child ends, final stats (execs, exec/s, cov, ft) included.
set -euo pipefail
cd "$(dirname "$0")"
fuzz_dir=$(pwd)
secs=${1:-3600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(gguf_reader safetensors tokenizer_from_gguf)
log_dir=${LOG_DIR:-$fuzz_dir/logs}
mkdir -p "$log_dir"

nice -n 19 cargo +nightly fuzz build -a
bin_dir=$fuzz_dir/target/x86_64-unknown-linux-gnu/release

for t in "${targets[@]}"; do
    mkdir -p "work/$t" "work/$t.run" "artifacts/$t"
    log=$log_dir/fuzz-$t.log
    echo "== $t: ${secs}s from $(date -Is)" >"$log"
    (
        cd "work/$t.run"
        nice -n 19 "$bin_dir/$t" "$fuzz_dir/work/$t" "$fuzz_dir/corpus/$t" \
            -jobs=1 -workers=1 -rss_limit_mb=2048 -timeout=10 \
            -max_total_time="$secs" -print_final_stats=1 \
            -artifact_prefix="$fuzz_dir/artifacts/$t/" >>"$log" 2>&1
    ) || echo "== $t: libFuzzer exited with status $?" >>"$log"
    echo "== $t: ended $(date -Is)" >>"$log"
done
