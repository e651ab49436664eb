"""Sharded faiss search with an exact top-k merge (inner product, larger is better).

Evaluation keeps one index shard per candidate language (LAReQA: vectors passed in,
:class:`ShardActor`) or per embeddings shard file (BEIR: :class:`FileShards`, built from
memory-mapped files by one actor per node); the search visits every shard and merges the
per-shard top-k lists with ``faiss.ResultHeap(keep_max=True)``.  For exact (``"Flat"``) shards
the merged result equals a single flat index over all rows.

Conventions (as in faiss):

* ``xq`` is ``(nq, d)``; results are ``D`` (float32, ``(nq, k)``, scores sorted
  in decreasing order) and ``I`` (int64, ``(nq, k)``, *global* row ids).
* If fewer than ``k`` rows exist in total, the missing trailing slots are padded
  exactly like faiss pads: ``I == -1`` and ``D == -FLT_MAX``
  (``-np.finfo(np.float32).max``).  The shape is always ``(nq, k)``.
* Input vectors of any real numeric dtype (float64, float16, ints) are converted
  to contiguous float32; anything else (bool, complex, object, strings), a wrong
  number of dimensions, a wrong vector size, or ``k < 1`` raises ``ValueError``
  with a one-line message.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import faiss
import numpy as np
import ray

from hbt.errors import HbtError

#: Score faiss (and this module) uses for padded slots, with ``I == -1``.
PAD_SCORE = float(-np.finfo(np.float32).max)


def _as_matrix(x, name: str, d: int | None = None) -> np.ndarray:
    """Validate a 2-D real matrix and return it as C-contiguous float32."""
    x = np.asarray(x)
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"{name} must have a real numeric dtype, got {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, d), got shape {x.shape}")
    if d is not None and x.shape[1] != d:
        raise ValueError(f"{name} has dimension {x.shape[1]}, index expects {d}")
    return np.ascontiguousarray(x, dtype=np.float32)


def _check_k(k) -> int:
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _faiss_message(error: Exception) -> str:
    """faiss's own reason, without the C++ function, file and assertion it prepends."""
    text = " ".join(str(error).split()) or type(error).__name__
    reason = re.split(r" at \S+:\d+: ", text)[-1]
    return re.sub(r"^Error: '.*?' failed: ", "", reason)


def check_index_factory(factory: str, d: int, metric: int = faiss.METRIC_INNER_PRODUCT) -> None:
    """Refuse (HbtError, one line) a factory string faiss cannot build for `d`-dim vectors."""
    try:
        faiss.index_factory(d, factory, metric)
    except RuntimeError as error:
        raise HbtError(f"eval.index_factory {factory!r}: faiss cannot build it for {d}-dim vectors "
                       f"({_faiss_message(error)})") from None


def build_index(xb, factory: str = "Flat", metric: int = faiss.METRIC_INNER_PRODUCT) -> faiss.Index:
    """Build ``faiss.index_factory(d, factory, metric)``, train it if needed, add ``xb``.

    The index stays on the CPU: hbt ships faiss-cpu only (docs/evaluation.md, "faiss on the
    CPU"). An index that cannot train on ``xb`` (e.g. more IVF lists than vectors) is a one-line ``HbtError``.
    """
    xb = _as_matrix(xb, "xb")
    n, d = xb.shape
    if d < 1:
        raise ValueError(f"xb must have at least one column, got shape {xb.shape}")
    check_index_factory(factory, d, metric)
    index = faiss.index_factory(d, factory, metric)
    if not index.is_trained:
        if n == 0:
            raise ValueError(f"index {factory!r} needs training but xb is empty")
        try:
            index.train(xb)
        except RuntimeError as error:
            raise HbtError(f"eval.index_factory {factory!r} cannot train on a shard of {n} vectors "
                           f"({_faiss_message(error)})") from None
    if n:
        index.add(xb)
    return index


