#!/usr/bin/env python3
"""Fine-tunes qbench's two course-like classifiers on the GPU machine (run by device.sh train).

  (a) all-MiniLM-L6-v2, fully fine-tuned as BertForSequenceClassification (CLS -> pooler -> head,
      the graph qrun runs) on sotu, and later on bbc;
  (b) Qwen2.5-Coder-0.5B (the real weights, exported F16 from the Q4_K_M GGUF) with LoRA on every
      attention and MLP linear plus a new score head over the last token (what
      Qwen2ForSequenceClassification and qrun do), on sotu.

Both train at <= 128 tokens with bf16 autocast and fixed seeds; the reference numbers (test and
val accuracy, macro-F1, per tier, and each test prediction) are computed afterwards in fp32 on
the weights exactly as they come back: F16 MiniLM, and the LoRA merged into the F16 base as
collect.py merges it (W16 = f16(f32(W16) + scale * f32(B16) @ f32(A16))). Evaluation truncates
only at the model's limit (MiniLM 512, Qwen 1024, more than any text needs), as qrun does.

Outputs go to --out as they are made, so a later failure keeps the earlier ones:
  minilm-sotu.safetensors.partN   F16, HF names (bert.*, classifier.*), cut into <= 15 MiB parts
  qwen-sotu-lora.safetensors.partN  F16 LoRA A/B (`<module>.lora_A` [r,in], `.lora_B` [out,r])
                                  and score.weight; metadata lora_scale, r, alpha
  minilm-bbc.safetensors.partN    (written to --extra, fetched by a later call)
  metrics.json                    per-epoch val, final val/test, predictions, files + sha256
"""
import argparse
import hashlib
import json
import math
import os
import random
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

T0 = time.time()
# CUDA on the GPU machine; the CPU only for a --tiny dry run of the code paths
DEV = "cuda" if torch.cuda.is_available() else "cpu"
PART = 15 * 1024 * 1024


def log(msg):
    print(f"[{time.time() - T0:7.1f}s] {msg}", flush=True)


# ---------------------------------------------------------------- data and metrics

def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class Tok:
    """The model's tokenizer.json through `tokenizers`, with special tokens and qrun's
    truncation (cut to `max`, keeping the closing token)."""

    def __init__(self, path, pad_id):
        from tokenizers import Tokenizer
        self.t = Tokenizer.from_file(path)
        self.t.no_truncation()
        self.t.no_padding()
        self.pad = pad_id

    def encode(self, texts, max_len):
        out = []
        for e in self.t.encode_batch(texts, add_special_tokens=True):
            ids = list(e.ids)
            if len(ids) > max_len:
                last = ids[-1]
                ids = ids[:max_len]
                ids[-1] = last
            out.append(ids)
        return out


def batches(ids, labels, bs, shuffle_rng=None):
    """Yields (input_ids, attention_mask, labels, index) on the GPU, right-padded. Evaluation
    batches are sorted by length (fast); training batches are shuffled."""
    order = list(range(len(ids)))
    if shuffle_rng is not None:
        shuffle_rng.shuffle(order)
    else:
        order.sort(key=lambda i: len(ids[i]))
    for s in range(0, len(order), bs):
        idx = order[s:s + bs]
        n = max(len(ids[i]) for i in idx)
        x = torch.full((len(idx), n), 0, dtype=torch.long)
        m = torch.zeros((len(idx), n), dtype=torch.long)
        for r, i in enumerate(idx):
            x[r, :len(ids[i])] = torch.tensor(ids[i])
            m[r, :len(ids[i])] = 1
        y = torch.tensor([labels[i] for i in idx])
        yield x.to(DEV), m.to(DEV), y.to(DEV), idx


def scores(y, p, tiers, num_labels):
    """accuracy, macro-F1 over the classes present in y or p (as scikit-learn), per-tier
    accuracy."""
    n = len(y)
    acc = sum(int(a == b) for a, b in zip(y, p)) / n
    f1s = []
    for c in sorted(set(y) | set(p)):
        tp = sum(1 for a, b in zip(y, p) if a == c and b == c)
        fp = sum(1 for a, b in zip(y, p) if a != c and b == c)
        fn = sum(1 for a, b in zip(y, p) if a == c and b != c)
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    tier_acc = {}
    for t in ("head", "mid", "tail"):
        sel = [i for i in range(n) if tiers[i] == t]
        if sel:
            tier_acc[t] = {"n": len(sel), "acc": sum(int(y[i] == p[i]) for i in sel) / len(sel)}
    return {"n": n, "acc": acc, "macro_f1": sum(f1s) / len(f1s), "tiers": tier_acc}


