"""Tatoeba bitext retrieval, the XTREME task: in each xx-eng pair of the LASER layout
(`hbt.data.tatoeba`), every xx sentence's nearest English sentence by cosine must be its
translation (accuracy xx->en), and every English sentence's nearest xx sentence too (en->xx).

Both sides are encoded with the query prefix (E5's prefix for symmetric tasks) through the
encode-once path of `hbt.eval.encode`. Per sentence pair and direction a row says whether the
nearest neighbour is right; the reported accuracy is the mean over language-directions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hbt.data.lareqa import LareqaCorpus
from hbt.data.tatoeba import read_tatoeba

QUERY_BLOCK = 1024  # rows of the (n, n) similarity matrix held at once


def is_tatoeba_dir(path: Path) -> bool:
    return any(Path(path).glob("tatoeba.*-eng.eng"))


class BitextCorpus:
    """Tatoeba pairs read and checked; `.encodable`: xx sentences as queries, their English
    sides as candidates, both filed under xx (row i of each is pair i)."""

    def __init__(self, path: Path, languages: Optional[Sequence[str]] = None):
        self.path = Path(path)
        table = read_tatoeba(path, [lang for lang in languages if lang != "en"] if languages else None)
        english = pc.equal(table.column("lang"), "en")
        xx, en = table.filter(pc.invert(english)), table.filter(english)  # row i of each: pair i
        self.languages = list(dict.fromkeys(xx.column("lang").to_pylist()))
        langs = xx.column("lang")
        self.encodable = LareqaCorpus(
            pa.table({"id": xx.column("parallel_id"), "lang": langs, "text": xx.column("text")}),
            pa.table({"id": en.column("parallel_id"), "lang": langs, "sentence": en.column("text"),
                      "context": pa.array([""] * en.num_rows)}),
            pa.table({"query_id": [], "lang": [], "candidate_id": []}))
        self.pair_ids = {lang: [pid for pid, l in zip(xx.column("parallel_id").to_pylist(), langs.to_pylist())
                                if l == lang] for lang in self.languages}


def _nearest_is_right(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n,) bool: whether row i of `a`'s nearest row of `b` (inner product) is row i."""
    right = np.empty(len(a), dtype=bool)
    for start in range(0, len(a), QUERY_BLOCK):
        scores = a[start:start + QUERY_BLOCK] @ b.T  # (block, n)
        right[start:start + len(scores)] = scores.argmax(axis=1) == np.arange(start, start + len(scores))
    return right


def score(corpus: BitextCorpus, query_emb: dict, cand_emb: dict) -> tuple[dict, dict, pa.Table]:
    """-> (means {"accuracy"}, per language {"xx->en", "en->xx"}, per-query rows: query_id, group, accuracy)."""
    per_language, ids, groups, correct = {}, [], [], []
    for lang in corpus.languages:
        xx, en = query_emb[lang], cand_emb[lang]
        for group, right in ((f"{lang}->en", _nearest_is_right(xx, en)), (f"en->{lang}", _nearest_is_right(en, xx))):
            per_language.setdefault(lang, {})[group] = float(right.mean())
            ids += corpus.pair_ids[lang]
            groups += [group] * len(right)
            correct.append(right.astype(np.float64))
    table = pa.table({"query_id": ids, "group": groups, "accuracy": np.concatenate(correct)})
    macro = float(np.mean([acc for directions in per_language.values() for acc in directions.values()]))
    return {"accuracy": macro}, per_language, table
