#!/usr/bin/env python3
"""HF transformers rows of the GPU speed table: fp16, bitsandbytes int8 (LLM.int8) and NF4 (fp16
compute), each in a child process of its own, on the same synthetic checkpoints qgguf converts.

  decoder (Qwen2ForCausalLM): pp512 = 512 prompt tokens from an empty cache, one forward, best
          of 3 after a warm-up; tg128 = 128 tokens generated one at a time after a 1-token
          prompt (greedy), as llama-bench defines its tests, one run after a warm-up.
  encoder (sequence classifier): ms per example at batch 32 x 128 tokens, best of 5 after a
          warm-up.
Peak VRAM: torch.cuda.max_memory_allocated (the CUDA context is not counted).

  python3 tools/gpu_hf_speed.py [--precisions fp16,int8,nf4] --decoder DIR --encoder DIR > rows.jsonl
"""

import argparse
import json
import subprocess
import sys
import time


def child(kind, path, precision):
    import torch
    from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification,
                              BitsAndBytesConfig)

    kw = {"dtype": torch.float16, "device_map": "cuda:0"}
    if precision == "int8":
        kw["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
    elif precision == "nf4":
        kw["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float16)
    cls = AutoModelForCausalLM if kind == "decoder" else AutoModelForSequenceClassification
    t0 = time.perf_counter()
    model = cls.from_pretrained(path, **kw).eval()
    torch.cuda.synchronize()
    row = {"peer": "transformers", "precision": precision, "kind": kind,
           "load_s": time.perf_counter() - t0}
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(0)

    def timed(fn, reps, warm=None):
        (warm or fn)()
        torch.cuda.synchronize()
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t)
        return best

    with torch.inference_mode():
        if kind == "decoder":
            prompt = torch.randint(0, vocab, (1, 512), generator=gen).cuda()
            row["pp512_tps"] = 512 / timed(lambda: model(prompt, use_cache=True), 3)
            one = prompt[:, :1]

            def gen(n):
                return lambda: model.generate(one, max_new_tokens=n, min_new_tokens=n,
                                              do_sample=False, use_cache=True)

            # One timed run after a 16-token warm-up: bitsandbytes int8 decodes at a few tokens
            # per second, and the GPU machine's time is scarce.
            row["tg128_tps"] = 128 / timed(gen(128), 1, warm=gen(16))
        else:
            ids = torch.randint(0, vocab, (32, 128), generator=gen).cuda()
            mask = torch.ones_like(ids)
            row["ms_per_example"] = timed(lambda: model(input_ids=ids, attention_mask=mask),
                                          5) * 1000 / 32
    row["vram_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(row), flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--decoder")
    p.add_argument("--encoder")
    p.add_argument("--child", nargs=3)
    p.add_argument("--precisions", default="fp16,int8,nf4")
    a = p.parse_args()
    if a.child:
        child(*a.child)
        return
    for kind, path in (("decoder", a.decoder), ("encoder", a.encoder)):
        if not path:
            continue
        for precision in a.precisions.split(","):
            r = subprocess.run([sys.executable, __file__, "--child", kind, path, precision],
                               capture_output=True, text=True)
            lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
            if r.returncode or not lines:
                print(json.dumps({"peer": "transformers", "precision": precision, "kind": kind,
                                  "error": r.stderr.strip().splitlines()[-1:]}), flush=True)
            else:
                print(lines[-1], flush=True)


if __name__ == "__main__":
    main()
