"""Benchmark hbt's all-pairs LAReQA evaluation against three baselines, in one process.

(a) hbt all-pairs (`encode_corpus` once, then `evaluate` over every pair and the multi
    setting) / a bare loop that encodes every unique text once, unsorted: the price of the
    whole evaluation over the minimum any evaluation must pay. Target <= 1.10.
(b) per-pair evaluation as mteb runs it (every (X, Y) pair re-encodes X's queries and Y's
    candidates with `SentenceTransformer.encode`, then scores that pair) / hbt all-pairs.
    The per-pair baseline does n^2 encodes where hbt does n, so this ratio grows with the
    number of languages n; it is measured on the same language subset. Target >= 10.
(c) `Encoder.encode` throughput on `encode_corpus`'s length-sorted chunks /
    `SentenceTransformer.encode` throughput, same model, texts, batch size and threads.
    Target >= 1.0.

Every contender sees the same texts (prefixes included), batch size, `max_length` and torch
threads, and gets a short warm-up before it is timed. Model loading is never timed.

    python benchmarks/eval_allpairs.py --languages en,de,es --json runs/bench/eval_allpairs.json
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from bench_rounds import positive_int, report, rotating_rounds

from hbt.config import REPO_ROOT, HbtConfig
from hbt.data.candidates import candidate_texts
from hbt.data.lareqa import LareqaCorpus, read_lareqa
from hbt.eval.allpairs import _pair_metrics, _View, all_pairs, evaluate
from hbt.eval.encode import corpus_chunks, encode_corpus
from hbt.eval.heldout import restrict_to_articles
from hbt.model.encoder import Encoder, pool

TARGETS = {"a": ("<=", 1.10), "b": (">=", 10.0), "c": (">=", 1.0)}


def default_corpus() -> Path:
    """$HBT_DATA_DIR/xquad-r, else ../shared/data/xquad-r beside the repository."""
    root = Path(os.environ["HBT_DATA_DIR"]) if os.environ.get("HBT_DATA_DIR") else REPO_ROOT.parent / "shared" / "data"
    return root / "xquad-r"


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=REPO_ROOT / "runs" / "models" / "e5-small",
                   help="HF model dir with sentence-transformers module files")
    p.add_argument("--corpus", type=Path, default=default_corpus(), help="LAReQA dir of {lang}.json")
    p.add_argument("--languages", default="en,de,es", help="comma-separated language codes")
    p.add_argument("--max-articles", type=int, default=2,
                   help="keep only the first N articles' queries, candidates and qrels (0: all 48); the "
                        "default keeps a run to a few minutes on 2 idle cores")
    p.add_argument("--batch-size", type=int, default=HbtConfig().eval.batch_size)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads for every contender")
    p.add_argument("--pair-sample", type=int, default=None,
                   help="time the per-pair baseline on this many random pairs and extrapolate to all n^2 "
                        "(default: measure every pair)")
    p.add_argument("--seed", type=int, default=0, help="seed of the pair sample")
    p.add_argument("--rounds", type=positive_int, default=3, help="rounds of every contender; each time is the median")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers to this file")
    return p.parse_args(argv)


# ---------------------------------------------------------------- inputs

def load_corpus(corpus_dir: Path, languages: list[str], max_articles: Optional[int]) -> LareqaCorpus:
    corpus = read_lareqa(corpus_dir, languages)
    if max_articles:
        corpus = restrict_to_articles(corpus, range(max_articles))
    return corpus


def _by_lang(table, lang: str, column: str) -> list[str]:
    langs = table.column("lang").to_pylist()
    return [v for v, l in zip(table.column(column).to_pylist(), langs) if l == lang]


def texts_of(corpus: LareqaCorpus, lang: str, kind: str, with_context: bool) -> list[str]:
    """One language's query or candidate texts, unprefixed, in table order (as `encode_corpus`)."""
    if kind == "query":
        return _by_lang(corpus.queries, lang, "text")
    return candidate_texts(_by_lang(corpus.candidates, lang, "sentence"),
                           _by_lang(corpus.candidates, lang, "context"), with_context)


def prefixed_texts(corpus, languages, config: HbtConfig) -> dict[tuple[str, str], list[str]]:
    """(lang, kind) -> texts with the model's prefix: what the baselines encode."""
    prefix = {"query": config.model.query_prefix, "passage": config.model.passage_prefix}
    return {(lang, kind): [prefix[kind] + t for t in texts_of(corpus, lang, kind,
                                                                   config.model.resolved_candidate_context())]
            for lang in languages for kind in ("query", "passage")}


