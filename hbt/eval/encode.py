"""Encode every language's queries and candidates exactly once, in length-bucketed chunks.

Per kind (queries, candidates), the texts of every language are sorted together by the tokens
they take and cut into chunks of `eval.batch_size * CHUNK_BATCHES` texts, so every batch pads
little. Sorting each language apart would not do: each language's last batches span its whole
length range (`benchmarks/eval_allpairs.py`, 11 languages: encoding 67 s -> 45 s a round with
one sort). Chunks go either to an in-process encoder (`encode_corpus`) or, on Ray, to a
pool of `eval.encode_actors` `EncodeActor`s that each load the model once
(`encode_corpus_on_actors`); results are put back in table order either way, so both give the
same arrays.

Candidate text (`hbt.data.candidates`): the sentence, followed by its paragraph when
`model.candidate_context` is on, exactly as training writes its positives.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional, Sequence

import numpy as np

from hbt.config import EvalConfig, ModelConfig
from hbt.data.candidates import candidate_texts

CHUNK_BATCHES = 8  # batches per chunk: fine-grained progress and load balance, little call overhead
KINDS = ("query", "passage")

Embeddings = dict[str, np.ndarray]  # lang -> (n, d), rows in table order
LengthFn = Callable[[Sequence[str], str], Sequence[int]]  # (texts, kind) -> each text's length


def character_lengths(texts: Sequence[str], kind: str) -> list[int]:
    """A text's length in characters: the measure for encoders without a tokenizer (test doubles)."""
    return [len(text) for text in texts]


def corpus_languages(corpus) -> list[str]:
    """Languages in the order they appear in the candidates table."""
    return list(dict.fromkeys(corpus.candidates.column("lang").to_pylist()))


def _column_by_lang(table, lang: str, column: str) -> list[str]:
    langs = table.column("lang").to_pylist()
    values = table.column(column).to_pylist()
    return [v for v, l in zip(values, langs) if l == lang]


def corpus_texts(corpus, candidate_context: bool) -> dict[str, dict[str, list[str]]]:
    """kind -> lang -> that language's queries or candidate texts in table order (languages with
    none left out)."""
    texts: dict[str, dict[str, list[str]]] = {kind: {} for kind in KINDS}
    for lang in corpus_languages(corpus):
        queries = _column_by_lang(corpus.queries, lang, "text")
        candidates = candidate_texts(_column_by_lang(corpus.candidates, lang, "sentence"),
                                     _column_by_lang(corpus.candidates, lang, "context"), candidate_context)
        for kind, of_lang in (("query", queries), ("passage", candidates)):
            if of_lang:
                texts[kind][lang] = of_lang
    return texts


@dataclass
class Chunk:
    kind: str                # "query" | "passage"
    rows: np.ndarray         # (m,) positions of these texts among the kind's texts, languages in corpus order
    texts: list[str]         # (m,) ascending in length


def corpus_chunks(corpus, eval_cfg: EvalConfig, candidate_context: bool,
                  lengths: LengthFn = character_lengths) -> list[Chunk]:
    """Every unique text of the corpus once, as chunks of texts ascending in `lengths` (an
    encoder's `token_lengths`: what a batch pads to), every language of a kind sorted together."""
    chunks = []
    size = eval_cfg.batch_size * CHUNK_BATCHES
    for kind, by_lang in corpus_texts(corpus, candidate_context).items():
        texts = [text for of_lang in by_lang.values() for text in of_lang]
        order = np.argsort(np.asarray(lengths(texts, kind)), kind="stable")  # (n,)
        for start in range(0, len(order), size):
            rows = order[start:start + size]
            chunks.append(Chunk(kind, rows, [texts[i] for i in rows]))
    return chunks


def _assemble(corpus, chunks: list[Chunk], results: Iterable[tuple[int, np.ndarray]],
              on_chunk: Callable[[Chunk], None]) -> tuple[Embeddings, Embeddings]:
    """Place each chunk's (m, d) rows at their positions, then split each kind's (n, d) rows by
    language -> (query_emb, cand_emb)."""
    sizes = _language_sizes(corpus)
    out: dict[str, np.ndarray] = {}
    for index, emb in results:
        chunk = chunks[index]
        if chunk.kind not in out:
            out[chunk.kind] = np.empty((sum(sizes[chunk.kind].values()), emb.shape[1]), dtype=np.float32)
        out[chunk.kind][chunk.rows] = emb
        on_chunk(chunk)
    query_emb, cand_emb = ({lang: part for lang, part in zip(sizes[kind], _split(out.get(kind), sizes[kind]))}
                           for kind in KINDS)
    return query_emb, cand_emb


def _language_sizes(corpus) -> dict[str, dict[str, int]]:
    """kind -> lang -> rows, languages in corpus order (as `corpus_texts`; none left out)."""
    languages = corpus_languages(corpus)
    sizes = {}
    for kind, table in (("query", corpus.queries), ("passage", corpus.candidates)):
        counts = Counter(table.column("lang").to_pylist())
        sizes[kind] = {lang: counts[lang] for lang in languages if counts[lang]}
    return sizes


