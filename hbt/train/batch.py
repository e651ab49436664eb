"""One training step's texts and tokens: what the loop feeds the encoder.

The composer decides *which* examples `(parallel_id, query_lang, passage_lang)` make a step;
this module finds their rows in the prepared pool (`PoolIndex`, `PairPool`), turns them into
text and token ids (`tokenize_step`). Both the Ray Data stream and a bare PyTorch loop use
it, so they produce identical tensors.

An example names its record by number (`record`: rows of the pool are sorted by record, then
language), so the composer and the index are integer arrays, tens of megabytes for millions
of records; the texts stay in the pool's shards (`hbt.data.pool`) and a step reads only its
own rows.

Passages (positives and hard negatives) are formed as the evaluation forms its candidates
(`hbt.data.candidates`): the sentence, followed by its paragraph when
`model.candidate_context` is on.

Tokenized layout of a step with B pairs and N hard negatives per pair: its M = B * (2 + N)
sequences ragged, end to end, with no padding (`hbt.train.packing` cuts them into
length-sorted chunks for the encoder):

    token_ids       (S,) int32        every sequence's ids, S = sum of lengths
    lengths         (M,) int32        each sequence's tokens (<= model.max_length), in the order
        [0, B)                          queries (with the query prefix)
        [B, 2B)                         their positives (passage prefix)
        [2B + i*N, 2B + (i+1)*N)        pair i's hard negatives (passage prefix)
    negative_mask   (B, N) bool       False: a padding negative (empty text)
    positive_key    (B,) int64        1 + each pair's positive `key`
    negative_key    (B, N) int64      1 + each hard negative's key (0: none)

A pair's hard negatives are the other sentences of its positive's paragraph, in the
positive's language, minus any that is the positive of a record in the same global step
(its key is one of the step's positive keys): that sentence would be a false negative for
that record's query. With more than N left, a window rotated by the step is used (different
negatives across epochs, same ones on a resumed run); with fewer, the rest are padding,
masked out of the loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, AbstractSet, Callable, Sequence

import numpy as np

from hbt.config import ModelConfig
from hbt.data.candidates import candidate_text
from hbt.data.composer import RecordSet
from hbt.errors import DataError

if TYPE_CHECKING:
    import pyarrow as pa

Example = tuple[int, str, str]  # (record, query_lang, passage_lang)
TEXT_COLUMNS = ["parallel_id", "question", "positive", "context", "hard_negatives", "negative_keys"]


@dataclass
class StepTexts:
    parallel_ids: list[str]         # (B,)
    questions: list[str]            # (B,)
    positives: list[str]            # (B,)
    negatives: list[list[str]]      # (B, N), "" where padded
    negative_mask: np.ndarray       # (B, N) bool
    positive_keys: list[int]        # (B,) `key` of each positive
    negative_keys: list[list[int]]  # (B, N), -1 where padded or the sentence is nobody's positive


@dataclass(frozen=True)
class PoolIndex:
    """record -> rows, languages, positive key: the pool's index columns as arrays.

    Rows are sorted by (record, lang), so record r's rows are `start[r]:start[r + 1]`, one per
    language it has, in language order.
    """

    start: np.ndarray                # (R + 1,) int64 row offsets
    languages: tuple[str, ...]       # (L,) sorted: every language of the pool
    has_language: np.ndarray         # (R, L) bool
    keys: np.ndarray                 # (R,) int32 positive key of each record

    @classmethod
    def from_columns(cls, record: np.ndarray, lang: np.ndarray, languages: Sequence[str],
                     key: np.ndarray) -> "PoolIndex":
        """From every row's record number, language (its index in `languages`) and key."""
        order = np.argsort(languages)  # languages sorted; a row's language renumbered to match
        rank = np.empty(len(languages), dtype=np.int8)
        rank[order] = np.arange(len(languages))
        lang = rank[lang] if len(languages) else lang.astype(np.int8)
        step = np.diff(record)
        sorted_rows = np.all((step > 0) | ((step == 0) & (np.diff(lang) > 0))) if len(record) > 1 else True
        if not sorted_rows or (len(record) and record[0] != 0):
            raise DataError("the training pool's rows are not sorted by (record, lang) with records "
                            "numbered from 0: prepare it again with this hbt (`hbt data prepare`)")
        num_records = int(record[-1]) + 1 if len(record) else 0
        start = np.searchsorted(record, np.arange(num_records + 1, dtype=record.dtype)).astype(np.int64)
        if np.any(np.diff(start) == 0):
            raise DataError("the training pool skips a record number: prepare it again (`hbt data prepare`)")
        has_language = np.zeros((num_records, len(languages)), dtype=bool)
        has_language[record, lang] = True
        return cls(start, tuple(sorted(languages)), has_language, key[start[:-1]])

    @classmethod
    def from_table(cls, table) -> "PoolIndex":
        """From a table with the `hbt.data.pool.INDEX_COLUMNS` (record, lang, key)."""
        import pyarrow.compute as pc

        encoded = pc.dictionary_encode(table.column("lang")).combine_chunks()
        return cls.from_columns(table.column("record").to_numpy(), encoded.indices.to_numpy(),
                                encoded.dictionary.to_pylist(), table.column("key").to_numpy())

    @classmethod
    def read(cls, prepared_dir: str | Path) -> "PoolIndex":
        """The index of `prepared_dir`'s pool: three columns read, no text, each record batch
        turned into compact arrays as it is read (9 bytes a row)."""
        import pyarrow.compute as pc

        from hbt.data.pool import INDEX_COLUMNS, PoolReader

        languages: dict[str, int] = {}
        records, langs, keys = [], [], []
        for batch in PoolReader(prepared_dir, INDEX_COLUMNS).batches():
            encoded = pc.dictionary_encode(batch.column("lang"))
            codes = np.array([languages.setdefault(lang, len(languages)) for lang in encoded.dictionary.to_pylist()],
                             dtype=np.int8)
            langs.append(codes[encoded.indices.to_numpy()])
            records.append(batch.column("record").to_numpy().copy())
            keys.append(batch.column("key").to_numpy().copy())
        empty = np.zeros(0, dtype=np.int32)
        return cls.from_columns(np.concatenate(records or [empty]), np.concatenate(langs or [empty.astype(np.int8)]),
                                list(languages), np.concatenate(keys or [empty]))

    @property
    def num_records(self) -> int:
        return len(self.keys)

    def record_set(self, languages: Sequence[str] | None = None) -> RecordSet:
        """The composer's input, with only `languages` (all the pool's if None)."""
        keep = [j for j, lang in enumerate(self.languages) if languages is None or lang in languages]
        return RecordSet(tuple(self.languages[j] for j in keep), self.has_language[:, keep], self.keys)

    def rows(self, records: Sequence[int], langs: Sequence[str]) -> np.ndarray:
        """The row of each (record, language): its record's first row plus the record's
        languages before it."""
        records = np.asarray(records, dtype=np.int64)
        columns = np.array([self.languages.index(lang) for lang in langs], dtype=np.int64)
        before = np.cumsum(self.has_language[records], axis=1)[np.arange(len(records)), columns] - 1
        return self.start[records] + before


