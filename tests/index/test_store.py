"""Embedding shard files: a shard is trusted only when listed whole with its count, sha256 and
source; another key starts the directory over."""

import numpy as np

from hbt.eval.encode import write_rows
from hbt.index.store import EmbeddingStore


def finished(root, key, rows=5, source="texts-0"):
    store = EmbeddingStore(root, key, 4)
    write_rows(store.begin(0, rows), np.arange(rows), np.ones((rows, 4), np.float32))
    store.finish(0, rows, source)
    return store


def test_a_finished_shard_is_trusted_for_its_count_and_source_only(tmp_path):
    store = finished(tmp_path, {"model": "a"})
    again = EmbeddingStore(tmp_path, {"model": "a"}, 4)
    assert again.trusted(0, 5, "texts-0")
    assert not again.trusted(0, 6, "texts-0") and not again.trusted(0, 5, "edited texts")
    assert not again.trusted(1, 5, "x")
    np.testing.assert_array_equal(np.load(store.path(0)), np.ones((5, 4), np.float32))


def test_a_partial_shard_is_removed_and_another_key_starts_over(tmp_path):
    finished(tmp_path, {"model": "a"})
    EmbeddingStore(tmp_path, {"model": "a"}, 4).begin(1, 3)  # the run dies while writing shard 1
    reopened = EmbeddingStore(tmp_path, {"model": "a"}, 4)
    assert not reopened.partial_path(1).exists() and reopened.trusted(0, 5, "texts-0")
    other = EmbeddingStore(tmp_path, {"model": "b"}, 4)
    assert not other.trusted(0, 5, "texts-0") and not other.path(0).exists()
