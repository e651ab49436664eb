"""Tests for hbt.eval.metrics (LAReQA AP, top-k metrics against ranx, rank distance)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ranx_reference import standard_metrics
from sklearn.metrics import average_precision_score  # the reference LAReQA's own script uses

from hbt.eval.metrics import (
    language_bias,
    lareqa_average_precision,
    lareqa_average_precisions,
    macro_mean,
    mean_average_precision,
    one_relevant_ranks,
    rank_distance,
    ranks_by_score,
    topk_average_precisions,
    topk_metrics,
    topk_rank_distance,
)

# ---------------------------------------------------------------- references


def brute_force_ap(scores, relevant) -> float:
    """Mean over relevant candidates of precision at their rank (tie-free inputs only)."""
    order = sorted(range(len(scores)), key=lambda j: -scores[j])
    hits, total = 0, 0.0
    for k, j in enumerate(order, start=1):
        if relevant[j]:
            hits += 1
            total += hits / k
    return total / hits


def brute_force_rank_distance(scores, relevant) -> int:
    order = sorted(range(len(scores)), key=lambda j: (-scores[j], j))
    rank = {j: k for k, j in enumerate(order, start=1)}
    rel_ranks = [rank[j] for j in range(len(scores)) if relevant[j]]
    return max(rel_ranks) - min(rel_ranks)


@st.composite
def pools(draw, ties: bool, max_n: int = 30):
    n = draw(st.integers(1, max_n))
    if ties:
        scores = draw(st.lists(st.integers(-3, 3), min_size=n, max_size=n))
        scores = [s / 2 for s in scores]
    else:
        scores = draw(st.permutations(list(range(n))))
        scores = [0.37 * s - 2.0 for s in scores]
    relevant = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    pos = draw(st.integers(0, n - 1))
    relevant[pos] = True  # at least one relevant
    return np.array(scores, dtype=np.float64), np.array(relevant, dtype=bool)


# ---------------------------------------------------------------- LAReQA AP


def test_ap_single_relevant_at_rank_1():
    assert lareqa_average_precision(np.array([0.9, 0.5, 0.1]), np.array([True, False, False])) == 1.0


def test_ap_relevant_at_ranks_2_and_4():
    scores = np.array([0.1, 0.9, 0.4, 0.7, 0.8])  # ranking by index: 1, 4, 3, 2, 0
    relevant = np.zeros(5, dtype=bool)
    relevant[[4, 2]] = True  # idx 4 (0.8) rank 2, idx 2 (0.4) rank 4
    assert lareqa_average_precision(scores, relevant) == pytest.approx((1 / 2 + 2 / 4) / 2, abs=1e-15)


def test_ap_all_relevant_and_last():
    assert lareqa_average_precision(np.array([3.0, 2.0, 1.0]), np.ones(3, bool)) == 1.0
    assert lareqa_average_precision(np.array([3.0, 2.0, 1.0]), np.array([False, False, True])) == pytest.approx(1 / 3)


def test_ap_ties_are_one_threshold():
    # Relevant tied with one irrelevant at the top: retrieved together -> precision 1/2.
    assert lareqa_average_precision(np.array([1.0, 1.0, 0.0]), np.array([False, True, False])) == 0.5
    assert lareqa_average_precision(np.array([1.0, 1.0, 0.0]), np.array([True, False, False])) == 0.5
    # All tied: AP = fraction relevant.
    assert lareqa_average_precision(np.zeros(4), np.array([True, False, True, False])) == 0.5


def test_ap_rejects_bad_input():
    with pytest.raises(ValueError):
        lareqa_average_precision(np.array([1.0, 2.0]), np.array([False, False]))
    with pytest.raises(ValueError):
        lareqa_average_precision(np.array([1.0, np.nan]), np.array([True, False]))
    with pytest.raises(ValueError):
        lareqa_average_precision(np.array([1.0, 2.0]), np.array([True]))
    with pytest.raises(TypeError):
        lareqa_average_precision(np.array([1.0, 2.0]), np.array([1, 0]))


@settings(max_examples=100, deadline=None)
@given(pools(ties=False))
def test_ap_matches_brute_force_tie_free(pool):
    scores, relevant = pool
    assert abs(lareqa_average_precision(scores, relevant) - brute_force_ap(scores, relevant)) <= 1e-12


@settings(max_examples=100, deadline=None)
@given(st.one_of(pools(ties=True), pools(ties=False)))
def test_ap_matches_sklearn_incl_ties(pool):
    scores, relevant = pool
    expected = average_precision_score(relevant, scores)
    assert abs(lareqa_average_precision(scores, relevant) - expected) <= 1e-12


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=25).flatmap(
        lambda s: st.tuples(
            st.just(s),
            st.lists(st.booleans(), min_size=len(s), max_size=len(s)),
            st.integers(0, len(s) - 1),
        )
    )
)
def test_ap_matches_sklearn_arbitrary_floats(args):
    scores, rel, pos = args
    rel[pos] = True
    scores, rel = np.array(scores), np.array(rel)
    assert abs(lareqa_average_precision(scores, rel) - average_precision_score(rel, scores)) <= 1e-12


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(1, 20), st.integers(0, 2**32 - 1), st.booleans())
def test_ap_rows_match_sklearn_row_by_row_across_passes(nq, nc, seed, ties):
    """The vectorised AP of a score matrix, cut into passes of a few rows, is sklearn's AP of
    every row: ties (scores drawn from a few values) and several relevant candidates included."""
    import hbt.eval.metrics as metrics

    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 3, (nq, nc)).astype(float) if ties else rng.standard_normal((nq, nc))
    relevance = rng.random((nq, nc)) < 0.3
    relevance[np.arange(nq), rng.integers(0, nc, nq)] = True
    expected = [average_precision_score(r, s) for s, r in zip(scores, relevance)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(metrics, "AP_PASS_ELEMENTS", 2 * nc)  # two rows a pass
        np.testing.assert_allclose(lareqa_average_precisions(scores, relevance), expected, rtol=0, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(1, 20), st.integers(0, 2**32 - 1), st.booleans())
def test_one_relevant_ranks_equal_sklearn_ap_and_the_stable_sort(nq, nc, seed, ties):
    """Counting instead of sorting: sklearn's AP of each row, and the relevant candidate's place
    in a stable descending sort (ties: lower index first), ties included."""
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 3, (nq, nc)).astype(float) if ties else rng.standard_normal((nq, nc))
    relevant = rng.integers(0, nc, nq)
    ap, position = one_relevant_ranks(scores, relevant)
    one_hot = np.zeros((nq, nc), dtype=bool)
    one_hot[np.arange(nq), relevant] = True
    expected = [average_precision_score(r, s) for s, r in zip(scores, one_hot)]
    np.testing.assert_allclose(ap, expected, rtol=0, atol=1e-12)
    order = np.argsort(-scores, axis=1, kind="stable")  # (nq, nc)
    assert position.tolist() == [row.tolist().index(j) for row, j in zip(order, relevant)]


def test_map_micro_and_macro():
    S = np.array([[0.9, 0.1, 0.5], [0.1, 0.9, 0.5], [0.2, 0.3, 0.4]])  # (3, 3)
    R = np.array([[True, False, False], [True, False, False], [True, False, False]])
    aps = lareqa_average_precisions(S, R)  # (3,) -> [1, 1/3, 1/3]
    np.testing.assert_allclose(aps, [1.0, 1 / 3, 1 / 3], atol=1e-15)
    assert mean_average_precision(S, R) == pytest.approx(5 / 9)
    # Macro over query languages: en = [1], de = [1/3, 1/3] -> (1 + 1/3) / 2.
    assert macro_mean({"en": aps[:1], "de": aps[1:]}) == pytest.approx(2 / 3)
    assert macro_mean({"a": 0.5, "b": [1.0, 0.0, 0.0]}) == pytest.approx((0.5 + 1 / 3) / 2)
    with pytest.raises(ValueError):
        macro_mean({})
    with pytest.raises(ValueError):
        macro_mean({"a": []})
    with pytest.raises(ValueError):
        mean_average_precision(S, np.zeros((3, 3), bool))


# ---------------------------------------------------------------- rank distance


def test_rank_distance_hand_examples():
    S = np.array(
        [
            [0.9, 0.8, 0.7, 0.6],  # relevant 0, 3 -> ranks 1, 4 -> 3
            [0.1, 0.9, 0.2, 0.8],  # relevant 1, 3 -> ranks 1, 2 -> 1
            [0.5, 0.5, 0.5, 0.5],  # all tied -> ranks = index + 1; relevant 0, 2 -> 2
            [0.3, 0.2, 0.9, 0.1],  # single relevant -> 0
        ]
    )
    R = np.array(
        [
            [True, False, False, True],
            [False, True, False, True],
            [True, False, True, False],
            [False, True, False, False],
        ]
    )
    np.testing.assert_array_equal(rank_distance(S, R), [3, 1, 2, 0])
    np.testing.assert_array_equal(ranks_by_score(S[2:3]), [[1, 2, 3, 4]])
    np.testing.assert_array_equal(ranks_by_score(S[1:2]), [[4, 1, 3, 2]])


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 6).flatmap(lambda nq: st.lists(pools(ties=True, max_n=12), min_size=nq, max_size=nq)))
def test_rank_distance_matches_brute_force(rows):
    n = min(len(s) for s, _ in rows)
    S = np.stack([s[:n] for s, _ in rows])  # (nq, n)
    R = np.stack([r[:n] for _, r in rows])  # (nq, n)
    R[:, 0] |= ~R.any(axis=1)
    expected = [brute_force_rank_distance(list(s), list(r)) for s, r in zip(S, R)]
    np.testing.assert_array_equal(rank_distance(S, R), expected)
    # Same via argsort reference.
    order = np.argsort(-S, axis=1, kind="stable")
    ranks = np.argsort(order, axis=1) + 1
    ref = [ranks[i][R[i]].max() - ranks[i][R[i]].min() for i in range(len(S))]
    np.testing.assert_array_equal(rank_distance(S, R), ref)


def test_language_bias():
    per_lang, macro = language_bias(np.array([0, 2, 4, 1]), ["en", "de", "de", "en"])
    assert per_lang == {"de": 3.0, "en": 0.5}
    assert macro == pytest.approx(1.75)
    with pytest.raises(ValueError):
        language_bias(np.array([0, 1]), ["en"])


# ---------------------------------------------------------------- ranx metrics


def test_topk_metrics_hand_made_lists():
    """Two ranked lists worked out by hand: q1 finds its one relevant candidate at rank 2; q2 has
    three relevant candidates, finds two (ranks 1 and 3) and misses the third."""
    hits = np.array([[False, True, False], [True, False, True]])  # (2, 3)
    m = topk_metrics(hits, np.array([1, 3]))
    assert set(m) == {"r@1", "r@10", "hit@1", "hit@10", "ndcg@10", "mrr"}
    assert m["r@1"] == pytest.approx((0 + 1 / 3) / 2)
    assert m["hit@1"] == pytest.approx((0 + 1) / 2)  # q2's first hit is relevant, q1's is not
    assert m["hit@10"] == pytest.approx(1.0)
    assert m["r@10"] == pytest.approx((1 + 2 / 3) / 2)
    assert m["mrr"] == pytest.approx((1 / 2 + 1) / 2)
    ndcg_q1 = 1 / math.log2(3)
    ndcg_q2 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3) + 1 / math.log2(4))
    assert m["ndcg@10"] == pytest.approx((ndcg_q1 + ndcg_q2) / 2)


def test_topk_metrics_a_query_with_nothing_found_scores_zero():
    m = topk_metrics(np.array([[True, False], [False, False]]), np.array([1, 1]))
    assert m["r@1"] == m["hit@10"] == m["mrr"] == pytest.approx(0.5)


def test_topk_hit_at_k_matches_a_numpy_reference():
    """hit@k: the share of queries with at least one relevant candidate among their top k."""
    rng = np.random.default_rng(1)
    R = rng.random((20, 30)) < 0.1  # (20, 30) relevance in rank order
    R[:, 5] |= ~R.any(axis=1)
    m = topk_metrics(R, R.sum(axis=1))
    for k in (1, 10):
        assert m[f"hit@{k}"] == pytest.approx(R[:, :k].any(axis=1).mean(), abs=1e-12)


def test_ranx_map_equals_lareqa_map_without_ties():
    rng = np.random.default_rng(0)
    for _ in range(5):
        S = rng.standard_normal((4, 9))  # (4, 9), tie-free almost surely
        R = rng.random((4, 9)) < 0.3
        R[:, 0] |= ~R.any(axis=1)
        run = {f"q{i}": {f"c{j}": float(S[i, j]) for j in range(9)} for i in range(4)}
        qrels = {f"q{i}": {f"c{j}": 1 for j in np.flatnonzero(R[i])} for i in range(4)}
        assert standard_metrics(run, qrels)["map"] == pytest.approx(mean_average_precision(S, R), abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 15), st.integers(1, 25), st.sampled_from([1, 5, 10, 30]), st.integers(1, 4),
       st.integers(0, 2**32 - 1))
def test_topk_metrics_equal_ranx_on_the_same_top_k_lists(nq, nc, k, max_relevant, seed):
    """`topk_metrics` on which of each top-k list are relevant == ranx (`standard_metrics`) on the
    run of those lists: one or several relevant candidates, some never retrieved, k below or
    above 10 and the pool."""
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal((nq, nc))  # tie-free almost surely
    relevance = np.zeros((nq, nc), dtype=bool)
    for row in relevance:
        row[rng.choice(nc, size=rng.integers(1, min(max_relevant, nc) + 1), replace=False)] = True
    top = np.argsort(-scores, axis=1)[:, :k]  # (nq, min(k, nc))
    run = {f"q{i}": {f"c{j}": float(scores[i, j]) for j in top[i]} for i in range(nq)}
    qrels = {f"q{i}": {f"c{j}": 1 for j in np.flatnonzero(relevance[i])} for i in range(nq)}
    expected = {key: value for key, value in standard_metrics(run, qrels).items() if key != "map"}
    got = topk_metrics(np.take_along_axis(relevance, top, axis=1), relevance.sum(axis=1))
    assert got == pytest.approx(expected, abs=1e-12)


def test_topk_metrics_refuse_queries_without_relevant_candidates():
    with pytest.raises(ValueError, match="relevant"):
        topk_metrics(np.zeros((2, 3), dtype=bool), np.array([1, 0]))


# ---------------------------------------------------------------- fake encoder


def _fake_encoder_case():
    """3 questions x 2 languages; every candidate embedding equals its question's.

    Queries: question i in en and de, both embedded as e_i.   Q: (6, 3)
    Candidates: answer i in en and de, both embedded as e_i.  C: (6, 3)
    Scores Q @ C.T: 1 for the 2 relevant candidates (tied), 0 otherwise.
    """
    eye = np.eye(3)
    Q = np.repeat(eye, 2, axis=0)  # (6, 3), rows: q0-en, q0-de, q1-en, ...
    C = np.repeat(eye, 2, axis=0)  # (6, 3), rows: a0-en, a0-de, a1-en, ...
    S = Q @ C.T  # (6, 6)
    qid = np.repeat(np.arange(3), 2)  # (6,)
    R = qid[:, None] == qid[None, :]  # (6, 6), 2 relevant per query
    langs = ["en", "de"] * 3
    return S, R, langs


def test_fake_encoder_exact_values():
    S, R, langs = _fake_encoder_case()
    assert R.sum(axis=1).tolist() == [2] * 6
    assert mean_average_precision(S, R) == 1.0
    np.testing.assert_array_equal(lareqa_average_precisions(S, R), np.ones(6))
    # Both relevant tied at score 1 -> ranks 1 and 2 -> distance 1.
    np.testing.assert_array_equal(rank_distance(S, R), np.ones(6, dtype=np.int64))
    per_lang, macro = language_bias(rank_distance(S, R), langs)
    assert per_lang == {"de": 1.0, "en": 1.0} and macro == 1.0

    run = {f"q{i}": {f"c{j}": float(S[i, j]) for j in range(S.shape[1])} for i in range(S.shape[0])}
    qrels = {f"q{i}": {f"c{j}": 1 for j in np.flatnonzero(R[i])} for i in range(S.shape[0])}
    m = standard_metrics(run, qrels)
    # ranx recall@1 with 2 relevant per query is 1/2 even for a perfect ranking; hit@1 is 1.
    assert m == pytest.approx({"r@1": 0.5, "r@10": 1.0, "hit@1": 1.0, "hit@10": 1.0, "ndcg@10": 1.0, "mrr": 1.0,
                               "map": 1.0})

    # With one relevant candidate per query (drop the de answers), r@1 is 1.0.
    keep = np.arange(0, 6, 2)
    S1, R1 = S[:, keep], R[:, keep]  # (6, 3)
    assert mean_average_precision(S1, R1) == 1.0
    np.testing.assert_array_equal(rank_distance(S1, R1), np.zeros(6, dtype=np.int64))
    run1 = {f"q{i}": {f"c{j}": float(S1[i, j]) for j in range(3)} for i in range(6)}
    qrels1 = {f"q{i}": {f"c{j}": 1 for j in np.flatnonzero(R1[i])} for i in range(6)}
    assert standard_metrics(run1, qrels1) == pytest.approx(
        {"r@1": 1.0, "r@10": 1.0, "hit@1": 1.0, "hit@10": 1.0, "ndcg@10": 1.0, "mrr": 1.0, "map": 1.0}
    )


# ---------------------------------------------------------------- LAReQA from top-k lists


def _top_k_lists(scores: np.ndarray, relevance: np.ndarray, k: int) -> np.ndarray:
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # (nq, k) best first
    return np.take_along_axis(relevance, order, axis=1)  # (nq, k) hits


@settings(max_examples=60, deadline=None)
@given(nq=st.integers(1, 6), nc=st.integers(1, 30), k=st.integers(1, 30), max_relevant=st.integers(1, 5),
       seed=st.integers(0, 2**16))
def test_topk_ap_and_rank_distance_against_the_exact_ones(nq, nc, k, max_relevant, seed):
    """With every relevant candidate in the top k they equal the exact AP and rank distance; with
    some beyond it, the brute-force reference: precision at the ranks within k over all relevant
    candidates (AP), the spread with the missing ones at rank k + 1 (rank distance)."""
    rng = np.random.default_rng(seed)
    scores = rng.permutation(nq * nc).reshape(nq, nc).astype(np.float64)  # (nq, nc) no ties
    relevance = np.zeros((nq, nc), dtype=bool)
    for row in relevance:
        row[rng.choice(nc, size=rng.integers(1, min(max_relevant, nc) + 1), replace=False)] = True
    k = min(k, nc)
    hits, n_relevant = _top_k_lists(scores, relevance, k), relevance.sum(axis=1)
    ranks = ranks_by_score(scores)  # (nq, nc) 1-based
    for i in range(nq):
        within = [r for r in sorted(ranks[i][relevance[i]]) if r <= k]
        expected_ap = sum((j + 1) / r for j, r in enumerate(within)) / n_relevant[i]
        capped = [min(r, k + 1) for r in ranks[i][relevance[i]]]
        assert topk_average_precisions(hits, n_relevant)[i] == pytest.approx(expected_ap)
        assert topk_rank_distance(hits, n_relevant)[i] == max(capped) - min(capped)
    complete = hits.sum(axis=1) == n_relevant  # (nq,) every relevant candidate in the list
    assert np.allclose(topk_average_precisions(hits, n_relevant)[complete],
                       lareqa_average_precisions(scores, relevance)[complete])
    assert np.array_equal(topk_rank_distance(hits, n_relevant)[complete], rank_distance(scores, relevance)[complete])


def test_topk_ap_and_rank_distance_refuse_bad_lists():
    with pytest.raises(ValueError, match="no more hits"):
        topk_average_precisions(np.ones((1, 3), dtype=bool), np.array([2]))
    with pytest.raises(ValueError, match="must be"):
        topk_rank_distance(np.ones(3, dtype=bool), np.array([1]))
