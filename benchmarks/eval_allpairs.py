"""Benchmark `hbt eval`'s all-pairs LAReQA evaluation against the least any evaluation must do,
and against per-pair evaluation as mteb runs it.

(a) hbt eval / minimum; goal <= 1.10.
    hbt eval: the path `hbt eval` takes: the corpus encoded once on Ray encode actors (each
    started and loading the model inside the timing, as in every `hbt eval`), then every
    (X, Y) pair and the pooled multi setting scored, its faiss shards on Ray actors.
    minimum: the model loaded once and every unique text (prefix included) encoded once in
    this process by a bare loop (tokenize all, sort by token count, pad each batch, model, mean
    pooling, normalize), and nothing else: no scoring, no Ray.
(b) per-pair / hbt eval; goal >= 10 at 11 languages.
    per-pair: every (X, Y) pair re-encodes X's queries and Y's candidates with
    `SentenceTransformer.encode` and is scored alone (with hbt's pair scoring, so only the
    encoding differs), as mteb does. It encodes 2 n^2 language sides where hbt encodes 2 n, so
    the ratio grows with the language count n. `--pair-sample K` times K random pairs and
    extrapolates to all n^2; the table prints the measured seconds beside the extrapolation.
(s) scale: hbt eval's seconds per text on all the languages / on the first two; goal <= 1.2.

Same work: every contender gets the same texts (prefixed), batch size, `max_length` and torch
threads. The result records what the minimum and hbt's encode actors were given (text count,
a SHA-256 of the sorted text digests, batch sizes, `max_length`) and the mAPs both give,
and per-pair's mAPs beside hbt's on the pairs it timed; the tests check they agree. Ratios use
total time over `--rounds` rounds (order rotating); each round's ratio is printed beside it.
Both sides load the model inside their timing (any evaluation must); Ray's start is not timed.
Each contender runs once on one article before the rounds (imports, thread pools, the first Ray
worker processes). hbt eval's time is also split into encoding (actor start and model load
included) and scoring.

    python benchmarks/eval_allpairs.py --languages en,de,es --json runs/bench/eval_allpairs.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from bench_rounds import positive_int, report, rotating_rounds

from hbt.config import REPO_ROOT, HbtConfig, default_data_dir, load_config
from hbt.data.candidates import candidate_texts
from hbt.data.lareqa import LareqaCorpus, read_lareqa
from hbt.eval.allpairs import _pair_metrics, _View, all_pairs, evaluate
from hbt.eval.encode import EncodeActor, _column_by_lang, encode_corpus_on_actors
from hbt.eval.heldout import restrict_to_articles
from hbt.model.encoder import Encoder, pool
from hbt.ray_session import ensure_ray

GOALS = {"a": ("<=", 1.10), "b": (">=", 10.0), "s": ("<=", 1.2)}
SETTINGS = ("mono", "cross", "multi")


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=REPO_ROOT / "runs" / "models" / "e5-small",
                   help="HF model dir with sentence-transformers module files")
    p.add_argument("--corpus", type=Path, default=default_data_dir() / "xquad-r",
                   help="LAReQA dir of {lang}.json (default: the data dir's)")
    p.add_argument("--languages", default="en,de,es", help="comma-separated language codes (at least 2)")
    p.add_argument("--max-articles", type=int, default=2,
                   help="keep only the first N articles' queries, candidates and qrels (0: all 48); the "
                        "default keeps a run to minutes on 2 idle cores")
    p.add_argument("--batch-size", type=positive_int, default=HbtConfig().eval.batch_size)
    p.add_argument("--threads", type=positive_int, default=os.cpu_count() or 1,
                   help="torch threads of every contender (this process's and the encode actor's)")
    p.add_argument("--pair-sample", type=positive_int, default=None,
                   help="time the per-pair baseline on this many random pairs and extrapolate to all n^2 "
                        "(default: every pair)")
    p.add_argument("--seed", type=int, default=0, help="seed of the pair sample")
    p.add_argument("--rounds", type=positive_int, default=3, help="rounds of every contender")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers to this file")
    args = p.parse_args(argv)
    args.languages = [lang.strip() for lang in args.languages.split(",") if lang.strip()]
    if len(args.languages) < 2:
        p.error("--languages: give at least 2 (the scale ratio compares all of them with the first two)")
    return args


# ---------------------------------------------------------------- inputs

def load_corpus(corpus_dir: Path, languages: list[str], max_articles: int) -> LareqaCorpus:
    corpus = read_lareqa(corpus_dir, languages)
    return restrict_to_articles(corpus, range(max_articles)) if max_articles else corpus


def prefixed_texts(corpus: LareqaCorpus, config: HbtConfig) -> dict[tuple[str, str], list[str]]:
    """(lang, kind) -> that language's queries or candidates with the model's prefix, table order:
    what the baselines encode (built here from the corpus, not by hbt's chunking)."""
    languages = list(dict.fromkeys(corpus.candidates.column("lang").to_pylist()))
    context = config.model.resolved_candidate_context()
    texts = {}
    for lang in languages:
        candidates = candidate_texts(_column_by_lang(corpus.candidates, lang, "sentence"),
                                     _column_by_lang(corpus.candidates, lang, "context"), context)
        texts[(lang, "query")] = [config.model.query_prefix + t for t in _column_by_lang(corpus.queries, lang, "text")]
        texts[(lang, "passage")] = [config.model.passage_prefix + t for t in candidates]
    return texts


@dataclass
class Workload:
    """One corpus as every contender sees it."""

    corpus: LareqaCorpus
    languages: list[str]
    texts: dict[tuple[str, str], list[str]]  # (lang, kind) -> prefixed texts, table order
    pairs: list[tuple[str, str]]  # the (X, Y) pairs the per-pair baseline runs

    @classmethod
    def of(cls, corpus, languages, config: HbtConfig, pairs) -> "Workload":
        return cls(corpus, list(languages), prefixed_texts(corpus, config), list(pairs))

    @property
    def flat(self) -> list[str]:
        """Every unique text once: per language its queries, then its candidates."""
        return [t for batch in self.texts.values() for t in batch]


# ---------------------------------------------------------------- what each contender was given

def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def signature(digests: list[str], batch_sizes, max_lengths) -> dict:
    """What an encoder was asked to encode, independent of order and chunking."""
    return {"texts": len(digests), "texts_sha256": hashlib.sha256("".join(sorted(digests)).encode()).hexdigest(),
            "batch_size": sorted(set(batch_sizes)), "max_length": sorted(set(max_lengths))}


class RecordingEncodeActor(EncodeActor):
    """hbt's encode actor, also writing what each call was given (digests of the prefixed texts)
    to a file in `record_dir` (set on a subclass per run)."""

    record_dir = ""

    def encode(self, index, texts, kind, batch_size):
        prefix = self.encoder.prefix(kind)
        record = {"digests": [text_digest(prefix + t) for t in texts], "batch_size": batch_size,
                  "max_length": self.encoder.cfg.max_length}
        (Path(self.record_dir) / f"{index}.json").write_text(json.dumps(record))
        return super().encode(index, texts, kind, batch_size)


def recorded_signature(record_dir: Path) -> dict:
    records = [json.loads(path.read_text()) for path in sorted(record_dir.glob("*.json"))]
    return signature([d for r in records for d in r["digests"]], [r["batch_size"] for r in records],
                     [r["max_length"] for r in records])


# ---------------------------------------------------------------- contenders

@torch.no_grad()
def minimum(config: HbtConfig, texts: list[str]) -> np.ndarray:
    """The least any evaluation must do: load the model, tokenize every text once, batch them by
    token count (least padding), model + mean pooling + normalize -> (N, H) in the given order."""
    encoder, batch_size = Encoder.from_config(config.model).eval(), config.eval.batch_size
    ids = encoder.tokenizer(texts, truncation=True, max_length=encoder.cfg.max_length)["input_ids"]
    order = np.argsort([len(i) for i in ids], kind="stable")  # (N,)
    out = np.empty((len(texts), encoder.dim), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        batch = encoder.tokenizer.pad({"input_ids": [ids[i] for i in rows]}, return_tensors="pt")
        hidden = encoder.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        pooled = pool(hidden, batch["attention_mask"], encoder.cfg.pooling)  # (b, H)
        out[rows] = F.normalize(pooled, p=2, dim=-1).numpy()
    return out


def hbt_eval(work: Workload, config: HbtConfig, actor_class: type = EncodeActor,
             encode_seconds: Optional[list] = None) -> dict:
    """What `hbt eval` does between reading the corpus and writing its outputs, with Ray up;
    the seconds spent encoding are appended to `encode_seconds`."""
    start = time.perf_counter()
    query_emb, cand_emb = encode_corpus_on_actors(config.model, work.corpus, config.eval,
                                                  config.cluster.cpus_per_worker, actor_class=actor_class)
    if encode_seconds is not None:
        encode_seconds.append(time.perf_counter() - start)
    return evaluate(query_emb, cand_emb, work.corpus, work.languages, config.eval.top_k,
                    config.eval.index_factory, shards_on_ray=True)


def per_pair(st, work: Workload, batch_size: int, top_k: int) -> dict[tuple[str, str], float]:
    """mteb's way: every pair re-encodes both sides from scratch, then is scored alone -> pair mAPs."""
    view, maps = _View(work.corpus), {}
    for x, y in work.pairs:
        qe = st.encode(work.texts[(x, "query")], batch_size=batch_size, show_progress_bar=False)
        ce = st.encode(work.texts[(y, "passage")], batch_size=batch_size, show_progress_bar=False)
        maps[(x, y)] = _pair_metrics(view, qe, ce, x, y, top_k)[0]["map"]
    return maps


def seconds_of(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


# ---------------------------------------------------------------- driver

def sample_pairs(pairs: list, k: Optional[int], seed: int) -> list:
    if k is None or k >= len(pairs):
        return pairs
    return random.Random(seed).sample(pairs, k)


def meets(key: str, value: float) -> bool:
    op, goal = GOALS[key]
    return value <= goal if op == "<=" else value >= goal


def configure(args: argparse.Namespace) -> HbtConfig:
    """One encode actor with all `--threads` torch threads, as `hbt eval` runs on this machine."""
    return load_config(None, [f"model.name_or_path={args.model}", f"eval.batch_size={args.batch_size}",
                              "eval.encode_actors=1", f"eval.encode_threads={args.threads}"])


def sentence_transformer(config: HbtConfig):
    """A SentenceTransformer on the model dir, truncating where hbt's encoder does."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(config.model.name_or_path, device="cpu")
    st.max_seq_length = config.model.max_length
    return st.eval()


def settings_map(result: dict) -> dict[str, float]:
    return {s: result["settings"][s]["map"] for s in SETTINGS if s in result["settings"]}


def run(args: argparse.Namespace) -> dict:
    import ray

    torch.set_num_threads(args.threads)
    config = configure(args)
    languages = args.languages
    corpus = load_corpus(args.corpus, languages, args.max_articles)
    pairs = all_pairs(languages)
    timed_pairs = sample_pairs(pairs, args.pair_sample, args.seed)
    work = Workload.of(corpus, languages, config, timed_pairs)
    two = Workload.of(load_corpus(args.corpus, languages[:2], args.max_articles), languages[:2], config, [])
    first_article = min(corpus.queries.column("article").to_pylist())
    warm = Workload.of(restrict_to_articles(corpus, [first_article]), languages, config, timed_pairs[:1])
    st = sentence_transformer(config)
    bs = config.eval.batch_size
    encode_seconds: list[float] = []

    started = not ray.is_initialized()  # a Ray already up (a test session's) is used and left up
    ensure_ray(config.cluster)  # the Ray `hbt eval` starts
    if __name__ != "__main__":  # loaded by path (tests): the actor subclass goes to Ray by value
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        with tempfile.TemporaryDirectory() as records:
            recording = type("Recording", (RecordingEncodeActor,), {"record_dir": records})
            outputs: dict[str, object] = {}

            def keep(name, call):
                return lambda: outputs.__setitem__(name, call())

            contenders = {
                "minimum": keep("minimum", lambda w=work: minimum(config, w.flat)),
                "hbt_eval": keep("hbt_eval", lambda w=work: hbt_eval(w, config, recording, encode_seconds)),
                "hbt_eval_2": lambda: hbt_eval(two, config),
                "per_pair": keep("per_pair", lambda w=work: per_pair(st, w, bs, config.eval.top_k)),
            }
            minimum(config, warm.flat)  # warm-ups, untimed
            hbt_eval(warm, config)
            per_pair(st, warm, bs, config.eval.top_k)
            seconds = rotating_rounds({name: lambda c=call: seconds_of(c) for name, call in contenders.items()},
                                      args.rounds)
            given = {"minimum": signature([text_digest(t) for t in work.flat], [bs], [config.model.max_length]),
                     "hbt_eval": recorded_signature(Path(records))}
    finally:
        if started:
            ray.shutdown()

    # Same metrics out: the minimum's embeddings scored as hbt scores (untimed), and per-pair's
    # pair mAPs beside hbt's own on the same pairs.
    emb = dict(zip(work.texts, np.split(outputs["minimum"], np.cumsum([len(t) for t in work.texts.values()])[:-1])))
    minimum_result = evaluate({l: emb[(l, "query")] for l in languages}, {l: emb[(l, "passage")] for l in languages},
                              corpus, languages, config.eval.top_k, config.eval.index_factory, shards_on_ray=False)
    hbt_result = outputs["hbt_eval"]
    hbt_pairs = {(p["query_lang"], p["cand_lang"]): p["map"] for p in hbt_result["pairs"]}
    per_pair_maps = outputs["per_pair"]

    total = {name: sum(ts) for name, ts in seconds.items()}
    per_pair_all = total["per_pair"] * len(pairs) / len(timed_pairs)
    texts, texts_two = len(work.flat), len(two.flat)
    ratios = {"a": total["hbt_eval"] / total["minimum"], "b": per_pair_all / total["hbt_eval"],
              "s": (total["hbt_eval"] / texts) / (total["hbt_eval_2"] / texts_two)}
    return {
        "model": str(args.model), "corpus": str(args.corpus), "languages": languages,
        "max_articles": args.max_articles, "batch_size": bs, "max_length": config.model.max_length,
        "threads": args.threads, "rounds": args.rounds, "texts": texts, "texts_first_two": texts_two,
        "pairs": len(pairs), "pairs_timed": len(timed_pairs), "per_pair_extrapolated": len(timed_pairs) < len(pairs),
        "seconds": seconds, "total_s": total, "per_pair_all_s": per_pair_all,
        "hbt_eval_encode_s": encode_seconds,
        "given": given,
        "map": {"minimum": settings_map(minimum_result), "hbt_eval": settings_map(hbt_result)},
        "per_pair_map": [{"pair": list(p), "per_pair": m, "hbt_eval": hbt_pairs[p]} for p, m in per_pair_maps.items()],
        "ratios": ratios,
        "goals": {k: f"{op} {v:g}" for k, (op, v) in GOALS.items()},
        "pass": {k: meets(k, v) for k, v in ratios.items()},
    }


def format_table(r: dict) -> str:
    total, seconds, n = r["total_s"], r["seconds"], r["rounds"]
    articles = f"first {r['max_articles']}" if r["max_articles"] else "all"
    spread = lambda a, b: "  ".join(f"{x / y:.3f}" for x, y in zip(seconds[a], seconds[b]))  # noqa: E731
    if r["per_pair_extrapolated"]:
        how = (f"{total['per_pair']:.1f} s measured on {r['pairs_timed']} of {r['pairs']} pairs, "
               f"extrapolated to all: {r['per_pair_all_s']:.1f} s")
    else:
        how = f"measured on all {r['pairs']} pairs"
    lines = [
        f"model {r['model']}  languages {','.join(r['languages'])} ({r['pairs']} pairs + multi)  articles {articles}",
        f"{r['texts']} unique texts ({r['texts_first_two']} in the first two languages)  batch {r['batch_size']}  "
        f"max_length {r['max_length']}  torch threads {r['threads']}  {n} rounds, total time",
        "",
        f"{'contender':<62}{'total (s)':>10}{'per round (s)':>24}",
    ]
    names = {"minimum": "minimum: every unique text once, token-sorted, in process",
             "hbt_eval": "hbt eval: encode actors + every pair + multi (shard actors)",
             "hbt_eval_2": f"hbt eval on the first two languages ({','.join(r['languages'][:2])})",
             "per_pair": "per-pair (mteb): ST.encode X queries + Y candidates, per pair"}
    for name, label in names.items():
        lines.append(f"{label:<62}{total[name]:>10.2f}{'  '.join(f'{s:.1f}' for s in seconds[name]):>24}")
    encode = sum(r["hbt_eval_encode_s"])
    lines += [f"    hbt eval: {encode:.1f} s encoding (actor start and model load included), "
              f"{total['hbt_eval'] - encode:.1f} s scoring",
              f"    per-pair: {how}", "",
              f"{'ratio (total time)':<52}{'value':>8}{'goal':>9}  {'result':<7}per round"]
    rows = {"a": ("(a) hbt eval / minimum", spread("hbt_eval", "minimum")),
            "b": ("(b) per-pair / hbt eval" + (" [extrapolated]" if r["per_pair_extrapolated"] else ""), ""),
            "s": (f"(s) hbt eval s/text, {len(r['languages'])} languages / 2", "")}
    for key, (label, per_round) in rows.items():
        lines.append(f"{label:<52}{r['ratios'][key]:>8.3f}{r['goals'][key]:>9}  "
                     f"{'PASS' if r['pass'][key] else 'FAIL':<7}{per_round}")
    same = r["given"]["minimum"] == r["given"]["hbt_eval"]
    worst = max(abs(p["per_pair"] - p["hbt_eval"]) for p in r["per_pair_map"])
    lines += ["", f"same texts, batch size and max_length given to the minimum and hbt's encode actors: {same}",
              "mAP minimum / hbt eval: " + "  ".join(f"{s} {r['map']['minimum'][s]:.4f}/{r['map']['hbt_eval'][s]:.4f}"
                                                     for s in r["map"]["hbt_eval"]),
              f"largest |pair mAP per-pair - hbt eval| over the timed pairs: {worst:.2e}"]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> dict:
    return report(parse_args(argv), run, format_table)


if __name__ == "__main__":
    main(sys.argv[1:])
