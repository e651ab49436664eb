"""The prepared training pool on disk: sharded Arrow IPC files that readers memory-map.

    PREPARED/train_pairs/part-00000.arrow   TRAIN_PAIR_SCHEMA rows, sorted by (record, lang)
    PREPARED/train_pairs/part-00001.arrow   ... at most ROWS_PER_SHARD rows each

Why Arrow IPC and not Parquet: training reads rows at random (a batch draws its records from
a seeded permutation of the whole pool). An uncompressed IPC file is memory-mapped and
`take` touches only the pages of the rows it copies, so a tokenize actor reads a step's few
hundred rows without decoding, or holding, the pool; Parquet would decode whole column chunks
per row read. The same files are what `datasets` (Hugging Face) memory-maps, and pyarrow,
polars and DuckDB read them as Feather v2.

Rows sorted by `record` (the rank of `parallel_id` among the pool's records) make the index
the trainer needs (record -> rows, languages, positive key) three small columns of the same
files, read without touching the texts (`read_index`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pyarrow as pa

from hbt.errors import DataError
from hbt.io import absolute_location

TRAIN_POOL = "train_pairs"
ROWS_PER_SHARD = 1_000_000
# Record batches inside a shard: a string column's int32 offsets must stay under 2 GiB per batch.
ROWS_PER_BATCH = 65_536
INDEX_COLUMNS = ["record", "lang", "key"]


def shard_name(index: int) -> str:
    return f"part-{index:05d}.arrow"


def write_pool(table: pa.Table, directory: Path) -> dict[str, int]:
    """Write `table` (sorted TRAIN_PAIR_SCHEMA rows) as shards in `directory`; -> {file name: rows}."""
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for index, start in enumerate(range(0, max(table.num_rows, 1), ROWS_PER_SHARD)):
        part = table.slice(start, ROWS_PER_SHARD)
        name = shard_name(index)
        with pa.OSFile(str(directory / name), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(part, max_chunksize=ROWS_PER_BATCH)
        written[name] = part.num_rows
    return written


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


def _open_shard(location: str) -> pa.Table:
    """A shard as a table; a local file is memory-mapped (zero-copy: pages load as rows are
    read), a URI read through pyarrow's filesystem (s3://, gs://: each record batch touched is
    fetched whole)."""
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(location)
    if isinstance(fs, pyarrow.fs.LocalFileSystem):
        source = pa.memory_map(path, "r")
    else:
        source = fs.open_input_file(path)
    return pa.ipc.open_file(source).read_all()


def open_pool(prepared_dir: str | Path, columns: Sequence[str] | None = None) -> pa.Table:
    """The whole pool as one table over its shards (memory-mapped when local: reading it
    costs nothing until rows are taken); only `columns` if given."""
    tables = [_open_shard(location) for location in shard_paths(prepared_dir)]
    table = pa.concat_tables(tables)
    return table.select(list(columns)) if columns is not None else table


def read_index(prepared_dir: str | Path) -> pa.Table:
    """The INDEX_COLUMNS of every row: all the driver and the composer read of the pool."""
    return open_pool(prepared_dir, INDEX_COLUMNS)