class IndexShard:
    """One faiss index plus the global id (int64) of each of its rows, in add order."""

    def __init__(self, index: faiss.Index, ids):
        ids = np.asarray(ids)
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"ids must be a 1-D integer array, got shape {ids.shape} dtype {ids.dtype}")
        if len(ids) != index.ntotal:
            raise ValueError(f"got {len(ids)} ids for an index of {index.ntotal} rows")
        if len(ids) and ids.min() < 0:
            raise ValueError("ids must be non-negative (-1 marks padding)")
        self.index = index
        self.ids = ids.astype(np.int64)

    @classmethod
    def from_vectors(cls, xb, ids, factory: str = "Flat") -> IndexShard:
        return cls(build_index(xb, factory), ids)

    @property
    def d(self) -> int:
        return self.index.d

    @property
    def ntotal(self) -> int:
        return self.index.ntotal

    def search(self, xq, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` of this shard: ``(D, I_global)``, padded with ``(-FLT_MAX, -1)``."""
        k = _check_k(k)
        xq = _as_matrix(xq, "xq", self.d)
        nq, d = xq.shape
        if self.ntotal == 0:
            return np.full((nq, k), PAD_SCORE, np.float32), np.full((nq, k), -1, np.int64)
        D, I = self.index.search(xq, k)
        I_global = np.where(I >= 0, self.ids[np.maximum(I, 0)], -1).astype(np.int64)
        return D, I_global


def merge_topk(results: Sequence[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard ``(D, I)`` lists (each ``(nq, k_i)``) into the global top-``k``."""
    k = _check_k(k)
    if not results:
        raise ValueError("merge_topk needs at least one (D, I) result")
    nq = results[0][0].shape[0]
    rh = faiss.ResultHeap(nq, k, keep_max=True)
    for D, I in results:
        D, I = np.asarray(D), np.asarray(I)
        if D.ndim != 2 or D.shape != I.shape or D.shape[0] != nq:
            raise ValueError(f"result shapes D{D.shape} I{I.shape} do not match nq={nq}")
        rh.add_result(D, I)
    rh.finalize()
    D, I = rh.D, rh.I
    D[I < 0] = PAD_SCORE
    return D, I


def search_shards(shards: Sequence[IndexShard], xq, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Search every shard for ``k`` results and merge them exactly."""
    if not shards:
        raise ValueError("search_shards needs at least one shard")
    return merge_topk([s.search(xq, k) for s in shards], k)


# CPU shards: no GPU asked for (Ray hides every GPU from the actor), none used. Not restartable:
# its vectors come by value through the object store, where a restart could not count on them
# (Ray says so at error level for every such actor, ray-project/ray#53727); an actor that dies
# fails the evaluation, which is rerun whole (minutes at XQuAD-R size).
@ray.remote(num_cpus=0, num_gpus=0, max_restarts=0)
class ShardActor:
    """A Ray actor owning one or more :class:`IndexShard`, built inside the actor process from
    ``parts``: ``[(xb, ids), ...]``; a search returns the merged top-k of its shards.

    It reserves no CPU by default: every search fans out to all shard actors, so they must all
    be alive at once, and with a CPU reservation each, actors beyond the cluster's CPU slots would
    wait for a slot that never frees (0.25 CPU each stalled the 9th of 11 on 2 CPUs). Searches
    are short bursts; reserve CPUs with ``.options(num_cpus=...)`` if needed.
    """

    def __init__(self, parts: Sequence[tuple[np.ndarray, np.ndarray]], factory: str = "Flat"):
        self.shards = [IndexShard.from_vectors(xb, ids, factory) for xb, ids in parts]

    def search(self, xq, k: int, parts: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The merged top-k of its shards, or of those at `parts` (positions in its `parts`)."""
        return search_shards(self.shards if parts is None else [self.shards[i] for i in parts], xq, k)

    def ntotal(self) -> int:
        return sum(shard.ntotal for shard in self.shards)


def start_shard_actors(parts: Sequence[tuple[np.ndarray, np.ndarray]], factory: str = "Flat") -> list:
    """The shards ``[(xb, ids), ...]`` dealt round-robin to one :class:`ShardActor` per alive
    Ray node, spread over the nodes: each node holds its share in one process. One process per
    shard cost more than the searches on small corpora (on one 2-core node, starting 11 of them
    took seconds where searching takes well under one)."""
    nodes = sum(1 for node in ray.nodes() if node["Alive"])
    n = max(1, min(len(parts), nodes))
    return [ShardActor.options(scheduling_strategy="SPREAD").remote(list(parts[i::n]), factory) for i in range(n)]


class NamedShards:
    """One shard per name (LAReQA: per candidate language), searched all together or a few at a
    time, in process or dealt to :class:`ShardActor`s (`start_shard_actors`: part i is shard
    i // n of actor i % n). Close it to free the actors."""

    def __init__(self, parts: dict[str, tuple[np.ndarray, np.ndarray]], factory: str, on_ray: bool):
        self.names = list(parts)
        self.actors = start_shard_actors(list(parts.values()), factory) if on_ray else []
        self.shards = {} if on_ray else {name: IndexShard.from_vectors(xb, ids, factory)
                                         for name, (xb, ids) in parts.items()}

    def search(self, xq, k: int, names: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k over the shards of `names` (all by default), merged exactly."""
        names = self.names if names is None else list(names)
        if not self.actors:
            return search_shards([self.shards[name] for name in names], xq, k)
        n = len(self.actors)
        held: dict[int, list[int]] = {}  # actor -> its local shard positions
        for name in names:
            i = self.names.index(name)
            held.setdefault(i % n, []).append(i // n)
        k = _check_k(k)
        xq_ref = ray.put(_as_matrix(xq, "xq"))
        return merge_topk(ray.get([self.actors[a].search.remote(xq_ref, k, local) for a, local in held.items()]), k)

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []


def search_actor_shards(actors: Sequence, xq, k: int, method: str = "search") -> tuple[np.ndarray, np.ndarray]:
    """Search all shard actor handles in parallel (`method`: "search", or a
    :class:`FileShards`' "exact_search") and merge exactly.

    ``xq`` is validated and converted here, then put once in the object store.
    A shard-side error (e.g. wrong dimension) surfaces as a ``RayTaskError``
    that is also an instance of ``ValueError``.
    """
    if not actors:
        raise ValueError("search_actor_shards needs at least one actor")
    k = _check_k(k)
    xq_ref = ray.put(_as_matrix(xq, "xq"))
    return merge_topk(ray.get([getattr(a, method).remote(xq_ref, k) for a in actors]), k)


# ---------------------------------------------------------------- shards read from files

ADD_BLOCK = 65_536  # rows copied from a memory-mapped shard into an index (or scored exactly) at once


def search_parameters(index: faiss.Index, factory: str, nprobe: int, ef_search: int) -> faiss.Index:
    """Set the search-time knob of an approximate index: IVF lists probed, HNSW candidates kept."""
    space = faiss.ParameterSpace()
    if "IVF" in factory:
        space.set_index_parameter(index, "nprobe", nprobe)
    if "HNSW" in factory:
        space.set_index_parameter(index, "efSearch", ef_search)
    return index


def file_blocks(path, block: int = ADD_BLOCK):
    """(first row, (m, d) float32 rows) of an (n, d) .npy file, `block` rows at a time, read
    rather than memory-mapped: a mapping would keep every page read resident in this process."""
    header = np.load(path, mmap_mode="r")
    (n, d), offset = header.shape, header.offset
    del header
    with open(path, "rb") as f:
        f.seek(offset)
        for start in range(0, n, block):
            rows = np.fromfile(f, dtype=np.float32, count=min(block, n - start) * d)
            yield start, rows.reshape(-1, d)


def _training_sample(path, size: int, seed: int) -> np.ndarray:
    """A seeded sample of at most `size` rows (sorted) of a shard file, copied out of a mapping
    that ends here."""
    xb = np.load(path, mmap_mode="r")  # (n, d)
    rows = np.sort(np.random.default_rng(seed).choice(len(xb), size=min(len(xb), size), replace=False))
    return np.ascontiguousarray(xb[rows])


def index_from_file(path, factory: str, train_sample: int, seed: int = 0) -> faiss.Index:
    """The index of an (n, d) float32 shard file, trained (IVF, PQ) on a seeded sample of at
    most `train_sample` of its rows, then filled block by block."""
    d = np.load(path, mmap_mode="r").shape[1]
    check_index_factory(factory, d)
    index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        sample = _training_sample(path, train_sample, seed)
        try:
            index.train(sample)
        except RuntimeError as error:
            raise HbtError(f"eval.index_factory {factory!r} cannot train on {len(sample)} vectors of {path} "
                           f"({_faiss_message(error)})") from None
    for _, xb in file_blocks(path):
        index.add(xb)
    return index


def exact_search_file(path, first_id: int, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k (inner product) of a shard file, block by block: what a Flat index would
    return, without holding one."""
    results = []
    for start, xb in file_blocks(path):
        D, I = faiss.knn(xq, xb, min(k, len(xb)), metric=faiss.METRIC_INNER_PRODUCT)
        results.append((D, np.where(I >= 0, I + first_id + start, -1)))
    return merge_topk(results, k)


class FileShards:
    """The indexes of embedding shard files (`hbt.index.store`), in process or as a
    :data:`FileShardActor`: ``files`` is ``[(path, first_id), ...]``, a shard's rows having ids
    first_id, first_id + 1, ..."""

    def __init__(self, files: Sequence[tuple[str, int]], factory: str, nprobe: int, ef_search: int,
                 train_sample: int):
        self.files = list(files)
        self.shards = []
        for path, first_id in self.files:
            index = search_parameters(index_from_file(path, factory, train_sample), factory, nprobe, ef_search)
            self.shards.append(IndexShard(index, first_id + np.arange(index.ntotal)))

    def search(self, xq, k: int) -> tuple[np.ndarray, np.ndarray]:
        return search_shards(self.shards, xq, k)

    def exact_search(self, xq, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The exact top-k over the same files (what Flat returns): the reference of the recall."""
        xq = _as_matrix(xq, "xq")
        return merge_topk([exact_search_file(path, first_id, xq, k) for path, first_id in self.files], k)

    def ntotal(self) -> int:
        return sum(shard.ntotal for shard in self.shards)


# Restartable: a restarted actor rebuilds its indexes from the same files (its arguments are
# paths), and the search it was running is retried. Reserves no CPU, as ShardActor.
FileShardActor = ray.remote(num_cpus=0, num_gpus=0, max_restarts=2, max_task_retries=2)(FileShards)


def start_file_shard_actors(files: Sequence[tuple[str, int]], factory: str, nprobe: int, ef_search: int,
                            train_sample: int) -> list:
    """The shard files dealt round-robin to one :class:`FileShardActor` per alive Ray node."""
    nodes = sum(1 for node in ray.nodes() if node["Alive"])
    n = max(1, min(len(files), nodes))
    return [FileShardActor.options(scheduling_strategy="SPREAD").remote(list(files[i::n]), factory, nprobe,
                                                                       ef_search, train_sample)
            for i in range(n)]
