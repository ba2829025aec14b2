#!/usr/bin/env python3
"""Two qbench runs side by side: is the second within noise of the first?

  tools/qbench_compare.py FIRST/results.json SECOND/results.json [--out compare.md]

Rows are matched on (model, engine, format, device, threads). For each pair it prints the
measured columns as `first -> second (change)`, split in two groups:

- deterministic: accuracy, macro F1, agreement, flips, ECE, perplexity, KLD, top-1, file size.
  The same files and texts must give the same values; any change is reported as a mismatch.
- timed: ms/example, pp and tg tokens/s, peak memory, load time: these vary between runs;
  the summary gives the largest relative change of each, so a reader can judge the noise.

Exits 1 when a deterministic column differs (beyond float printing) or a row is missing from
one run. Standard library only.
"""

import argparse
import json
import math
import sys

KEY = ("model", "engine", "format", "device", "threads")
DETERMINISTIC = ["file_mib", "accuracy", "macro_f1", "agree", "flips", "ece", "ece_ts",
                 "ppl", "kld_mean", "kld_p99", "top1"]
TIMED = ["ms_per_example", "pp_tps", "tg_tps", "peak_mib", "load_ms"]


def rows(path):
    with open(path) as f:
        data = json.load(f)
    out = {}
    for r in data["rows"]:
        if r.get("error"):
            continue
        out[tuple(r.get(k) for k in KEY)] = r
    return out


def fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def change(a, b):
    if not a:
        return None
    return (b - a) / abs(a) * 100.0


def same(a, b):
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("first")
    ap.add_argument("second")
    ap.add_argument("--out", help="also write the Markdown here")
    args = ap.parse_args()
    a, b = rows(args.first), rows(args.second)
    lines = ["| model | engine | format | timed: first → second | deterministic |",
             "|---|---|---|---|---|"]
    worst = {c: (0.0, None) for c in TIMED}
    mismatches, missing = [], []
    for key in sorted(set(a) | set(b), key=lambda k: tuple(str(x) for x in k)):
        if key not in a or key not in b:
            missing.append(key)
            continue
        ra, rb = a[key], b[key]
        timed = []
        for c in TIMED:
            if ra.get(c) is None or rb.get(c) is None:
                continue
            d = change(ra[c], rb[c])
            timed.append(f"{c} {fmt(ra[c])} → {fmt(rb[c])} ({d:+.1f}%)")
            # Load time is dominated by the page cache (first run after converting or not):
            # reported, but kept out of the noise summary.
            if c != "load_ms" and d is not None and abs(d) > abs(worst[c][0]):
                worst[c] = (d, key)
        diff = [c for c in DETERMINISTIC if not same(ra.get(c), rb.get(c))]
        if diff:
            mismatches.append((key, diff))
        det = "identical" if not diff else "differ: " + ", ".join(
            f"{c} {fmt(ra.get(c))} → {fmt(rb.get(c))}" for c in diff)
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {'; '.join(timed)} | {det} |")
    lines.append("")
    lines.append("Largest change between the runs (load time left out):")
    lines.append("")
    for c in TIMED:
        d, key = worst[c]
        if key is not None:
            lines.append(f"- {c}: {d:+.1f}% ({key[0]} {key[2]}, {key[1]})")
    lines.append(f"- deterministic columns: {len(mismatches)} row(s) differ")
    if missing:
        lines.append(f"- rows in one run only: {', '.join(' '.join(map(str, k[:3])) for k in missing)}")
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 1 if mismatches or missing else 0


if __name__ == "__main__":
    sys.exit(main())
