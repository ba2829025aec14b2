#!/usr/bin/env python3
"""Prints the Markdown table of kernel throughput (GB/s of weight bytes, criterion's median
estimate) from the results `cargo bench -p quant_types --bench vec_dot` leaves in
target/criterion. Usage: tools/kernel-table.py [TARGET_DIR]"""
import json
import sys
from pathlib import Path

ORDER = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "NF4",
         "F16", "BF16", "F32"]
PATHS = ["scalar", "avx2", "avx512", "avx512vnni"]


def main():
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "target") / "criterion"
    print("| type | " + " | ".join(PATHS) + " |")
    print("|---" * (len(PATHS) + 1) + "|")
    for ty in ORDER:
        cells = []
        for p in PATHS:
            d = root / f"vec_dot_{ty}" / p / "new"
            if not d.exists():
                cells.append("—")
                continue
            bench = json.loads((d / "benchmark.json").read_text())
            est = json.loads((d / "estimates.json").read_text())
            nbytes = bench["throughput"]["Bytes"]
            ns = est["median"]["point_estimate"]
            cells.append(f"{nbytes / ns:.1f}")
        print(f"| {ty} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
