"""`hbt data prepare`: the training pool as Arrow shards, the dev / test evaluation corpora as
Parquet, and a manifest.

Layout of the prepared dir (replaced whole, atomically):

    train_pairs/part-NNNNN.arrow             TRAIN_PAIR_SCHEMA: every source, mixed (hbt.data.sources),
                                             sorted by (record, lang) (hbt.data.pool)
    dev/{queries,candidates,qrels}.parquet   XQuAD-R's dev articles (absent with data.dev_fraction=0)
    test/{queries,candidates,qrels}.parquet  XQuAD-R's test articles
    manifest.json                            sources, split, counts, the XQuAD question ids trained
                                             on, sha256 of every output and source file
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hbt import __version__
from hbt.config import DataConfig, source_name
from hbt.data.columns import kept, sorted_distinct
from hbt.data.lareqa import LareqaCorpus, read_lareqa
from hbt.data.pairs import pair_files, shard_sha256
from hbt.data.pool import write_pool
from hbt.data.positives import number_records, record_keys
from hbt.data.sources import read_training_pool, rows_in_articles
from hbt.data.splits import SPLITS, ArticleSplit, split_articles
from hbt.errors import DataError
from hbt.io import atomic_directory, sha256_file, write_json_atomic
from hbt.layout import EVAL_TABLES, MANIFEST, TRAIN_POOL


def keep_fraction(table: pa.Table, imbalance: dict[str, float], seed: int) -> pa.Table:
    """Keep a seeded `fraction` of the rows of each language named in `imbalance`."""
    if not imbalance:
        return table
    rng = np.random.default_rng(seed)
    keep = np.ones(table.num_rows, dtype=bool)
    for lang, fraction in sorted(imbalance.items()):
        rows = np.flatnonzero(pc.equal(table.column("lang"), lang).to_numpy())
        dropped = rng.permutation(rows)[round(len(rows) * fraction):]
        keep[dropped] = False
    return kept(table, pa.array(keep))


def keep_records(table: pa.Table, max_records: int | None, seed: int) -> pa.Table:
    """At most `max_records` parallel ids (a seeded choice), each with all its languages."""
    pids = sorted_distinct(table.column("parallel_id"))  # the seeded choice indexes the sorted ids
    if max_records is None or max_records >= len(pids):
        return table
    chosen = np.random.default_rng(seed).choice(len(pids), size=max_records, replace=False)
    return table.filter(pc.is_in(table.column("parallel_id"), value_set=pids.take(np.sort(chosen))))


def counts_by_lang(table: pa.Table) -> dict[str, int]:
    counts = table.group_by("lang").aggregate([("lang", "count")])
    return dict(sorted(zip(counts.column("lang").to_pylist(), counts.column("lang_count").to_pylist())))


def corpus_in_articles(corpus: LareqaCorpus, articles) -> LareqaCorpus:
    """The queries, candidates and qrels of `articles` only."""
    queries = rows_in_articles(corpus.queries, articles)
    candidates = rows_in_articles(corpus.candidates, articles)
    qrels = corpus.qrels.filter(pc.is_in(corpus.qrels.column("query_id"), value_set=queries.column("id").unique()))
    return LareqaCorpus(queries, candidates, qrels)


def xquad_question_ids(train: pa.Table, data: DataConfig) -> list[str]:
    """The XQuAD question ids of the pool: its xquad sources' parallel ids without the source
    prefix and copy suffix. XQuAD-R shares these ids, so they say what a model trained on."""
    ids = []
    for name in sorted({source_name(s) for s in data.sources if s.kind == "xquad"}):
        pids = train.filter(pc.equal(train.column("source"), name)).column("parallel_id")
        unprefixed = pc.utf8_slice_codeunits(pids, len(name) + 1)
        ids.append(pc.list_element(pc.split_pattern(unprefixed, "#", max_splits=1), 0))
    return sorted_distinct(pa.chunked_array(ids, pa.string())).to_pylist()


def prepare(data: DataConfig, out_dir: Path | None = None, on_ray: bool = False, cpus_per_task: float = 1.0) -> Path:
    """Read the training sources and XQuAD-R, split XQuAD-R by article, write them (module doc).

    `on_ray`: the pool is read, staged and written by Ray tasks of `cpus_per_task` CPUs over
    the sources' parts on the Ray this process joined (`hbt.data.distributed`); else here, in
    this process. Both write the same bytes. The whole output directory is replaced atomically,
    so a failed run leaves the previous one intact. Returns the output directory.
    """
    out_dir = Path(out_dir or data.prepared_dir)
    lareqa_dir = Path(data.data_dir) / "xquad-r"
    needed = [lareqa_dir] + ([Path(data.data_dir) / "xquad"] if data.trains_on_xquad else [])
    for directory in needed:
        if not directory.is_dir():
            raise DataError(f"data directory not found: {directory} "
                            "(set --data-dir or HBT_DATA_DIR, or run `hbt data download`)")

    corpus = read_lareqa(lareqa_dir, data.eval_languages)
    num_articles = int(pc.max(corpus.queries.column("article")).as_py()) + 1
    split = split_articles(num_articles, data.heldout_fraction, data.split_seed, data.dev_fraction,
                           train=data.trains_on_xquad)
    evals = {name: corpus_in_articles(corpus, split.articles(name)) for name in SPLITS if split.articles(name)}

    with atomic_directory(out_dir) as staging:
        if on_ray:
            from hbt.data.distributed import WORK, ShardedPrepare, ray_tasks

            eval_texts = pa.chunked_array([c.queries.column("text") for c in evals.values()], pa.string())
            tasks = ShardedPrepare(data, staging / WORK, ray_tasks(cpus_per_task))
            pool, source_counts, source_files = tasks.read(split.train_articles, eval_texts)
        else:
            pool, source_counts = read_training_pool(data, split.train_articles)
            source_files = {}
        pool = keep_records(pool, data.max_train_records, data.split_seed)
        pool = keep_fraction(pool, data.imbalance, data.split_seed)
        heldin = xquad_question_ids(pool, data)
        _check_no_eval_questions(pool, heldin, evals, data)
        if on_ray:
            written = tasks.write(pool, staging / TRAIN_POOL)
            train = _index_columns(pool)
            digests = {f"{TRAIN_POOL}/{name}": digest for name, (_, digest) in written.items()}
            del pool
        else:
            train = number_records(pool)
            del pool  # the unsorted rows: freed before writing
            written, digests = write_pool(train, staging / TRAIN_POOL), {}
        outputs = [f"{TRAIN_POOL}/{name}" for name in written]
        for name, split_corpus in evals.items():
            (staging / name).mkdir()
            for table in EVAL_TABLES:
                pq.write_table(getattr(split_corpus, table), staging / name / f"{table}.parquet")
                outputs.append(f"{name}/{table}.parquet")
        manifest = _manifest(data, split, train, heldin, evals, source_counts, outputs, staging,
                             source_files, digests)
        write_json_atomic(staging / MANIFEST, manifest)
    return out_dir


def _index_columns(pool: pa.Table) -> pa.Table:
    """The columns of the numbered pool the manifest counts (`lang`, `record`, `key`), from the
    linked pool's rows."""
    keys, _ = record_keys(pool)
    return pa.table({"lang": pool.column("lang"), "record": keys.column("record"), "key": keys.column("key")})


