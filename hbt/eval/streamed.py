"""A large corpus encoded in a stream into embedding shard files, then searched shard by shard.

The documents are read in blocks of `beir.DOCS_BLOCK` (never all their texts at once), sorted
by token count within a block, cut into chunks of `eval.batch_size * CHUNK_BATCHES`, and each
chunk's embeddings written by whoever encoded it (an encode actor, or this process) into its
rows of the shard file (`hbt.index.store`): the driver holds ids, never embeddings. Chunks in
flight are bounded by the actors (one each, as `ray.util.ActorPool`), so the driver holds one
block of texts. A shard is finished (digested, listed) once all its chunks are written; a rerun
encodes only the shards not finished.

The shard files are then searched where they lie: one `FileShards` per Ray node (or one in
process) builds `eval.index_factory` from them; the per-shard top-k lists merge exactly. With an
approximate factory, the first `eval.recall_queries` queries are also searched exactly (block by
block over the same files) and the approximate top-k's recall of that is reported.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from hbt.config import HbtConfig, ModelConfig
from hbt.eval.encode import CHUNK_BATCHES, start_encode_actors, write_rows
from hbt.index.store import EmbeddingStore

EXACT_FACTORIES = ("Flat",)


class TextEncoder:
    """One encoder for a whole evaluation: in process, or a pool of encode actors on Ray."""

    def __init__(self, model_cfg: ModelConfig, config: HbtConfig, on_ray: bool, shard_dir: Optional[Path] = None):
        """`shard_dir`: where the actors write shard files; on a multi-node Ray, checked to be one
        place on every node."""
        from hbt.model.encoder import Encoder, load_tokenizer, token_counter

        self.batch_size = config.eval.batch_size
        self.actors, self.pending = [], []
        if on_ray:
            from hbt.shared_paths import check_shared, local_model_dir

            check_shared(reads={"--model": local_model_dir(model_cfg.name_or_path)},
                         writes={"eval.embeddings_dir": str(shard_dir) if shard_dir else None})
            self.actors = start_encode_actors(model_cfg, config.eval, config.cluster.cpus_per_worker,
                                              config.cluster.use_gpu)
            self.lengths = token_counter(load_tokenizer(model_cfg.name_or_path), model_cfg)
        else:
            self.encoder = Encoder.from_config(model_cfg).for_inference(config.eval.precision)
            self.lengths = self.encoder.token_lengths
        self.idle = list(self.actors)

    def encode(self, texts: list[str], kind: str) -> np.ndarray:
        """(n, d) embeddings of a few texts (queries), returned here."""
        if not self.actors:
            return np.asarray(self.encoder.encode(texts, kind, self.batch_size), dtype=np.float32)
        import ray

        size = self.batch_size * CHUNK_BATCHES
        parts = [self.actors[i % len(self.actors)].encode.remote(i, texts[s:s + size], kind, self.batch_size)
                 for i, s in enumerate(range(0, len(texts), size))]
        return np.concatenate([emb for _, emb in ray.get(parts)])

    def encode_into(self, path: Path, rows: np.ndarray, texts: list[str], kind: str) -> None:
        """Encode `texts` into `rows` of the shard file at `path`; on actors, once one is free."""
        if not self.actors:
            write_rows(path, rows, np.asarray(self.encoder.encode(texts, kind, self.batch_size), dtype=np.float32))
            return
        if not self.idle:
            self._wait_one()
        actor = self.idle.pop()
        self.pending.append((actor.encode_into.remote(str(path), rows, texts, kind, self.batch_size), actor))

    def _wait_one(self) -> None:
        import ray

        ready, _ = ray.wait([ref for ref, _ in self.pending], num_returns=1)
        done = next(i for i, (ref, _) in enumerate(self.pending) if ref == ready[0])
        ref, actor = self.pending.pop(done)
        ray.get(ref)  # an actor's error surfaces here
        self.idle.append(actor)

    def drain(self) -> None:
        """Wait until every chunk handed out is written."""
        while self.pending:
            self._wait_one()

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)


def model_fingerprint(model_dir: str) -> list:
    """(name, size, mtime) of the model's files: a retrained model at the same path is another key."""
    root = Path(model_dir)
    return sorted([str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns]
                  for p in root.rglob("*") if p.is_file())


