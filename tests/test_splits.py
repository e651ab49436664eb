"""Article splits: seeded, disjoint, covering; test articles independent of the dev split."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hbt.data.splits import ArticleSplit, split_articles
from hbt.errors import DataError


@given(st.integers(3, 200), st.floats(0.01, 0.9), st.floats(0.0, 0.5), st.integers(0, 2**32 - 1), st.booleans())
def test_split_partitions_articles(num_articles, test_fraction, dev_fraction, seed, train):
    split = split_articles(num_articles, test_fraction, seed, dev_fraction, train=train)
    parts = [set(split.train_articles), set(split.dev_articles), set(split.test_articles)]
    assert sum(len(p) for p in parts) == num_articles
    assert set().union(*parts) == set(range(num_articles))
    assert split.test_articles and bool(split.dev_articles) == (dev_fraction > 0)
    assert bool(split.train_articles) == train
    assert split.protocol == ("held-out articles" if train else "zero-shot")
    assert split == split_articles(num_articles, test_fraction, seed, dev_fraction, train=train)


@given(st.floats(0.05, 0.5), st.floats(0.01, 0.4), st.integers(0, 2**32 - 1))
def test_dev_split_takes_training_articles_only(test_fraction, dev_fraction, seed):
    without = split_articles(48, test_fraction, seed)
    with_dev = split_articles(48, test_fraction, seed, dev_fraction)
    assert with_dev.test_articles == without.test_articles
    assert set(with_dev.dev_articles) <= set(without.train_articles)


def test_default_split_sizes():
    split = split_articles(48, 0.5, 0, 0.1)
    assert (len(split.train_articles), len(split.dev_articles), len(split.test_articles)) == (19, 5, 24)
    zero_shot = split_articles(48, 0.5, 0, 0.1, train=False)
    assert len(zero_shot.test_articles) == 43 and zero_shot.dev_articles == split.dev_articles
    assert len(split_articles(48, 0.5, 0, 0.0, train=False).test_articles) == 48  # the paper's protocol


def test_seed_changes_split():
    assert split_articles(48, 0.5, 0) != split_articles(48, 0.5, 1)


def test_json_round_trip(tmp_path):
    split = split_articles(48, 0.25, 3, 0.1)
    assert ArticleSplit.from_json(split.to_json()) == split
    assert split.to_json()["protocol"] == "held-out articles"
    assert len(split.test_articles) == 12


def test_bad_splits():
    with pytest.raises(DataError, match="malformed"):
        ArticleSplit.from_json({"seed": 1})
    with pytest.raises(DataError, match="at least 3"):
        split_articles(2, 0.5, 0, 0.1)
