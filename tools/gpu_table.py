#!/usr/bin/env python3
"""Turns what `tools/gpu-table.sh` writes on the GPU machine (qgguf.jsonl, llama.jsonl, hf.jsonl)
into the Markdown tables of the README and docs/gpu.md.

    python3 tools/gpu_table.py DIR [DIR...]

Rows from several folders are merged. Decoder columns: generation of 128 tokens at depth 0 and
at depth 4096 (tokens/s, each token sampled where the logits are), prompt processing of 512
tokens, peak VRAM held by qgguf; the ratio columns are qgguf over llama.cpp and qgguf's format
over its own F16. Encoder: ms per example at batch 32 x 128 tokens.
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
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError:
                        pass
    return out


def fmt(v, nd=0):
    if v is None:
        return "–"
    return f"{v:,.{nd}f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.2f}x"


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
    q = [r for r in rows(dirs, "qgguf.jsonl") if "variant" not in r]
    variants = [r for r in rows(dirs, "qgguf.jsonl") if "variant" in r]
    ll = rows(dirs, "llama.jsonl")
    hf = rows(dirs, "hf.jsonl")
    dec0 = {r["type"]: r for r in q if r.get("arch") == "qwen2" and not r.get("depth")}
    decd = {r["type"]: r for r in q if r.get("arch") == "qwen2" and r.get("depth")}
    enc = {r["type"]: r for r in q if r.get("arch") not in (None, "qwen2")}
    ltg0, ltgd, lpp, lenc = {}, {}, {}, {}
    for r in ll:
        t = llama_type(r)
        if r.get("embeddings") and r.get("n_prompt"):
            # llama-bench's -embd 1 pp test: one sequence of n_prompt tokens at a time.
            lenc[t] = 1000.0 / r["avg_ts"] * r["n_prompt"]
        elif r.get("n_gen"):
            (ltgd if r.get("n_depth") else ltg0)[t] = r["avg_ts"]
        elif r.get("n_prompt"):
            lpp[t] = r["avg_ts"]
    f16 = dec0.get("F16", {})
    f16d = decd.get("F16", {})
    print("| format | qgguf tg128 | llama.cpp tg128 | ratio | vs qgguf F16 | qgguf tg128 @4096 "
          "| llama.cpp tg128 @4096 | ratio | qgguf pp512 | llama.cpp pp512 | ratio "
          "| qgguf VRAM MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for t in ORDER:
        d, dd = dec0.get(t, {}), decd.get(t, {})
        if not d and t not in ltg0:
            continue
        print(f"| {t} | {fmt(d.get('tg_tps'), 1)} | {fmt(ltg0.get(t), 1)} | "
              f"{ratio(d.get('tg_tps'), ltg0.get(t))} | "
              f"{ratio(d.get('tg_tps'), f16.get('tg_tps')) if t != 'F16' else '–'} | "
              f"{fmt(dd.get('tg_tps'), 1)} | {fmt(ltgd.get(t), 1)} | "
              f"{ratio(dd.get('tg_tps'), ltgd.get(t))} | {fmt(d.get('pp_tps'))} | "
              f"{fmt(lpp.get(t))} | {ratio(d.get('pp_tps'), lpp.get(t))} | "
              f"{fmt(d.get('vram_peak_mib'))} |")
    print()
    print("| format | qgguf ms/example | vs qgguf F16 | llama.cpp ms/example (batch 1) | qgguf VRAM MiB |")
    print("|---|---:|---:|---:|---:|")
    ef16 = enc.get("F16", {}).get("ms_per_example")
    for t in ORDER:
        e = enc.get(t, {})
        if not e:
            continue
        ms = e.get("ms_per_example")
        print(f"| {t} | {fmt(ms, 3)} | {ratio(ef16, ms) if t != 'F16' else '–'} | "
              f"{fmt(lenc.get(t), 3)} | {fmt(e.get('vram_peak_mib'))} |")
    hd = {(r["kind"], r["precision"]): r for r in hf if "error" not in r}
    d, e = hd.get(("decoder", "fp16"), {}), hd.get(("encoder", "fp16"), {})
    if d or e:
        print()
        print(f"transformers fp16 on the same GPU: decoder tg128 {fmt(d.get('tg128_tps'), 1)} "
              f"tokens/s, pp512 {fmt(d.get('pp512_tps'))} tokens/s, peak "
              f"{fmt(d.get('vram_peak_mib'))} MiB; encoder {fmt(e.get('ms_per_example'), 3)} "
              f"ms/example at batch 32 x 128, peak {fmt(e.get('vram_peak_mib'))} MiB.")
    for r in variants:
        print(f"\nqgguf {r['type']} variant {r['variant']}: tg128 {fmt(r.get('tg_tps'), 1)}, "
              f"pp512 {fmt(r.get('pp_tps'))} tokens/s")
    for r in hf:
        if "error" in r:
            print(f"\ntransformers {r['kind']} {r['precision']} failed: {r['error']}")


if __name__ == "__main__":
    main()
