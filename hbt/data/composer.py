"""The hybrid batch composer: which (record, query language, passage language)
examples make up each training batch.

Hybrid batch training (arXiv 2408.10536) mixes two kinds of batch:

* **xx** (monolingual): one language ``L`` for the whole batch, every example
  is ``(pid, L, L)``;
* **xy** (cross-lingual): each example pairs a question in one language with
  its positive in a *different* language of the same record.

In ``hybrid`` mode a step is xx with probability ``alpha``, else xy.

Determinism and ranks
---------------------
The batch *kind* and the xx language of step ``s`` are drawn from
``np.random.default_rng([seed, step])`` only, so every rank agrees on them.
Examples are not drawn per rank: every rank composes the same **global** batch
of ``batch_size * world_size`` examples and keeps its own contiguous slice
``[rank * batch_size, (rank + 1) * batch_size)``. Hence no ``parallel_id``
repeats within a step, neither within a rank nor across ranks, at the cost of
each rank doing the (cheap) work of composing the whole global batch.

Records are drawn epoch-style: each pool (one per language for xx, one of the
records with >= 2 languages for xy) walks a seeded permutation, and every
record in the pool is seen before any repeats, so a batch never contains one
record twice.

Positive keys (``hbt.data.positives``): records whose positives are the same
passage share a key, and no two examples of a global batch may share one (the
other's positive would be the query's own answer, scored as a negative). Each
epoch's permutation is packed first-fit into global batches of distinct keys:
a record joins the oldest unfilled batch that lacks its key, and batches are
used in the order they fill. Records left in unfilled batches at the end of the
epoch are skipped (drop-last), as is a permutation's tail when every key is
distinct (then the packing is the permutation itself). A pool with fewer
distinct keys than a global batch can never fill one: refused at construction.

The state is the step counter plus one ``(epoch, position)`` cursor per pool,
and a fingerprint of the config, records and keys so that a state can't
silently be loaded into a composer fed with different data.

Scale: records are numbers, their languages a boolean matrix and their keys an
integer array (``RecordSet``), so a pool of millions of records costs tens of
megabytes. An epoch's packing is produced lazily, a few global batches ahead of
the step that asks for them (``_EpochPacking``), and a resumed composer
rebuilds the packing of the current epoch up to its cursor.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Literal, Mapping, Sequence, Union

import numpy as np
import pyarrow as pa

from hbt.data.columns import codes
from hbt.errors import ConfigError

_MODES = ("xx", "xy", "hybrid")
_LANGUAGE_SAMPLING = ("uniform", "proportional")
_XY_POOL = "<xy>"  # pool key of the cross-lingual pool; not a language code

# Distinct streams derived from (seed, step) / (seed, pool, epoch) so that the
# draws of one purpose never correlate with those of another.
_STREAM_KIND = 0
_STREAM_PAIRS = 1
_STREAM_PERMUTATION = 2


class ComposerConfigError(ConfigError, ValueError):
    """A composer config or record set can't produce the requested batches.

    A ``ValueError`` for library callers, a ``ConfigError`` for the CLI (which
    prints it as one line).
    """


@dataclass
class ComposerConfig:
    """How batches are composed.

    Example:
        >>> ComposerConfig(mode="hybrid", alpha=0.5, batch_size=32, seed=0)
        ComposerConfig(mode='hybrid', alpha=0.5, batch_size=32, seed=0, language_sampling='uniform')
    """

    mode: Literal["xx", "xy", "hybrid"] = "hybrid"
    alpha: float = 0.5                  # probability of an xx batch in hybrid mode
    batch_size: int = 32                # per rank
    seed: int = 0
    # How an xx batch picks its language: uniformly over training languages,
    # or in proportion to the number of records available in each language.
    language_sampling: Literal["uniform", "proportional"] = "uniform"

    def validate(self) -> None:
        """Raise ``ComposerConfigError`` (a ``ValueError``) on a bad value."""
        if self.mode not in _MODES:
            raise ComposerConfigError(f"composer mode must be one of {_MODES}, got {self.mode!r}")
        if self.language_sampling not in _LANGUAGE_SAMPLING:
            raise ComposerConfigError(
                f"language_sampling must be one of {_LANGUAGE_SAMPLING}, got {self.language_sampling!r}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) \
                or not 0.0 <= float(self.alpha) <= 1.0:
            raise ComposerConfigError(f"alpha must be a number in [0, 1], got {self.alpha!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, (int, np.integer)) \
                or self.batch_size < 1:
            raise ComposerConfigError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ComposerConfigError(f"seed must be an integer >= 0, got {self.seed!r}")


Example = tuple[Union[str, int], str, str]  # (parallel_id or record number, query_lang, passage_lang)


@dataclass
class Batch:
    """One rank's share of one training step."""

    step: int
    kind: Literal["xx", "xy"]
    examples: list[Example] = field(default_factory=list)


