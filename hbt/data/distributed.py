"""`hbt data prepare --ray`: the training pool prepared by Ray tasks over the sources' parts, so
a pool too big for one node is prepared by many and no process holds all of its texts.

    read   a task per part (a pairs shard, a datasets dir, or a whole xquad / tatoeba source):
           parse and check it (`hbt.data.pairs.read_part`, today's one-line errors), stage its
           rows as Arrow IPC in the output's work dir, return its *skeleton*: per row the
           parallel id, language, the xxh3 hashes of its positive and hard negatives (and of its
           positive_id), its question only where it is an evaluation question's text, and where
           the row is (part, row) -- about 60 bytes a row, no text -- and its files' sha256.
    link   on the driver, over the skeletons: the same code as the in-process path (source
           checks, mixing, `link_positives`, `data.max_train_records`, `data.imbalance`,
           `record_keys`, the evaluation-question check), which treats a hash as its text.
    route  a task per part: its staged rows that stay, with their record / key columns, in
           pool order, cut by the output shard their position falls in (a piece per shard).
    write  a task per output shard: its pieces merged a record batch at a time into
           (record, lang) order, written as `hbt.data.pool.write_shard` writes them; returns
           the file's sha256.

Peak memory: a read or route task holds one part, a write task a record batch of each of its
pieces; the driver holds the skeletons. The pool is byte for byte the
in-process path's unless two different texts share a 64-bit hash (`text_hashes`), which
would only link two records that are not linked (kept out of one batch). On a cluster, the
output dir must be on storage every node mounts (the trainers read the pool from it too).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hbt.config import DataConfig, source_name
from hbt.data import pool as pool_files
from hbt.data.columns import list_text_hashes, take_rows, text_hashes
from hbt.data.pairs import Part, joined, pair_parts, part_files, read_part
from hbt.data.pool import ROWS_PER_BATCH, shard_name, shard_writer
from hbt.data.positives import record_keys
from hbt.data.schema import TRAIN_PAIR_SCHEMA
from hbt.data.sources import in_training_languages, linked_pool, read_raw
from hbt.io import sha256_file

WORK = "_work"            # in the output's staging dir, removed before it is committed
ROUTED = ["record", "parallel_id", "source", "positive_key", "key", "negative_keys"]  # from the driver
POSITION = "position"     # a row's place in the sorted pool


class Read(NamedTuple):
    skeleton: pa.Table
    files: dict[str, str]  # every file read -> its sha256


def staged_path(work: Path, index: int) -> Path:
    return work / f"read-{index:05d}.arrow"


def skeleton(raw: pa.Table, index: int, eval_texts: pa.Array) -> pa.Table:
    """What linking needs of a part's RAW_PAIR_SCHEMA rows (module doc)."""
    question = raw.column("question")
    return pa.table({
        "parallel_id": raw.column("parallel_id"), "lang": raw.column("lang"),
        "positive": text_hashes(raw.column("positive")),
        "hard_negatives": list_text_hashes(raw.column("hard_negatives")),
        "positive_id": text_hashes(raw.column("positive_id")),
        "question": pc.if_else(pc.is_in(question, value_set=eval_texts), question, pa.scalar(None, pa.string())),
        "part": pa.array(np.full(raw.num_rows, index, np.int32)),
        "row": pa.array(np.arange(raw.num_rows, dtype=np.int32)),
    })


def read_task(source, part: Optional[Part], index: int, data: DataConfig, train_articles, eval_texts: pa.Array,
              work: Path) -> Read:
    """Read, check and stage one part (`part` None: the whole non-pairs `source`)."""
    raw = read_part(part) if part is not None else read_raw(source, data, train_articles)
    with pa.OSFile(str(staged_path(work, index)), "wb") as sink, pa.ipc.new_file(sink, raw.schema) as writer:
        writer.write_table(raw)
    return Read(skeleton(raw, index, eval_texts), part_files(part) if part is not None else {})


def route_task(index: int, routed: pa.Table, rows_per_shard: int, work: Path) -> None:
    """Part `index`'s rows that stay (`routed`: their `row`, POSITION and ROUTED columns, by
    POSITION), as TRAIN_PAIR_SCHEMA rows plus POSITION, one piece per output shard of
    `rows_per_shard` rows, in record batches of ROWS_PER_BATCH rows."""
    with pa.memory_map(str(staged_path(work, index))) as source:
        raw = pa.ipc.open_file(source).read_all()
    rows = take_rows(raw, routed.column("row").to_numpy())
    del raw
    columns = {name: routed.column(name) if name in ROUTED else rows.column(name) for name in TRAIN_PAIR_SCHEMA.names}
    table = pa.table(columns, schema=TRAIN_PAIR_SCHEMA).append_column(POSITION, routed.column(POSITION))
    shard = routed.column(POSITION).to_numpy() // rows_per_shard
    for target in np.unique(shard):
        directory = work / f"shard-{target:05d}"
        directory.mkdir(exist_ok=True)
        piece = table.filter(pa.array(shard == target))
        with pa.OSFile(str(directory / f"from-{index:05d}.arrow"), "wb") as sink, \
                pa.ipc.new_file(sink, piece.schema) as writer:
            writer.write_table(piece, max_chunksize=ROWS_PER_BATCH)


