"""Benchmark `eval.precision`: encoding at int8 (ONNX Runtime, int8 weights per output channel)
and at int8-accurate (the same, feed-forward weights kept fp32) against fp32, on the same texts,
and what each does to the held-out XQuAD-R scores.

    speed-up = total fp32 encoding time / total int8 encoding time, over --rounds rounds
               (the contenders alternate, order rotating; every round encodes the whole corpus)
    delta    = mAP(int8) - mAP(fp32) on Mo, Cr and Mul, every run evaluated the same way
    goals: speed-up >= 1.8;  |delta| <= 0.005 on each

Both contenders are `hbt.eval.encode.encode_corpus` (the encode-once path of `hbt eval`, as
its encode actors run it) over the same corpus, batch size, `max_length` and torch threads;
they differ only by `Encoder.for_inference(precision)`. Model loading and the int8 exports and
quantizations are timed apart (`setup_s`, with an empty int8 cache: what a model's first int8
run pays). The corpus defaults to the test split of a prepared dir (articles no hbt model trained on).

    python benchmarks/eval_precision.py --model runs/models/e5-small --corpus runs/local/prepared \\
        --languages en,de,zh --json runs/bench/eval_precision.json
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional
from unittest.mock import patch

import torch
from bench_rounds import positive_int, report, rotating_rounds

from hbt.config import REPO_ROOT, load_config
from hbt.eval.allpairs import evaluate
from hbt.eval.encode import encode_corpus
from hbt.eval.heldout import read_eval_corpus, restrict_to_articles
from hbt.model.encoder import Encoder

GOALS = {"speedup": 1.8, "max_abs_delta": 0.005}
PRECISIONS = ("fp32", "int8", "int8-accurate")
QUANTIZED = PRECISIONS[1:]
SETTINGS = ("mono", "cross", "multi")


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=REPO_ROOT / "runs" / "models" / "e5-small")
    p.add_argument("--corpus", type=Path, default=REPO_ROOT / "runs" / "local" / "prepared",
                   help="a prepared dir (its test split) or a LAReQA dir")
    p.add_argument("--languages", default="en,de,zh", help="comma-separated language codes")
    p.add_argument("--max-articles", type=int, default=0, help="keep the first N articles only (0: all)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads of both contenders")
    p.add_argument("--rounds", type=positive_int, default=2)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. --set eval.batch_size=32")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers to this file")
    return p.parse_args(argv)


class Recorded:
    """An encoder that records what it is asked to encode (texts, kinds, batch size, max_length),
    so the result shows both contenders did the same work."""

    def __init__(self, encoder: Encoder):
        self.encoder, self.digest, self.texts, self.batch_sizes = encoder, hashlib.sha256(), 0, set()

    def encode(self, texts, kind, batch_size):
        self.digest.update(kind.encode() + b"\0" + "\0".join(texts).encode() + b"\1")
        self.texts += len(texts)
        self.batch_sizes.add(batch_size)
        return self.encoder.encode(texts, kind, batch_size)

    def signature(self) -> dict:
        return {"texts": self.texts, "texts_sha256": self.digest.hexdigest(), "batch_size": sorted(self.batch_sizes),
                "max_length": self.encoder.cfg.max_length, "prefixes": [self.encoder.prefix("query"),
                                                                         self.encoder.prefix("passage")]}


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    config = load_config(None, [f"model.name_or_path={args.model}", *args.overrides])
    languages = args.languages.split(",")
    split = "test" if (args.corpus / "manifest.json").is_file() else None
    corpus = read_eval_corpus(args.corpus, languages, split).corpus
    if args.max_articles:
        corpus = restrict_to_articles(corpus, range(args.max_articles))
    encoders, setup = {}, {}
    # int8's setup as a model's first int8 run pays it, not a cache hit
    with tempfile.TemporaryDirectory() as empty_cache, patch.dict(os.environ, {"HBT_CACHE_DIR": empty_cache}):
        for p in PRECISIONS:
            started = time.perf_counter()
            encoders[p] = Encoder.from_config(config.model).for_inference(p)
            setup[p] = time.perf_counter() - started
    context = config.model.resolved_candidate_context()
    embeddings: dict[str, tuple] = {}
    workload: dict[str, dict] = {}

    def timed(precision: str):
        def encode_once() -> float:
            recorded = Recorded(encoders[precision])
            started = time.perf_counter()
            embeddings[precision] = encode_corpus(recorded, corpus, config.eval, context, progress=False,
                                                  lengths=encoders[precision].token_lengths)
            elapsed = time.perf_counter() - started
            workload[precision] = recorded.signature()
            return elapsed
        return encode_once

    encode_corpus(encoders["fp32"], corpus, config.eval, context, progress=False,  # warm-up, untimed
                  lengths=encoders["fp32"].token_lengths)
    seconds = rotating_rounds({p: timed(p) for p in PRECISIONS}, args.rounds)
    total = {p: sum(s) for p, s in seconds.items()}
    scores = {p: evaluate(*embeddings[p], corpus, languages, config.eval.top_k, shards_on_ray=False)["settings"]
              for p in PRECISIONS}
    maps = {p: {s: scores[p][s]["map"] for s in SETTINGS if s in scores[p]} for p in PRECISIONS}
    deltas = {p: {s: maps[p][s] - maps["fp32"][s] for s in maps["fp32"]} for p in QUANTIZED}
    speedup = {p: total["fp32"] / total[p] for p in QUANTIZED}
    return {
        "model": str(args.model), "corpus": str(args.corpus), "languages": languages, "rounds": args.rounds,
        "threads": args.threads, "workload": workload,
        "seconds": seconds, "total_s": total, "setup_s": setup,
        "texts_per_s": {p: args.rounds * workload[p]["texts"] / total[p] for p in PRECISIONS},
        "map": maps, "delta": deltas, "speedup": speedup,
        "pass": {p: {"speedup": speedup[p] >= GOALS["speedup"],
                     "delta": all(abs(d) <= GOALS["max_abs_delta"] for d in deltas[p].values())} for p in QUANTIZED},
    }


def format_table(r: dict) -> str:
    w = r["workload"]["fp32"]
    lines = [f"model {r['model']}  corpus {r['corpus']} ({', '.join(r['languages'])})  {w['texts']} texts, "
             f"max_length {w['max_length']}, batch {w['batch_size']}, {r['threads']} threads, {r['rounds']} rounds",
             "", f"{'precision':<14}{'setup (s)':>10}{'total (s)':>12}{'texts/s':>10}"
             + "".join(f"{s + ' mAP':>12}" for s in r["map"]["fp32"])]
    for p in PRECISIONS:
        lines.append(f"{p:<14}{r['setup_s'][p]:>10.2f}{r['total_s'][p]:>12.2f}{r['texts_per_s'][p]:>10.1f}"
                     + "".join(f"{v:>12.4f}" for v in r["map"][p].values()))
    for p in QUANTIZED:
        passed = r["pass"][p]
        lines += ["", f"{p} per-round speed-up: "
                  + "  ".join(f"{f / q:.3f}" for f, q in zip(r["seconds"]["fp32"], r["seconds"][p])),
                  f"speed-up {p} / fp32 (total time): {r['speedup'][p]:.3f}   goal >= {GOALS['speedup']}   "
                  f"{'PASS' if passed['speedup'] else 'FAIL'}",
                  f"delta mAP ({p} - fp32): " + "  ".join(f"{s} {d:+.4f}" for s, d in r["delta"][p].items())
                  + f"   goal |delta| <= {GOALS['max_abs_delta']}   {'PASS' if passed['delta'] else 'FAIL'}"]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> dict:
    return report(parse_args(argv), run, format_table)


if __name__ == "__main__":
    main(sys.argv[1:])
