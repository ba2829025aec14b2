#!/usr/bin/env python3
"""Checks train.py's LoRA plumbing on a tiny random Qwen2 (CPU, seconds; needs torch,
transformers, and peft for the peft half): for peft and for the plain-torch fallback, a few
training steps, then the merge the GPU side and kit.py do (W + scale * B @ A) must give the same
logits as the adapted model, and the extracted module names must be the base model's.
Not part of CI (no torch there). Usage: python3 tools/finetune/selftest.py"""
import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train  # noqa: E402


def run(no_peft):
    from transformers import Qwen2Config, Qwen2Model
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, use_cache=False)
    base = Qwen2Model(cfg).eval()
    ref_sd = {k: v.clone() for k, v in base.state_dict().items()}
    a = argparse.Namespace(r=4, alpha=8, no_peft=no_peft)
    how, lora = train.add_lora(base, a)
    assert len(lora) == 2 * 7, (how, len(lora))
    names = {n + ".weight" for n, *_ in lora}
    assert names <= set(ref_sd), sorted(names - set(ref_sd))[:3]
    head = torch.nn.Linear(64, 5, bias=False)
    torch.nn.init.zeros_(head.weight)
    opt = torch.optim.AdamW([p for _, A, B, _ in lora for p in (A, B)] + list(head.parameters()),
                            lr=1e-2)
    x = torch.randint(0, 300, (3, 7))
    m = torch.ones_like(x)
    m[1, 5:] = 0
    y = torch.tensor([0, 3, 4])

    def fwd(model, h):
        hs = model(input_ids=x, attention_mask=m).last_hidden_state
        return h(hs[torch.arange(3), m.sum(1) - 1])

    base.train()
    for _ in range(5):
        loss = F.cross_entropy(fwd(base, head), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    base.eval()
    with torch.no_grad():
        want = fwd(base, head)
        merged = dict(ref_sd)
        for n, A, B, s in lora:
            assert B.abs().sum() > 0, f"{n}: B never trained"
            merged[n + ".weight"] = ref_sd[n + ".weight"] + s * (B @ A)
        plain = Qwen2Model(cfg).eval()
        plain.load_state_dict(merged)
        got = fwd(plain, head)
    err = (want - got).abs().max().item()
    assert err < 1e-4, f"{how}: merged model differs by {err}"
    print(f"{how}: {len(lora)} LoRA linears, merge reproduces the adapted logits (max diff {err:.2e})")


if __name__ == "__main__":
    try:
        import peft  # noqa: F401
        run(no_peft=False)
    except ImportError:
        print("peft not installed: only the plain-torch LoRA is checked")
    run(no_peft=True)
    print("2 passed, 0 failed" if "peft" in sys.modules else "1 passed, 0 failed")
