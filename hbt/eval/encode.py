"""Encode every language's queries and candidates exactly once, in length-bucketed chunks.

Each (language, kind) text list is sorted by length and cut into chunks of
`eval.batch_size * CHUNK_BATCHES` texts, so every batch pads little. Chunks go either to
an in-process encoder (`encode_corpus`) or, with Ray up, to a pool of `eval.encode_actors`
`EncodeActor`s that each load the model once (`encode_corpus_on_actors`); results are put
back in table order either way, so both give the same arrays.

Candidate text (`hbt.data.candidates`): the sentence, followed by its paragraph when
`model.candidate_context` is on, exactly as training writes its positives.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional

import numpy as np

from hbt.config import EvalConfig, ModelConfig
from hbt.data.candidates import candidate_texts

CHUNK_BATCHES = 8  # batches per chunk: fine-grained progress and load balance, little call overhead

Embeddings = dict[str, np.ndarray]  # lang -> (n, d), rows in table order


def corpus_languages(corpus) -> list[str]:
    """Languages in the order they appear in the candidates table."""
    return list(dict.fromkeys(corpus.candidates.column("lang").to_pylist()))


def _column_by_lang(table, lang: str, column: str) -> list[str]:
    langs = table.column("lang").to_pylist()
    values = table.column(column).to_pylist()
    return [v for v, l in zip(values, langs) if l == lang]


@dataclass
class Chunk:
    lang: str
    kind: str                # "query" | "passage"
    rows: np.ndarray         # (m,) positions of these texts in the language's table order
    texts: list[str]         # (m,) length-sorted


def corpus_chunks(corpus, eval_cfg: EvalConfig, candidate_context: bool) -> list[Chunk]:
    """Every unique text of the corpus once, as length-sorted chunks."""
    chunks = []
    size = eval_cfg.batch_size * CHUNK_BATCHES
    for lang in corpus_languages(corpus):
        queries = _column_by_lang(corpus.queries, lang, "text")
        candidates = candidate_texts(_column_by_lang(corpus.candidates, lang, "sentence"),
                                     _column_by_lang(corpus.candidates, lang, "context"),
                                     candidate_context)
        for kind, texts in (("query", queries), ("passage", candidates)):
            order = np.argsort([len(t) for t in texts], kind="stable")  # (n,)
            for start in range(0, len(order), size):
                rows = order[start:start + size]
                chunks.append(Chunk(lang, kind, rows, [texts[i] for i in rows]))
    return chunks


def _assemble(corpus, chunks: list[Chunk], results: Iterable[tuple[int, np.ndarray]],
              on_chunk: Callable[[Chunk], None]) -> tuple[Embeddings, Embeddings]:
    """Place each chunk's (m, d) rows at their table positions -> (query_emb, cand_emb)."""
    counts = {("query", l): n for l, n in _counts(corpus.queries).items()}
    counts.update({("passage", l): n for l, n in _counts(corpus.candidates).items()})
    out: dict[tuple[str, str], np.ndarray] = {}
    for index, emb in results:
        chunk = chunks[index]
        key = (chunk.kind, chunk.lang)
        if key not in out:
            out[key] = np.empty((counts[key], emb.shape[1]), dtype=np.float32)
        out[key][chunk.rows] = emb
        on_chunk(chunk)
    langs = corpus_languages(corpus)
    return ({l: out[("query", l)] for l in langs if ("query", l) in out},
            {l: out[("passage", l)] for l in langs if ("passage", l) in out})


def _counts(table) -> dict[str, int]:
    langs = table.column("lang").to_pylist()
    return {l: langs.count(l) for l in dict.fromkeys(langs)}


def _progress(corpus, enabled: bool = True):
    from tqdm import tqdm

    # On stderr, also when not a terminal (Ray job logs); at most one line per 5 s.
    return tqdm(total=corpus.queries.num_rows + corpus.candidates.num_rows, desc="encode", unit="text",
                mininterval=5, disable=not enabled)


def encode_corpus(encoder, corpus, eval_cfg: EvalConfig, candidate_context: bool = False,
                  progress: bool = True) -> tuple[Embeddings, Embeddings]:
    """In process: -> (query_emb {lang: (nq, d)}, cand_emb {lang: (nc, d)}), rows in table order."""
    chunks = corpus_chunks(corpus, eval_cfg, candidate_context)

    def results() -> Iterator[tuple[int, np.ndarray]]:
        for i, chunk in enumerate(chunks):
            yield i, np.asarray(encoder.encode(chunk.texts, chunk.kind, eval_cfg.batch_size), dtype=np.float32)

    with _progress(corpus, progress) as bar:
        return _assemble(corpus, chunks, results(), lambda c: bar.update(len(c.texts)))


