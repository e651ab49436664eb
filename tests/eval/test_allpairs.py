import json
import re

import numpy as np
import pyarrow.parquet as pq
import pytest
from synthetic import DIM, LANGS

from hbt.config import EvalConfig, HbtConfig
from hbt.data.lareqa import read_lareqa
from hbt.errors import HbtError
from hbt.eval import allpairs
from hbt.eval.allpairs import all_pairs, evaluate
from hbt.eval.encode import encode_corpus
from hbt.eval.run import run_eval
from hbt.index.shards import IndexShard, search_shards


class FakeEncoder:
    """one-hot of the first IDn tag; with `use_alt`, ALTm queries become (e_m + 0.5 e_n)/norm."""

    def __init__(self, use_alt=False):
        self.use_alt = use_alt
        self.calls = []

    def encode(self, texts, kind, batch_size, on_batch=None):
        self.calls.append((list(texts), kind))
        out = np.zeros((len(texts), DIM), np.float32)
        for i, t in enumerate(texts):
            out[i, int(re.search(r"ID(\d+)", t).group(1))] = 1.0
            alt = re.search(r"ALT(\d+)", t)
            if self.use_alt and alt:
                out[i] *= 0.5
                out[i, int(alt.group(1))] = 1.0
                out[i] /= np.linalg.norm(out[i])
        return out


def _eval(corpus_dir, encoder, top_k=10):
    corpus = read_lareqa(corpus_dir, LANGS)
    q, c = encode_corpus(encoder, corpus, EvalConfig(batch_size=2), candidate_context=True)
    return corpus, q, c, evaluate(q, c, corpus, LANGS, top_k)


def test_perfect_encoder(corpus_dir):
    enc = FakeEncoder()
    corpus, q, c, res = _eval(corpus_dir, enc)
    # every language's queries and candidates encoded exactly once, candidates with context
    encoded = {kind: [t for texts, k in enc.calls if k == kind for t in texts] for kind in ("query", "passage")}
    assert len(encoded["passage"]) == len(set(encoded["passage"])) == corpus.candidates.num_rows == 3 * 6
    assert len(encoded["query"]) == len(set(encoded["query"])) == corpus.queries.num_rows
    assert all(t.count("ID") == 4 for t in encoded["passage"])
    assert {l: v.shape for l, v in c.items()} == {l: (6, DIM) for l in LANGS}
    # order restored after length bucketing: candidate row i has its own tag
    assert np.array_equal(c["en"].argmax(1), np.arange(6))
    s = res["settings"]
    for name in ("mono", "cross", "multi"):
        assert s[name]["map"] == pytest.approx(1.0)
    assert s["mono"]["r@1"] == pytest.approx(1.0) and s["cross"]["mrr"] == pytest.approx(1.0)
    assert s["multi"]["r@1"] == pytest.approx(1 / 3)  # 3 relevant per query (ranx recall)
    assert s["multi"]["hit@1"] == pytest.approx(1.0) and s["multi"]["hit@10"] == pytest.approx(1.0)
    # 3 relevant candidates tie at score 1 -> ranks 1,2,3 -> distance 2 for every query
    assert s["multi"]["rank_distance"] == pytest.approx(2.0)
    assert s["multi"]["n_queries"] == 12


def test_known_fraction_wrong(corpus_dir):
    _, _, _, res = _eval(corpus_dir, FakeEncoder(use_alt=True))
    by = {(p["query_lang"], p["cand_lang"]): p for p in res["pairs"]}
    # 2 of 4 de queries rank the distractor first, the answer second -> AP 1/2
    for y in LANGS:
        assert by[("de", y)]["map"] == pytest.approx(0.75)
        assert by[("de", y)]["r@1"] == pytest.approx(0.5)
        assert by[("de", y)]["mrr"] == pytest.approx(0.75)
    assert by[("en", "de")]["map"] == pytest.approx(1.0)
    s = res["settings"]
    assert s["mono"]["map"] == pytest.approx((1 + 0.75 + 1) / 3)
    assert s["cross"]["map"] == pytest.approx((4 + 2 * 0.75) / 6)
    # pooled: 3 tied distractors first, then the 3 tied answers (ranks 4-6); a tie block is
    # one threshold (sklearn semantics) -> AP = precision at 6 = 3/6
    wrong_ap = 0.5
    assert s["multi"]["map"] == pytest.approx((10 + 2 * wrong_ap) / 12)
    assert s["multi"]["map_by_lang"]["de"] == pytest.approx((2 + 2 * wrong_ap) / 4)
    assert s["multi"]["rank_distance"] == pytest.approx(2.0)


