"""Retrieval metrics for the LAReQA evaluation protocol.

Everything here works on plain NumPy arrays or ``{qid: {docid: value}}`` dicts;
no Ray, no faiss.

Conventions
-----------
* ``score_matrix``: float array, shape ``(nq, nc)`` -- similarity of query ``i``
  to candidate ``j``; larger means more similar.
* ``relevance``: bool array, shape ``(nq, nc)`` -- ``relevance[i, j]`` is True
  when candidate ``j`` answers query ``i``. In the pooled multilingual
  XQuAD-R setting every question has 11 relevant candidates (one per language).

Averages
--------
* **micro** mean (:func:`mean_average_precision`): every query weighs the same,
  whatever its language.
* **macro** mean (:func:`macro_mean`): first average inside each group (e.g.
  query language), then average the group means with equal weight per group.
  xtreme's LAReQA script reports, per question language, the mean AP over that
  language's questions and then averages over languages -- a macro mean. On
  XQuAD-R every language has the same questions, so micro == macro there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "lareqa_average_precision",
    "lareqa_average_precisions",
    "one_relevant_ranks",
    "mean_average_precision",
    "macro_mean",
    "topk_metrics",
    "ranks_by_score",
    "rank_distance",
    "language_bias",
]

def _check_2d(score_matrix: np.ndarray, relevance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    score_matrix = np.asarray(score_matrix, dtype=np.float64)  # (nq, nc)
    relevance = np.asarray(relevance)  # (nq, nc)
    if score_matrix.ndim != 2 or relevance.shape != score_matrix.shape:
        raise ValueError(
            f"score_matrix and relevance must be 2-D of the same shape, got "
            f"{score_matrix.shape} and {relevance.shape}"
        )
    if relevance.dtype != np.bool_:
        raise TypeError(f"relevance must be a bool array, got dtype {relevance.dtype}")
    if score_matrix.shape[0] == 0 or score_matrix.shape[1] == 0:
        raise ValueError(f"empty score matrix {score_matrix.shape}")
    if not np.all(np.isfinite(score_matrix)):
        raise ValueError("scores must be finite")
    empty = ~relevance.any(axis=1)  # (nq,)
    if empty.any():
        raise ValueError(f"queries without any relevant candidate: rows {np.flatnonzero(empty)[:10].tolist()}")
    return score_matrix, relevance


# ----------------------------------------------------------------------------
# LAReQA average precision
# ----------------------------------------------------------------------------


def lareqa_average_precision(scores: np.ndarray, relevant: np.ndarray) -> float:
    """Average precision of one query over the whole candidate pool.

    Same value as ``sklearn.metrics.average_precision_score(relevant, scores)``
    (what google-research/xtreme ``third_party/utils_lareqa.py`` computes per
    question), re-implemented in NumPy::

        AP = sum_t (R_t - R_{t-1}) * P_t

    over the distinct score thresholds ``t`` in decreasing order, where
    ``P_t``/``R_t`` are precision/recall when every candidate with score
    ``>= t`` is retrieved. Tied scores form **one** threshold, as in sklearn:
    a block of ties is retrieved all at once, so the order inside a tie never
    matters. Without ties this is the usual mean over relevant candidates of
    the precision at that candidate's rank.

    Args:
        scores: float array, shape ``(nc,)``, similarity to every candidate.
        relevant: bool array, shape ``(nc,)``, True for relevant candidates.

    Returns:
        AP in ``[0, 1]``.

    Raises:
        ValueError: no relevant candidate (sklearn would warn and return 0),
            non-finite scores, shape mismatch, or empty pool.
    """
    scores, relevant = np.asarray(scores), np.asarray(relevant)
    if scores.ndim != 1 or relevant.shape != scores.shape:
        raise ValueError(f"scores and relevant must be 1-D of the same shape, got {scores.shape} and {relevant.shape}")
    return float(lareqa_average_precisions(scores[None, :], relevant[None, :])[0])


# Scores per pass of `_average_precisions`: its ~10 (rows, nc) work arrays then take ~80 MB.
AP_PASS_ELEMENTS = 1 << 20


def lareqa_average_precisions(score_matrix: np.ndarray, relevance: np.ndarray) -> np.ndarray:
    """Per-query :func:`lareqa_average_precision`, vectorised over the rows.

    Args:
        score_matrix: float array, shape ``(nq, nc)``.
        relevance: bool array, shape ``(nq, nc)``.

    Returns:
        float array, shape ``(nq,)``.
    """
    score_matrix, relevance = _check_2d(score_matrix, relevance)
    rows = max(1, AP_PASS_ELEMENTS // score_matrix.shape[1])
    return np.concatenate([_average_precisions(score_matrix[i:i + rows], relevance[i:i + rows])
                           for i in range(0, score_matrix.shape[0], rows)])


def _average_precisions(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """(b, nc) checked scores and relevance -> (b,) APs.

    AP = sum_t (R_t - R_{t-1}) P_t = (1 / n_rel) * sum over relevant candidates i of P at the
    threshold that retrieves i, i.e. the precision at the last index of i's block of tied scores."""
    b, n = scores.shape
    order = np.argsort(-scores, axis=1, kind="stable")  # (b, n) descending
    s = np.take_along_axis(scores, order, axis=1)  # (b, n)
    y = np.take_along_axis(relevant, order, axis=1)  # (b, n) bool
    last_of_block = np.ones((b, n), dtype=bool)  # (b, n) True where the next score differs
    last_of_block[:, :-1] = s[:, 1:] != s[:, :-1]
    # Each position's block end: the nearest last-of-block index at or after it.
    block_end = np.where(last_of_block, np.arange(n), n)  # (b, n)
    block_end = np.minimum.accumulate(block_end[:, ::-1], axis=1)[:, ::-1]  # (b, n)
    tps = np.cumsum(y, axis=1)  # (b, n) relevant retrieved through each index
    precision = tps / np.arange(1, n + 1)  # (b, n)
    at_block_end = np.take_along_axis(precision, block_end, axis=1)  # (b, n)
    return np.maximum(0.0, np.where(y, at_block_end, 0.0).sum(axis=1) / tps[:, -1])  # (b,)


