"""The training pool: every `data.sources` entry read, restricted to the training languages,
mixed by weight, and given positive keys.

Sources (`hbt.config`):

* `xquad`: XQuAD's training articles (the split's `train_articles`), cut into XQuAD-R's
  sentences (`hbt.data.squad`);
* `pairs`: a .jsonl / .parquet file, a directory or glob of such shards (local or a URI), or
  a `datasets.save_to_disk` dir of parallel pairs (`hbt.data.pairs`: schema and a worked
  mMARCO-style example in docs/training.md);
* `tatoeba`: LASER-layout bitext; a sentence and its English translation form one parallel
  record whose question and positive in each language are that language's sentence, so an
  X-Y example is "find the translation" (in an X-X batch the positive is the query's own
  sentence).

Every parallel id is prefixed with its source's name (`xquad:56be...`), so two sources may
reuse ids. Weights: without them each source contributes all its records. With them, source
`s` gets `weight_s / sum(weights)` of the pool, whose size stays the sources' total: a source
under its share is cut to a seeded subset, one over it repeated (whole copies, then a seeded
part; a copy's id gets `#2`, `#3`... and shares its original's positive key, so the two are
never in one batch).

The mixed pool is linked (`hbt.data.positives.link_positives`): which records share a positive
passage is settled on every row read, before `hbt data prepare` drops any.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hbt.config import DataConfig, source_name
from hbt.data.columns import kept, sorted_distinct
from hbt.data.pairs import read_pairs
from hbt.data.positives import link_positives
from hbt.data.schema import RAW_PAIR_SCHEMA
from hbt.data.squad import read_squad_parallel
from hbt.data.tatoeba import read_tatoeba
from hbt.errors import DataError


def rows_in_articles(table: pa.Table, articles) -> pa.Table:
    return table.filter(pc.is_in(table.column("article"), value_set=pa.array(sorted(articles), pa.int32())))


def bitext_pairs(bitext: pa.Table) -> pa.Table:
    """BITEXT_SCHEMA rows -> RAW_PAIR_SCHEMA rows: each sentence is its row's question and positive."""
    n = bitext.num_rows
    return pa.table({
        "parallel_id": bitext.column("parallel_id"), "lang": bitext.column("lang"),
        "article": pa.array(np.full(n, -1, dtype=np.int32)),
        "question": bitext.column("text"), "positive": bitext.column("text"),
        "context": pa.array([""] * n, pa.string()), "hard_negatives": pa.array([[]] * n, pa.list_(pa.string())),
        "positive_id": pa.nulls(n, pa.string()),
    }, schema=RAW_PAIR_SCHEMA)


def read_raw(source, data: DataConfig, train_articles) -> pa.Table:
    """One source's rows as its reader gives them (RAW_PAIR_SCHEMA)."""
    languages = data.train_languages
    if source.kind == "xquad":
        table = read_squad_parallel(Path(data.data_dir) / "xquad", languages,
                                    breaks_dir=Path(data.data_dir) / "xquad-r")
        return rows_in_articles(table, train_articles)
    if source.kind == "pairs":
        return read_pairs(source.path)
    root = Path(source.path) if source.path is not None else Path(data.data_dir) / "tatoeba-laser"
    bitext_languages = [lang for lang in languages if lang != "en"]
    if not bitext_languages:
        raise DataError(f"source {source_name(source)!r}: Tatoeba pairs languages with English; "
                        f"data.languages {languages} has no other language")
    return bitext_pairs(read_tatoeba(root, bitext_languages))


def read_source(source, data: DataConfig, train_articles) -> pa.Table:
    """One source's rows in the training languages, ids prefixed, with a `source` column."""
    return in_training_languages(read_raw(source, data, train_articles), source_name(source), data)


def in_training_languages(table: pa.Table, name: str, data: DataConfig) -> pa.Table:
    """Source `name`'s rows (`parallel_id` first) in the training languages, ids prefixed, with a
    `source` column."""
    table = kept(table, pc.is_in(table.column("lang"), value_set=pa.array(data.train_languages)))
    if table.num_rows == 0:
        raise DataError(f"source {name!r} has no record in the training languages {data.train_languages}")
    prefixed = pc.binary_join_element_wise(pa.scalar(name), table.column("parallel_id"), ":")
    table = table.set_column(0, "parallel_id", prefixed)
    return table.append_column("source", pa.repeat(pa.scalar(name, pa.string()), table.num_rows))


def num_records(table: pa.Table) -> int:
    return pc.count_distinct(table.column("parallel_id")).as_py()


def _resize(table: pa.Table, size: int, rng: np.random.Generator) -> pa.Table:
    """`size` records of `table`: a seeded subset, or whole copies plus a seeded part (see module doc)."""
    ids = sorted_distinct(table.column("parallel_id"))  # the seeded choice indexes the sorted ids
    copies, rest = divmod(size, len(ids))
    parts = [table] * copies
    if rest:
        chosen = ids.take(np.sort(rng.choice(len(ids), size=rest, replace=False)))
        parts.append(table.filter(pc.is_in(table.column("parallel_id"), value_set=chosen)))
    out = []
    for copy, part in enumerate(parts, start=1):
        if copy > 1:
            suffixed = pc.binary_join_element_wise(part.column("parallel_id"), pa.scalar(f"#{copy}"), "")
            part = part.set_column(0, "parallel_id", suffixed)
        out.append(part)
    return pa.concat_tables(out)


def mix(tables: dict[str, pa.Table], weights: dict[str, float] | None, seed: int) -> pa.Table:
    """Concatenate the sources' tables; with `weights`, resize each to its share (module doc)."""
    if weights is None:
        return pa.concat_tables(tables.values())
    total = sum(num_records(t) for t in tables.values())
    weight_sum = sum(weights.values())
    rng = np.random.default_rng(seed)
    resized = []
    for name, table in tables.items():
        size = max(1, round(total * weights[name] / weight_sum))
        resized.append(_resize(table, size, rng))
    return pa.concat_tables(resized)


def read_training_pool(data: DataConfig, train_articles) -> tuple[pa.Table, dict]:
    """(every source mixed and linked: `link_positives`' columns, per-source counts for the manifest)."""
    return linked_pool({source_name(s): read_source(s, data, train_articles) for s in data.sources}, data)


def linked_pool(tables: dict[str, pa.Table], data: DataConfig) -> tuple[pa.Table, dict]:
    """`read_training_pool` from the sources' tables (`read_source`'s columns; texts, or their
    hashes as `hbt.data.distributed` reads them)."""
    weighted = all(s.weight is not None for s in data.sources)
    weights = {source_name(s): s.weight for s in data.sources} if weighted else None
    pool = link_positives(mix(tables, weights, data.split_seed))
    in_pool = pool.group_by("source").aggregate([("parallel_id", "count_distinct"), ("parallel_id", "count")])
    in_pool = {row["source"]: row for row in in_pool.to_pylist()}
    counts = {name: {"records_read": num_records(table), "records_in_pool": in_pool[name]["parallel_id_count_distinct"],
                     "rows_in_pool": in_pool[name]["parallel_id_count"]}
              for name, table in tables.items()}
    return pool, counts
