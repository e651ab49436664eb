"""`hbt eval` on BEIR corpora of 100k to millions of passages: memory per process, time per
passage, and an approximate index's quality against Flat.

Synthetic BEIR dirs (passages of 40-90 words drawn from XQuAD-R's English text, ~300-550
characters; `--queries` queries of 6 words of one passage each, that passage relevant) are
evaluated the way a user runs it: `hbt eval` in its own process on its own local Ray. Runs:

* a stand-in encoder at every `--sizes`: e5-small's tokenizer and word embeddings with no
  transformer layer (384 dimensions, as e5-small; encoding is cheap, so the data path shows);
* at the largest size, `--approx-factory` at each of `--nprobes` over the same embedding shards
  (no re-encoding: the shards are resumed), for its nDCG@10 / Recall@100 against Flat's and its
  recall of Flat's top 100: the trade an IVF default is chosen by;
* e5-small itself on the first `--e5-docs` passages (throughput of the real model);
* with `--baseline CHECKOUT`, the same `hbt eval` of another checkout (today's code) at the
  smallest size, beside it.

Memory is sampled every `--interval` s over the process tree (`eval_memory.TreeMemory`, PSS):
the driver, the encode actor, the shard actor (`FileShards`; `ShardActor` in the baseline) and
every process together.

    python benchmarks/eval_scale.py --model runs/models/e5-small --sizes 100000,1000000 \
        --baseline /path/to/main --json runs/bench/eval_scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
from bench_rounds import positive_int
from eval_memory import TreeMemory

from hbt.config import REPO_ROOT, default_data_dir
from hbt.io import write_json_atomic

DIM = 384  # e5-small's embedding width: 1M passages are 1.54 GB of float32 embeddings
ROLES = {"encode": "EncodeActor", "shard": "Shard"}  # FileShards (this code), ShardActor (before)


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="e5-small's dir (runs/models/e5-small)")
    parser.add_argument("--sizes", default="100000,1000000", help="corpus sizes in passages")
    parser.add_argument("--queries", type=positive_int, default=200)
    parser.add_argument("--e5-docs", type=int, default=100_000, help="passages e5-small encodes (0: skip)")
    parser.add_argument("--approx-factory", default="IVF1024,Flat", help="the approximate index at the largest size")
    parser.add_argument("--nprobes", default="64,256", help="the IVF index's eval.nprobe values, each one run")
    parser.add_argument("--baseline", type=Path, help="a checkout of the code to compare (run at the smallest size)")
    parser.add_argument("--work", type=Path, default=REPO_ROOT / "runs" / "bench" / "eval_scale")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between memory samples")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    args.sizes = sorted(positive_int(s) for s in args.sizes.split(","))
    args.nprobes = [positive_int(s) for s in args.nprobes.split(",")]
    return args


def words() -> np.ndarray:
    """Every word of XQuAD-R's English paragraphs, with repeats (so drawn by their frequency)."""
    raw = json.loads((default_data_dir() / "xquad-r" / "en.json").read_text(encoding="utf-8"))
    text = " ".join(p["context"] for a in raw["data"] for p in a["paragraphs"])
    return np.array(re.findall(r"\w+", text))


def write_corpus(root: Path, n: int, queries: int, seed: int = 0) -> Path:
    """A BEIR dir of `n` passages and `queries` queries (query i asks for passage `relevant[i]`)."""
    if (root / "qrels" / "test.tsv").is_file():
        return root
    rng = np.random.default_rng(seed)
    vocabulary = words()
    relevant = np.sort(rng.choice(n, size=queries, replace=False))
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "qrels").mkdir(parents=True)
    query_lines = []
    with open(tmp / "corpus.jsonl", "w", encoding="utf-8") as corpus:
        for start in range(0, n, 10_000):
            lengths = rng.integers(40, 91, size=min(10_000, n - start))
            drawn = vocabulary[rng.integers(0, len(vocabulary), size=int(lengths.sum()))]
            ends = np.cumsum(lengths)
            for i, (end, length) in enumerate(zip(ends, lengths)):
                passage = drawn[end - length:end]
                doc = start + i
                corpus.write(json.dumps({"_id": f"d{doc}", "title": "", "text": " ".join(passage)}) + "\n")
                if doc in relevant:
                    picked = passage[np.sort(rng.choice(length, size=6, replace=False))]
                    query_lines.append((f"q{len(query_lines)}", f"d{doc}", " ".join(picked)))
    (tmp / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, _, t in query_lines))
    (tmp / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" +
                                            "".join(f"{q}\t{d}\t1\n" for q, d, _ in query_lines))
    os.replace(tmp, root)
    return root


def stand_in(e5: Path, out: Path) -> Path:
    """e5-small with no transformer layer: its tokenizer, word embeddings, mean pooling, 384 dims."""
    from transformers import BertModel

    if (out / "config.json").is_file():
        return out
    shutil.copytree(e5, out, ignore=shutil.ignore_patterns("model.safetensors", "config.json"))
    BertModel.from_pretrained(e5, num_hidden_layers=0).save_pretrained(out)
    return out