def _check_no_eval_questions(train: pa.Table, heldin: list[str], evals: dict[str, LareqaCorpus],
                             data: DataConfig) -> None:
    """No dev or test question may be trained on: by id for XQuAD (XQuAD-R shares its ids; an
    id on both sides means the two files' article order disagrees), by text for other sources."""
    for name, split_corpus in evals.items():
        shared = sorted(set(heldin) & set(split_corpus.queries.column("id").to_pylist()))
        if shared:
            raise DataError(f"{len(shared)} {name} question id(s) are also in the training pool "
                            f"(e.g. {shared[0]}): the XQuAD and XQuAD-R files disagree")
    xquad = {source_name(s) for s in data.sources if s.kind == "xquad"}
    not_xquad = pc.invert(pc.is_in(train.column("source"), value_set=pa.array(sorted(xquad), pa.string())))
    others = kept(train.select(["lang", "question"]), not_xquad)
    # The few training rows whose question is the text of an evaluation question in any language;
    # (lang, text) is compared on those rows only.
    eval_texts = pa.chunked_array([c.queries.column("text") for c in evals.values()], pa.string())
    suspects = others.filter(pc.is_in(others.column("question"), value_set=eval_texts))
    for name, split_corpus in evals.items():
        queries = split_corpus.queries
        leaked = pc.is_in(_lang_text(queries, "text"), value_set=_lang_text(suspects, "question")).to_numpy()
        if leaked.any():
            first = int(np.flatnonzero(leaked)[0])
            lang, text = queries.column("lang")[first].as_py(), queries.column("text")[first].as_py()
            raise DataError(f"{int(leaked.sum())} {name} question(s) are also training questions "
                            f"(e.g. {lang}: {text!r}): drop them from the training source")


