"""Article-level train / dev / test splits, so evaluation never sees a trained-on paragraph.

XQuAD (training) and XQuAD-R (evaluation) hold the same 48 articles, questions and
paragraphs in the same order, so the split is a seeded partition of article indices,
recorded in the prepared manifest that training copies and evaluation checks:

    order = permutation(num_articles, seed)
    test  = order[:n_test]                     n_test = round(num_articles * test_fraction)
    dev   = order[num_articles - n_dev:]       n_dev  = round(num_articles * dev_fraction)
    train = the articles in between

Without a training source on XQuAD (the paper's zero-shot protocol: train elsewhere, test
on XQuAD-R) there are no training articles and the test split takes every article but dev.
The test articles of a seed do not depend on `dev_fraction`: a dev split takes its articles
from the training side only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from hbt.errors import DataError

SPLITS = ("dev", "test")


@dataclass(frozen=True)
class ArticleSplit:
    seed: int
    test_fraction: float
    dev_fraction: float
    train_articles: tuple[int, ...]
    dev_articles: tuple[int, ...]
    test_articles: tuple[int, ...]

    @property
    def protocol(self) -> str:
        return "held-out articles" if self.train_articles else "zero-shot"

    def articles(self, split: str) -> tuple[int, ...]:
        return {"train": self.train_articles, "dev": self.dev_articles, "test": self.test_articles}[split]

    def to_json(self) -> dict:
        return {**asdict(self), "protocol": self.protocol}

    @classmethod
    def from_json(cls, data: dict, source: str = "split") -> "ArticleSplit":
        try:
            return cls(
                seed=int(data["seed"]),
                test_fraction=float(data["test_fraction"]),
                dev_fraction=float(data["dev_fraction"]),
                train_articles=tuple(int(a) for a in data["train_articles"]),
                dev_articles=tuple(int(a) for a in data["dev_articles"]),
                test_articles=tuple(int(a) for a in data["test_articles"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise DataError(f"{source}: malformed article split ({error!s})") from None


def split_articles(num_articles: int, test_fraction: float, seed: int, dev_fraction: float = 0.0,
                   train: bool = True) -> ArticleSplit:
    """Partition article indices 0..num_articles-1 (module doc); with `train`, at least one
    article lands in train and in test, and in dev when `dev_fraction` > 0.

    Example:
        >>> s = split_articles(48, 0.5, seed=0, dev_fraction=0.1)
        >>> len(s.train_articles), len(s.dev_articles), len(s.test_articles)
        (19, 5, 24)
    """
    need = 1 + (dev_fraction > 0) + train
    if num_articles < need:
        raise DataError(f"need at least {need} articles to split, got {num_articles}")
    n_dev = max(1, round(num_articles * dev_fraction)) if dev_fraction > 0 else 0
    if train:
        n_dev = min(n_dev, num_articles - 2)
        n_test = min(max(1, round(num_articles * test_fraction)), num_articles - n_dev - 1)
    else:
        n_dev = min(n_dev, num_articles - 1)
        n_test = num_articles - n_dev
    order = np.random.default_rng(seed).permutation(num_articles)

    def part(indices) -> tuple[int, ...]:
        return tuple(sorted(int(a) for a in indices))

    return ArticleSplit(
        seed=seed, test_fraction=test_fraction, dev_fraction=dev_fraction,
        train_articles=part(order[n_test:num_articles - n_dev]),
        dev_articles=part(order[num_articles - n_dev:]),
        test_articles=part(order[:n_test]),
    )
