"""Texts and token layout of one training step (hbt.train.batch)."""

import numpy as np
import pyarrow as pa

from hbt.config import ModelConfig
from hbt.data.positives import key_id
from hbt.data.schema import TRAIN_PAIR_SCHEMA
from hbt.train.batch import PairTexts, filter_languages, tokenize_step


def table():
    # p1's en negative "n2 en" is p3's positive (same paragraph, another question): key "k3".
    rows = [
        ("p1", "en", "s", 0, "q1 en", "a1 en", "ctx en", ["n1 en", "n2 en", "n3 en"], "k1", ["", "k3", ""]),
        ("p1", "de", "s", 0, "q1 de", "a1 de", "ctx de", ["n1 de"], "k1", [""]),
        ("p2", "en", "s", 0, "q2 en", "a2 en", "ctx", [], "k2", []),
        ("p2", "de", "s", 0, "q2 de", "a2 de", "ctx", ["m1 de", "m2 de"], "k2", ["", ""]),
        ("p3", "en", "s", 0, "q3 en", "n2 en", "ctx en", ["n1 en"], "k3", [""]),
    ]
    return pa.Table.from_pylist([dict(zip(TRAIN_PAIR_SCHEMA.names, r)) for r in rows], schema=TRAIN_PAIR_SCHEMA)


def test_texts_take_question_from_query_lang_and_negatives_from_passage_lang():
    texts = PairTexts(table()).texts([("p1", "de", "en"), ("p2", "en", "de")], num_negatives=2, step=0)
    assert texts.questions == ["q1 de", "q2 en"]
    assert texts.positives == ["a1 en", "a2 de"]
    assert texts.negatives == [["n1 en", "n2 en"], ["m1 de", "m2 de"]]
    assert texts.negative_mask.tolist() == [[True, True], [True, True]]
    assert texts.positive_keys == ["k1", "k2"]
    assert texts.negative_keys == [["", "k3"], ["", ""]]


def test_negatives_rotate_with_step_and_pad_when_short():
    pairs = PairTexts(table())
    assert pairs.texts([("p1", "en", "en")], 2, step=1).negatives == [["n2 en", "n3 en"]]
    assert pairs.texts([("p1", "en", "en")], 2, step=2).negatives == [["n3 en", "n1 en"]]
    short = pairs.texts([("p1", "de", "de"), ("p2", "en", "en")], 2, step=5)
    assert short.negatives == [["n1 de", ""], ["", ""]]
    assert short.negative_mask.tolist() == [[True, False], [False, False]]
    assert short.negative_keys == [["", ""], ["", ""]]


def test_a_step_positive_is_never_a_hard_negative():
    pairs = PairTexts(table())
    # p3 is in the step: its positive "n2 en" must not be drawn as p1's hard negative.
    texts = pairs.texts([("p1", "en", "en")], 3, step=0, step_keys=frozenset({"k1", "k3"}))
    assert texts.negatives == [["n1 en", "n3 en", ""]]
    assert "k3" not in texts.negative_keys[0]


def test_candidate_context_writes_passages_as_evaluation_does():
    texts = PairTexts(table(), candidate_context=True).texts([("p1", "de", "de")], 1, step=0)
    assert texts.positives == ["a1 de ctx de"]
    assert texts.negatives == [["n1 de ctx de"]]


def test_records_keys_and_language_filter():
    assert PairTexts(table()).records() == {"p1": ["de", "en"], "p2": ["de", "en"], "p3": ["en"]}
    assert PairTexts(table()).positive_keys() == {"p1": "k1", "p2": "k2", "p3": "k3"}
    assert PairTexts(filter_languages(table(), ["de"])).records() == {"p1": ["de"], "p2": ["de"]}


class WordTokenizer:
    """Whitespace tokenizer with the HF call signature used by tokenize_step."""

    def __call__(self, texts, padding, truncation, max_length, return_tensors):
        ids = [[hash(w) % 1000 + 1 for w in t.split()][:max_length] for t in texts]
        width = max(len(i) for i in ids)
        return {"input_ids": np.array([i + [0] * (width - len(i)) for i in ids]),
                "attention_mask": np.array([[1] * len(i) + [0] * (width - len(i)) for i in ids])}


def test_tokenize_step_layout():
    cfg = ModelConfig(query_prefix="query: ", passage_prefix="passage: ", max_length=8)
    texts = PairTexts(table()).texts([("p1", "de", "en"), ("p2", "en", "de")], num_negatives=2, step=0)
    out = tokenize_step(WordTokenizer(), cfg, texts)
    assert out["input_ids"].shape[0] == 2 * (2 + 2) and out["input_ids"].dtype == np.int64
    assert out["negative_mask"].shape == (2, 2)
    lengths = out["attention_mask"].sum(axis=1).tolist()
    # "query: q1 de" = 3 words; "passage: a1 en" = 3; negatives likewise 3 words each
    assert lengths == [3, 3, 3, 3, 3, 3, 3, 3]
    assert out["positive_key"].tolist() == [key_id("k1"), key_id("k2")]
    assert out["negative_key"].tolist() == [[0, key_id("k3")], [0, 0]]


def test_tokenize_step_without_negatives_keeps_shapes():
    cfg = ModelConfig(max_length=8)
    texts = PairTexts(table()).texts([("p1", "en", "en")], num_negatives=0, step=0)
    out = tokenize_step(WordTokenizer(), cfg, texts)
    assert out["negative_mask"].shape == (1, 0) and out["negative_key"].shape == (1, 0)


def test_the_training_table_is_read_from_a_path_or_a_uri(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    from hbt.data.prepare import TRAIN_PAIRS
    from hbt.train.batch import TRAIN_COLUMNS, read_train_table

    pq.write_table(table(), tmp_path / TRAIN_PAIRS)
    monkeypatch.chdir(tmp_path.parent)  # a relative path is taken from the cwd
    for where in (tmp_path, f"{tmp_path.name}/", f"file://{tmp_path}"):
        read = read_train_table(where)
        assert read.column_names == TRAIN_COLUMNS and read.num_rows == 5, where
    german = read_train_table(f"file://{tmp_path}", ["de"])
    assert german.column("parallel_id").to_pylist() == ["p1", "p2"]
