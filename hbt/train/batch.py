"""One training step's texts and tokens: what the loop feeds the encoder.

The composer decides *which* examples `(parallel_id, query_lang, passage_lang)` make a step;
this module turns them into text (`PairTexts`) and token ids (`tokenize_step`). Both the
Ray Data stream and a bare PyTorch loop use it, so they produce identical tensors.

Passages (positives and hard negatives) are formed as the evaluation forms its candidates
(`hbt.data.candidates`): the sentence, followed by its paragraph when
`model.candidate_context` is on.

Tokenized layout of a step with B pairs and N hard negatives per pair (one padded matrix,
so the encoder runs a single forward pass):

    input_ids, attention_mask   (B * (2 + N), T)   T <= model.max_length
        rows [0, B)                      queries (with the query prefix)
        rows [B, 2B)                     their positives (passage prefix)
        rows [2B + i*N, 2B + (i+1)*N)    pair i's hard negatives (passage prefix)
    negative_mask               (B, N) bool        False: a padding negative (empty text)
    positive_key                (B,) int64         `key_id` of each pair's positive key
    negative_key                (B, N) int64       `key_id` of each hard negative's key (0: none)

A pair's hard negatives are the other sentences of its positive's paragraph, in the
positive's language, minus any that is the positive of a record in the same global step
(its key is one of the step's positive keys): that sentence would be a false negative for
that record's query. With more than N left, a window rotated by the step is used (different
negatives across epochs, same ones on a resumed run); with fewer, the rest are padding,
masked out of the loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import AbstractSet, Sequence

import numpy as np

from hbt.config import ModelConfig
from hbt.data.candidates import candidate_text
from hbt.data.positives import key_id
from hbt.data.prepare import TRAIN_PAIRS
from hbt.io import absolute_location

TRAIN_COLUMNS = ["parallel_id", "lang", "question", "positive", "context", "hard_negatives",
                 "positive_key", "negative_keys"]

Example = tuple[str, str, str]  # (parallel_id, query_lang, passage_lang)


@dataclass
class StepTexts:
    questions: list[str]            # (B,)
    positives: list[str]            # (B,)
    negatives: list[list[str]]      # (B, N), "" where padded
    negative_mask: np.ndarray       # (B, N) bool
    positive_keys: list[str]        # (B,)
    negative_keys: list[list[str]]  # (B, N), "" where padded or the sentence is nobody's positive


@dataclass(frozen=True)
class _Row:
    question: str
    passage: str                         # the positive as encoded
    negatives: tuple[tuple[str, str], ...]  # (passage as encoded, key)
    key: str


def read_train_table(prepared_dir: str | Path, languages: Sequence[str] | None = None):
    """`TRAIN_COLUMNS` of `prepared_dir/train_pairs.parquet` (only `languages` if given), read
    by pyarrow: `prepared_dir` is a local path or any URI pyarrow's filesystems take (s3://,
    gs://, hdfs://). Read in the calling process: a Ray Data read would start a listing task
    and footer-reader actors, about 10 s of process starts on 2 cores, per run and per trial."""
    import pyarrow.fs
    import pyarrow.parquet as pq

    fs, path = pyarrow.fs.FileSystem.from_uri(f"{absolute_location(prepared_dir)}/{TRAIN_PAIRS}")
    return filter_languages(pq.read_table(path, columns=TRAIN_COLUMNS, filesystem=fs), languages)


class PairTexts:
    """`(parallel_id, lang) -> texts and keys` from the prepared table; passages carry their
    paragraph when `candidate_context`."""

    def __init__(self, table, candidate_context: bool = False):
        columns = {c: table.column(c).to_pylist() for c in TRAIN_COLUMNS}
        self._rows: dict[tuple[str, str], _Row] = {}
        for pid, lang, question, positive, context, negatives, key, negative_keys in zip(
                *(columns[c] for c in TRAIN_COLUMNS)):
            self._rows[(pid, lang)] = _Row(
                question, candidate_text(positive, context, candidate_context),
                tuple((candidate_text(n, context, candidate_context), k)
                      for n, k in zip(negatives or (), negative_keys or ())),
                key)

    @classmethod
    def read(cls, prepared_dir: str | Path, languages: Sequence[str] | None = None,
             candidate_context: bool = False) -> "PairTexts":
        """From `prepared_dir/train_pairs.parquet`, keeping only `languages` if given."""
        return cls(read_train_table(prepared_dir, languages), candidate_context)

    def records(self) -> dict[str, list[str]]:
        """The composer's input: parallel_id -> its languages."""
        out: dict[str, list[str]] = {}
        for pid, lang in self._rows:
            out.setdefault(pid, []).append(lang)
        return {pid: sorted(langs) for pid, langs in sorted(out.items())}

    def positive_keys(self) -> dict[str, str]:
        """The composer's other input: parallel_id -> its positive key (the same in every language)."""
        return {pid: row.key for (pid, _), row in sorted(self._rows.items())}

    def texts(self, examples: Sequence[Example], num_negatives: int, step: int,
              step_keys: AbstractSet[str] = frozenset()) -> StepTexts:
        """The texts of `examples`; `step_keys`: the positive keys of the whole global step,
        whose sentences are never picked as hard negatives (module doc)."""
        questions, positives, negatives, pos_keys, neg_keys = [], [], [], [], []
        mask = np.zeros((len(examples), num_negatives), dtype=bool)  # (B, N)
        for i, (pid, q_lang, p_lang) in enumerate(examples):
            questions.append(self._rows[(pid, q_lang)].question)
            row = self._rows[(pid, p_lang)]
            positives.append(row.passage)
            pos_keys.append(row.key)
            pool = [n for n in row.negatives if n[1] not in step_keys and n[1] != row.key]
            take = min(num_negatives, len(pool))
            start = step % len(pool) if pool else 0
            chosen = [pool[(start + j) % len(pool)] for j in range(take)]
            mask[i, :take] = True
            padding = [""] * (num_negatives - take)
            negatives.append([text for text, _ in chosen] + padding)
            neg_keys.append([key for _, key in chosen] + padding)
        return StepTexts(questions, positives, negatives, mask, pos_keys, neg_keys)


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
    b, n = texts.negative_mask.shape
    return {
        "input_ids": batch["input_ids"].astype(np.int64),            # (B*(2+N), T)
        "attention_mask": batch["attention_mask"].astype(np.int64),  # (B*(2+N), T)
        "negative_mask": texts.negative_mask,                        # (B, N)
        "positive_key": np.array([key_id(k) for k in texts.positive_keys], dtype=np.int64),  # (B,)
        "negative_key": np.array([[key_id(k) for k in row] for row in texts.negative_keys],
                                 dtype=np.int64).reshape(b, n),      # (B, N)
    }
