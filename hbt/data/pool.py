"""The prepared training pool on disk: sharded Arrow IPC files, read a record batch at a time.

    PREPARED/train_pairs/part-00000.arrow   TRAIN_PAIR_SCHEMA rows, sorted by (record, lang)
    PREPARED/train_pairs/part-00001.arrow   ... at most ROWS_PER_SHARD rows each

Why Arrow IPC and not Parquet: training reads rows at random (a batch draws its records from
a seeded permutation of the whole pool). An IPC file's footer locates every record batch, and
a reader asked for a few columns reads only their buffers, so a row costs the read of its
ROWS_PER_BATCH-row batch (~1,000 rows, a few hundred kB of the columns asked for), where
Parquet decodes a whole column chunk. Not memory-mapped on purpose: on this kernel a mapped
file's pages fault in as large folios, so a few hundred random rows a step map most of the
file into the reader (measured: 600 random rows of a 1.2 GB file mapped 1.1 GB), while
`read_at` of the batches leaves the reader ~100 MB. pyarrow, polars and DuckDB read the files
as Feather v2.

Rows sorted by `record` (the rank of `parallel_id` among the pool's records) make the index
the trainer needs (record -> rows, languages, positive key) three small columns of the same
files (`hbt.train.batch.PoolIndex.read`), read without their texts.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa

from hbt.errors import DataError
from hbt.io import absolute_location
from hbt.layout import TRAIN_POOL

ROWS_PER_SHARD = 1_000_000
# Rows per record batch: the unit a reader reads to get one row (~1,000 rows of a few hundred
# bytes); a million-row shard has ~1,000 batches, listed in its footer.
ROWS_PER_BATCH = 1024
ROWS_KEY = "hbt.rows"  # shard schema metadata: its number of rows
INDEX_COLUMNS = ["record", "lang", "key"]


def shard_name(index: int) -> str:
    return f"part-{index:05d}.arrow"


def write_pool(table: pa.Table, directory: Path) -> dict[str, int]:
    """Write `table` (sorted TRAIN_PAIR_SCHEMA rows) as shards in `directory`; -> {file name: rows}.

    Every record batch but a shard's last holds exactly ROWS_PER_BATCH rows, so a row's batch
    is its offset in the shard // ROWS_PER_BATCH (`PoolReader`)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for index, start in enumerate(range(0, max(table.num_rows, 1), ROWS_PER_SHARD)):
        part = table.slice(start, ROWS_PER_SHARD)
        write_shard(part, directory / shard_name(index))
        written[shard_name(index)] = part.num_rows
    return written


def write_shard(part: pa.Table, path: Path) -> None:
    """One shard of `write_pool`: `part`'s rows in ROWS_PER_BATCH-row record batches."""
    with shard_writer(path, part.schema, part.num_rows) as write:
        for offset in range(0, part.num_rows, ROWS_PER_BATCH):
            write(part.slice(offset, ROWS_PER_BATCH))


@contextmanager
def shard_writer(path: Path, schema: pa.Schema, num_rows: int) -> Iterator[Callable[[pa.Table], None]]:
    """A shard file of `num_rows` rows; yields `write(rows)`, which appends one record batch.

    Each batch is written from a copy of its own rows: the IPC writer writes a buffer whole
    (its size, not its rows' bytes) unless it is a slice, so the file's bytes would depend on
    how the rows were computed; the copy makes them depend on the rows only (the pool written
    by Ray tasks is byte for byte the pool written in one process)."""
    schema = schema.with_metadata({ROWS_KEY: str(num_rows)})
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        yield lambda rows: writer.write_batch(
            pa.RecordBatch.from_arrays([pa.concat_arrays(column.chunks) for column in rows.columns], schema=schema))


def shard_paths(prepared_dir: str | Path) -> list[str]:
    """The pool's shard files in order (local paths or URIs, as `prepared_dir` is given)."""
    import pyarrow.fs

    location = f"{absolute_location(prepared_dir)}/{TRAIN_POOL}"
    fs, path = pyarrow.fs.FileSystem.from_uri(location)
    infos = fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
    names = sorted(info.base_name for info in infos if info.base_name.endswith(".arrow"))
    if not names:
        raise DataError(f"{location}: no training pool (run `hbt data prepare` first)")
    return [f"{location}/{name}" for name in names]


def _open_shard(location: str, columns: Sequence[str]) -> pa.ipc.RecordBatchFileReader:
    """A shard's reader that reads only `columns` (a local path or any pyarrow URI)."""
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(location)
    source = fs.open_input_file(path)
    names = pa.ipc.open_file(source).schema.names
    missing = [c for c in columns if c not in names]
    if missing:
        raise DataError(f"{location}: no column(s) {', '.join(missing)}: prepare the pool again with this hbt")
    fields = [names.index(c) for c in columns]
    return pa.ipc.open_file(source, options=pa.ipc.IpcReadOptions(included_fields=fields))


class PoolReader:
    """Rows of the pool by number (`take`), or whole columns (`read`), over its shards."""

    def __init__(self, prepared_dir: str | Path, columns: Sequence[str]):
        self.columns = list(columns)
        self.readers = [_open_shard(location, self.columns) for location in shard_paths(prepared_dir)]
        rows = [int(reader.schema.metadata[ROWS_KEY.encode()]) for reader in self.readers]
        self.shard_start = np.concatenate(([0], np.cumsum(rows)))  # (shards + 1,) first row of each

    @property
    def num_rows(self) -> int:
        return int(self.shard_start[-1])

    def batches(self) -> Iterator[pa.RecordBatch]:
        """Every record batch of the columns, in row order, one read at a time."""
        for reader in self.readers:
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i)

    def read(self) -> pa.Table:
        """Every row of the columns, copied a record batch at a time: a batch read holds an
        allocation the size of its whole body (every column), which `read_all` would keep for
        every batch at once (measured: 1.2 GB of memory to read a 5 MB column of a 1 GB shard)."""
        batches = [pa.RecordBatch.from_arrays([pa.concat_arrays([c]) for c in batch.columns], schema=batch.schema)
                   for batch in self.batches()]
        return pa.Table.from_batches(batches, schema=self.readers[0].schema).combine_chunks()

    def take(self, rows: Sequence[int]) -> pa.Table:
        """`rows` (global row numbers, any order, repeats allowed), in that order: one read per
        record batch that holds some of them."""
        rows = np.asarray(rows, dtype=np.int64)
        shard = np.searchsorted(self.shard_start, rows, side="right") - 1
        offset = rows - self.shard_start[shard]
        batch = shard * (1 << 32) + offset // ROWS_PER_BATCH  # (shard, batch) as one sortable number
        order = np.argsort(batch, kind="stable")
        parts = []
        for where in np.split(order, np.flatnonzero(np.diff(batch[order])) + 1):
            record_batch = self.readers[shard[where[0]]].get_batch(int(offset[where[0]] // ROWS_PER_BATCH))
            parts.append(record_batch.take(pa.array(offset[where] % ROWS_PER_BATCH)))
        taken = pa.Table.from_batches(parts).combine_chunks()  # rows in `order`
        back = np.empty(len(rows), dtype=np.int64)
        back[order] = np.arange(len(rows))
        return taken.take(back)


def open_pool(prepared_dir: str | Path, columns: Sequence[str] | None = None) -> pa.Table:
    """The whole pool as one table (only `columns` if given): for inspection and small pools;
    training reads rows with `PoolReader`."""
    from hbt.data.schema import TRAIN_PAIR_SCHEMA

    columns = list(columns or TRAIN_PAIR_SCHEMA.names)
    return PoolReader(prepared_dir, columns).read().select(columns)
