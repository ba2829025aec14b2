"""Writes the input rows of the golden quantization fixtures.

Usage: make_inputs.py OUT_DIR

Every case is a few rows of 512 floats (512 = 2 K-quant super-blocks = 8 NF4 blocks = 16 legacy
blocks); the random cases have more rows, since the scale searches' rarer branches need many
blocks to be exercised. The manifest lists each case's rows; dequantized references are kept for
the first DEQUANT_ROWS rows of every case only, to keep the fixtures small. Cases cover what the issue asks for (random normal, heavy-tailed, all-zero, constant,
tiny 1e-30, huge 1e30, exact ties) and a few that stress the scale searches.
"""
import json
import sys
from pathlib import Path

import numpy as np

N = 512
DEQUANT_ROWS = 2


def cases(rng):
    def normal(scale=1.0, rows=2):
        return rng.standard_normal((rows, N)) * scale

    yield "normal", normal(rows=24)
    yield "weights_std002", normal(0.02, rows=24)
    yield "heavy_tailed", rng.standard_t(2.0, (8, N))
    yield "zeros", np.zeros((2, N))
    yield "constant", np.full((2, N), 0.37)
    yield "constant_negative", np.full((2, N), -1.25)
    yield "tiny_1e-30", normal(1e-30)
    yield "huge_1e30", normal(1e30)
    yield "subnormal_1e-39", normal(1e-39)
    # Exact ties: half-integers with a block maximum that makes the scale 1 (Q4_0: max -8 -> d 1;
    # Q8_0: amax 127 -> d 1), so level computations land exactly on .5.
    j = np.arange(N)
    ties_a = ((j % 33) - 16) * 0.5
    ties_a[::32] = -8.0
    ties_b = ((j * 7) % 255 - 127) + 0.5
    ties_b[::32] = 127.0
    yield "ties", np.stack([ties_a, ties_b])
    # Blocks of very different magnitude side by side, and all-zero blocks among them.
    mags = np.array([1e-3, 1.0, 100.0, 0.0, 7.0, 1e-6, 0.5, 30.0])
    mixed = normal(rows=4) * np.repeat(np.resize(mags, N // 32), 32)
    yield "mixed_scale", mixed
    spike = np.zeros((2, N))
    spike[:, 5::32] = 3.0
    spike[1, 17::64] = -40.0
    yield "one_hot_spikes", spike


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20261123)
    listed, rows = [], []
    for name, x in cases(rng):
        x = np.asarray(x, dtype=np.float32)
        assert x.ndim == 2 and x.shape[1] == N, name
        listed.append({"name": name, "rows": x.shape[0]})
        rows.append(x)
    np.concatenate(rows).astype("<f4").tofile(out / "inputs.f32")
    manifest = {"n_per_row": N, "dequant_rows": DEQUANT_ROWS, "cases": listed}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