def test_pair_enumeration(corpus_dir):
    pairs = all_pairs(LANGS)
    assert len(pairs) == 9 and len(set(pairs)) == 9
    assert sum(x == y for x, y in pairs) == 3 and sum(x != y for x, y in pairs) == 6
    _, _, _, res = _eval(corpus_dir, FakeEncoder())
    assert {(p["query_lang"], p["cand_lang"]) for p in res["pairs"]} == set(pairs)
    assert res["settings"]["mono"]["n_pairs"] == 3 and res["settings"]["cross"]["n_pairs"] == 6


def test_shard_topk_equals_dense():
    rng = np.random.default_rng(0)
    xq = rng.normal(size=(20, 16)).astype(np.float32)
    parts = [rng.normal(size=(n, 16)).astype(np.float32) for n in (30, 25, 40)]
    offsets = np.cumsum([0] + [len(p) for p in parts])
    shards = [IndexShard.from_vectors(p, o + np.arange(len(p))) for p, o in zip(parts, offsets)]
    k = 10
    D, I = search_shards(shards, xq, k)
    dense = xq @ np.concatenate(parts).T
    top = np.argsort(-dense, axis=1, kind="stable")[:, :k]
    assert np.array_equal(I, top)
    np.testing.assert_allclose(D, np.take_along_axis(dense, top, 1), rtol=1e-5, atol=1e-5)


def test_run_eval_end_to_end_and_atomic(corpus_dir, tmp_path, monkeypatch):
    from hbt.model.tiny import tiny_bert

    model = tiny_bert(tmp_path / "tiny")
    out = tmp_path / "out"
    cfg = HbtConfig()
    cfg.eval.top_k = 10
    res = run_eval(model, corpus_dir, out, languages=["en", "de"], config=cfg)
    assert sorted(p.name for p in out.iterdir()) == [
        "heatmap.png", "pairs.csv", "per_query.parquet", "results.json", "summary.md"]
    saved = json.loads((out / "results.json").read_text())
    assert {"model", "corpus", "languages", "settings", "pairs"} <= set(saved)
    assert set(saved["settings"]) == {"mono", "cross", "multi"}
    assert "rank_distance" in saved["settings"]["multi"]
    assert len(saved["pairs"]) == 4 and saved["languages"] == ["en", "de"] == res["languages"]
    assert all(0.0 <= p["map"] <= 1.0 for p in saved["pairs"])
    assert len((out / "pairs.csv").read_text().strip().splitlines()) == 5
    assert (out / "heatmap.png").read_bytes()[:4] == b"\x89PNG"
    # per_query.parquet reproduces every pair's mAP and the multi setting's mAP and rank distance
    per_query = pq.read_table(out / "per_query.parquet").to_pandas()
    for pair in saved["pairs"]:
        rows = per_query[(per_query.query_lang == pair["query_lang"]) & (per_query.cand_lang == pair["cand_lang"])]
        assert len(rows) == pair["n_queries"]
        assert rows.ap.mean() == pytest.approx(pair["map"], abs=1e-12)
    multi = per_query[per_query.setting == "multi"]
    assert multi.ap.mean() == pytest.approx(saved["settings"]["multi"]["map"], abs=1e-12)
    by_lang = multi.groupby("query_lang").rank_distance.mean()
    assert by_lang.mean() == pytest.approx(saved["settings"]["multi"]["rank_distance"], abs=1e-9)

    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(allpairs, "write_heatmap", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        run_eval(model, corpus_dir, out, languages=["en"], config=cfg)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if "staging" in p.name] == []


@pytest.mark.parametrize("case", ["model", "language"])
def test_bad_inputs_one_line(corpus_dir, tmp_path, case):
    model = tmp_path / "no-such-model" if case == "model" else tmp_path
    langs = ["en"] if case == "model" else ["en", "xx"]
    with pytest.raises(HbtError) as info:
        run_eval(model, corpus_dir, tmp_path / "out", languages=langs)
    msg = str(info.value)
    assert "\n" not in msg and ("no-such-model" in msg if case == "model" else "'xx'" in msg)
    assert not (tmp_path / "out").exists()


def test_scoring_in_query_blocks_is_exact(corpus_dir, monkeypatch):
    """The driver scores queries in blocks (memory linear in the corpus): any block size gives
    the metrics and per-query rows of scoring every query at once."""
    rng = np.random.default_rng(0)
    corpus = read_lareqa(corpus_dir, LANGS)
    q, c = encode_corpus(FakeEncoder(use_alt=True), corpus, EvalConfig(batch_size=2), candidate_context=True)
    q = {lang: (e + 0.3 * rng.standard_normal(e.shape)).astype(np.float32) for lang, e in q.items()}
    whole = evaluate(q, c, corpus, LANGS, 10, shards_on_ray=False)
    monkeypatch.setattr(allpairs, "QUERY_BLOCK", 3)  # 4 queries a language: blocks of 3 and 1
    blocked = evaluate(q, c, corpus, LANGS, 10, shards_on_ray=False)
    assert blocked["settings"] == whole["settings"] and blocked["pairs"] == whole["pairs"]
    assert blocked["per_query"].to_pandas().equals(whole["per_query"].to_pandas())  # NaNs in place
    assert 0.0 < whole["settings"]["multi"]["map"] < 1.0  # noisy enough that ranks differ


