"""The reference for `hbt.eval.metrics.topk_metrics`: ranx itself on `{qid: {docid: score}}` runs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

#: Output key -> ranx metric name.
RANX_METRICS: dict[str, str] = {
    "r@1": "recall@1",
    "r@10": "recall@10",
    # hit@k: at least one relevant doc in the top k. With one relevant doc it equals r@k; in
    # the pooled multilingual setting (one relevant per language) it is the paper's R@k.
    "hit@1": "hit_rate@1",
    "hit@10": "hit_rate@10",
    "ndcg@10": "ndcg@10",
    "mrr": "mrr",
    "map": "map",
}


def standard_metrics(
    run: Mapping[Any, Mapping[Any, float]],
    qrels: Mapping[Any, Mapping[Any, int]],
) -> dict[str, float]:
    """Recall@1, recall@10, hit rate@1, hit rate@10, nDCG@10, MRR and MAP computed by ``ranx``.

    Ids are converted to ``str`` (ranx requires it). Metrics are averaged over
    the queries of ``qrels`` (micro mean); a query of ``qrels`` missing from
    ``run`` scores 0, run queries absent from ``qrels`` are ignored. A doc is
    relevant when its qrels value is >= 1. Note ``r@k`` is ranx recall
    (fraction of a query's relevant docs in the top k), so with 2 relevant
    docs ``r@1`` is at most 0.5. ``map`` is ranx's full-depth AP over the
    documents in the run (relevant docs absent from the run count as misses);
    ties in the run are ordered by ranx, unlike :func:`lareqa_average_precision`.

    Args:
        run: ``{qid: {docid: score}}``.
        qrels: ``{qid: {docid: relevance}}``, relevance an int.

    Returns:
        ``{"r@1", "r@10", "hit@1", "hit@10", "ndcg@10", "mrr", "map"}`` -> float.
    """
    import ranx

    if len(qrels) == 0:
        raise ValueError("empty qrels")
    qrels_d = {str(qid): {str(d): int(v) for d, v in docs.items()} for qid, docs in qrels.items()}
    run_d = {str(qid): {str(d): float(s) for d, s in docs.items()} for qid, docs in run.items()}
    if len(qrels_d) != len(qrels) or len(run_d) != len(run):
        raise ValueError("query ids collide after conversion to str")
    # Queries of qrels with no retrieved doc score 0 on every metric; rather than
    # ranx's Run.make_comparable (slow numba compile), evaluate the others and
    # divide the sum by the number of qrels queries.
    present = [qid for qid in qrels_d if run_d.get(qid)]
    n_total = len(qrels_d)
    if not present:
        return {key: 0.0 for key in RANX_METRICS}
    q = ranx.Qrels({qid: qrels_d[qid] for qid in present})
    r = ranx.Run({qid: run_d[qid] for qid in present})
    # Both hold exactly the ``present`` query ids and to_typed_list() sorts by
    # query id, so the lists are aligned. Passing typed lists skips ranx's
    # check_keys (a typed-dict key comparison that costs ~8 s of numba compile).
    per_query = ranx.evaluate(
        q.to_typed_list(),
        r.to_typed_list(),
        list(RANX_METRICS.values()),
        return_mean=False,
        save_results_in_run=False,
    )  # metric -> (n_present,) array
    return {
        key: float(np.sum(per_query[name]) / n_total) for key, name in RANX_METRICS.items()
    }
