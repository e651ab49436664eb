"""All-pairs LAReQA evaluation: mono (X->X), cross (X->Y, X!=Y) and pooled multilingual.

* Every language's queries and candidates are encoded exactly once, in length-sorted
  batches, in process or on Ray actors (:mod:`hbt.eval.encode`).
* Per (X, Y) pair the score matrix ``Q_X @ C_Y.T`` is small (~1190 x 1300 on
  XQuAD-R), so it is computed exactly with NumPy; LAReQA AP uses the full row,
  the top-k metrics (r@1, r@10, hit@1, hit@10, ndcg@10, mrr: ``topk_metrics``, ranx's
  values on arrays) use its top ``top_k``.
* The multi setting pools the candidates of every language: one faiss shard per
  candidate language (held by :class:`ShardActor`s when evaluating on Ray,
  searched in process otherwise) gives the top-k lists; the LAReQA mAP
  and the rank distance use the exact dense scores, one query language at a time
  (so the pooled matrix is never materialised whole).
* Above ``eval.lareqa_exact_max`` pooled candidates (``hbt.config.LAREQA_EXACT_MAX``: exact scoring is quadratic),
  every setting is scored from the shards' top ``top_k`` instead: a pair X->Y searches Y's
  shard, AP and rank distance come from the lists (``topk_average_precisions``,
  ``topk_rank_distance``: a relevant candidate beyond the list counts as not retrieved), and
  results.json's ``scoring`` says so.

Relevance: a query ``(qid, X)`` is answered in language ``Y`` by the qrels row
``(qid, Y)`` (question ids are shared by translations). A query with no answer
in ``Y`` (its answer was skipped by the reader there) is left out of pair
``X->Y`` and counted in ``n_queries``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from hbt.config import LAREQA_EXACT_MAX, HbtConfig
from hbt.errors import HbtError
from hbt.eval.encode import corpus_languages, encode_for_eval
from hbt.eval.metrics import (
    language_bias,
    lareqa_average_precisions,
    macro_mean,
    one_relevant_ranks,
    rank_distance,
    topk_average_precisions,
    topk_metrics,
    topk_rank_distance,
)
from hbt.languages import cross_pairs
from hbt.layout import HEATMAP, PAIRS_CSV, SUMMARY

if TYPE_CHECKING:
    from hbt.index.shards import NamedShards

PAIR_METRICS = ["map", "r@1", "r@10", "hit@1", "hit@10", "ndcg@10", "mrr"]


# ---------------------------------------------------------------- corpus view

class _View:
    """Per-language id lists (table order) and the (qid, lang) -> candidate id map."""

    def __init__(self, corpus):
        q, c = corpus.queries.to_pydict(), corpus.candidates.to_pydict()
        self.q_ids: dict[str, list[str]] = {}
        self.c_ids: dict[str, list[str]] = {}
        for qid, lang in zip(q["id"], q["lang"]):
            self.q_ids.setdefault(lang, []).append(qid)
        for cid, lang in zip(c["id"], c["lang"]):
            self.c_ids.setdefault(lang, []).append(cid)
        r = corpus.qrels.to_pydict()
        self.rel = {(qid, lang): cid for qid, lang, cid in zip(r["query_id"], r["lang"], r["candidate_id"])}
        self.c_pos = {lang: {cid: i for i, cid in enumerate(ids)} for lang, ids in self.c_ids.items()}


# ---------------------------------------------------------------- evaluation

def all_pairs(languages) -> list[tuple[str, str]]:
    """Every ordered (query_lang, cand_lang) pair: mono first (X, X), then cross."""
    langs = list(languages)
    return [(x, x) for x in langs] + cross_pairs(langs)


# Queries scored at once. Every per-query metric reads only its own row of scores, so scoring
# in blocks is exact, and the driver holds QUERY_BLOCK x candidates scores (plus their ranks and
# relevance) at a time instead of all queries x candidates: memory linear in the corpus.
QUERY_BLOCK = 512


def _query_blocks(n: int) -> list[slice]:
    return [slice(start, min(start + QUERY_BLOCK, n)) for start in range(0, n, QUERY_BLOCK)]


def _pair_queries(view: _View, x: str, y: str) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Pair X->Y's queries: their rows among X's queries, ids, and relevant candidate's row in Y."""
    keep = np.array([i for i, qid in enumerate(view.q_ids[x]) if (qid, y) in view.rel], dtype=np.int64)
    if not keep.size:
        raise HbtError(f"pair {x}->{y}: no query of {x} has an answer in {y}")
    qids = [view.q_ids[x][i] for i in keep]
    relevant = np.array([view.c_pos[y][view.rel[(qid, y)]] for qid in qids], dtype=np.int64)  # (nq,)
    return keep, qids, relevant