class EncodeActor:
    """Holds one `Encoder` (loaded once) in a Ray actor; `torch` threads set explicitly, since
    Ray pins a fractional-CPU actor to one thread."""

    def __init__(self, model_cfg: ModelConfig, threads: Optional[int], use_gpu: bool = False, precision: str = "fp32"):
        import torch

        from hbt.model.encoder import Encoder

        torch.set_num_threads(threads or max(1, os.cpu_count() or 1))
        self.encoder = Encoder.from_config(model_cfg)
        if use_gpu:
            self.encoder.to("cuda")
        self.encoder.for_inference(precision)

    def encode(self, index: int, texts: list[str], kind: str, batch_size: int) -> tuple[int, np.ndarray]:
        return index, np.asarray(self.encoder.encode(texts, kind, batch_size), dtype=np.float32)


# An encode actor whose process dies (killed, out of memory) is restarted and its chunk retried.
ACTOR_RETRIES = 2


def encode_corpus_on_actors(model_cfg: ModelConfig, corpus, eval_cfg: EvalConfig, cpus_per_actor: float,
                            use_gpu: bool = False, actor_class: type = EncodeActor) -> tuple[Embeddings, Embeddings]:
    """Like `encode_corpus`, on `eval_cfg.encode_actors` Ray actors (Ray must be up); passages
    as `model_cfg.candidate_context` says. An actor that dies is restarted, and its chunk
    encoded again, up to ACTOR_RETRIES times (`actor_class`: an `EncodeActor`, or a subclass in tests)."""
    import ray
    from ray.util import ActorPool

    chunks = corpus_chunks(corpus, eval_cfg, model_cfg.resolved_candidate_context())
    remote = ray.remote(actor_class).options(num_cpus=cpus_per_actor, num_gpus=1 if use_gpu else 0,
                                             max_restarts=ACTOR_RETRIES, max_task_retries=ACTOR_RETRIES)
    # threads None: all of the actor's node's cores (counted inside the actor)
    actors = [remote.remote(model_cfg, eval_cfg.encode_threads, use_gpu, eval_cfg.precision)
              for _ in range(eval_cfg.encode_actors)]
    try:
        pool = ActorPool(actors)
        results = pool.map_unordered(
            lambda actor, i: actor.encode.remote(i, chunks[i].texts, chunks[i].kind, eval_cfg.batch_size),
            range(len(chunks)))
        with _progress(corpus) as bar:
            return _assemble(corpus, chunks, results, lambda c: bar.update(len(c.texts)))
    finally:
        for actor in actors:
            ray.kill(actor)


def checked_model(model_dir, model_cfg: ModelConfig, config, start_ray: bool) -> ModelConfig:
    """`model_cfg` at `model_dir`, checked to load, and the index factory to build, before any
    actor starts; then (`start_ray`) Ray started or joined per `config.cluster`."""
    from hbt.index.shards import check_index_factory
    from hbt.model.encoder import check_model, embedding_dim
    from hbt.ray_session import ensure_ray

    model_cfg = model_cfg.model_copy(update={"name_or_path": check_model(str(model_dir))})
    check_index_factory(config.eval.index_factory, embedding_dim(model_cfg.name_or_path))
    if start_ray:
        ensure_ray(config.cluster)
    return model_cfg


def encode_for_eval(model_cfg: ModelConfig, corpus, config) -> tuple[Embeddings, Embeddings]:
    """The corpus encoded once: on Ray actors when Ray is up, in process otherwise."""
    import ray

    from hbt.model.encoder import Encoder
    from hbt.shared_paths import check_shared, local_model_dir

    if not ray.is_initialized():
        encoder = Encoder.from_config(model_cfg).for_inference(config.eval.precision)
        return encode_corpus(encoder, corpus, config.eval, model_cfg.resolved_candidate_context())
    check_shared(reads={"--model": local_model_dir(model_cfg.name_or_path)}, writes={})
    return encode_corpus_on_actors(model_cfg, corpus, config.eval, config.cluster.cpus_per_worker,
                                   config.cluster.use_gpu)