def one_relevant_ranks(score_matrix: np.ndarray, relevant: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Queries with exactly one relevant candidate (an X->Y pair), without sorting any row.

    Counting scores above and tied with the relevant candidate's gives, per query, what a stable
    descending sort would: its LAReQA AP, 1 / (the rank where its block of tied scores ends), and
    its position in that order (ties: lower index first), which places it in a top-k list.
    O(nc) per query instead of a sort's O(nc log nc).

    Args:
        score_matrix: float array, shape ``(nq, nc)``.
        relevant: int array, shape ``(nq,)``; each query's relevant candidate.

    Returns:
        ``(ap, position)``: float array ``(nq,)`` (equal to :func:`lareqa_average_precisions`
        on the one-hot relevance) and int array ``(nq,)``, 0-based.
    """
    score_matrix = np.asarray(score_matrix)  # (nq, nc)
    relevant = np.asarray(relevant, dtype=np.int64)  # (nq,)
    if score_matrix.ndim != 2 or relevant.shape != (score_matrix.shape[0],):
        raise ValueError(f"score_matrix must be (nq, nc) and relevant (nq,), "
                         f"got {score_matrix.shape} and {relevant.shape}")
    own = np.take_along_axis(score_matrix, relevant[:, None], axis=1)  # (nq, 1)
    above = (score_matrix > own).sum(axis=1)  # (nq,)
    tied = score_matrix == own  # (nq, nc), the relevant candidate included
    tied_before = (tied & (np.arange(score_matrix.shape[1]) < relevant[:, None])).sum(axis=1)  # (nq,)
    return 1.0 / (above + tied.sum(axis=1)), above + tied_before


def mean_average_precision(score_matrix: np.ndarray, relevance: np.ndarray) -> float:
    """**Micro** LAReQA mAP: mean of per-query AP, every query weighted equally.

    For the per-language (macro) figure, group :func:`lareqa_average_precisions`
    by query language and pass the groups to :func:`macro_mean`.

    Args:
        score_matrix: float array, shape ``(nq, nc)``.
        relevance: bool array, shape ``(nq, nc)``; every row needs >= 1 True.

    Returns:
        mAP in ``[0, 1]``.
    """
    return float(np.mean(lareqa_average_precisions(score_matrix, relevance)))


def macro_mean(values_by_group: Mapping[Any, Any]) -> float:
    """**Macro** mean: mean of each group's mean, every group weighted equally.

    Args:
        values_by_group: ``{group: values}`` where ``values`` is a scalar or a
            1-D sequence/array of per-query values (e.g. per-language AP).

    Returns:
        ``mean_g mean(values_by_group[g])``.

    Raises:
        ValueError: no group, or a group with no value.
    """
    if len(values_by_group) == 0:
        raise ValueError("macro_mean of no group")
    means = []
    for group, values in values_by_group.items():
        arr = np.asarray(values, dtype=np.float64).reshape(-1)  # (n_in_group,)
        if arr.size == 0:
            raise ValueError(f"group {group!r} has no value")
        means.append(arr.mean())
    return float(np.mean(means))


# ----------------------------------------------------------------------------
# Top-k metrics
# ----------------------------------------------------------------------------


def _check_topk(hits: np.ndarray, n_relevant: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hits = np.asarray(hits, dtype=bool)  # (nq, k)
    n_relevant = np.asarray(n_relevant, dtype=np.int64)  # (nq,)
    if hits.ndim != 2 or n_relevant.shape != (hits.shape[0],):
        raise ValueError(f"hits must be (nq, k) and n_relevant (nq,), got {hits.shape} and {n_relevant.shape}")
    if (n_relevant < 1).any() or (hits.sum(axis=1) > n_relevant).any():
        raise ValueError("every query needs >= 1 relevant candidate, and no more hits than relevant candidates")
    return hits, n_relevant


def topk_metrics(hits: np.ndarray, n_relevant: np.ndarray) -> dict[str, float]:
    """r@1, r@10, hit@1, hit@10, nDCG@10 and MRR of ranked top-k lists, each the mean over queries.

    The same values as ranx's recall@1, recall@10, hit_rate@1, hit_rate@10, ndcg@10 and mrr on
    the run of those top-k lists, when no two scores of a list tie (tests/eval/test_metrics.py
    checks it against ranx), computed on arrays:
    ranx builds typed lists query by query, which took most of an all-pairs evaluation's
    scoring time (17,000 queries over 121 language pairs). hit@k: at least one relevant
    candidate in the top k; with one relevant candidate it equals r@k, and in the pooled
    multilingual setting (one relevant per language) it is the paper's R@k.

    Args:
        hits: bool array, shape ``(nq, k)``; ``hits[i, r]`` is True when query ``i``'s
            candidate at rank ``r + 1`` is relevant.
        n_relevant: int array, shape ``(nq,)``; each query's relevant candidates (>= 1),
            retrieved in its top k or not.

    Returns:
        ``{"r@1", "r@10", "hit@1", "hit@10", "ndcg@10", "mrr"}`` -> float.
    """
    hits, n_relevant = _check_topk(hits, n_relevant)
    if hits.shape[0] == 0:
        raise ValueError(f"hits must be (nq, k) and n_relevant (nq,) with nq >= 1, got {hits.shape}")
    discount = 1.0 / np.log2(np.arange(2, 12))  # (10,) 1 / log2(rank + 1)
    top10 = hits[:, :10]  # (nq, min(k, 10))
    dcg = top10 @ discount[:top10.shape[1]]  # (nq,)
    ideal = np.cumsum(discount)[np.minimum(n_relevant, 10) - 1]  # (nq,) DCG of a perfect top 10
    first = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, np.inf)  # (nq,) rank of the first hit
    return {
        "r@1": float(np.mean(hits[:, :1].sum(axis=1) / n_relevant)),
        "r@10": float(np.mean(top10.sum(axis=1) / n_relevant)),
        "hit@1": float(np.mean(hits[:, 0])),
        "hit@10": float(np.mean(top10.any(axis=1))),
        "ndcg@10": float(np.mean(dcg / ideal)),
        "mrr": float(np.mean(1.0 / first)),
    }


def topk_average_precisions(hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    """LAReQA AP from top-k lists alone: the mean over a query's relevant candidates of the
    precision at each one's rank, a relevant candidate outside the top k counting 0.

    Equal to :func:`lareqa_average_precisions` when every relevant candidate is in the top k and
    no scores tie; otherwise a lower bound of it (each missing candidate's precision, at most
    R / (k + 1), taken as 0).

    Args:
        hits: bool array, shape ``(nq, k)``, as :func:`topk_metrics`.
        n_relevant: int array, shape ``(nq,)``; each query's relevant candidates (>= 1).

    Returns:
        float array, shape ``(nq,)``.
    """
    hits, n_relevant = _check_topk(hits, n_relevant)
    precision = np.cumsum(hits, axis=1) / np.arange(1, hits.shape[1] + 1)  # (nq, k) precision at each rank
    return (precision * hits).sum(axis=1) / n_relevant


def topk_rank_distance(hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    """:func:`rank_distance` from top-k lists alone: a relevant candidate outside the top k is
    placed at rank k + 1 (where the list stops), so the spread is capped at k.

    Equal to :func:`rank_distance` when every relevant candidate is in the top k and no scores
    tie; a query with none of them retrieved gets 0.

    Args:
        hits: bool array, shape ``(nq, k)``, as :func:`topk_metrics`.
        n_relevant: int array, shape ``(nq,)``; each query's relevant candidates (>= 1).

    Returns:
        int64 array, shape ``(nq,)``.
    """
    hits, n_relevant = _check_topk(hits, n_relevant)
    k = hits.shape[1]
    ranks = np.arange(1, k + 1)  # (k,)
    missing = hits.sum(axis=1) < n_relevant  # (nq,) some relevant candidate beyond the list
    hi = np.where(missing, k + 1, np.where(hits, ranks, 0).max(axis=1, initial=0))  # (nq,)
    lo = np.where(hits, ranks, k + 1).min(axis=1, initial=k + 1)  # (nq,)
    return (hi - lo).astype(np.int64)


# ----------------------------------------------------------------------------
# Rank distance / language bias
# ----------------------------------------------------------------------------


def ranks_by_score(score_matrix: np.ndarray) -> np.ndarray:
    """1-based rank of every candidate per query, by descending score.

    Ties are broken by candidate index (lower index ranks first), so the ranks
    are a deterministic permutation of ``1..nc`` per row.

    Args:
        score_matrix: float array, shape ``(nq, nc)``.

    Returns:
        int64 array, shape ``(nq, nc)``; ``ranks[i, j]`` is the rank of
        candidate ``j`` for query ``i``.
    """
    score_matrix = np.asarray(score_matrix, dtype=np.float64)  # (nq, nc)
    if score_matrix.ndim != 2:
        raise ValueError(f"score_matrix must be 2-D, got {score_matrix.shape}")
    nq, nc = score_matrix.shape
    # Stable sort of -score: equal scores keep increasing candidate index.
    order = np.argsort(-score_matrix, axis=1, kind="stable")  # (nq, nc)
    ranks = np.empty((nq, nc), dtype=np.int64)  # (nq, nc)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(1, nc + 1), (nq, nc)), axis=1)
    return ranks


def rank_distance(score_matrix: np.ndarray, relevance: np.ndarray) -> np.ndarray:
    """Spread of the ranks of each query's relevant candidates.

    For query ``i``: ``max(rank of relevant) - min(rank of relevant)``, ranks
    1-based by descending score, **ties broken by candidate index** (see
    :func:`ranks_by_score`). 0 with a single relevant candidate; with ``k``
    relevant candidates the minimum is ``k - 1`` (all ranked consecutively).
    Large values mean some languages' answers are ranked far below others'.

    Args:
        score_matrix: float array, shape ``(nq, nc)``.
        relevance: bool array, shape ``(nq, nc)``; every row needs >= 1 True.

    Returns:
        int64 array, shape ``(nq,)``.
    """
    score_matrix, relevance = _check_2d(score_matrix, relevance)
    ranks = ranks_by_score(score_matrix)  # (nq, nc)
    nc = ranks.shape[1]
    hi = np.where(relevance, ranks, 0).max(axis=1)  # (nq,)
    lo = np.where(relevance, ranks, nc + 1).min(axis=1)  # (nq,)
    return (hi - lo).astype(np.int64)


def language_bias(
    rank_distances: np.ndarray, query_langs: Sequence[str] | np.ndarray
) -> tuple[dict[str, float], float]:
    """Mean rank distance per query language, and their macro mean.

    Args:
        rank_distances: array, shape ``(nq,)``, from :func:`rank_distance`.
        query_langs: length-``nq`` sequence of query language codes.

    Returns:
        ``(per_lang, macro)``: ``per_lang[lang]`` is the mean rank distance of
        that language's queries (keys sorted); ``macro`` the unweighted mean of
        the ``per_lang`` values.
    """
    d = np.asarray(rank_distances, dtype=np.float64).reshape(-1)  # (nq,)
    langs = np.asarray(list(query_langs), dtype=object)  # (nq,)
    if langs.shape != d.shape:
        raise ValueError(f"{d.shape[0]} rank distances but {langs.shape[0]} query languages")
    groups = {lang: d[langs == lang] for lang in sorted(set(langs.tolist()))}
    per_lang = {lang: float(v.mean()) for lang, v in groups.items()}
    return per_lang, macro_mean(per_lang)
