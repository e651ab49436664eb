"""One training step's texts and tokens: what the loop feeds the encoder.

The composer decides *which* examples `(parallel_id, query_lang, passage_lang)` make a step;
this module turns them into text (`PairTexts`) and token ids (`tokenize_step`). Both the
Ray Data stream and a bare PyTorch loop use it, so they produce identical tensors.

Tokenized layout of a step with B pairs and N hard negatives per pair (one padded matrix,
so the encoder runs a single forward pass):

    input_ids, attention_mask   (B * (2 + N), T)   T <= model.max_length
        rows [0, B)                      queries (with the query prefix)
        rows [B, 2B)                     their positives (passage prefix)
        rows [2B + i*N, 2B + (i+1)*N)    pair i's hard negatives (passage prefix)
    negative_mask               (B, N) bool        False: a padding negative (empty text)

A pair's hard negatives are the other sentences of its positive's paragraph, in the
positive's language. With more than N available, a window rotated by the step is used
(different negatives across epochs, same ones on a resumed run); with fewer, the rest are
padding, masked out of the loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from hbt.config import ModelConfig
from hbt.data.prepare import TRAIN_PAIRS

TRAIN_COLUMNS = ["parallel_id", "lang", "question", "positive", "hard_negatives"]

Example = tuple[str, str, str]  # (parallel_id, query_lang, passage_lang)


@dataclass
class StepTexts:
    questions: list[str]            # (B,)
    positives: list[str]            # (B,)
    negatives: list[list[str]]      # (B, N), "" where padded
    negative_mask: np.ndarray       # (B, N) bool


class PairTexts:
    """`(parallel_id, lang) -> (question, positive, hard_negatives)` from the prepared table."""

    def __init__(self, table):
        self._rows = {
            (pid, lang): (question, positive, tuple(negatives or ()))
            for pid, lang, question, positive, negatives in zip(
                *(table.column(c).to_pylist() for c in TRAIN_COLUMNS))
        }

    @classmethod
    def read(cls, prepared_dir: Path, languages: Sequence[str] | None = None) -> "PairTexts":
        """From `prepared_dir/train_pairs.parquet`, keeping only `languages` if given."""
        import pyarrow.parquet as pq

        return cls(filter_languages(pq.read_table(Path(prepared_dir) / TRAIN_PAIRS, columns=TRAIN_COLUMNS),
                                    languages))

    def records(self) -> dict[str, list[str]]:
        """The composer's input: parallel_id -> its languages."""
        out: dict[str, list[str]] = {}
        for pid, lang in self._rows:
            out.setdefault(pid, []).append(lang)
        return {pid: sorted(langs) for pid, langs in sorted(out.items())}

    def texts(self, examples: Sequence[Example], num_negatives: int, step: int) -> StepTexts:
        questions, positives, negatives = [], [], []
        mask = np.zeros((len(examples), num_negatives), dtype=bool)  # (B, N)
        for i, (pid, q_lang, p_lang) in enumerate(examples):
            questions.append(self._rows[(pid, q_lang)][0])
            _, positive, pool = self._rows[(pid, p_lang)]
            positives.append(positive)
            take = min(num_negatives, len(pool))
            start = step % len(pool) if pool else 0
            chosen = [pool[(start + j) % len(pool)] for j in range(take)]
            mask[i, :take] = True
            negatives.append(chosen + [""] * (num_negatives - take))
        return StepTexts(questions, positives, negatives, mask)


def filter_languages(table, languages: Sequence[str] | None):
    if not languages:
        return table
    import pyarrow as pa
    import pyarrow.compute as pc

    return table.filter(pc.is_in(table.column("lang"), value_set=pa.array(list(languages))))


def tokenize_step(tokenizer, model_cfg: ModelConfig, texts: StepTexts) -> dict[str, np.ndarray]:
    """Tokenize a step into the layout of the module docstring (numpy, for Ray Data and torch alike)."""
    passages = texts.positives + [n for row in texts.negatives for n in row]
    batch = tokenizer(
        [model_cfg.query_prefix + q for q in texts.questions]
        + [model_cfg.passage_prefix + p for p in passages],
        padding=True, truncation=True, max_length=model_cfg.max_length, return_tensors="np")
    return {
        "input_ids": batch["input_ids"].astype(np.int64),            # (B*(2+N), T)
        "attention_mask": batch["attention_mask"].astype(np.int64),  # (B*(2+N), T)
        "negative_mask": texts.negative_mask,                        # (B, N)
    }