def _pair_result(x: str, y: str, qids: list[str], ap: np.ndarray, hits: np.ndarray) -> tuple[dict, dict]:
    out = {"query_lang": x, "cand_lang": y, "n_queries": len(qids), "map": float(ap.mean())}
    out.update(topk_metrics(hits, np.ones(len(qids), dtype=np.int64)))
    return out, {"query_id": qids, "ap": ap, "rank_distance": np.full(len(qids), np.nan)}


def _pair_metrics(view: _View, qe: np.ndarray, ce: np.ndarray, x: str, y: str, top_k: int) -> tuple[dict, dict]:
    """Exact: every query against every candidate of Y."""
    keep, qids, relevant = _pair_queries(view, x, y)
    k = min(top_k, len(ce))
    aps, positions = [], []
    for block in _query_blocks(len(qids)):
        ap, position = one_relevant_ranks(qe[keep[block]] @ ce.T, relevant[block])  # scores (b, nc) -> (b,), (b,)
        aps.append(ap)
        positions.append(position)
    ap, position = np.concatenate(aps), np.concatenate(positions)  # (nq,), (nq,) 0-based, ties: lower index first
    hits = position[:, None] == np.arange(k)  # (nq, k) the relevant candidate's place in the top k
    return _pair_result(x, y, qids, ap, hits)


def _pair_metrics_topk(view: _View, shards: NamedShards, qe: np.ndarray, offsets: dict, x: str, y: str,
                       top_k: int) -> tuple[dict, dict]:
    """From Y's shard's top k: AP is 1 / rank when the relevant candidate is in it, else 0."""
    keep, qids, relevant = _pair_queries(view, x, y)
    k = min(top_k, len(view.c_ids[y]))
    _, found = shards.search(qe[keep], k, [y])  # (nq, k) pooled candidate rows
    hits = found == (offsets[y] + relevant)[:, None]  # (nq, k)
    return _pair_result(x, y, qids, topk_average_precisions(hits, np.ones(len(qids), dtype=np.int64)), hits)


def _offsets(view: _View, languages) -> tuple[dict[str, int], int]:
    """Each candidate language's first row in the pooled candidates (languages in order), and their count."""
    offsets, n = {}, 0
    for y in languages:
        offsets[y] = n
        n += len(view.c_ids[y])
    return offsets, n


def _multi(view: _View, query_emb, cand_emb, languages, offsets: dict, n: int, top_k: int, shards: NamedShards,
           exact: bool) -> tuple[dict, dict]:
    """The pooled setting (`n` candidates, each language's first at `offsets`): top-k lists from
    every language's shard; mAP and rank distance from the exact scores (`exact`) or those lists."""
    pooled = np.concatenate([cand_emb[y] for y in languages], axis=0) if exact else None  # (nc_all, d)
    k = min(top_k, n)

    aps, rds, qlangs, all_qids, hits, n_relevant = [], [], [], [], [], []
    for x in languages:
        qids = view.q_ids[x]
        rel_rows = [
            [offsets[y] + view.c_pos[y][view.rel[(qid, y)]] for y in languages if (qid, y) in view.rel]
            for qid in qids
        ]
        found = shards.search(query_emb[x], k)[1]  # (nq_x, k) pooled candidate rows, -1 where the index had fewer
        aps_x, rds_x = [], []
        for block in _query_blocks(len(qids)):
            top = found[block]  # (b, k)
            if exact:
                scores = query_emb[x][block] @ pooled.T  # (b, nc_all)
                relevance = np.zeros(scores.shape, dtype=bool)
                for i, rows in enumerate(rel_rows[block]):
                    relevance[i, rows] = True
                aps_x.append(lareqa_average_precisions(scores, relevance))
                rds_x.append(rank_distance(scores, relevance))
                block_hits = np.take_along_axis(relevance, np.maximum(top, 0), axis=1) & (top >= 0)  # (b, k)
                block_relevant = relevance.sum(axis=1)  # (b,)
            else:
                relevant = np.full((len(top), len(languages)), -2, dtype=np.int64)  # (b, L) padded with -2
                for i, rows in enumerate(rel_rows[block]):
                    relevant[i, :len(rows)] = rows
                block_hits = (top[:, :, None] == relevant[:, None, :]).any(axis=2) & (top >= 0)  # (b, k)
                block_relevant = (relevant >= 0).sum(axis=1)  # (b,)
                aps_x.append(topk_average_precisions(block_hits, block_relevant))
                rds_x.append(topk_rank_distance(block_hits, block_relevant))
            hits.append(block_hits)
            n_relevant.append(block_relevant)
        aps.append(np.concatenate(aps_x) if aps_x else np.zeros(0))
        rds.append(np.concatenate(rds_x) if rds_x else np.zeros(0, dtype=np.int64))
        qlangs += [x] * len(qids)
        all_qids += qids
    ap = np.concatenate(aps)
    per_lang_map = {x: float(a.mean()) for x, a in zip(languages, aps)}
    rd_by_lang, rd_macro = language_bias(np.concatenate(rds), qlangs)
    out = {"n_queries": int(ap.size), "map": float(ap.mean()), "map_macro": macro_mean(per_lang_map),
           "map_by_lang": per_lang_map}
    out.update(topk_metrics(np.concatenate(hits), np.concatenate(n_relevant)))
    out["rank_distance"] = rd_macro
    out["rank_distance_by_lang"] = rd_by_lang
    per_query = {"query_lang": qlangs, "query_id": all_qids, "ap": ap, "rank_distance": np.concatenate(rds)}
    return out, per_query


