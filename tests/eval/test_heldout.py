"""Evaluation never scores a model on questions of its training pool, reads a prepared dir at
one split, and writes passages as the model trained on them."""

import json
import shutil
from pathlib import Path

import pytest

from hbt.config import ModelConfig, load_config
from hbt.data.prepare import load_manifest, prepare
from hbt.errors import DataError
from hbt.eval.heldout import (
    TRAINING_MANIFEST,
    guard,
    read_eval_corpus,
    resolve_candidate_context,
    training_manifest,
)

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


def test_heldout_only_keeps_exactly_the_test_articles(trained_model, prepared, data_dir):
    """Trained-on articles go, and so do the dev articles a dev-selected checkpoint was chosen on."""
    split = load_manifest(prepared)["split"]
    kept = guard(read_eval_corpus(data_dir / "xquad-r", LANGS), training_manifest(trained_model), heldout_only=True)
    assert articles(kept) == set(split["test_articles"])
    assert set(kept.corpus.candidates.column("article").to_pylist()) == articles(kept)
    assert set(kept.corpus.qrels.column("query_id").to_pylist()) == set(kept.corpus.queries.column("id").to_pylist())
    assert (f"held-out test articles only ({len(split['test_articles'])} of 48: {len(split['train_articles'])} "
            f"trained on and {len(split['dev_articles'])} dev dropped)") in kept.note


def test_guard_is_keyed_on_the_questions_not_the_file_bytes(trained_model, data_dir, tmp_path):
    """A re-saved copy of XQuAD-R (other bytes, same questions) is still guarded."""
    resaved = tmp_path / "resaved"
    resaved.mkdir()
    doc = json.loads((data_dir / "xquad-r" / "en.json").read_text(encoding="utf-8"))
    (resaved / "en.json").write_text(json.dumps(doc, indent=1, ensure_ascii=True), encoding="utf-8")
    with pytest.raises(DataError, match="trained on"):
        guard(read_eval_corpus(resaved), training_manifest(trained_model), heldout_only=False)


@pytest.mark.parametrize("split", ["dev", "test"])
def test_prepared_splits_of_the_same_run_pass(trained_model, prepared, split):
    corpus = guard(read_eval_corpus(prepared, split=split), training_manifest(trained_model), heldout_only=False)
    counts = load_manifest(prepared)["counts"][f"{split}_queries"]
    assert corpus.corpus.queries.num_rows == sum(counts.values())
    assert articles(corpus) == set(load_manifest(prepared)["split"][f"{split}_articles"])
    assert f"prepared {split} split" in corpus.note


def test_prepared_dir_defaults_to_test(prepared):
    assert articles(read_eval_corpus(prepared)) == set(load_manifest(prepared)["split"]["test_articles"])


def test_model_trained_on_the_test_articles_is_refused(trained_model, prepared, data_dir):
    manifest = json.loads((trained_model / TRAINING_MANIFEST).read_text())
    raw = read_eval_corpus(data_dir / "xquad-r", ["en"]).corpus.queries
    test = set(manifest["split"]["test_articles"])
    manifest["heldin_question_ids"] = [
        q for q, a in zip(raw.column("id").to_pylist(), raw.column("article").to_pylist()) if a in test]
    (trained_model / TRAINING_MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="trained on"):
        guard(read_eval_corpus(prepared), training_manifest(trained_model), heldout_only=False)


def test_unrelated_corpus_is_not_restricted(trained_model, corpus_dir):
    corpus = read_eval_corpus(corpus_dir)  # the synthetic corpus: other question ids
    assert guard(corpus, training_manifest(trained_model), heldout_only=False) is corpus


def test_base_model_has_no_manifest(tmp_path, data_dir):
    corpus = read_eval_corpus(data_dir / "xquad-r", ["en"])
    assert training_manifest(tmp_path) is None
    assert guard(corpus, None, heldout_only=False) is corpus
    with pytest.raises(DataError, match="no hbt_training.json"):
        guard(corpus, None, heldout_only=True)


def test_prepared_dir_language_subset_and_bad_requests(prepared, data_dir, tmp_path):
    assert set(read_eval_corpus(prepared, ["de"]).corpus.queries.column("lang").to_pylist()) == {"de"}
    with pytest.raises(DataError, match="no language"):
        read_eval_corpus(prepared, ["zh"])
    with pytest.raises(DataError, match="--split needs a prepared dir"):
        read_eval_corpus(data_dir / "xquad-r", ["en"], split="dev")
    no_dev = tmp_path / "no-dev"
    shutil.copytree(prepared, no_dev)
    shutil.rmtree(no_dev / "dev")
    with pytest.raises(DataError, match="no dev split"):
        read_eval_corpus(no_dev, split="dev")


def test_candidate_context_follows_the_model():
    trained_bare = {"train_config": {"model": {"candidate_context": False}}, "heldin_question_ids": []}
    assert resolve_candidate_context(ModelConfig(), trained_bare).candidate_context is False
    assert resolve_candidate_context(ModelConfig(), None).candidate_context is False  # the default
    assert resolve_candidate_context(ModelConfig(candidate_context=True), None).candidate_context is True
    trained_context = {"train_config": {"model": {"candidate_context": True}}, "heldin_question_ids": []}
    assert resolve_candidate_context(ModelConfig(), trained_context).candidate_context is True
    with pytest.raises(DataError, match="trained with model.candidate_context=true"):
        resolve_candidate_context(ModelConfig(candidate_context=False), trained_context)


def test_run_eval_refuses_held_in_articles(trained_model, data_dir, tmp_path):
    from hbt.eval.run import run_eval

    with pytest.raises(DataError, match="trained on"):
        run_eval(trained_model, data_dir / "xquad-r", tmp_path / "out", languages=["en"])
    assert not (tmp_path / "out").exists()