def _lang_text(table: pa.Table, column: str) -> pa.ChunkedArray:
    return pc.binary_join_element_wise(table.column("lang"), table.column(column), "\x00")


def _source_files(source, data: DataConfig, known: dict[str, dict[str, str]]) -> dict[str, str]:
    """Every file the source was read from -> its sha256 (`known`: by source name, hashed already)."""
    if known.get(source_name(source)):
        return known[source_name(source)]
    root = Path(data.data_dir)
    if source.kind == "pairs":
        return {shard.location: shard_sha256(shard) for shard in pair_files(source.path)[0]}
    if source.kind == "xquad":
        paths = sorted((root / "xquad").glob("xquad.*.json")) + sorted((root / "xquad-r").glob("*.json"))
    else:
        directory = Path(source.path) if source.path is not None else root / "tatoeba-laser"
        paths = sorted(directory.glob("tatoeba.*-eng.*"))
    return {str(path): sha256_file(path) for path in paths}


def _manifest(data: DataConfig, split: ArticleSplit, train, heldin, evals, source_counts, outputs, staging,
              source_files: dict[str, dict[str, str]], digests: dict[str, str]) -> dict:
    """The manifest (module doc); `source_files` and `digests` (output -> sha256): what the Ray
    tasks hashed already."""
    sources = []
    for source in data.sources:
        name = source_name(source)
        entry = {"name": name, **source.model_dump(mode="json", exclude={"name"}), **source_counts[name]}
        entry["files"] = _source_files(source, data, source_files)
        sources.append(entry)
    counts = {
        "train_pairs": counts_by_lang(train),
        "train_parallel_ids": pc.count_distinct(train.column("record")).as_py(),
        "train_positive_keys": pc.count_distinct(train.column("key")).as_py(),
    }
    for name, split_corpus in evals.items():
        counts[f"{name}_queries"] = counts_by_lang(split_corpus.queries)
        counts[f"{name}_candidates"] = counts_by_lang(split_corpus.candidates)
    return {
        "hbt_version": __version__,
        "data_dir": str(Path(data.data_dir).resolve()),
        "sources": sources,
        "train_languages": data.train_languages,
        "eval_languages": list(data.eval_languages),
        "imbalance": data.imbalance,
        "max_train_records": data.max_train_records,
        "split": split.to_json(),
        # What a model trained on this pool saw of the evaluation corpus: `hbt eval` refuses
        # (or, with --heldout-only, drops) the articles holding these questions.
        "heldin_question_ids": heldin,
        "counts": counts,
        "files": {name: digests.get(name) or sha256_file(staging / name) for name in outputs},
    }


def load_manifest(prepared_dir: Path) -> dict:
    path = Path(prepared_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no manifest (run `hbt data prepare` first)") from None
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON (line {error.lineno})") from None
    if not isinstance(manifest, dict) or "heldin_question_ids" not in manifest:
        raise DataError(f"{path}: written by an older hbt (no dev/test split): run `hbt data prepare` again")
    return manifest