def encode_documents(corpus, store: EmbeddingStore, encoder: TextEncoder, progress: Callable[[int], None]) -> None:
    """Every shard of `corpus` (a `beir.BeirCorpus`) not yet finished in `store`, encoded into it."""
    shards = corpus.docs.shards
    finished = {i for i, (count, source) in enumerate(shards) if store.trusted(i, count, source)}
    progress(sum(shards[i][0] for i in finished))
    chunk = encoder.batch_size * CHUNK_BATCHES
    current: Optional[int] = None
    for shard, first, texts in corpus.document_blocks(skip=finished):
        if shard != current:
            _finish(store, encoder, shards, current)
            store.begin(shard, shards[shard][0])
            current = shard
        order = np.argsort(np.asarray(encoder.lengths(texts, "passage")), kind="stable")  # (block,)
        for start in range(0, len(order), chunk):
            picked = order[start:start + chunk]
            encoder.encode_into(store.partial_path(shard), first + picked, [texts[i] for i in picked], "passage")
        progress(len(texts))
    _finish(store, encoder, shards, current)


def _finish(store: EmbeddingStore, encoder: TextEncoder, shards, shard: Optional[int]) -> None:
    if shard is not None:
        encoder.drain()
        store.finish(shard, *shards[shard])


def search_documents(store: EmbeddingStore, corpus, query_emb: np.ndarray, k: int, config: HbtConfig,
                     on_ray: bool) -> tuple[np.ndarray, np.ndarray, dict]:
    """Top-k (scores, doc rows) of every query over the store's shards, and the index's report:
    its factory and, when approximate, its Recall@k against Flat on the first queries."""
    from hbt.index.shards import FileShards, search_actor_shards, start_file_shard_actors

    ev = config.eval
    starts = np.cumsum([0] + [count for count, _ in corpus.docs.shards])
    files = [(str(store.path(i)), int(starts[i])) for i in range(len(corpus.docs.shards))]
    settings = (ev.index_factory, ev.nprobe, ev.ef_search, ev.train_sample)
    exact = ev.index_factory in EXACT_FACTORIES
    sample = query_emb[:ev.recall_queries]
    report = {"factory": ev.index_factory, "exact": exact}
    if on_ray:
        import ray

        actors = start_file_shard_actors(files, *settings)
        try:
            D, I = search_actor_shards(actors, query_emb, k)
            reference = None if exact else search_actor_shards(actors, sample, k, "exact_search")[1]
        finally:
            for actor in actors:
                ray.kill(actor)
    else:
        shards = FileShards(files, *settings)
        D, I = shards.search(query_emb, k)
        reference = None if exact else shards.exact_search(sample, k)[1]
    if reference is not None:
        report.update(nprobe=ev.nprobe, ef_search=ev.ef_search, train_sample=ev.train_sample,
                      recall_queries=len(sample), **{f"recall@{k}_vs_flat": recall_against(I[:len(sample)], reference)})
    return D, I, report


def recall_against(found: np.ndarray, reference: np.ndarray) -> float:
    """Mean over queries of |found ∩ reference| / |reference| (rows of ids, -1 = none)."""
    shares = [len(set(f[f >= 0]) & set(r[r >= 0])) / max(1, int((r >= 0).sum())) for f, r in zip(found, reference)]
    return float(np.mean(shares))


def embeddings_dir(config: HbtConfig, out_dir) -> Path:
    """Where a BEIR corpus's shards go: eval.embeddings_dir, else OUT.embeddings beside OUT."""
    if config.eval.embeddings_dir:
        return Path(config.eval.embeddings_dir)
    out = Path(os.path.abspath(out_dir))
    return out.with_name(out.name + ".embeddings")
