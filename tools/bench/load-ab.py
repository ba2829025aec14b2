#!/usr/bin/env python3
"""A/B of qrun's load time (the `load_ms` of `qrun generate --json`) for two or more qrun
binaries on one model file, interleaved in random order so drift hits every binary alike.

    tools/bench/load-ab.py MODEL.gguf RUNS QRUN_A QRUN_B [...]
    COLD=1 tools/bench/load-ab.py ...   # evict MODEL from the page cache before each run

Prints median, mean, min and quartiles per binary, and the median's change against the first.
"""
import subprocess, json, os, statistics, sys, random
# usage: ab.py file n bin1 bin2 ... ; interleaved, prints median/mean/min of load_ms per binary
f = sys.argv[1]; n = int(sys.argv[2]); bins = sys.argv[3:]
def evict(p):
    fd = os.open(p, os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)
cold = os.environ.get("COLD") == "1"
res = {b: [] for b in bins}
for b in bins: subprocess.run([b, "generate", "-m", f, "-p", "Hello", "-n", "1", "--json"], capture_output=True)
for i in range(n):
    order = bins[:]; random.shuffle(order)
    for b in order:
        if cold: evict(f)
        o = subprocess.run([b, "generate", "-m", f, "-p", "Hello", "-n", "1", "--json"], capture_output=True, text=True)
        res[b].append(json.loads(o.stdout)["load_ms"])
base = statistics.median(res[bins[0]])
for b in bins:
    v = sorted(res[b]); m = statistics.median(v)
    print(f"{b:45s} median {m:7.1f}  mean {statistics.mean(v):7.1f}  min {v[0]:7.1f}  q1 {v[len(v)//4]:7.1f} q3 {v[3*len(v)//4]:7.1f}  vs first {100*(m/base-1):+5.1f}%  (n={n})")
