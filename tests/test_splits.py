"""Article splits: seeded, disjoint, covering; leakage refused."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hbt.data.splits import ArticleSplit, check_no_leakage, load_split, split_articles
from hbt.errors import DataError


@given(st.integers(2, 200), st.floats(0.01, 0.99), st.integers(0, 2**32 - 1))
def test_split_partitions_articles(num_articles, fraction, seed):
    split = split_articles(num_articles, fraction, seed)
    train, heldout = set(split.train_articles), set(split.eval_articles)
    assert not train & heldout
    assert train | heldout == set(range(num_articles))
    assert train and heldout
    assert split == split_articles(num_articles, fraction, seed)


def test_seed_changes_split():
    assert split_articles(48, 0.5, 0) != split_articles(48, 0.5, 1)


def test_json_round_trip(tmp_path):
    split = split_articles(48, 0.25, 3)
    assert ArticleSplit.from_json(split.to_json()) == split
    assert len(split.eval_articles) == 12


def test_leakage_refused():
    check_no_leakage([0, 1, 2], [3, 4])
    with pytest.raises(DataError, match="trained on"):
        check_no_leakage([0, 1, 2], [2, 3])


def test_bad_split_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_split(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DataError, match="not valid JSON"):
        load_split(tmp_path / "bad.json")
    (tmp_path / "partial.json").write_text('{"seed": 1}')
    with pytest.raises(DataError, match="malformed"):
        load_split(tmp_path / "partial.json")
    with pytest.raises(DataError, match="at least 2"):
        split_articles(1, 0.5, 0)