def _noisy_embeddings(corpus_dir, seed=0):
    rng = np.random.default_rng(seed)
    corpus = read_lareqa(corpus_dir, LANGS)
    q, c = encode_corpus(FakeEncoder(use_alt=True), corpus, EvalConfig(batch_size=2), candidate_context=True)
    def noisy(embeddings):  # translations share a tag: noise on both sides, or their scores tie
        return {lang: (e + 0.4 * rng.standard_normal(e.shape)).astype(np.float32) for lang, e in embeddings.items()}

    return corpus, noisy(q), noisy(c)


def test_above_exact_max_scoring_from_the_whole_top_k_equals_exact(corpus_dir):
    """Past `exact_max` the scores come from top-k lists; lists holding every candidate (18
    pooled, 6 a language) give the exact mAP, rank distance and top-k metrics."""
    corpus, q, c = _noisy_embeddings(corpus_dir)
    exact = evaluate(q, c, corpus, LANGS, 18)
    listed = evaluate(q, c, corpus, LANGS, 18, exact_max=17)
    assert exact["scoring"] == {"mode": "exact", "candidates": 18, "exact_max": 50_000}
    assert listed["scoring"]["mode"] == "top-k" and "top 18" in listed["scoring"]["note"]
    for name in ("mono", "cross", "multi"):
        for metric, value in exact["settings"][name].items():
            assert listed["settings"][name][metric] == pytest.approx(value), (name, metric)
    for mine, theirs in zip(listed["pairs"], exact["pairs"], strict=True):
        assert mine == {m: pytest.approx(v) if isinstance(v, float) else v for m, v in theirs.items()}
    assert 0.0 < exact["settings"]["multi"]["map"] < 1.0 and exact["settings"]["multi"]["rank_distance"] > 2


def test_above_exact_max_a_relevant_candidate_beyond_k_counts_as_not_retrieved(corpus_dir):
    """Top 3 of 6 a pair and of 18 pooled: each query's AP is the exact one when its relevant
    candidates are all within the top 3, with those beyond it contributing 0 (the reference:
    the exact ranks); per-query rows stay finite for `hbt report`."""
    from hbt.eval.metrics import ranks_by_score

    corpus, q, c = _noisy_embeddings(corpus_dir, seed=1)
    k = 3
    exact = evaluate(q, c, corpus, LANGS, k)
    listed = evaluate(q, c, corpus, LANGS, k, exact_max=1)
    view = allpairs._View(corpus)
    rows_exact, rows_listed = exact["per_query"].to_pandas(), listed["per_query"].to_pandas()
    for x, y in all_pairs(LANGS):  # one relevant candidate: AP 1 / rank within k, else 0
        mine = rows_listed[(rows_listed.query_lang == x) & (rows_listed.cand_lang == y)]
        theirs = rows_exact[(rows_exact.query_lang == x) & (rows_exact.cand_lang == y)]
        expected = np.where(1 / theirs.ap.to_numpy() <= k, theirs.ap.to_numpy(), 0.0)
        assert np.allclose(mine.ap.to_numpy(), expected)
    pooled = np.concatenate([c[y] for y in LANGS])  # (18, d)
    multi = rows_listed[rows_listed.setting == "multi"]
    offsets = np.cumsum([0] + [len(c[y]) for y in LANGS])
    for x in LANGS:
        ranks = ranks_by_score(q[x] @ pooled.T)  # (4, 18) exact, 1-based
        for i, qid in enumerate(view.q_ids[x]):
            relevant = [offsets[j] + view.c_pos[y][view.rel[(qid, y)]] for j, y in enumerate(LANGS)
                        if (qid, y) in view.rel]
            within = sorted(r for r in ranks[i, relevant] if r <= k)
            expected = sum((j + 1) / r for j, r in enumerate(within)) / len(relevant)
            assert multi[(multi.query_lang == x) & (multi.query_id == qid)].ap.item() == pytest.approx(expected)
    assert np.isfinite(multi.rank_distance).all() and multi.rank_distance.max() <= k
    assert listed["settings"]["multi"]["map"] < exact["settings"]["multi"]["map"]
