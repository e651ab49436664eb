"""The pool's index, texts and token layout of one training step (hbt.train.batch)."""

import numpy as np
import pyarrow as pa
import pytest

from hbt.config import ModelConfig
from hbt.data.schema import TRAIN_PAIR_SCHEMA
from hbt.errors import DataError
from hbt.train.batch import PairPool, PoolIndex, tokenize_step

P1, P2, P3 = 0, 1, 2  # records, in parallel_id order


def table():
    # p1's en negative "n2 en" is p3's positive (same paragraph, another question): key of p3.
    rows = [
        (P1, "p1", "de", "s", 0, "q1 de", "a1 de", "ctx de", ["n1 de"], "p1", P1, [-1]),
        (P1, "p1", "en", "s", 0, "q1 en", "a1 en", "ctx en", ["n1 en", "n2 en", "n3 en"], "p1", P1, [-1, P3, -1]),
        (P2, "p2", "de", "s", 0, "q2 de", "a2 de", "ctx", ["m1 de", "m2 de"], "p2", P2, [-1, -1]),
        (P2, "p2", "en", "s", 0, "q2 en", "a2 en", "ctx", [], "p2", P2, []),
        (P3, "p3", "en", "s", 0, "q3 en", "n2 en", "ctx en", ["n1 en"], "p3", P3, [-1]),
    ]
    return pa.Table.from_pylist([dict(zip(TRAIN_PAIR_SCHEMA.names, r)) for r in rows], schema=TRAIN_PAIR_SCHEMA)


def test_texts_take_question_from_query_lang_and_negatives_from_passage_lang():
    texts = PairPool.from_table(table()).texts([(P1, "de", "en"), (P2, "en", "de")], num_negatives=2, step=0)
    assert texts.parallel_ids == ["p1", "p2"]
    assert texts.questions == ["q1 de", "q2 en"]
    assert texts.positives == ["a1 en", "a2 de"]
    assert texts.negatives == [["n1 en", "n2 en"], ["m1 de", "m2 de"]]
    assert texts.negative_mask.tolist() == [[True, True], [True, True]]
    assert texts.positive_keys == [P1, P2]
    assert texts.negative_keys == [[-1, P3], [-1, -1]]


def test_negatives_rotate_with_step_and_pad_when_short():
    pairs = PairPool.from_table(table())
    assert pairs.texts([(P1, "en", "en")], 2, step=1).negatives == [["n2 en", "n3 en"]]
    assert pairs.texts([(P1, "en", "en")], 2, step=2).negatives == [["n3 en", "n1 en"]]
    short = pairs.texts([(P1, "de", "de"), (P2, "en", "en")], 2, step=5)
    assert short.negatives == [["n1 de", ""], ["", ""]]
    assert short.negative_mask.tolist() == [[True, False], [False, False]]
    assert short.negative_keys == [[-1, -1], [-1, -1]]


def test_a_step_positive_is_never_a_hard_negative():
    pairs = PairPool.from_table(table())
    # p3 is in the step: its positive "n2 en" must not be drawn as p1's hard negative.
    texts = pairs.texts([(P1, "en", "en")], 3, step=0, step_keys=frozenset({P1, P3}))
    assert texts.negatives == [["n1 en", "n3 en", ""]]
    assert P3 not in texts.negative_keys[0]


def test_candidate_context_writes_passages_as_evaluation_does():
    texts = PairPool.from_table(table(), candidate_context=True).texts([(P1, "de", "de")], 1, step=0)
    assert texts.positives == ["a1 de ctx de"]
    assert texts.negatives == [["n1 de ctx de"]]


def test_index_rows_languages_keys_and_language_filter():
    index = PoolIndex.from_table(table())
    assert index.start.tolist() == [0, 2, 4, 5]
    assert index.languages == ("de", "en")
    assert index.has_language.tolist() == [[True, True], [True, True], [False, True]]
    assert index.rows([P3, P1, P2, P1], ["en", "en", "de", "de"]).tolist() == [4, 1, 2, 0]
    german = index.record_set(["de"])
    assert german.languages == ("de",) and german.has_language[:, 0].tolist() == [True, True, False]
    assert index.keys.tolist() == [P1, P2, P3]


