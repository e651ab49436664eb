"""Texts and token layout of one training step (hbt.train.batch)."""

import numpy as np
import pyarrow as pa

from hbt.config import ModelConfig
from hbt.data.schema import TRAIN_PAIR_SCHEMA
from hbt.train.batch import PairTexts, filter_languages, tokenize_step


def table():
    rows = [
        ("p1", "en", 0, "q1 en", "a1 en", "ctx", ["n1 en", "n2 en", "n3 en"]),
        ("p1", "de", 0, "q1 de", "a1 de", "ctx", ["n1 de"]),
        ("p2", "en", 0, "q2 en", "a2 en", "ctx", []),
        ("p2", "de", 0, "q2 de", "a2 de", "ctx", ["m1 de", "m2 de"]),
    ]
    return pa.Table.from_pylist([dict(zip(TRAIN_PAIR_SCHEMA.names, r)) for r in rows], schema=TRAIN_PAIR_SCHEMA)


def test_texts_take_question_from_query_lang_and_negatives_from_passage_lang():
    texts = PairTexts(table()).texts([("p1", "de", "en"), ("p2", "en", "de")], num_negatives=2, step=0)
    assert texts.questions == ["q1 de", "q2 en"]
    assert texts.positives == ["a1 en", "a2 de"]
    assert texts.negatives == [["n1 en", "n2 en"], ["m1 de", "m2 de"]]
    assert texts.negative_mask.tolist() == [[True, True], [True, True]]


def test_negatives_rotate_with_step_and_pad_when_short():
    pairs = PairTexts(table())
    assert pairs.texts([("p1", "en", "en")], 2, step=1).negatives == [["n2 en", "n3 en"]]
    assert pairs.texts([("p1", "en", "en")], 2, step=2).negatives == [["n3 en", "n1 en"]]
    short = pairs.texts([("p1", "de", "de"), ("p2", "en", "en")], 2, step=5)
    assert short.negatives == [["n1 de", ""], ["", ""]]
    assert short.negative_mask.tolist() == [[True, False], [False, False]]


def test_records_and_language_filter():
    assert PairTexts(table()).records() == {"p1": ["de", "en"], "p2": ["de", "en"]}
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