def _macro_over(pairs: list[dict]) -> dict:
    out = {m: float(np.mean([p[m] for p in pairs])) for m in PAIR_METRICS}
    out["n_pairs"] = len(pairs)
    return out


def _per_query_table(pair_rows: list[tuple[str, str, dict]], multi_rows: dict):
    """One row per (query, pair) and per multi query: what `hbt report` resamples.

    Columns: setting ("mono" | "cross" | "multi"), query_lang, cand_lang ("*" for multi),
    query_id, ap (LAReQA AP), rank_distance (multi only, NaN elsewhere)."""
    import pyarrow as pa

    cols = {"setting": [], "query_lang": [], "cand_lang": [], "query_id": [], "ap": [], "rank_distance": []}

    def add(setting, qlangs, clang, rows):
        n = len(rows["query_id"])
        cols["setting"] += [setting] * n
        cols["query_lang"] += list(qlangs)
        cols["cand_lang"] += [clang] * n
        cols["query_id"] += list(rows["query_id"])
        cols["ap"] += np.asarray(rows["ap"], dtype=np.float64).tolist()
        cols["rank_distance"] += np.asarray(rows["rank_distance"], dtype=np.float64).tolist()

    for x, y, rows in pair_rows:
        add("mono" if x == y else "cross", [x] * len(rows["query_id"]), y, rows)
    add("multi", multi_rows["query_lang"], "*", multi_rows)
    return pa.table(cols)


def evaluate(query_emb, cand_emb, corpus, languages, top_k: int, index_factory: str = "Flat",
             shards_on_ray: bool = False, exact_max: int = LAREQA_EXACT_MAX) -> dict:
    """Metrics of every (X, Y) pair plus the mono / cross / multi settings (see module doc).

    The faiss shards, one per candidate language, live in Ray actors when `shards_on_ray`, in
    process otherwise. Up to `exact_max` pooled candidates every query is scored against every
    candidate (LAReQA's exact mAP and rank distance); above it, from the shards' top `top_k`
    (`"scoring"` in the result says which).

    The returned dict also holds ``"per_query"``: a pyarrow table of every query's AP per
    pair and in the multi setting (see `_per_query_table`), which `run_eval` writes as
    ``per_query.parquet`` rather than into results.json."""
    languages = list(languages)
    missing = [l for l in languages if l not in query_emb or l not in cand_emb]
    if missing:
        raise HbtError(f"no embeddings for language(s) {missing}")
    from hbt.index.shards import NamedShards  # faiss and Ray: imported when evaluating

    view = _View(corpus)
    offsets, n = _offsets(view, languages)
    exact = n <= exact_max
    shards = NamedShards({y: (cand_emb[y], offsets[y] + np.arange(len(cand_emb[y]))) for y in languages},
                         index_factory, shards_on_ray)
    try:
        pairs, pair_rows = [], []
        for x, y in all_pairs(languages):
            if exact:
                metrics, rows = _pair_metrics(view, query_emb[x], cand_emb[y], x, y, top_k)
            else:
                metrics, rows = _pair_metrics_topk(view, shards, query_emb[x], offsets, x, y, top_k)
            pairs.append(metrics)
            pair_rows.append((x, y, rows))
        multi, multi_rows = _multi(view, query_emb, cand_emb, languages, offsets, n, top_k, shards, exact)
    finally:
        shards.close()
    mono = [p for p in pairs if p["query_lang"] == p["cand_lang"]]
    cross = [p for p in pairs if p["query_lang"] != p["cand_lang"]]
    settings = {"mono": _macro_over(mono)}
    if cross:
        settings["cross"] = _macro_over(cross)
    settings["multi"] = multi
    scoring = {"mode": "exact" if exact else "top-k", "candidates": n, "exact_max": exact_max}
    if not exact:
        scoring.update(k=top_k, note=f"{n} candidates > eval.lareqa_exact_max {exact_max}: mAP and rank distance "
                       f"from each query's top {top_k} (a relevant candidate beyond it counts as not retrieved: "
                       f"AP 0 for it, rank {top_k + 1} for rank distance)")
    return {"languages": languages, "settings": settings, "pairs": pairs, "scoring": scoring,
            "per_query": _per_query_table(pair_rows, multi_rows)}