def run_eval(name: str, model: Path, corpus: Path, out: Path, args, code: Path = REPO_ROOT, settings=()) -> dict:
    """One `hbt eval` of `code` in its own process: its results and the tree's peak PSS."""
    command = [sys.executable, "-m", "hbt.cli", "eval", "--model", str(model), "--corpus", str(corpus),
               "--out", str(out), "--set", "eval.encode_threads=2", *[a for s in settings for a in ("--set", s)]]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=code, env={**os.environ, "PYTHONPATH": str(code)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with TreeMemory(process.pid, args.interval, ROLES) as memory:
        stdout, stderr = process.communicate()
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        sys.exit(f"{name} failed: {stderr.strip().splitlines()[-1] if stderr.strip() else stdout}")
    result = json.loads((out / "results.json").read_text())
    n = result["n_documents"]
    row = {"run": name, "passages": n, "seconds": seconds, "us_per_passage": 1e6 * seconds / n,
           "driver_mb": memory.peak_root / 2**20, "encode_mb": memory.peak_by_role["encode"] / 2**20,
           "shard_mb": memory.peak_by_role["shard"] / 2**20, "all_mb": memory.peak_total / 2**20,
           "embeddings_mb": n * DIM * 4 / 2**20, **result["metrics"], "index": result.get("index")}
    print(f"{name}: {seconds:.0f} s, driver {row['driver_mb']:.0f} MB, all {row['all_mb']:.0f} MB", file=sys.stderr)
    return row


def table(rows: list[dict]) -> str:
    lines = ["| run | passages | wall s | us / passage | driver peak PSS (MB) | encode actor (MB) | shard actor (MB) "
             "| all processes (MB) | embeddings (MB) | nDCG@10 | Recall@100 |", "|---" * 11 + "|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['passages']:,} | {r['seconds']:.0f} | {r['us_per_passage']:.0f} | "
                     f"{r['driver_mb']:.0f} | {r['encode_mb']:.0f} | {r['shard_mb']:.0f} | {r['all_mb']:.0f} | "
                     f"{r['embeddings_mb']:.0f} | {r['ndcg@10']:.4f} | {r['recall@100']:.4f} |")
    return "\n".join(lines)


def goals(small: dict, large: dict, approximate: list[dict]) -> list[str]:
    lines = [f"driver peak PSS {large['passages']:,} / {small['passages']:,}: "
             f"{large['driver_mb'] / small['driver_mb']:.2f}x (goal <= 1.3x)",
             f"all processes / embeddings at {large['passages']:,}: "
             f"{large['all_mb'] / large['embeddings_mb']:.2f}x (goal <= 1.5x)",
             f"time per passage {large['passages']:,} / {small['passages']:,}: "
             f"{large['us_per_passage'] / small['us_per_passage']:.2f}x (goal <= 1.2x)"]
    for approx in approximate:
        index = approx["index"]
        recall = next(v for key, v in index.items() if key.endswith("_vs_flat"))
        lines.append(f"{index['factory']} nprobe {index['nprobe']}: recall of Flat's top 100 {recall:.4f} on "
                     f"{index['recall_queries']} queries; nDCG@10 {approx['ndcg@10']:.4f} "
                     f"vs Flat {large['ndcg@10']:.4f}, "
                     f"Recall@100 {approx['recall@100'] / large['recall@100']:.3f} of Flat's (goal >= 0.95)")
    return lines


def main(argv: Optional[list[str]] = None) -> list[dict]:
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    model = stand_in(args.model, args.work / "stand-in")
    rows, flat = [], {}
    for n in args.sizes:
        corpus = write_corpus(args.work / f"beir-{n}", n, args.queries)
        out = args.work / f"stand-in-{n}"
        shutil.rmtree(out.with_name(out.name + ".embeddings"), ignore_errors=True)  # measured from scratch
        flat[n] = run_eval(f"stand-in, Flat, {n:,}", model, corpus, out, args)
        rows.append(flat[n])
    largest = args.sizes[-1]
    approximate = [run_eval(f"stand-in, {args.approx_factory} nprobe {nprobe}, {largest:,} (shards resumed)", model,
                            args.work / f"beir-{largest}", args.work / f"approx-{largest}-{nprobe}", args,
                            settings=[f"eval.index_factory={args.approx_factory}", f"eval.nprobe={nprobe}",
                                      f"eval.embeddings_dir={args.work / f'stand-in-{largest}.embeddings'}"])
                   for nprobe in args.nprobes]
    rows.extend(approximate)
    if args.e5_docs:
        corpus = write_corpus(args.work / f"beir-{args.e5_docs}", args.e5_docs, args.queries)
        out = args.work / f"e5-{args.e5_docs}"
        shutil.rmtree(out.with_name(out.name + ".embeddings"), ignore_errors=True)
        rows.append(run_eval(f"e5-small, Flat, {args.e5_docs:,}", args.model, corpus, out, args))
    if args.baseline is not None:
        smallest = args.sizes[0]
        rows.append(run_eval(f"before, stand-in, Flat, {smallest:,}", model, args.work / f"beir-{smallest}",
                             args.work / f"before-{smallest}", args, code=args.baseline))
    print(f"hbt eval on synthetic BEIR corpora, {args.queries} queries, {os.cpu_count()} cores")
    print(table(rows))
    for line in goals(flat[args.sizes[0]], flat[largest], approximate):
        print(f"- {line}")
    if args.json is not None:
        write_json_atomic(args.json, {"sizes": args.sizes, "rows": rows})
    return rows


if __name__ == "__main__":
    main()
