"""Tatoeba bitext retrieval: accuracy both ways against a brute-force nearest-neighbour loop, on
the real LASER-layout files; `hbt eval` on a Tatoeba dir writes its outputs."""

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from hbt.cli import main
from hbt.errors import DataError
from hbt.eval import bitext


def brute_force_accuracy(a: np.ndarray, b: np.ndarray) -> float:
    right = 0
    for i in range(len(a)):
        best = max(range(len(b)), key=lambda j: (float(a[i] @ b[j]), -j))
        right += best == i
    return right / len(a)


def test_accuracy_both_ways_matches_brute_force(data_dir, monkeypatch):
    monkeypatch.setattr(bitext, "QUERY_BLOCK", 64)  # several blocks
    corpus = bitext.BitextCorpus(data_dir / "tatoeba-laser", ["de", "el"])
    assert corpus.languages == ["de", "el"]
    rng = np.random.default_rng(0)
    query_emb, cand_emb = {}, {}
    for lang in corpus.languages:
        n = len(corpus.pair_ids[lang])
        english = rng.normal(size=(n, 8)).astype(np.float32)
        query_emb[lang] = (english + rng.normal(size=(n, 8)) * 0.9).astype(np.float32)  # some nearest are wrong
        cand_emb[lang] = english
    metrics, per_language, per_query = bitext.score(corpus, query_emb, cand_emb)
    for lang in corpus.languages:
        n = 200  # the brute-force loop is slow: check the first 200 pairs of each side
        subset = SimpleNamespace(languages=[lang], pair_ids={lang: corpus.pair_ids[lang][:n]})
        _, small, _ = bitext.score(subset, {lang: query_emb[lang][:n]}, {lang: cand_emb[lang][:n]})
        assert small[lang][f"{lang}->en"] == brute_force_accuracy(query_emb[lang][:n], cand_emb[lang][:n])
        assert small[lang][f"en->{lang}"] == brute_force_accuracy(cand_emb[lang][:n], query_emb[lang][:n])
        assert 0.05 < per_language[lang][f"{lang}->en"] < 0.95
    assert metrics["accuracy"] == pytest.approx(np.mean([v for d in per_language.values() for v in d.values()]))
    assert per_query.num_rows == 2 * sum(len(ids) for ids in corpus.pair_ids.values())


def test_a_misaligned_bitext_is_one_line(data_dir, tmp_path):
    root = tmp_path / "tatoeba"
    root.mkdir()
    shutil.copy(data_dir / "tatoeba-laser" / "tatoeba.deu-eng.deu", root)
    (root / "tatoeba.deu-eng.eng").write_text("only one line\n")
    with pytest.raises(DataError, match="lines but tatoeba.deu-eng.eng has 1"):
        bitext.BitextCorpus(root)


def test_hbt_eval_on_a_tatoeba_dir(tiny_model, data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["eval", "--model", str(tiny_model), "--corpus", str(data_dir / "tatoeba-laser"),
                 "--languages", "de,el", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["kind"] == "tatoeba" and set(results["languages"]) == {"de", "el"}
    assert set(results["languages"]["de"]) == {"de->en", "en->de"} and "accuracy" in capsys.readouterr().out
    assert main(["eval", "--model", str(tiny_model), "--corpus", str(data_dir / "tatoeba-laser"),
                 "--split", "test", "--out", str(out)]) == 2
    assert "--split needs a prepared dir or a BEIR dir" in capsys.readouterr().err