@torch.no_grad()
def predict(forward, ids, labels, bs=64, autocast=True):
    preds = [0] * len(ids)
    logits_all = [None] * len(ids)
    for x, m, _, idx in batches(ids, labels, bs):
        with torch.autocast(DEV, dtype=torch.bfloat16, enabled=autocast and DEV == "cuda"):
            lg = forward(x, m).float()
        for r, i in enumerate(idx):
            preds[i] = int(lg[r].argmax())
            logits_all[i] = lg[r].cpu()
    return preds, torch.stack(logits_all)


def evaluate(forward, split, autocast=True):
    p, lg = predict(forward, split["ids"], split["y"], autocast=autocast)
    s = scores(split["y"], p, split["tier"], lg.shape[1])
    s["nll"] = float(F.cross_entropy(lg, torch.tensor(split["y"])))
    return s, p


def lr_at(step, total, warm, base):
    if step < warm:
        return base * (step + 1) / warm
    return base * max(0.0, (total - step) / max(1, total - warm))


# ---------------------------------------------------------------- output files

def save_parts(tensors, name, outdir, metadata):
    """One safetensors file, its bytes cut into <= 15 MiB parts (outputs come back in files of
    at most 16 MiB). Returns {file, sha256, size, parts}."""
    from safetensors.torch import save
    blob = save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata)
    os.makedirs(outdir, exist_ok=True)
    parts = []
    for i in range(0, len(blob), PART):
        pn = f"{name}.part{i // PART}"
        with open(os.path.join(outdir, pn + ".tmp"), "wb") as f:
            f.write(blob[i:i + PART])
        os.replace(os.path.join(outdir, pn + ".tmp"), os.path.join(outdir, pn))
        parts.append(pn)
    return {"file": name, "sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob),
            "parts": parts, "outdir": os.path.basename(outdir.rstrip("/"))}


class Metrics:
    def __init__(self, path, extra_path):
        self.path, self.extra = path, extra_path
        self.d = {"env": {}, "files": {}}

    def write(self):
        for p in (self.path, self.extra):
            if p:
                os.makedirs(os.path.dirname(p), exist_ok=True)
                with open(p + ".tmp", "w") as f:
                    json.dump(self.d, f, indent=1)
                os.replace(p + ".tmp", p)


TINY = 0


def load_split(d, name, tok, max_len):
    rows = read_jsonl(os.path.join(d, f"{name}.jsonl"))
    if TINY:
        rows = rows[:TINY]
    return {"ids": tok.encode([r["text"] for r in rows], max_len),
            "y": [r["label"] for r in rows], "tier": [r["tier"] for r in rows]}


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def seed_all(seed):
    random.seed(seed)
    torch.manual_seed(seed)
    if DEV == "cuda":
        torch.cuda.manual_seed_all(seed)


# ---------------------------------------------------------------- (a) MiniLM

