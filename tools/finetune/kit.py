#!/usr/bin/env python3
"""The CPU side of the fine-tuning kit (numpy + safetensors only; no torch).

  kit.py minilm-f16 SRC DST     all-MiniLM-L6-v2 (F32) as F16 safetensors + its config and
                                tokenizer files, for the GPU machine (stage.sh)
  kit.py collect DIR [DIR...]   what came back from the GPU machine (parts of
                                minilm-sotu/-bbc.safetensors, qwen-sotu-lora.safetensors and
                                metrics.json) -> HF folders in $QGGUF_MODELS:
      minilm-sotu-cls/  BertForSequenceClassification (43 presidents)
      minilm-bbc-cls/   BertForSequenceClassification (5 topics), when its parts came back
      qwen-sotu-cls/    Qwen2ForSequenceClassification: the base Qwen export with the LoRA merged
                        (W16 = f16(f32(W16) + scale * f32(B16) @ f32(A16))) and score.weight
      qwen-sotu-lm/     Qwen2ForCausalLM: the same merged backbone with the base's output head
  Each folder also gets reference.json: the GPU side's val/test numbers and test predictions
  for exactly these weights (fp32 evaluation).
"""
import hashlib
import json
import os
import shutil
import sys
import tempfile

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

MODELS = os.environ.get("QGGUF_MODELS", os.path.expanduser("~/.cache/qgguf/models"))
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def die(msg):
    sys.exit(f"kit.py: {msg}")


def minilm_f16(src, dst):
    os.makedirs(dst, exist_ok=True)
    path = os.path.join(src, "model.safetensors")
    t = load_file(path)
    out = {k: v.astype(np.float16) for k, v in t.items() if v.dtype == np.float32}
    skipped = sorted(set(t) - set(out))
    if len(out) < 50:
        die(f"{path}: only {len(out)} F32 tensors; not all-MiniLM-L6-v2?")
    save_file(out, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})
    for f in ("config.json",) + TOKENIZER_FILES:
        if os.path.exists(os.path.join(src, f)):
            shutil.copy(os.path.join(src, f), dst)
    print(f"{dst}: {len(out)} tensors as F16 (left out: {', '.join(skipped) or 'none'})")


def find_parts(dirs, name):
    """The parts of `name` among dirs, in order, or None when none came back."""
    for d in dirs:
        parts = sorted((f for f in os.listdir(d) if f.startswith(name + ".part")),
                       key=lambda f: int(f.rsplit("part", 1)[1]))
        if parts:
            return [os.path.join(d, p) for p in parts]
    return None


def reassemble(dirs, info, tmp):
    """Concatenates the parts, checks size and sha256 against metrics.json, returns the path."""
    name = info["file"]
    parts = find_parts(dirs, name)
    if parts is None:
        return None
    if len(parts) != len(info["parts"]):
        die(f"{name}: {len(parts)} parts here, metrics.json lists {len(info['parts'])}")
    blob = b"".join(open(p, "rb").read() for p in parts)
    sha = hashlib.sha256(blob).hexdigest()
    if len(blob) != info["size"] or sha != info["sha256"]:
        die(f"{name}: {len(blob)} bytes, sha256 {sha[:12]}; metrics.json says "
            f"{info['size']} bytes, {info['sha256'][:12]}")
    path = os.path.join(tmp, name)
    with open(path, "wb") as f:
        f.write(blob)
    return path


def write_dir(dst, tensors, config, copy_from, reference, metadata=None):
    """Writes an HF folder next to dst and renames it into place (no half-written folder)."""
    parent = os.path.dirname(dst.rstrip("/"))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=os.path.basename(dst) + ".tmp")
    save_file(tensors, os.path.join(tmp, "model.safetensors"),
              metadata=dict({"format": "pt"}, **(metadata or {})))
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    for f in TOKENIZER_FILES:
        if os.path.exists(os.path.join(copy_from, f)):
            shutil.copy(os.path.join(copy_from, f), tmp)
    if reference is not None:
        with open(os.path.join(tmp, "reference.json"), "w") as f:
            json.dump(reference, f, indent=1)
    if os.path.exists(dst):
        shutil.rmtree(dst)
    os.replace(tmp, dst)
    n = sum(v.size for v in tensors.values())
    print(f"{dst}: {len(tensors)} tensors, {n / 1e6:.1f}M params")


def labels_config(labels):
    return {"num_labels": len(labels), "id2label": {str(i): n for i, n in enumerate(labels)},
            "label2id": {n: i for i, n in enumerate(labels)}}


def reference(metrics, key):
    r = metrics.get(key)
    if not r or "test" not in r:
        return None
    return {k: r[k] for k in ("config", "epochs", "val", "test", "test_pred") if k in r} | {
        "env": metrics.get("env", {}), "note": "GPU side, fp32 on these exact weights"}