@dataclass
class Workload:
    """One corpus as every contender sees it."""

    corpus: LareqaCorpus
    texts: dict[tuple[str, str], list[str]]  # (lang, kind) -> prefixed texts, table order
    view: _View
    pairs: list[tuple[str, str]]  # the (X, Y) pairs the per-pair baseline runs

    @classmethod
    def of(cls, corpus, languages, config: HbtConfig, pairs) -> "Workload":
        return cls(corpus, prefixed_texts(corpus, languages, config), _View(corpus), list(pairs))

    @property
    def flat(self) -> list[str]:
        """Every unique text once: per language its queries, then its candidates."""
        return [t for batch in self.texts.values() for t in batch]


# ---------------------------------------------------------------- contenders

@torch.no_grad()
def bare_encode(encoder: Encoder, texts: list[str], batch_size: int) -> np.ndarray:
    """The naive baseline: tokenizer + model + mean pooling + normalize, in the given order."""
    encoder.model.eval()
    chunks = []
    for start in range(0, len(texts), batch_size):
        batch = encoder.tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                                  max_length=encoder.cfg.max_length, return_tensors="pt")
        hidden = encoder.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        pooled = pool(hidden, batch["attention_mask"], encoder.cfg.pooling)  # (b, H)
        chunks.append(F.normalize(pooled, p=2, dim=-1).numpy())
    return np.concatenate(chunks, axis=0)  # (N, H)


def hbt_allpairs(encoder: Encoder, corpus, languages, config: HbtConfig) -> dict:
    query_emb, cand_emb = encode_corpus(encoder, corpus, config.eval, config.model.resolved_candidate_context())
    return evaluate(query_emb, cand_emb, corpus, languages, config.eval.top_k, config.eval.index_factory)


def encoder_chunks(encoder: Encoder, corpus, config: HbtConfig) -> None:
    """`Encoder.encode` over the length-sorted chunks `encode_corpus` makes, without the scoring."""
    for chunk in corpus_chunks(corpus, config.eval, config.model.resolved_candidate_context()):
        encoder.encode(chunk.texts, chunk.kind, config.eval.batch_size)


def st_encode(st, texts: dict, batch_size: int) -> None:
    """`SentenceTransformer.encode` once per (lang, kind) list, as `encode_corpus` groups them
    (ST sorts each call's texts by length itself)."""
    for batch in texts.values():
        st.encode(batch, batch_size=batch_size, show_progress_bar=False)


def per_pair(st, work: Workload, batch_size: int, top_k: int) -> None:
    """mteb's way: every pair re-encodes both sides from scratch, then is scored alone
    (with hbt's own pair scoring, so only the encoding differs)."""
    for x, y in work.pairs:
        qe = st.encode(work.texts[(x, "query")], batch_size=batch_size, show_progress_bar=False)
        ce = st.encode(work.texts[(y, "passage")], batch_size=batch_size, show_progress_bar=False)
        _pair_metrics(work.view, qe, ce, x, y, top_k)


def timed(contender: Callable[[Workload], object], warm: Workload, work: Workload) -> float:
    """Seconds of one `contender(work)`, after a warm-up on the one-article `warm` workload
    (imports, allocator and thread-pool start-up stay out of the timing)."""
    contender(warm)
    start = time.perf_counter()
    contender(work)
    return time.perf_counter() - start


# ---------------------------------------------------------------- driver

def sample_pairs(pairs: list, k: Optional[int], seed: int) -> list:
    if k is None or k >= len(pairs):
        return pairs
    return random.Random(seed).sample(pairs, k)


def verdict(key: str, value: float) -> bool:
    op, target = TARGETS[key]
    return value <= target if op == "<=" else value >= target


def load_models(config: HbtConfig):
    """The hbt encoder and a SentenceTransformer on the same dir, truncating at the same length."""
    from sentence_transformers import SentenceTransformer

    encoder = Encoder.from_config(config.model)
    st = SentenceTransformer(config.model.name_or_path, device="cpu")
    st.max_seq_length = config.model.max_length
    st.eval()
    return encoder, st


