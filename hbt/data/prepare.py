"""`hbt data prepare`: training pairs and the held-out eval corpus as Parquet + manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hbt import __version__
from hbt.config import DataConfig
from hbt.data.lareqa import read_lareqa
from hbt.data.splits import ArticleSplit, split_articles
from hbt.data.squad import read_squad_parallel
from hbt.errors import DataError
from hbt.io import atomic_directory, sha256_file, write_json_atomic

TRAIN_PAIRS = "train_pairs.parquet"
EVAL_DIR = "eval"
MANIFEST = "manifest.json"
TRAINING_MANIFEST = "hbt_training.json"  # the manifest, copied into a model hbt trained


def keep_fraction(table: pa.Table, imbalance: dict[str, float], seed: int) -> pa.Table:
    """Keep a seeded `fraction` of the rows of each language named in `imbalance`."""
    if not imbalance:
        return table
    rng = np.random.default_rng(seed)
    langs = table.column("lang").to_numpy(zero_copy_only=False)
    keep = np.ones(len(langs), dtype=bool)
    for lang, fraction in sorted(imbalance.items()):
        rows = np.flatnonzero(langs == lang)
        dropped = rng.permutation(rows)[round(len(rows) * fraction):]
        keep[dropped] = False
    return table.filter(pa.array(keep))


def keep_records(table: pa.Table, max_records: int | None, seed: int) -> pa.Table:
    """At most `max_records` parallel ids (a seeded choice), each with all its languages."""
    pids = sorted(set(table.column("parallel_id").to_pylist()))
    if max_records is None or max_records >= len(pids):
        return table
    chosen = np.random.default_rng(seed).choice(len(pids), size=max_records, replace=False)
    return table.filter(pc.is_in(table.column("parallel_id"), value_set=pa.array([pids[i] for i in sorted(chosen)])))


def rows_in_articles(table: pa.Table, articles) -> pa.Table:
    return table.filter(pc.is_in(table.column("article"), value_set=pa.array(sorted(articles), pa.int32())))


def counts_by_lang(table: pa.Table) -> dict[str, int]:
    counts = table.group_by("lang").aggregate([("lang", "count")])
    return dict(sorted(zip(counts.column("lang").to_pylist(), counts.column("lang_count").to_pylist())))


def prepare(data: DataConfig, out_dir: Path | None = None) -> Path:
    """Read XQuAD (training) and XQuAD-R (evaluation), split by article, write Parquet.

    The whole output directory is replaced atomically, so a failed run leaves the
    previous one intact. Returns the output directory.
    """
    out_dir = Path(out_dir or data.prepared_dir)
    squad_dir, lareqa_dir = Path(data.data_dir) / "xquad", Path(data.data_dir) / "xquad-r"
    for needed in (squad_dir, lareqa_dir):
        if not needed.is_dir():
            raise DataError(f"data directory not found: {needed} (set --data-dir or HBT_DATA_DIR, or run `hbt data download`)")

    train = read_squad_parallel(squad_dir, data.train_languages)
    corpus = read_lareqa(lareqa_dir, data.eval_languages)
    num_articles = int(pc.max(corpus.queries.column("article")).as_py()) + 1
    split = split_articles(num_articles, data.heldout_fraction, data.split_seed)

    train = rows_in_articles(train, split.train_articles)
    train = keep_fraction(keep_records(train, data.max_train_records, data.split_seed), data.imbalance, data.split_seed)
    queries = rows_in_articles(corpus.queries, split.eval_articles)
    candidates = rows_in_articles(corpus.candidates, split.eval_articles)
    qrels = corpus.qrels.filter(pc.is_in(corpus.qrels.column("query_id"), value_set=queries.column("id").unique()))
    _check_disjoint_questions(train, queries)

    with atomic_directory(out_dir) as staging:
        (staging / EVAL_DIR).mkdir()
        outputs = {
            TRAIN_PAIRS: train,
            f"{EVAL_DIR}/queries.parquet": queries,
            f"{EVAL_DIR}/candidates.parquet": candidates,
            f"{EVAL_DIR}/qrels.parquet": qrels,
        }
        for name, table in outputs.items():
            pq.write_table(table, staging / name)
        manifest = _manifest(data, split, train, queries, candidates, outputs, staging)
        write_json_atomic(staging / MANIFEST, manifest)
    return out_dir


def _check_disjoint_questions(train: pa.Table, queries: pa.Table) -> None:
    # XQuAD and XQuAD-R share question ids: an id on both sides means the article
    # order of the two files disagrees, and the split would leak.
    shared = set(train.column("parallel_id").to_pylist()) & set(queries.column("id").to_pylist())
    if shared:
        raise DataError(f"{len(shared)} eval question id(s) also appear in the training split (e.g. {sorted(shared)[0]})")


def _manifest(data: DataConfig, split: ArticleSplit, train, queries, candidates, outputs, staging: Path) -> dict:
    sources = sorted((Path(data.data_dir) / "xquad").glob("xquad.*.json")) + sorted((Path(data.data_dir) / "xquad-r").glob("*.json"))
    return {
        "hbt_version": __version__,
        "data_dir": str(Path(data.data_dir).resolve()),
        "train_languages": data.train_languages,
        "eval_languages": list(data.eval_languages),
        "imbalance": data.imbalance,
        "max_train_records": data.max_train_records,
        "split": split.to_json(),
        "counts": {
            "train_pairs": counts_by_lang(train),
            "train_parallel_ids": len(set(train.column("parallel_id").to_pylist())),
            "eval_queries": counts_by_lang(queries),
            "eval_candidates": counts_by_lang(candidates),
        },
        "files": {name: sha256_file(staging / name) for name in outputs},
        "sources": {f"{path.parent.name}/{path.name}": sha256_file(path) for path in sources},
    }


def load_manifest(prepared_dir: Path) -> dict:
    path = Path(prepared_dir) / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no manifest (run `hbt data prepare` first)") from None
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON (line {error.lineno})") from None