class _Piece:
    """A route task's piece, read a record batch at a time (not mapped: the pages a mapping
    touched would count as the task's memory)."""

    def __init__(self, path: Path):
        self.reader = pa.ipc.open_file(pa.OSFile(str(path)))
        self.next, self.batch, self.cursor = 0, None, 0

    def below(self, end: int) -> list[pa.RecordBatch]:
        """The piece's next rows whose POSITION is below `end` (it is sorted by POSITION)."""
        taken = []
        while True:
            if self.batch is None or self.cursor == self.batch.num_rows:
                if self.next == self.reader.num_record_batches:
                    return taken
                self.batch, self.next, self.cursor = self.reader.get_batch(self.next), self.next + 1, 0
            position = self.batch.column(POSITION).to_numpy()
            stop = self.cursor + int(np.searchsorted(position[self.cursor:], end))
            taken.append(self.batch.slice(self.cursor, stop - self.cursor))
            self.cursor = stop
            if stop < self.batch.num_rows:
                return taken


def write_task(target: int, first: int, num_rows: int, work: Path, out: Path) -> tuple[str, int, str]:
    """Output shard `target`, the pool's rows `first`... (`num_rows` of them), merged from its
    pieces a record batch at a time; -> (its name, rows, sha256)."""
    directory = work / f"shard-{target:05d}"
    pieces = [_Piece(path) for path in sorted(directory.glob("*.arrow"))] if directory.is_dir() else []
    schema = TRAIN_PAIR_SCHEMA.append(pa.field(POSITION, pa.int64()))
    path = out / shard_name(target)
    with shard_writer(path, TRAIN_PAIR_SCHEMA, num_rows) as write:
        for start in range(first, first + num_rows, ROWS_PER_BATCH):
            end = min(start + ROWS_PER_BATCH, first + num_rows)
            window = pa.Table.from_batches([b for piece in pieces for b in piece.below(end)], schema=schema)
            order = np.argsort(window.column(POSITION).to_numpy())  # (end - start,) positions start...end - 1
            write(window.take(order).drop_columns([POSITION]))
    return path.name, num_rows, sha256_file(path)


Tasks = Callable[[Callable, list[tuple]], list]  # runs fn(*args) for every args, -> the results in order


def ray_tasks(cpus_per_task: float = 1.0) -> Tasks:
    """Every call as a Ray task of `cpus_per_task` CPUs on the Ray this process joined."""
    import ray

    def run(fn: Callable, calls: list[tuple]) -> list:
        # A task whose worker or node dies is rerun (Ray's default retries; every task rewrites
        # its files whole); an error it raises (a malformed shard) is not, and `ray.get` raises
        # the first in call order.
        remote = ray.remote(fn).options(num_cpus=cpus_per_task)
        return ray.get([remote.remote(*args) for args in calls])
    return run


def in_process(fn: Callable, calls: list[tuple]) -> list:
    """Every call here, one after the other (benchmarks/prepare_phases.py times the steps so)."""
    return [fn(*args) for args in calls]


class ShardedPrepare:
    """The read / link / route / write steps of the module doc, the tasks run by `tasks`; the
    link step is the caller's (`hbt.data.prepare.prepare`), between `read` and `write`."""

    def __init__(self, data: DataConfig, work: Path, tasks: Tasks):
        self.data, self.work, self.tasks = data, work, tasks
        work.mkdir()

    def read(self, train_articles, eval_texts: pa.Array) -> tuple[pa.Table, dict, dict]:
        """(every source's skeleton mixed and linked, per-source counts, every source's files ->
        sha256): `read_training_pool` over skeletons."""
        parts = [(source, part) for source in self.data.sources
                 for part in (pair_parts(source.path) if source.kind == "pairs" else [None])]
        reads = self.tasks(read_task, [(source, part, index, self.data, train_articles, eval_texts, self.work)
                                       for index, (source, part) in enumerate(parts)])
        tables, files = {}, {}
        for source in self.data.sources:
            name = source_name(source)
            mine = [(part, read) for (owner, part), read in zip(parts, reads) if owner is source]
            files[name] = {location: digest for _, read in mine for location, digest in read.files.items()}
            if source.kind == "pairs":
                table = joined(source.path, [(part.shard.location, read.skeleton) for part, read in mine])
            else:
                table = pa.concat_tables([read.skeleton for _, read in mine])
            tables[name] = in_training_languages(table, name, self.data)
        pool, counts = linked_pool(tables, self.data)
        return pool, counts, files

    def write(self, pool: pa.Table, out: Path) -> dict[str, tuple[int, str]]:
        """Write `pool` (the linked skeleton after any rows were dropped) as the sorted shards of
        `out`; -> {shard name: (rows, sha256)}."""
        keys, order = record_keys(pool)
        position = np.empty(len(order), np.int64)
        position[order] = np.arange(len(order))  # (rows,) each skeleton row's place in the pool
        routed = pa.table({"row": pool.column("row"), POSITION: pa.array(position),
                           "parallel_id": pool.column("parallel_id"), "source": pool.column("source"),
                           **dict(zip(keys.column_names, keys.columns))})
        part = pool.column("part").to_numpy()
        by_part = np.lexsort((position, part))  # each part's rows, by their place in the pool
        bounds = np.flatnonzero(np.diff(part[by_part])) + 1
        rows_per_shard = pool_files.ROWS_PER_SHARD
        self.tasks(route_task, [(int(part[rows[0]]), routed.take(pa.array(rows)), rows_per_shard, self.work)
                                for rows in np.split(by_part, bounds) if len(rows)])
        out.mkdir(parents=True, exist_ok=True)
        firsts = range(0, max(pool.num_rows, 1), rows_per_shard)  # an empty pool: one empty shard
        shards = self.tasks(write_task, [(target, first, min(rows_per_shard, pool.num_rows - first), self.work, out)
                                         for target, first in enumerate(firsts)])
        shutil.rmtree(self.work)
        return {name: (rows, digest) for name, rows, digest in shards}