def collect_minilm(dirs, metrics, task, tmp):
    info = metrics["files"].get(f"minilm-{task}")
    if info is None:
        print(f"minilm-{task}: not in metrics.json (not trained?)")
        return
    path = reassemble(dirs, info, tmp)
    if path is None:
        print(f"minilm-{task}: no parts here (fetch them with `device.sh fetch {task}`)")
        return
    src = os.path.join(MODELS, "minilm-l6")
    with safe_open(path, "np") as f:
        labels = json.loads(f.metadata()["labels"])
        t = {k: f.get_tensor(k) for k in f.keys()}
    if t["classifier.weight"].shape[0] != len(labels):
        die(f"{path}: classifier has {t['classifier.weight'].shape[0]} rows for {len(labels)} labels")
    cfg = json.load(open(os.path.join(src, "config.json")))
    for k in ("_name_or_path", "transformers_version", "gradient_checkpointing", "use_cache"):
        cfg.pop(k, None)
    cfg.update(architectures=["BertForSequenceClassification"], torch_dtype="float16",
               problem_type="single_label_classification", **labels_config(labels))
    write_dir(os.path.join(MODELS, f"minilm-{task}-cls"), t, cfg, src,
              reference(metrics, f"minilm_{task}"))


def collect_qwen(dirs, metrics, tmp):
    info = metrics["files"].get("qwen-sotu-lora")
    if info is None:
        print("qwen-sotu-lora: not in metrics.json (Qwen training failed?)")
        return
    path = reassemble(dirs, info, tmp)
    if path is None:
        print("qwen-sotu-lora: no parts here")
        return
    base = os.path.join(MODELS, "qwen2.5-coder-0.5b")
    with safe_open(path, "np") as f:
        meta = f.metadata()
        lora = {k: f.get_tensor(k) for k in f.keys()}
    scale = float(meta["lora_scale"])
    labels = json.loads(meta["labels"])
    w = load_file(os.path.join(base, "model.safetensors"))
    merged = 0
    for k in sorted(lora):
        if not k.endswith(".lora_A"):
            continue
        mod = k[: -len(".lora_A")]
        A, B = lora[k], lora.get(mod + ".lora_B")
        if B is None:
            die(f"{path}: {k} has no {mod}.lora_B")
        wk = mod + ".weight"
        if wk not in w:
            die(f"{path}: {mod} is not a tensor of the base model ({base})")
        W = w[wk]
        if W.shape != (B.shape[0], A.shape[1]):
            die(f"{wk}: base {W.shape}, LoRA B@A {(B.shape[0], A.shape[1])}")
        # the same arithmetic as the GPU side's reference evaluation
        W32 = W.astype(np.float32) + np.float32(scale) * (B.astype(np.float32) @ A.astype(np.float32))
        w[wk] = W32.astype(np.float16)
        merged += 1
    if merged == 0:
        die(f"{path}: no LoRA tensors")
    score = lora["score.weight"]
    if score.shape != (len(labels), w["model.embed_tokens.weight"].shape[1]):
        die(f"{path}: score.weight {score.shape} for {len(labels)} labels")
    print(f"qwen: merged LoRA into {merged} linears (scale {scale})")
    cfg = json.load(open(os.path.join(base, "config.json")))
    pad = int(meta.get("pad_token_id", cfg.get("pad_token_id", 151643)))
    ref = reference(metrics, "qwen_sotu")

    cls = {k: v for k, v in w.items() if k != "lm_head.weight"}
    cls["score.weight"] = score.astype(np.float16)
    c = dict(cfg, architectures=["Qwen2ForSequenceClassification"], pad_token_id=pad,
             problem_type="single_label_classification", **labels_config(labels))
    c["tie_word_embeddings"] = cfg.get("tie_word_embeddings", False)
    write_dir(os.path.join(MODELS, "qwen-sotu-cls"), cls, c, base, ref)

    lm = dict(w)  # the base's own output head, tied or not, as the original
    write_dir(os.path.join(MODELS, "qwen-sotu-lm"), lm, dict(cfg), base,
              {"note": "the merged backbone of qwen-sotu-cls with the base model's output head"})


def collect(dirs):
    metrics = None
    for d in dirs:
        p = os.path.join(d, "metrics.json")
        if os.path.exists(p):
            m = json.load(open(p))
            # the later call's metrics.json is a superset (it is rewritten after each stage)
            if metrics is None or len(json.dumps(m)) > len(json.dumps(metrics)):
                metrics = m
    if metrics is None:
        die(f"no metrics.json in {', '.join(dirs)}")
    for k, v in metrics.get("errors", {}).items():
        print(f"note: the GPU side's stage {k} failed: {v}")
    with tempfile.TemporaryDirectory() as tmp:
        collect_minilm(dirs, metrics, "sotu", tmp)
        collect_minilm(dirs, metrics, "bbc", tmp)
        collect_qwen(dirs, metrics, tmp)
    for key in ("minilm_sotu", "qwen_sotu", "minilm_bbc"):
        r = metrics.get(key, {})
        if "test" in r:
            t = r["test"]
            tiers = " ".join(f"{k} {v['acc']:.3f}" for k, v in t["tiers"].items())
            print(f"reference {key}: test acc {t['acc']:.4f} macro-F1 {t['macro_f1']:.4f} ({tiers}); "
                  f"val acc {r['val']['acc']:.4f}")


def main():
    if len(sys.argv) >= 4 and sys.argv[1] == "minilm-f16":
        minilm_f16(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 3 and sys.argv[1] == "collect":
        collect(sys.argv[2:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
