"""Dequantizes the golden <type>.q with the `gguf` package from PyPI (gguf.quants.dequantize)
into <type>.gguf.f32, for the types that package can dequantize, and trims ggml's
<type>.ggml.f32 the same way: only the first `dequant_rows` rows of each case are kept.

Usage: dequant_gguf.py DIR
"""
import json
import sys
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize

NAMES = {"f16": T.F16, "bf16": T.BF16, "q4_0": T.Q4_0, "q4_1": T.Q4_1, "q5_0": T.Q5_0,
         "q5_1": T.Q5_1, "q8_0": T.Q8_0, "q4_K": T.Q4_K, "q5_K": T.Q5_K, "q6_K": T.Q6_K,
         "iq4_nl": T.IQ4_NL}


def main():
    d = Path(sys.argv[1])
    m = json.loads((d / "manifest.json").read_text())
    n, keep = m["n_per_row"], m["dequant_rows"]
    starts = np.cumsum([0] + [c["rows"] for c in m["cases"]])[:-1]
    kept = np.concatenate([np.arange(s, s + keep) for s in starts])
    n_rows = sum(c["rows"] for c in m["cases"])
    done = []
    for name, qtype in NAMES.items():
        raw = np.fromfile(d / f"{name}.q", dtype=np.uint8).reshape(n_rows, -1)
        y = dequantize(raw[kept], qtype).astype("<f4")
        assert y.shape == (len(kept), n), (name, y.shape)
        y.tofile(d / f"{name}.gguf.f32")
        done.append(name)
    for p in d.glob("*.ggml.f32"):
        y = np.fromfile(p, dtype="<f4").reshape(n_rows, n)
        y[kept].tofile(p)
    m["gguf_dequantized"] = done
    (d / "manifest.json").write_text(json.dumps(m, indent=1) + "\n")


if __name__ == "__main__":
    main()