def train_minilm(a, task, outdir, M, key):
    from safetensors.torch import load_file
    from transformers import BertConfig, BertForSequenceClassification
    seed_all(a.seed)
    ddir = os.path.join(a.data, task)
    labels = json.load(open(os.path.join(ddir, "labels.json")))
    cfg = json.load(open(os.path.join(a.minilm, "config.json")))
    for k in ("architectures", "_name_or_path", "transformers_version", "torch_dtype"):
        cfg.pop(k, None)
    cfg.update(num_labels=len(labels), id2label={i: n for i, n in enumerate(labels)},
               label2id={n: i for i, n in enumerate(labels)})
    config = BertConfig(**cfg)
    tok = Tok(os.path.join(a.minilm, "tokenizer.json"), cfg.get("pad_token_id", 0))
    train = load_split(ddir, "train", tok, a.train_len)
    val = load_split(ddir, "val", tok, 512)
    test = load_split(ddir, "test", tok, 512)
    with torch.device(DEV):
        model = BertForSequenceClassification(config)
    sd = load_file(os.path.join(a.minilm, "model.safetensors"), device=DEV)
    sd = {"bert." + k: v.float() for k, v in sd.items() if k != "embeddings.position_ids"}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.startswith("classifier.")
               and not k.endswith("position_ids")]
    if missing or unexpected:
        raise SystemExit(f"MiniLM weights do not fit: missing {missing}, unexpected {unexpected}")
    model.float()

    def fwd(x, m):
        return model(input_ids=x, attention_mask=m, token_type_ids=torch.zeros_like(x)).logits

    epochs = a.minilm_epochs if task == "sotu" else a.minilm_bbc_epochs
    bs = 32
    steps_ep = math.ceil(len(train["ids"]) / bs)
    total, warm = epochs * steps_ep, max(1, int(0.06 * epochs * steps_ep))
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    other = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                             {"params": other, "weight_decay": 0.0}], lr=a.minilm_lr)
    rec = {"config": {"epochs": epochs, "batch": bs, "lr": a.minilm_lr, "train_max_len": a.train_len,
                      "eval_max_len": 512, "seed": a.seed, "train": len(train["ids"])},
           "epochs": []}
    M.d[key] = rec
    step = 0
    log(f"{key}: {len(train['ids'])} train, {len(labels)} classes, {epochs} epochs of {steps_ep} steps")
    for ep in range(epochs):
        model.train()
        t = time.time()
        tot = 0.0
        for x, m, y, _ in batches(train["ids"], train["y"], bs, random.Random(a.seed + ep)):
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, warm, a.minilm_lr)
            with torch.autocast(DEV, dtype=torch.bfloat16, enabled=DEV == "cuda"):
                loss = F.cross_entropy(fwd(x, m).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            tot += loss.item()
            step += 1
        model.eval()
        s, _ = evaluate(fwd, val)
        rec["epochs"].append({"epoch": ep + 1, "train_loss": tot / steps_ep, "val_acc": s["acc"],
                              "val_macro_f1": s["macro_f1"], "secs": time.time() - t})
        log(f"{key} epoch {ep + 1}: loss {tot / steps_ep:.4f}  val acc {s['acc']:.4f}  "
            f"macro-F1 {s['macro_f1']:.4f}  ({time.time() - t:.1f}s)")
        M.write()
    # what comes back: F16 weights under HF names; the reference numbers are theirs
    sd16 = {k: v.detach().to(torch.float16) for k, v in model.state_dict().items()
            if not k.endswith("position_ids")}
    model.load_state_dict({k: v.float() for k, v in sd16.items()}, strict=False)
    model.eval()
    rec["val"], _ = evaluate(fwd, val, autocast=False)
    rec["test"], pred = evaluate(fwd, test, autocast=False)
    rec["test_pred"] = pred
    log(f"{key} F16 weights, fp32: val acc {rec['val']['acc']:.4f} F1 {rec['val']['macro_f1']:.4f}; "
        f"test acc {rec['test']['acc']:.4f} F1 {rec['test']['macro_f1']:.4f} "
        f"tiers {json.dumps({k: round(v['acc'], 4) for k, v in rec['test']['tiers'].items()})}")
    M.d["files"][f"minilm-{task}"] = save_parts(
        sd16, f"minilm-{task}.safetensors", outdir,
        {"format": "pt", "task": task, "labels": json.dumps(labels)})
    M.write()
    del model, opt
    torch.cuda.empty_cache()


# ---------------------------------------------------------------- (b) Qwen + LoRA

class LoraLinear(nn.Module):
    """Plain-torch LoRA, used when peft is missing: y = W x + b + scale * B(A(dropout(x)))."""

    def __init__(self, base, r, alpha, dropout):
        super().__init__()
        self.base = base
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, device=base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scale = alpha / r
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        return self.base(x) + self.scale * F.linear(F.linear(self.drop(x), self.lora_A),
                                                    self.lora_B)


TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def add_lora(backbone, a):
    """LoRA on every attention/MLP linear; returns (how, [(module name, A, B, scale)])."""
    for p in backbone.parameters():
        p.requires_grad_(False)
    how = "peft"
    try:
        if a.no_peft:
            raise ImportError("--no-peft")
        from peft import LoraConfig, inject_adapter_in_model
        inject_adapter_in_model(LoraConfig(r=a.r, lora_alpha=a.alpha, lora_dropout=0.05,
                                           target_modules=list(TARGETS), bias="none"), backbone)
        found = []
        for name, mod in backbone.named_modules():
            if hasattr(mod, "lora_A") and isinstance(mod.lora_A, nn.ModuleDict) and mod.lora_A:
                k = next(iter(mod.lora_A))
                found.append((name, mod.lora_A[k].weight, mod.lora_B[k].weight,
                              float(mod.scaling[k])))
        if not found:
            raise RuntimeError("peft injected no LoRA layer")
    except Exception as e:  # peft missing or changed: the same LoRA by hand
        log(f"peft unusable ({type(e).__name__}: {e}); plain-torch LoRA")
        how = "plain-torch"
        found = []
        for name, mod in list(backbone.named_modules()):
            for child_name, child in list(mod.named_children()):
                if child_name in TARGETS and isinstance(child, nn.Linear):
                    lo = LoraLinear(child, a.r, a.alpha, 0.05)
                    setattr(mod, child_name, lo)
                    full = f"{name}.{child_name}" if name else child_name
                    found.append((full, lo.lora_A, lo.lora_B, lo.scale))
    for _, A, B, _ in found:
        A.requires_grad_(True)
        B.requires_grad_(True)
    return how, found


def train_qwen(a, outdir, M, deadline):
    from safetensors.torch import load_file
    from transformers import Qwen2Config, Qwen2Model
    seed_all(a.seed)
    key = "qwen_sotu"
    ddir = os.path.join(a.data, "sotu")
    labels = json.load(open(os.path.join(ddir, "labels.json")))
    cfg = json.load(open(os.path.join(a.qwen, "config.json")))
    for k in ("architectures", "torch_dtype", "dtype"):
        cfg.pop(k, None)
    cfg["use_cache"] = False
    config = Qwen2Config(**cfg)
    pad = cfg.get("pad_token_id", 151643)
    tok = Tok(os.path.join(a.qwen, "tokenizer.json"), pad)
    train = load_split(ddir, "train", tok, a.train_len)
    val = load_split(ddir, "val", tok, 1024)
    test = load_split(ddir, "test", tok, 1024)
    t = time.time()
    with torch.device(DEV):
        backbone = Qwen2Model(config)
        score = nn.Linear(config.hidden_size, len(labels), bias=False)
    # a zero head starts at loss ln(classes): Qwen's last hidden states are large enough that
    # HF's normal(0.02) init starts near loss 9, and the early steps only undo that
    nn.init.zeros_(score.weight)
    base16 = load_file(os.path.join(a.qwen, "model.safetensors"), device=DEV)
    sd = {k[len("model."):]: v.float() for k, v in base16.items() if k.startswith("model.")}
    missing, unexpected = backbone.load_state_dict(sd, strict=False)
    missing = [k for k in missing if "rotary" not in k]
    if missing or unexpected:
        raise SystemExit(f"Qwen weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
    del sd
    log(f"{key}: backbone loaded ({time.time() - t:.1f}s)")
    how, lora = add_lora(backbone, a)
    n_lora = sum(A.numel() + B.numel() for _, A, B, _ in lora)
    log(f"{key}: LoRA via {how} on {len(lora)} linears, r={a.r} alpha={a.alpha}, {n_lora / 1e6:.2f}M params")

    def fwd(x, m):
        h = backbone(input_ids=x, attention_mask=m).last_hidden_state
        last = m.sum(1) - 1  # right padding: the last real token, as qrun pools
        return score(h[torch.arange(h.shape[0], device=h.device), last])

    bs = a.qwen_batch
    steps_ep = math.ceil(len(train["ids"]) / bs)
    planned = a.qwen_epochs * steps_ep
    total, warm = planned, max(1, int(0.05 * planned))
    opt = torch.optim.AdamW([
        {"params": [p for _, A, B, _ in lora for p in (A, B)], "lr": a.qwen_lr, "base": a.qwen_lr,
         "weight_decay": 0.0},
        {"params": list(score.parameters()), "lr": a.head_lr, "base": a.head_lr,
         "weight_decay": 0.01}])
    rec = {"config": {"lora": how, "r": a.r, "alpha": a.alpha, "targets": list(TARGETS),
                      "epochs_planned": a.qwen_epochs, "batch": bs, "lr": a.qwen_lr,
                      "head_lr": a.head_lr, "train_max_len": a.train_len, "eval_max_len": 1024,
                      "seed": a.seed, "train": len(train["ids"]), "pooling": "last token",
                      "head_init": "zeros"},
           "epochs": []}
    M.d[key] = rec
    M.write()
    budget = min(a.qwen_budget, deadline - time.time() - a.reserve)
    log(f"{key}: {len(train['ids'])} train, {a.qwen_epochs} epochs x {steps_ep} steps planned, "
        f"training budget {budget:.0f}s")
    step, ep, done = 0, 0, False
    t_train = time.time()
    t_cal = None
    while not done:
        backbone.train()
        score.train()
        t = time.time()
        tot, n = 0.0, 0
        for x, m, y, _ in batches(train["ids"], train["y"], bs, random.Random(a.seed + ep)):
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, warm, g["base"])
            with torch.autocast(DEV, dtype=torch.bfloat16, enabled=DEV == "cuda"):
                loss = F.cross_entropy(fwd(x, m).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 1.0)
            opt.step()
            tot += loss.item()
            n += 1
            step += 1
            if step == 5:
                sync()
                t_cal = time.time()
            if step == 35:
                # fit the run to the budget: fewer total steps, the LR schedule follows
                sync()
                per = (time.time() - t_cal) / 30
                fit = int(budget / per)
                if fit < total:
                    total = max(step + 1, fit)
                    warm = min(warm, total // 2)
                log(f"{key}: {per * 1000:.0f} ms/step; {total} steps "
                    f"({total / steps_ep:.2f} epochs) fit the budget")
                rec["config"]["ms_per_step"] = per * 1000
            if step % 100 == 0:
                log(f"{key} step {step}/{total} loss {tot / n:.4f}")
            if step >= total:
                done = True
                break
        ep += 1
        done = done or ep >= a.qwen_epochs
        backbone.eval()
        score.eval()
        s, _ = evaluate(fwd, val)
        rec["epochs"].append({"epoch": round(step / steps_ep, 3), "train_loss": tot / max(n, 1),
                              "val_acc": s["acc"], "val_macro_f1": s["macro_f1"],
                              "secs": time.time() - t})
        log(f"{key} epoch {step / steps_ep:.2f}: loss {tot / max(n, 1):.4f}  val acc {s['acc']:.4f}  "
            f"macro-F1 {s['macro_f1']:.4f}  ({time.time() - t:.1f}s)")
        M.write()
    rec["config"]["steps"] = step
    rec["config"]["train_secs"] = time.time() - t_train

    # what comes back: LoRA A/B and the head in F16 ...
    out = {}
    for name, A, B, scale in lora:
        hf = "model." + name
        out[hf + ".lora_A"] = A.detach().to(torch.float16)
        out[hf + ".lora_B"] = B.detach().to(torch.float16)
    out["score.weight"] = score.weight.detach().to(torch.float16)
    scale = lora[0][3]
    assert all(abs(s - scale) < 1e-9 for *_, s in lora)
    M.d["files"]["qwen-sotu-lora"] = save_parts(
        out, "qwen-sotu-lora.safetensors", outdir,
        {"format": "pt", "lora_scale": repr(scale), "r": str(a.r), "alpha": str(a.alpha),
         "labels": json.dumps(labels), "pad_token_id": str(pad)})
    M.write()
    log(f"{key}: adapter written; merging as collect.py does for the reference numbers")
    # ... and the reference numbers on exactly what collect.py builds from them
    del opt
    with torch.no_grad():
        merged = {}
        for name, _, _, _ in lora:
            hf = "model." + name
            w = base16[hf + ".weight"].float() + scale * (out[hf + ".lora_B"].float()
                                                           @ out[hf + ".lora_A"].float())
            merged[name + ".weight"] = w.to(torch.float16).float()
    ref_backbone = None
    with torch.device(DEV):
        ref_backbone = Qwen2Model(config)
    sd = {k[len("model."):]: v.float() for k, v in base16.items() if k.startswith("model.")}
    sd.update(merged)
    missing, unexpected = ref_backbone.load_state_dict(sd, strict=False)
    missing = [k for k in missing if "rotary" not in k]
    if missing or unexpected or len(merged) != len(lora):
        raise SystemExit(f"merged weights do not fit: {missing[:5]} {unexpected[:5]}")
    ref_backbone.eval()
    del backbone, sd, merged
    torch.cuda.empty_cache()
    score16 = out["score.weight"].float()

    def ref_fwd(x, m):
        h = ref_backbone(input_ids=x, attention_mask=m).last_hidden_state
        return h[torch.arange(h.shape[0], device=h.device), m.sum(1) - 1] @ score16.T

    rec["val"], _ = evaluate(ref_fwd, val, autocast=False)
    rec["test"], pred = evaluate(ref_fwd, test, autocast=False)
    rec["test_pred"] = pred
    log(f"{key} merged F16 weights, fp32: val acc {rec['val']['acc']:.4f} F1 {rec['val']['macro_f1']:.4f}; "
        f"test acc {rec['test']['acc']:.4f} F1 {rec['test']['macro_f1']:.4f} "
        f"tiers {json.dumps({k: round(v['acc'], 4) for k, v in rec['test']['tiers'].items()})}")
    M.write()
    del ref_backbone
    torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--minilm", required=True)
    ap.add_argument("--qwen", required=True)
    ap.add_argument("--out", required=True, help="files that come back from this call")
    ap.add_argument("--extra", required=True, help="files for a later `device.sh fetch bbc`")
    ap.add_argument("--deadline", type=float, default=time.time() + 480)
    ap.add_argument("--only", default="minilm,qwen,bbc")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--train-len", type=int, default=128)
    ap.add_argument("--minilm-epochs", type=int, default=5)
    ap.add_argument("--minilm-bbc-epochs", type=int, default=4)
    ap.add_argument("--minilm-lr", type=float, default=1e-4)
    ap.add_argument("--qwen-epochs", type=int, default=2)
    ap.add_argument("--qwen-batch", type=int, default=32)
    ap.add_argument("--qwen-lr", type=float, default=2e-4)
    ap.add_argument("--head-lr", type=float, default=1e-3)
    ap.add_argument("--r", type=int, default=16)
    ap.add_argument("--alpha", type=int, default=32)
    ap.add_argument("--qwen-budget", type=float, default=270, help="seconds of Qwen training")
    ap.add_argument("--reserve", type=float, default=75,
                    help="seconds kept before --deadline for Qwen's evaluation and bbc")
    ap.add_argument("--no-peft", action="store_true")
    ap.add_argument("--tiny", type=int, default=0,
                    help="dry run: N examples of each split (for the CPU)")
    a = ap.parse_args()
    global TINY
    TINY = a.tiny
    only = set(a.only.split(","))
    M = Metrics(os.path.join(a.out, "metrics.json"), os.path.join(a.extra, "metrics.json"))
    import transformers
    M.d["env"] = {"torch": torch.__version__, "transformers": transformers.__version__,
                  "gpu": torch.cuda.get_device_name(0) if DEV == "cuda" else "none (cpu)"}
    try:
        import peft
        M.d["env"]["peft"] = peft.__version__
    except Exception as e:
        M.d["env"]["peft"] = f"unavailable: {e}"
    log(f"env {json.dumps(M.d['env'])}")
    # fp32 means fp32: the reference evaluation must not run through TF32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    failed = []
    stages = [("minilm", lambda: train_minilm(a, "sotu", a.out, M, "minilm_sotu")),
              ("qwen", lambda: train_qwen(a, a.out, M, a.deadline)),
              ("bbc", lambda: train_minilm(a, "bbc", a.extra, M, "minilm_bbc"))]
    for name, fn in stages:
        if name not in only:
            continue
        if name == "bbc" and time.time() > a.deadline - 20:
            log("no time left for bbc")
            continue
        try:
            fn()
        except Exception as e:  # keep what the other stages made
            import traceback
            traceback.print_exc()
            failed.append(name)
            M.d.setdefault("errors", {})[name] = f"{type(e).__name__}: {e}"
            M.write()
            torch.cuda.empty_cache()
    M.d["total_secs"] = time.time() - T0
    M.write()
    log(f"done; failed stages: {failed or 'none'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
