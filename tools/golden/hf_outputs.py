"""Reference outputs of Hugging Face transformers (float32, CPU) for the tiny synthetic
checkpoints, so CI can check qrun's numerics without torch.

Usage: hf_outputs.py FIXTURE_DIR OUT.json
"""
import json
import sys

import torch
from transformers import (AutoConfig, AutoModel, AutoModelForCausalLM,
                          AutoModelForSequenceClassification, AutoTokenizer)

TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "Quantized models for the edge, done right: smaller files that are faster and smaller in "
    "memory, with accuracy and calibration measured honestly.",
]
# Vocabulary ids whose logits are recorded at every position (plus each position's top 5).
SAMPLE_IDS = list(range(0, 151936, 4751))[:32]


def main():
    path, out = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    cfg = AutoConfig.from_pretrained(path)
    arch = cfg.architectures[0]
    tok = AutoTokenizer.from_pretrained(path)
    kw = dict(torch_dtype=torch.float32, attn_implementation="eager")
    if arch.endswith("ForCausalLM"):
        model = AutoModelForCausalLM.from_pretrained(path, **kw)
    elif arch.endswith("ForSequenceClassification"):
        model = AutoModelForSequenceClassification.from_pretrained(path, **kw)
    else:
        model = AutoModel.from_pretrained(path, **kw)
    model.eval()
    result = {"architecture": arch, "cases": []}
    for text in TEXTS:
        enc = tok(text, return_tensors="pt")
        ids = enc["input_ids"][0].tolist()
        case = {"text": text, "ids": ids}
        with torch.no_grad():
            o = model(**enc, output_hidden_states=True)
        if arch.endswith("ForCausalLM"):
            hidden = o.hidden_states[-1][0]
            logits = o.logits[0]
            case["hidden"] = hidden.flatten().tolist()
            vocab = [i for i in SAMPLE_IDS if i < logits.shape[-1]]
            case["logit_ids"] = vocab
            case["logits"] = logits[:, vocab].flatten().tolist()
            case["top5"] = torch.topk(logits, 5, dim=-1).indices.tolist()
        elif arch.endswith("ForSequenceClassification"):
            case["class_logits"] = o.logits[0].tolist()
            if not arch.startswith("Qwen2"):
                # The base model's last_hidden_state is after ModernBERT's final norm (the
                # hidden_states tuple's last entry is before it).
                with torch.no_grad():
                    base = model.base_model(**enc)
                case["hidden"] = base.last_hidden_state[0].flatten().tolist()
        else:
            hidden = o.last_hidden_state[0]
            case["hidden"] = hidden.flatten().tolist()
            case["mean_pooled"] = hidden.mean(dim=0).tolist()
        result["cases"].append(case)
    with open(out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