# ---------------------------------------------------------------- outputs

def map_matrix(result: dict) -> np.ndarray:
    langs = result["languages"]
    pos = {l: i for i, l in enumerate(langs)}
    m = np.full((len(langs), len(langs)), np.nan)
    for p in result["pairs"]:
        m[pos[p["query_lang"]], pos[p["cand_lang"]]] = p["map"]
    return m


def write_pairs_csv(path: Path, result: dict) -> None:
    cols = ["query_lang", "cand_lang", "n_queries"] + PAIR_METRICS
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(result["pairs"])


def write_summary(path: Path, result: dict) -> None:
    langs = result["languages"]
    lines = ["# LAReQA all-pairs evaluation", "", f"- model: `{result['model']}`",
             f"- corpus: `{result['corpus']}`" + (f" ({result['corpus_note']})" if result.get("corpus_note") else ""),
             f"- languages: {', '.join(langs)}", "",
             "| setting | mAP | r@1 | r@10 | hit@1 | hit@10 | ndcg@10 | mrr |", "|---|---|---|---|---|---|---|---|"]
    for name, s in result["settings"].items():
        lines.append(f"| {name} | " + " | ".join(f"{s[m]:.4f}" for m in PAIR_METRICS) + " |")
    lines += ["", f"multi rank distance (macro): {result['settings']['multi']['rank_distance']:.2f}", "",
              "## mAP, query language (row) -> candidate language (column)", "",
              "| X \\ Y | " + " | ".join(langs) + " |", "|---" * (len(langs) + 1) + "|"]
    m = map_matrix(result)
    for i, x in enumerate(langs):
        lines.append(f"| {x} | " + " | ".join(f"{v:.4f}" for v in m[i]) + " |")
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_heatmap(path: Path, result: dict, title: str = "LAReQA mAP, X -> Y") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    langs = result["languages"]
    m = map_matrix(result)
    size = 1.0 + 0.6 * len(langs)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    try:
        im = ax.imshow(m, vmin=0.0, vmax=1.0, cmap="viridis")
        ax.set_xticks(range(len(langs)), langs)
        ax.set_yticks(range(len(langs)), langs)
        ax.set_xlabel("candidate language (Y)")
        ax.set_ylabel("query language (X)")
        ax.set_title(title)
        for i in range(len(langs)):
            for j in range(len(langs)):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if m[i, j] < 0.5 else "black")
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        fig.savefig(path, dpi=120, format="png")
    finally:
        plt.close(fig)


class LareqaEvaluator:
    """A LAReQA dir, or a prepared dir at `split` (default test), read and checked at construction;
    never articles the model was trained on (`hbt.eval.heldout`). Outputs: results.json,
    per_query.parquet, pairs.csv, summary.md, heatmap.png."""

    kind = "lareqa"
    primary_metric = "multi_map"

    def __init__(self, corpus_dir, languages, split: Optional[str], manifest: Optional[dict], config: HbtConfig):
        from hbt.eval.heldout import guard, read_eval_corpus, resolve_candidate_context

        eval_corpus = guard(read_eval_corpus(corpus_dir, languages, split), manifest, config.eval.heldout_only)
        self.corpus, self.note = eval_corpus.corpus, eval_corpus.note
        self.languages = list(languages) if languages is not None else corpus_languages(self.corpus)
        self.model_cfg = resolve_candidate_context(config.model, manifest)

    def evaluate(self, model_cfg, config: HbtConfig, on_ray: bool, out_dir: Path) -> tuple[dict, object]:
        """-> (results.json's fields, the per-query table)."""
        query_emb, cand_emb = encode_for_eval(model_cfg, self.corpus, config, on_ray)
        result = {"corpus_note": self.note}
        result.update(evaluate(query_emb, cand_emb, self.corpus, self.languages, config.eval.top_k,
                               config.eval.index_factory, on_ray, config.eval.lareqa_exact_max))
        result["eval"] = {**config.eval.model_dump(), "candidate_context": model_cfg.candidate_context}
        return result, result.pop("per_query")

    def write_outputs(self, staging: Path, result: dict) -> None:
        write_pairs_csv(staging / PAIRS_CSV, result)
        write_summary(staging / SUMMARY, result)
        write_heatmap(staging / HEATMAP, result)