def test_an_unsorted_pool_is_refused_with_one_line():
    shuffled = table().take([1, 0, 2, 3, 4])
    with pytest.raises(DataError, match=r"not sorted by \(record, lang\).*hbt data prepare"):
        PoolIndex.from_table(shuffled)


def test_the_pool_is_opened_from_a_path_or_a_uri(tmp_path, monkeypatch):
    from hbt.data.pool import write_pool
    from hbt.layout import TRAIN_POOL

    write_pool(table(), tmp_path / TRAIN_POOL)
    monkeypatch.chdir(tmp_path.parent)  # a relative path is taken from the cwd
    for where in (tmp_path, f"{tmp_path.name}/", f"file://{tmp_path}"):
        pool = PairPool.open(where)
        assert pool.index.num_records == 3, where
        assert pool.texts([(P3, "en", "en")], 0, step=0).questions == ["q3 en"]
    assert PoolIndex.read(tmp_path).start.tolist() == [0, 2, 4, 5]


class WordTokenizer:
    """Whitespace tokenizer with the HF call signature used by tokenize_step: a word's id is its length."""

    def __call__(self, texts, truncation, max_length, return_attention_mask, return_token_type_ids):
        return {"input_ids": [[len(w) for w in t.split()][:max_length] for t in texts]}


def test_tokenize_step_layout():
    cfg = ModelConfig(query_prefix="query: ", passage_prefix="passage: ", max_length=8)
    texts = PairPool.from_table(table()).texts([(P1, "de", "en"), (P2, "en", "de")], num_negatives=2, step=0)
    out = tokenize_step(WordTokenizer(), cfg, texts)
    assert out["negative_mask"].shape == (2, 2)
    # queries, positives, then each pair's negatives: "query: q1 de" = 3 words, "passage: a1 en" = 3...
    assert out["lengths"].dtype == np.int32 and out["lengths"].tolist() == [3] * (2 * (2 + 2))
    # ...end to end, unpadded: "query:" 6, "q1" 2, "de" 2; "passage:" 8, "n1" 2, "en" 2 (p1's first negative)
    assert out["token_ids"].dtype == np.int32 and len(out["token_ids"]) == 3 * 8
    assert out["token_ids"][:3].tolist() == [6, 2, 2] and out["token_ids"][12:15].tolist() == [8, 2, 2]
    # Keys shifted by one: 0 is "no key".
    assert out["positive_key"].tolist() == [P1 + 1, P2 + 1]
    assert out["negative_key"].tolist() == [[0, P3 + 1], [0, 0]]


def test_tokenize_step_without_negatives_keeps_shapes():
    cfg = ModelConfig(max_length=8)
    texts = PairPool.from_table(table()).texts([(P1, "en", "en")], num_negatives=0, step=0)
    out = tokenize_step(WordTokenizer(), cfg, texts)
    assert out["negative_mask"].shape == (1, 0) and out["negative_key"].shape == (1, 0)


def test_the_reader_takes_rows_across_shards_and_batches_in_the_order_asked(tmp_path, monkeypatch):
    from hbt.data import pool as pool_files

    # 5 rows as shards of 2 rows in batches of 1: every row its own batch, three shards.
    monkeypatch.setattr(pool_files, "ROWS_PER_SHARD", 2)
    monkeypatch.setattr(pool_files, "ROWS_PER_BATCH", 1)
    assert pool_files.write_pool(table(), tmp_path / pool_files.TRAIN_POOL) == {
        "part-00000.arrow": 2, "part-00001.arrow": 2, "part-00002.arrow": 1}
    reader = pool_files.PoolReader(tmp_path, ["question", "negative_keys"])
    assert reader.num_rows == 5
    rows = [4, 0, 3, 0, 2, 1]  # any order, a repeat
    got = reader.take(rows)
    assert got.column_names == ["question", "negative_keys"]
    assert got.to_pylist() == table().select(["question", "negative_keys"]).take(rows).to_pylist()
    assert pool_files.open_pool(tmp_path).to_pylist() == table().to_pylist()