@dataclass(frozen=True)
class RecordSet:
    """The composer's input as arrays: R records (numbered in `parallel_id` order), the
    languages each is available in, and each one's positive key.

    `names` (the parallel ids) only label examples; without them (a training pool of
    millions of records) an example names its record by number.
    """

    languages: tuple[str, ...]       # (L,) sorted
    has_language: np.ndarray         # (R, L) bool
    keys: np.ndarray                 # (R,) int64: equal for records whose positives are one passage
    names: Sequence[str] | None = None

    @classmethod
    def from_mapping(cls, records: Mapping[str, Sequence[str]],
                     positive_keys: Mapping[str, str] | None = None) -> "RecordSet":
        """From `parallel_id -> languages` (and `parallel_id -> positive key`, default: its
        own id); canonical, so the mapping's order never changes a batch."""
        names = sorted(map(str, records))
        languages = tuple(sorted({str(lang) for langs in records.values() for lang in langs}))
        column = {lang: j for j, lang in enumerate(languages)}
        has_language = np.zeros((len(names), len(languages)), dtype=bool)
        for i, name in enumerate(names):
            has_language[i, [column[str(lang)] for lang in records[name]]] = True
        keys = positive_keys or {}
        return cls(languages, has_language, _key_codes([str(keys.get(name, name)) for name in names]), names)

    def label(self, record: int) -> Union[str, int]:
        return self.names[record] if self.names is not None else record


class _EpochPacking:
    """One epoch's permutation of a pool packed first-fit into global batches of distinct
    keys (``pack_distinct``), produced a batch at a time.

    Packing is sequential (a record's batch depends on every earlier record's), but the
    batches fill in order, so the first k full batches need only the permutation's prefix:
    the rest is packed when a step asks for it.
    """

    def __init__(self, order: np.ndarray, keys: np.ndarray, size: int):
        self.order = order                  # (n,) record numbers, this epoch's permutation
        self.keys = keys                    # (R,) every record's key
        self.size = size
        self.position = 0                   # next element of `order` to place
        self.open: list[tuple[list[int], set[int]]] = []  # unfilled batches, oldest first
        self.full: deque[list[int]] = deque()
        self.taken = 0                      # full batches handed out

    def next(self) -> list[int] | None:
        """The next full batch, or None when the epoch has no more (drop-last)."""
        chunk = 4 * self.size
        while not self.full and self.position < len(self.order):
            block = self.order[self.position:self.position + chunk]
            self.position += len(block)
            for record, key in zip(block.tolist(), self.keys[block].tolist()):
                self._place(record, key)
        if not self.full:
            return None
        self.taken += 1
        return self.full.popleft()

    def _place(self, record: int, key: int) -> None:
        for i, (members, used) in enumerate(self.open):
            if key not in used:
                break
        else:
            members, used, i = [], set(), len(self.open)
            self.open.append((members, used))
        members.append(record)
        used.add(key)
        if len(members) == self.size:
            self.full.append(members)
            del self.open[i]


