"""Evaluation never scores a model on articles its training manifest says it was trained on."""

import json
import shutil
from pathlib import Path

import pytest

from hbt.config import load_config
from hbt.data.prepare import load_manifest, prepare
from hbt.errors import DataError
from hbt.eval.heldout import TRAINING_MANIFEST, guard, read_eval_corpus, training_manifest

LANGS = ["en", "de"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, data_dir) -> Path:
    cfg = load_config(None, [f"data.data_dir={data_dir}", "data.languages=[en,de]", "data.eval_languages=[en,de]"])
    return Path(prepare(cfg.data, tmp_path_factory.mktemp("heldout") / "prep"))


@pytest.fixture()
def trained_model(tmp_path, prepared) -> Path:
    """A model dir whose training manifest is the prepared run's."""
    model = tmp_path / "model"
    model.mkdir()
    shutil.copy(prepared / "manifest.json", model / TRAINING_MANIFEST)
    return model


def articles(eval_corpus) -> set[int]:
    return set(eval_corpus.corpus.queries.column("article").to_pylist())


def test_raw_corpus_with_trained_articles_is_refused(trained_model, data_dir):
    raw = read_eval_corpus(data_dir / "xquad-r", LANGS)
    with pytest.raises(DataError, match="trained on.*--heldout-only"):
        guard(raw, training_manifest(trained_model), heldout_only=False)


def test_heldout_only_keeps_exactly_the_split_eval_articles(trained_model, prepared, data_dir):
    split = load_manifest(prepared)["split"]
    kept = guard(read_eval_corpus(data_dir / "xquad-r", LANGS), training_manifest(trained_model), heldout_only=True)
    assert articles(kept) == set(split["eval_articles"])
    assert set(kept.corpus.candidates.column("article").to_pylist()) == set(split["eval_articles"])
    assert set(kept.corpus.qrels.column("query_id").to_pylist()) == set(kept.corpus.queries.column("id").to_pylist())
    assert "held-out articles only" in kept.note
    # the same rows as the prepared eval corpus
    prepared_corpus = read_eval_corpus(prepared, LANGS).corpus
    assert sorted(kept.corpus.queries.column("id").to_pylist()) == sorted(prepared_corpus.queries.column("id").to_pylist())


def test_prepared_corpus_of_the_same_split_passes(trained_model, prepared):
    corpus = guard(read_eval_corpus(prepared), training_manifest(trained_model), heldout_only=False)
    counts = load_manifest(prepared)["counts"]["eval_queries"]
    assert corpus.corpus.queries.num_rows == sum(counts.values())


def test_prepared_corpus_of_another_split_is_refused(trained_model, prepared):
    manifest = json.loads((trained_model / TRAINING_MANIFEST).read_text())
    split = manifest["split"]
    # the model trained on the prepared run's eval articles: that corpus now overlaps
    split["train_articles"], split["eval_articles"] = split["eval_articles"], split["train_articles"]
    (trained_model / TRAINING_MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="trained on"):
        guard(read_eval_corpus(prepared), training_manifest(trained_model), heldout_only=False)


def test_unknown_corpus_is_not_restricted(trained_model, data_dir, tmp_path):
    own = tmp_path / "own"
    own.mkdir()
    text = (data_dir / "xquad-r" / "en.json").read_text(encoding="utf-8")
    (own / "en.json").write_text(text + "\n", encoding="utf-8")  # other bytes: a corpus the model never saw
    corpus = read_eval_corpus(own)
    assert guard(corpus, training_manifest(trained_model), heldout_only=False) is corpus


def test_base_model_has_no_manifest(tmp_path, data_dir):
    corpus = read_eval_corpus(data_dir / "xquad-r", ["en"])
    assert training_manifest(tmp_path) is None
    assert guard(corpus, None, heldout_only=False) is corpus
    with pytest.raises(DataError, match="no hbt_training.json"):
        guard(corpus, None, heldout_only=True)


def test_prepared_dir_language_subset_and_missing_language(prepared):
    assert set(read_eval_corpus(prepared, ["de"]).corpus.queries.column("lang").to_pylist()) == {"de"}
    with pytest.raises(DataError, match="no language"):
        read_eval_corpus(prepared, ["zh"])


def test_run_eval_refuses_held_in_articles(trained_model, data_dir, tmp_path):
    from hbt.eval.allpairs import run_eval

    with pytest.raises(DataError, match="trained on"):
        run_eval(trained_model, data_dir / "xquad-r", tmp_path / "out", languages=["en"])
    assert not (tmp_path / "out").exists()