class PairPool:
    """The prepared pool for training: its index, and its texts read row by row.

    `take(rows)` gives the TEXT_COLUMNS of the pool's rows by number: a `PoolReader` over
    the shards (`open`), which reads only the record batches holding them, or an in-memory
    table's `take` (`from_table`).
    """

    def __init__(self, take: Callable[[np.ndarray], "pa.Table"], index: PoolIndex, candidate_context: bool = False):
        self.take = take
        self.index = index
        self.candidate_context = candidate_context

    @classmethod
    def from_table(cls, table, candidate_context: bool = False) -> "PairPool":
        """From TRAIN_PAIR_SCHEMA rows in memory, sorted by (record, lang)."""
        return cls(table.select(TEXT_COLUMNS).take, PoolIndex.from_table(table), candidate_context)

    @classmethod
    def open(cls, prepared_dir: str | Path, candidate_context: bool = False,
             index: PoolIndex | None = None) -> "PairPool":
        from hbt.data.pool import PoolReader

        index = index if index is not None else PoolIndex.read(prepared_dir)
        return cls(PoolReader(prepared_dir, TEXT_COLUMNS).take, index, candidate_context)

    def texts(self, examples: Sequence[Example], num_negatives: int, step: int,
              step_keys: AbstractSet[int] = frozenset()) -> StepTexts:
        """The texts of `examples`; `step_keys`: the positive keys of the whole global step,
        whose sentences are never picked as hard negatives (module doc)."""
        records = [record for record, _, _ in examples]
        query_rows = self.index.rows(records, [q for _, q, _ in examples])
        passage_rows = self.index.rows(records, [p for _, _, p in examples])
        rows = self.take(np.concatenate([query_rows, passage_rows]))  # one read per record batch
        query = rows.slice(0, len(examples)).select(["parallel_id", "question"]).to_pydict()
        passage = rows.slice(len(examples)).select(TEXT_COLUMNS[2:]).to_pydict()
        context = self.candidate_context
        keys = self.index.keys[records].tolist()
        questions, positives, negatives, neg_keys = [], [], [], []
        mask = np.zeros((len(examples), num_negatives), dtype=bool)  # (B, N)
        for i, key in enumerate(keys):
            questions.append(query["question"][i])
            positives.append(candidate_text(passage["positive"][i], passage["context"][i], context))
            pool = [(text, k) for text, k in zip(passage["hard_negatives"][i] or (), passage["negative_keys"][i] or ())
                    if k not in step_keys and k != key]
            take = min(num_negatives, len(pool))
            start = step % len(pool) if pool else 0
            chosen = [pool[(start + j) % len(pool)] for j in range(take)]
            mask[i, :take] = True
            padding = num_negatives - take
            negatives.append([candidate_text(text, passage["context"][i], context) for text, _ in chosen]
                             + [""] * padding)
            neg_keys.append([k for _, k in chosen] + [-1] * padding)
        return StepTexts(query["parallel_id"], questions, positives, negatives, mask, keys, neg_keys)


def tokenize_step(tokenizer, model_cfg: ModelConfig, texts: StepTexts) -> dict[str, np.ndarray]:
    """Tokenize a step into the layout of the module docstring (numpy, for Ray Data and torch alike)."""
    passages = texts.positives + [n for row in texts.negatives for n in row]
    ids = tokenizer([model_cfg.query_prefix + q for q in texts.questions]
                    + [model_cfg.passage_prefix + p for p in passages],
                    truncation=True, max_length=model_cfg.max_length,
                    return_attention_mask=False, return_token_type_ids=False)["input_ids"]
    lengths = np.fromiter(map(len, ids), dtype=np.int32, count=len(ids))
    b, n = texts.negative_mask.shape
    return {
        "token_ids": np.fromiter(chain.from_iterable(ids), dtype=np.int32, count=int(lengths.sum())),  # (S,)
        "lengths": lengths,                                                                             # (B*(2+N),)
        "negative_mask": texts.negative_mask,                                                           # (B, N)
        # Keys shifted by one so that 0 means "no key" (a padded or nobody's negative).
        "positive_key": np.array(texts.positive_keys, dtype=np.int64) + 1,                 # (B,)
        "negative_key": np.array(texts.negative_keys, dtype=np.int64).reshape(b, n) + 1,   # (B, N)
    }
