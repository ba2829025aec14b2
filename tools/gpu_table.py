#!/usr/bin/env python3
"""Turns the files that `tools/gpu-table.sh` writes on the GPU machine (qgguf.jsonl, llama.jsonl,
hf.jsonl) into the Markdown table of the README and docs/gpu.md.

    python3 tools/gpu_table.py DIR [DIR...]

Rows from several folders are merged (the first call writes qgguf's and transformers' rows, a
second call llama.cpp's). Decoder columns: prompt processing of 512 tokens and generation of 128
(tokens/s), peak VRAM; encoder columns: ms per example at batch 32 x 128 tokens, peak VRAM.
"""
import json
import sys
from pathlib import Path

ORDER = ["F16", "Q8_0", "Q4_K_M", "Q5_K_S", "IQ4_NL", "NF4"]


def rows(dirs, name):
    out = []
    for d in dirs:
        p = Path(d) / name
        if p.exists():
            for line in p.read_text().splitlines():
                line = line.strip()
                if line.startswith("{"):
                    out.append(json.loads(line))
    return out


def fmt(v, nd=0):
    if v is None:
        return "–"
    return f"{v:,.{nd}f}"


def llama_type(r):
    # llama-bench names the file type in model_type, e.g. "qwen2 1B Q4_K - Medium".
    t = r.get("model_type", "")
    for key, name in (("Q4_K - Medium", "Q4_K_M"), ("Q5_K - Small", "Q5_K_S"), ("Q8_0", "Q8_0"),
                      ("IQ4_NL", "IQ4_NL"), ("F16", "F16")):
        if key in t:
            return name
    return t


def main():
    dirs = sys.argv[1:] or ["."]
    q = rows(dirs, "qgguf.jsonl")
    ll = rows(dirs, "llama.jsonl")
    hf = rows(dirs, "hf.jsonl")
    dec = {r["type"]: r for r in q if r.get("arch") == "qwen2"}
    enc = {r["type"]: r for r in q if r.get("arch") != "qwen2"}
    lpp, ltg, lenc = {}, {}, {}
    for r in ll:
        t = llama_type(r)
        is_enc = r.get("embeddings") or "bert" in r.get("model_type", "").lower()
        if is_enc and r.get("n_prompt"):
            # llama-bench's -embd 1 pp test: one sequence of n_prompt tokens at a time.
            lenc[t] = 1000.0 / r["avg_ts"] * r["n_prompt"]
        elif r.get("n_gen"):
            ltg[t] = r["avg_ts"]
        elif r.get("n_prompt"):
            lpp[t] = r["avg_ts"]
    print("| stack | format | pp512 t/s | tg128 t/s | decoder VRAM MiB | encoder ms/example | encoder VRAM MiB |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for t in ORDER:
        d, e = dec.get(t, {}), enc.get(t, {})
        print(f"| qgguf -ngl 99 | {t} | {fmt(d.get('pp_tps'))} | {fmt(d.get('tg_tps'), 1)} | "
              f"{fmt(d.get('vram_peak_mib'))} | {fmt(e.get('ms_per_example'), 3)} | "
              f"{fmt(e.get('vram_peak_mib'))} |")
    for t in ORDER:
        if t in lpp or t in ltg or t in lenc:
            print(f"| llama.cpp CUDA | {t} | {fmt(lpp.get(t))} | {fmt(ltg.get(t), 1)} | – | "
                  f"{fmt(lenc.get(t), 3)} | – |")
    hd = {(r["kind"], r["precision"]): r for r in hf if "error" not in r}
    for p, label in (("fp16", "fp16"), ("int8", "bitsandbytes int8"), ("nf4", "bitsandbytes NF4")):
        d, e = hd.get(("decoder", p), {}), hd.get(("encoder", p), {})
        if d or e:
            print(f"| transformers | {label} | {fmt(d.get('pp512_tps'))} | "
                  f"{fmt(d.get('tg128_tps'), 1)} | {fmt(d.get('vram_peak_mib'))} | "
                  f"{fmt(e.get('ms_per_example'), 3)} | {fmt(e.get('vram_peak_mib'))} |")
    for r in hf:
        if "error" in r:
            print(f"\ntransformers {r['kind']} {r['precision']} failed: {r['error']}")


if __name__ == "__main__":
    main()