class HybridBatchComposer:
    """Deterministic, resumable, rank-aware composer of xx / xy / hybrid batches.

    ``records`` maps ``parallel_id`` to the languages that record is available
    in (or is a ``RecordSet``); ``positive_keys`` maps it to its positive key
    (default: its own id, so every record's positive is distinct). Each rank
    builds its own composer with the same records and config and its own
    ``rank``; see the module docstring for how ranks share a step.

    Example:
        >>> records = {"q1": ["en", "de"], "q2": ["en", "de", "fr"], "q3": ["en", "fr"]}
        >>> c = HybridBatchComposer(records, ComposerConfig(mode="xy", batch_size=2, seed=1))
        >>> b = c.next_batch()
        >>> b.kind, len(b.examples), all(q != p for _, q, p in b.examples)
        ('xy', 2, True)
        >>> state = c.state_dict()
        >>> nxt = c.next_batch()
        >>> c2 = HybridBatchComposer(records, ComposerConfig(mode="xy", batch_size=2, seed=1))
        >>> c2.load_state_dict(state)
        >>> c2.next_batch() == nxt
        True
    """

    def __init__(self, records: Mapping[str, Sequence[str]] | RecordSet, config: ComposerConfig,
                 rank: int = 0, world_size: int = 1, positive_keys: Mapping[str, str] | None = None):
        config.validate()
        if not isinstance(world_size, int) or world_size < 1:
            raise ComposerConfigError(f"world_size must be an integer >= 1, got {world_size!r}")
        if not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ComposerConfigError(f"rank must be in [0, {world_size}), got {rank!r}")
        self.config = config
        self.rank = rank
        self.world_size = world_size
        self._global_size = config.batch_size * world_size

        self._set = records if isinstance(records, RecordSet) else RecordSet.from_mapping(records, positive_keys)
        has = self._set.has_language
        # Languages with at least one record; pools hold record numbers in parallel_id order,
        # as int32 (4 bytes a record per pool: 80 MB per pool for 20M records).
        present = np.flatnonzero(has.any(axis=0)) if has.size else np.zeros(0, dtype=np.int64)
        self._languages = [self._set.languages[j] for j in present]
        self._pools: dict[str, np.ndarray] = {
            self._set.languages[j]: np.flatnonzero(has[:, j]).astype(np.int32) for j in present}
        multilingual = has.sum(axis=1) >= 2 if has.size else np.zeros(0, dtype=bool)
        self._pools[_XY_POOL] = np.flatnonzero(multilingual).astype(np.int32)

        sizes = np.array([len(self._pools[lang]) for lang in self._languages], dtype=float)
        if config.language_sampling == "proportional" and len(sizes):
            self._language_p = sizes / sizes.sum()
        else:
            self._language_p = None  # uniform

        self._check_enough_records()
        self._fingerprint = self._compute_fingerprint()
        self._step = 0
        self._cursors: dict[str, list[int]] = {pool: [0, 0] for pool in self._pools}  # [epoch, pos]
        self._packings: dict[str, tuple[int, _EpochPacking]] = {}

    @property
    def languages(self) -> list[str]:
        """The languages that have records, sorted."""
        return list(self._languages)

    # -- construction checks -------------------------------------------------

    def _may_draw(self, kind: str) -> bool:
        mode, alpha = self.config.mode, self.config.alpha
        if kind == "xx":
            return mode == "xx" or (mode == "hybrid" and alpha > 0)
        return mode == "xy" or (mode == "hybrid" and alpha < 1)

    def _distinct_keys(self, pool: str) -> int:
        return _count_distinct(self._set.keys[self._pools[pool]])

    def _check_enough_records(self) -> None:
        # Fail at construction, not hours into training at the first unlucky step.
        need = self._global_size
        per = f"batch_size*world_size={self.config.batch_size}*{self.world_size}"
        if self._may_draw("xx"):
            if not self._languages:
                raise ComposerConfigError("xx batches need records, but the record set is empty")
            # Both sampling schemes can draw every language with at least one record.
            for lang in self._languages:
                n, distinct = len(self._pools[lang]), self._distinct_keys(lang)
                if n < need:
                    raise ComposerConfigError(
                        f"xx batches need {need} records ({per}) in every language, "
                        f"but language {lang!r} has only {n}")
                if distinct < need:
                    raise ComposerConfigError(
                        f"xx batches need {need} records ({per}) with distinct positives in every language, "
                        f"but the pool of language {lang!r} has {distinct} distinct positives among {n} records")
        if self._may_draw("xy"):
            n, distinct = len(self._pools[_XY_POOL]), self._distinct_keys(_XY_POOL)
            if n < need:
                raise ComposerConfigError(
                    f"xy batches need {need} records ({per}) with >= 2 languages, but only {n} have")
            if distinct < need:
                raise ComposerConfigError(
                    f"xy batches need {need} records ({per}) with distinct positives, but the xy pool "
                    f"(records with >= 2 languages) has {distinct} distinct positives among {n} records")

    def _compute_fingerprint(self) -> str:
        digest = hashlib.sha256(json.dumps({
            "config": asdict(self.config),
            "world_size": self.world_size,  # the global batch size shapes the cursors
            "languages": self._set.languages,
        }, sort_keys=True, default=str).encode())
        # The records as arrays: which languages each has and which share a positive.
        digest.update(np.ascontiguousarray(self._set.has_language).tobytes())
        digest.update(codes(pa.array(self._set.keys))[0].tobytes())  # the grouping, not the key names
        return digest.hexdigest()

    # -- sampling ------------------------------------------------------------

    def _kind_and_language(self, step: int) -> tuple[str, str | None]:
        # A pure function of (seed, step): every rank agrees on the kind and language.
        rng = np.random.default_rng([self.config.seed, _STREAM_KIND, step])
        u = rng.random()
        mode = self.config.mode
        # u in [0, 1): alpha=0 never gives xx, alpha=1 always does.
        kind = mode if mode != "hybrid" else ("xx" if u < self.config.alpha else "xy")
        if kind == "xy":
            return kind, None
        idx = rng.choice(len(self._languages), p=self._language_p)
        return kind, self._languages[int(idx)]

    def _packing(self, pool: str, epoch: int, taken: int) -> _EpochPacking:
        """The epoch's packing of ``pool`` with ``taken`` batches handed out (rebuilt and
        replayed after a resume, or when a rank's stream asks for an earlier step)."""
        cached = self._packings.get(pool)
        if cached is not None and cached[0] == epoch and cached[1].taken == taken:
            return cached[1]
        # Seeded by the pool's name (not its index) so adding an unrelated
        # language doesn't reshuffle the others.
        pool_key = int.from_bytes(hashlib.sha256(pool.encode()).digest()[:8], "little")
        rng = np.random.default_rng([self.config.seed, _STREAM_PERMUTATION, pool_key, epoch])
        members = self._pools[pool]
        packing = _EpochPacking(members[rng.permutation(len(members))], self._set.keys, self._global_size)
        for _ in range(taken):
            packing.next()
        self._packings[pool] = (epoch, packing)
        return packing

    def _take(self, pool: str) -> np.ndarray:
        """The next global batch of records with distinct keys from ``pool``; advances its cursor."""
        epoch, pos = self._cursors[pool]
        n = self._global_size
        taken = self._packing(pool, epoch, pos // n).next()
        if taken is None:  # the epoch is used up: drop-last, never wrap
            epoch, pos = epoch + 1, 0
            taken = self._packing(pool, epoch, 0).next()
        self._cursors[pool] = [epoch, pos + n]
        return np.asarray(taken)

    def _compose_global(self, step: int) -> tuple[str, list[Example]]:
        kind, lang = self._kind_and_language(step)
        label = self._set.label
        if kind == "xx":
            return kind, [(label(r), lang, lang) for r in self._take(lang).tolist()]
        records = self._take(_XY_POOL)
        rng = np.random.default_rng([self.config.seed, _STREAM_PAIRS, step])
        examples = []
        for r in records.tolist():
            langs = np.flatnonzero(self._set.has_language[r])  # sorted, as the languages are
            q, p = rng.choice(len(langs), size=2, replace=False)  # ordered, q != p
            examples.append((label(r), self._set.languages[langs[q]], self._set.languages[langs[p]]))
        return kind, examples

    # -- public API ----------------------------------------------------------

    @property
    def step(self) -> int:
        """The step the next call to ``next_batch`` will return."""
        return self._step

    def next_batch(self) -> Batch:
        """This rank's slice of the next global batch."""
        batch = self.next_global_batch()
        lo = self.rank * self.config.batch_size
        return Batch(step=batch.step, kind=batch.kind, examples=batch.examples[lo:lo + self.config.batch_size])

    def next_global_batch(self) -> Batch:
        """The next step for all ranks at once: ``batch_size * world_size`` examples, rank
        ``r``'s slice being ``examples[r * batch_size:(r + 1) * batch_size]``.

        Advances the state exactly as ``next_batch`` does; a caller that needs the whole
        step (its positive keys, every rank's slice) composes it once.
        """
        step = self._step
        kind, examples = self._compose_global(step)
        self._step += 1
        return Batch(step=step, kind=kind, examples=examples)

    def __iter__(self) -> Iterator[Batch]:
        """Batches forever, continuing from the current state."""
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict[str, Any]:
        """A JSON-serialisable state; the same for every rank of one step."""
        return {
            "step": self._step,
            "cursors": {pool: list(c) for pool, c in sorted(self._cursors.items())},
            "fingerprint": self._fingerprint,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a ``state_dict``; raise ``ValueError`` if it came from a different setup."""
        if state.get("fingerprint") != self._fingerprint:
            raise ComposerConfigError(
                "composer state was saved with a different config, world size or record set")
        cursors = state.get("cursors", {})
        if set(cursors) != set(self._pools):
            raise ComposerConfigError("composer state has cursors for different pools")
        self._step = int(state["step"])
        self._cursors = {pool: [int(c[0]), int(c[1])] for pool, c in cursors.items()}


def pack_distinct(order: Sequence[str], keys: Mapping[str, str], size: int) -> list[str]:
    """``order`` packed first-fit into batches of ``size`` ids with distinct ``keys``, the
    full batches concatenated in the order they fill (the rest dropped): a record joins the
    oldest unfilled batch that lacks its key.

    Example:
        >>> pack_distinct(["a", "b", "c", "d"], {"a": "k", "b": "k", "c": "m", "d": "n"}, 2)
        ['a', 'c', 'b', 'd']
    """
    names = list(order)
    packing = _EpochPacking(np.arange(len(names)), _key_codes([keys[name] for name in names]), size)
    packed: list[str] = []
    while (batch := packing.next()) is not None:
        packed += [names[i] for i in batch]
    return packed


def _key_codes(keys: Sequence[str]) -> np.ndarray:
    """Equal keys -> equal int64 codes."""
    return codes(pa.array(keys, pa.string()))[0]


def _count_distinct(values: np.ndarray) -> int:
    # A sort: numpy's hash-based unique and pyarrow's count_distinct both take several times
    # longer on a million int keys here.
    return int(np.count_nonzero(np.diff(np.sort(values)))) + 1 if len(values) else 0