def measure(encoder, st, work: Workload, warm: Workload, languages, config: HbtConfig, rounds: int) -> dict:
    """Seconds per contender: the median over `rounds` rounds, each contender timed after its
    own warm-up, their order rotating from round to round (a shared machine drifts)."""
    bs, top_k = config.eval.batch_size, config.eval.top_k
    contenders = {
        "bare_encode": lambda w: bare_encode(encoder, w.flat, bs),
        "hbt_allpairs": lambda w: hbt_allpairs(encoder, w.corpus, languages, config),
        "hbt_encoder": lambda w: encoder_chunks(encoder, w.corpus, config),
        "st_encode": lambda w: st_encode(st, w.texts, bs),
        "per_pair_timed": lambda w: per_pair(st, w, bs, top_k),
    }
    times = rotating_rounds({name: partial(timed, fn, warm, work) for name, fn in contenders.items()}, rounds)
    return {name: statistics.median(ts) for name, ts in times.items()}


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    languages = [l.strip() for l in args.languages.split(",") if l.strip()]
    config = HbtConfig()
    config.eval.batch_size = args.batch_size
    config.model.name_or_path = str(args.model)
    corpus = load_corpus(args.corpus, languages, args.max_articles)
    pairs = all_pairs(languages)
    timed_pairs = sample_pairs(pairs, args.pair_sample, args.seed)
    work = Workload.of(corpus, languages, config, timed_pairs)
    first_article = min(corpus.queries.column("article").to_pylist())
    warm = Workload.of(restrict_to_articles(corpus, [first_article]), languages, config, timed_pairs[:1])

    encoder, st = load_models(config)
    t = measure(encoder, st, work, warm, languages, config, args.rounds)
    t["per_pair"] = t["per_pair_timed"] * len(pairs) / len(timed_pairs)
    n_texts = len(work.flat)
    ratios = {"a": t["hbt_allpairs"] / t["bare_encode"],
              "b": t["per_pair"] / t["hbt_allpairs"],
              "c": t["st_encode"] / t["hbt_encoder"]}  # same texts: texts/s ratio = inverse time ratio
    return {
        "model": str(args.model), "corpus": str(args.corpus), "languages": languages,
        "max_articles": args.max_articles, "batch_size": args.batch_size, "rounds": args.rounds,
        "max_length": config.model.max_length,
        "threads": torch.get_num_threads(), "n_texts": n_texts,
        "n_pairs": len(pairs), "n_pairs_timed": len(timed_pairs),
        "per_pair_extrapolated": len(timed_pairs) < len(pairs),
        "times_s": t,
        "throughput_texts_per_s": {"hbt_encoder": n_texts / t["hbt_encoder"], "st_encode": n_texts / t["st_encode"]},
        "ratios": ratios,
        "targets": {k: f"{op} {v:g}" for k, (op, v) in TARGETS.items()},
        "pass": {k: verdict(k, v) for k, v in ratios.items()},
    }


def format_table(r: dict) -> str:
    t, tp = r["times_s"], r["throughput_texts_per_s"]
    n, n_timed = r["n_pairs"], r["n_pairs_timed"]
    how = (f"EXTRAPOLATED linearly from {n_timed} of {n} pairs ({t['per_pair_timed']:.1f} s measured)"
           if r["per_pair_extrapolated"] else f"measured on all {n} pairs")
    articles = f"first {r['max_articles']}" if r["max_articles"] else "all"
    lines = [
        f"model {r['model']}  languages {','.join(r['languages'])} ({n} pairs + multi)  articles {articles}",
        f"{r['n_texts']} unique texts  batch {r['batch_size']}  max_length {r['max_length']}  "
        f"median of {r['rounds']} rounds  "
        f"torch threads {r['threads']}",
        "",
        f"{'contender':<58}{'time (s)':>10}",
        f"{'bare loop: tokenizer+model+mean+normalize, unsorted, once':<58}{t['bare_encode']:>10.2f}",
        f"{'hbt all-pairs: encode_corpus + evaluate (pairs + multi)':<58}{t['hbt_allpairs']:>10.2f}",
        f"{'per-pair (mteb): ST.encode X queries + Y cands, per pair':<58}{t['per_pair']:>10.2f}",
        f"    per-pair time {how}; same {len(r['languages'])}-language subset as hbt",
        f"{'hbt Encoder.encode, length-sorted chunks':<58}{t['hbt_encoder']:>10.2f}"
        f"   {tp['hbt_encoder']:.1f} texts/s",
        f"{'SentenceTransformer.encode':<58}{t['st_encode']:>10.2f}   {tp['st_encode']:.1f} texts/s",
        "",
        f"{'ratio':<58}{'value':>10}{'target':>10}{'':>3}result",
    ]
    names = {"a": "(a) hbt all-pairs / bare encode loop",
             "b": "(b) per-pair (mteb) / hbt all-pairs" + (" [extrapolated]" if r["per_pair_extrapolated"] else ""),
             "c": "(c) Encoder.encode / ST.encode throughput"}
    for k, name in names.items():
        lines.append(f"{name:<58}{r['ratios'][k]:>10.3f}{r['targets'][k]:>10}   {'PASS' if r['pass'][k] else 'FAIL'}")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> dict:
    return report(parse_args(argv), run, format_table)


if __name__ == "__main__":
    main(sys.argv[1:])