def _split(rows: Optional[np.ndarray], sizes: dict[str, int]) -> list[np.ndarray]:
    if rows is None:
        return []
    return np.split(rows, np.cumsum(list(sizes.values()))[:-1])


def _progress(corpus, enabled: bool = True):
    from tqdm import tqdm

    # On stderr, also when not a terminal (Ray job logs); at most one line per 5 s.
    return tqdm(total=corpus.queries.num_rows + corpus.candidates.num_rows, desc="encode", unit="text",
                mininterval=5, disable=not enabled)


def encode_corpus(encoder, corpus, eval_cfg: EvalConfig, candidate_context: bool = False,
                  progress: bool = True, lengths: LengthFn = character_lengths) -> tuple[Embeddings, Embeddings]:
    """In process: -> (query_emb {lang: (nq, d)}, cand_emb {lang: (nc, d)}), rows in table order;
    texts batched by `lengths` (pass an `Encoder`'s `token_lengths`)."""
    chunks = corpus_chunks(corpus, eval_cfg, candidate_context, lengths)

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
        from hbt.threads import torch_threads

        torch.set_num_threads(threads or torch_threads())
        self.encoder = Encoder.from_config(model_cfg)
        if use_gpu:
            self.encoder.to("cuda")
        self.encoder.for_inference(precision)

    def encode(self, index: int, texts: list[str], kind: str, batch_size: int) -> tuple[int, np.ndarray]:
        return index, np.asarray(self.encoder.encode(texts, kind, batch_size), dtype=np.float32)

    def encode_into(self, path: str, rows: np.ndarray, texts: list[str], kind: str, batch_size: int) -> int:
        """Encode `texts` into `rows` of the shard file at `path` (`write_rows`); -> rows written."""
        return write_rows(path, rows, self.encode(0, texts, kind, batch_size)[1])


def write_rows(path, rows: np.ndarray, emb: np.ndarray) -> int:
    """Write (m, d) `emb` at `rows` of the memory-mapped (n, d) float32 .npy at `path`; -> m."""
    shard = np.load(path, mmap_mode="r+")
    shard[rows] = emb
    shard.flush()
    return len(rows)


# An encode actor whose process dies (killed, out of memory) is restarted and its chunk retried.
ACTOR_RETRIES = 2


def start_encode_actors(model_cfg: ModelConfig, eval_cfg: EvalConfig, cpus_per_actor: float, use_gpu: bool = False,
                        actor_class: type = EncodeActor) -> list:
    """`eval_cfg.encode_actors` restartable encode actors (Ray must be up)."""
    import ray

    remote = ray.remote(actor_class).options(num_cpus=cpus_per_actor, num_gpus=1 if use_gpu else 0,
                                             max_restarts=ACTOR_RETRIES, max_task_retries=ACTOR_RETRIES)
    # threads None: the actor's reserved CPUs, else its node's usable ones (hbt.threads)
    return [remote.remote(model_cfg, eval_cfg.encode_threads, use_gpu, eval_cfg.precision)
            for _ in range(eval_cfg.encode_actors)]


def encode_corpus_on_actors(model_cfg: ModelConfig, corpus, eval_cfg: EvalConfig, cpus_per_actor: float,
                            use_gpu: bool = False, actor_class: type = EncodeActor) -> tuple[Embeddings, Embeddings]:
    """Like `encode_corpus`, on `eval_cfg.encode_actors` Ray actors (Ray must be up); passages
    as `model_cfg.candidate_context` says. An actor that dies is restarted, and its chunk
    encoded again, up to ACTOR_RETRIES times (`actor_class`: an `EncodeActor`, or a subclass in tests)."""
    import ray
    from ray.util import ActorPool

    from hbt.model.encoder import load_tokenizer, token_counter

    actors = start_encode_actors(model_cfg, eval_cfg, cpus_per_actor, use_gpu, actor_class)
    try:
        # Counted while the actors start and load the model: tokenizing every text here (seconds
        # for all of XQuAD-R) overlaps their start instead of adding to it.
        lengths = token_counter(load_tokenizer(model_cfg.name_or_path), model_cfg)
        chunks = corpus_chunks(corpus, eval_cfg, model_cfg.resolved_candidate_context(), lengths)
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


def encode_for_eval(model_cfg: ModelConfig, corpus, config, on_ray: bool) -> tuple[Embeddings, Embeddings]:
    """The corpus encoded once: on Ray actors (`on_ray`, Ray must be up) or in process."""
    from hbt.model.encoder import Encoder
    from hbt.shared_paths import check_shared, local_model_dir

    if not on_ray:
        encoder = Encoder.from_config(model_cfg).for_inference(config.eval.precision)
        return encode_corpus(encoder, corpus, config.eval, model_cfg.resolved_candidate_context(),
                             lengths=encoder.token_lengths)
    check_shared(reads={"--model": local_model_dir(model_cfg.name_or_path)}, writes={})
    return encode_corpus_on_actors(model_cfg, corpus, config.eval, config.cluster.cpus_per_worker,
                                   config.cluster.use_gpu)
