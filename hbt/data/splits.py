"""Article-level train/eval splits, so evaluation never sees a trained-on paragraph.

XQuAD (training) and XQuAD-R (evaluation) hold the same 48 articles, questions and
paragraphs in the same order, so the split is a seeded partition of article indices,
recorded in a manifest that training copies and evaluation checks.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hbt.errors import DataError


@dataclass(frozen=True)
class ArticleSplit:
    seed: int
    heldout_fraction: float
    train_articles: tuple[int, ...]
    eval_articles: tuple[int, ...]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict, source: str = "split") -> "ArticleSplit":
        try:
            return cls(
                seed=int(data["seed"]),
                heldout_fraction=float(data["heldout_fraction"]),
                train_articles=tuple(int(a) for a in data["train_articles"]),
                eval_articles=tuple(int(a) for a in data["eval_articles"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise DataError(f"{source}: malformed article split ({error!s})") from None


def split_articles(num_articles: int, heldout_fraction: float, seed: int) -> ArticleSplit:
    """Partition article indices 0..num_articles-1; at least one article lands on each side.

    Example:
        >>> s = split_articles(48, 0.5, seed=0)
        >>> len(s.train_articles), len(s.eval_articles)
        (24, 24)
    """
    if num_articles < 2:
        raise DataError(f"need at least 2 articles to split, got {num_articles}")
    num_eval = min(max(1, round(num_articles * heldout_fraction)), num_articles - 1)
    order = np.random.default_rng(seed).permutation(num_articles)
    return ArticleSplit(
        seed=seed,
        heldout_fraction=heldout_fraction,
        train_articles=tuple(sorted(int(a) for a in order[num_eval:])),
        eval_articles=tuple(sorted(int(a) for a in order[:num_eval])),
    )


def check_no_leakage(trained_articles, eval_articles, what: str = "evaluation") -> None:
    """Refuse (DataError -> exit 2) an evaluation on articles a training run used."""
    overlap = sorted(set(trained_articles) & set(eval_articles))
    if overlap:
        raise DataError(
            f"{what} uses {len(overlap)} article(s) the model was trained on "
            f"(e.g. {overlap[:5]}); evaluate on the held-out split only"
        )


def load_split(path: Path) -> ArticleSplit:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: split manifest not found") from None
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON (line {error.lineno})") from None
    return ArticleSplit.from_json(data.get("split", data) if isinstance(data, dict) else {}, str(path))
