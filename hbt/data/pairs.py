"""Read generic training pairs into RAW_PAIR_SCHEMA: a .jsonl or .parquet file, a directory or
a glob of such shards (local, or any URI pyarrow's filesystems read: s3://, gs://...), or a
`datasets.save_to_disk` dir.

Required fields: parallel_id, lang (an ISO 639-1 code), question, positive (non-empty strings).
Optional fields are filled when the column is absent or the value is null:
article -> -1, context -> "", hard_negatives -> [], positive_id -> null.

One row per (record, language); the rows of one record share its `parallel_id` and hold
the record's question and positive in their language, in any shard. `positive_id` names the
positive passage across its translations: records whose positive is the same passage share
it, and hbt never puts two of them in one batch (without it, identical positive texts tell).
A worked example (mMARCO-style translated passages) is in docs/training.md.

A directory's shards are its .jsonl and .parquet files, recursively, in path order (names
starting with "." or "_", such as Spark's _SUCCESS, are skipped); a glob (`*`, `?`, `[...]`
in any path component) matches the same file types.

Each shard is parsed by pyarrow (JSONL with an explicit schema) and its rows checked a column
at a time (`_conform`). When anything looks wrong there (a parse error, a type the schema
refuses, a row breaking a rule), the shard is read again by the row checker, plain Python, which
names the first bad line or row and field in one line: errors are the rare path, so only a bad
shard pays for it.
"""

from __future__ import annotations

import fnmatch
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.json as pajson
import pyarrow.parquet as pq

from hbt.data.columns import codes
from hbt.data.schema import RAW_PAIR_SCHEMA
from hbt.errors import DataError, first_line
from hbt.io import absolute_location, sha256_stream
from hbt.jsonl import jsonl_buffer_values
from hbt.languages import KNOWN_LANGUAGES

REQUIRED = ("parallel_id", "lang", "question", "positive")
DEFAULTS = {"article": -1, "context": "", "hard_negatives": [], "positive_id": None}
SHARD_SUFFIXES = (".jsonl", ".parquet")
GLOB_CHARACTERS = "*?["
# What pyarrow's JSON reader parses a line into; `article` wide enough to tell an int that does
# not fit int32 from a parse error. Other fields are ignored, as the row checker ignores them.
JSONL_TYPES = pa.schema([field.with_type(pa.int64()) if field.name == "article" else field
                         for field in RAW_PAIR_SCHEMA])
# The JSON reader's block: a line longer than this is left to the row checker.
JSONL_BLOCK_BYTES = 4 << 20


class Shard(NamedTuple):
    location: str                # as messages and the manifest name it
    filesystem: pafs.FileSystem
    path: str                    # within `filesystem`


# ------------------------------------------------------------------------------ the row checker

def _check_row(row, path, where: str) -> dict:
    if not isinstance(row, dict):
        raise DataError(f"{path}: {where}: expected an object, got {type(row).__name__}")
    out = {}
    for key in REQUIRED:
        if key not in row or row[key] is None:
            raise DataError(f"{path}: {where}: missing field {key!r}")
        if not isinstance(row[key], str):
            raise DataError(f"{path}: {where}.{key}: expected str, got {type(row[key]).__name__}")
        if not row[key].strip():
            raise DataError(f"{path}: {where}.{key}: empty string")
        out[key] = row[key]
    if out["lang"] not in KNOWN_LANGUAGES:
        raise DataError(f"{path}: {where}.lang: unknown language code {out['lang']!r} (expected ISO 639-1, e.g. en)")
    article = row.get("article")
    if article is None:
        article = DEFAULTS["article"]
    elif isinstance(article, bool) or not isinstance(article, int):
        raise DataError(f"{path}: {where}.article: expected int, got {type(article).__name__}")
    elif not -2**31 <= article < 2**31:
        raise DataError(f"{path}: {where}.article: {article} does not fit in int32")
    out["article"] = article
    context = row.get("context")
    if context is None:
        context = DEFAULTS["context"]
    elif not isinstance(context, str):
        raise DataError(f"{path}: {where}.context: expected str, got {type(context).__name__}")
    out["context"] = context
    negs = row.get("hard_negatives")
    if negs is None:
        negs = []
    elif not isinstance(negs, list) or not all(isinstance(n, str) for n in negs):
        raise DataError(f"{path}: {where}.hard_negatives: expected a list of str")
    out["hard_negatives"] = negs
    positive_id = row.get("positive_id")
    if positive_id is not None and not isinstance(positive_id, str):
        raise DataError(f"{path}: {where}.positive_id: expected str, got {type(positive_id).__name__}")
    out["positive_id"] = positive_id
    return out


def _check_jsonl_lines(data: pa.Buffer, path: str) -> pa.Table:
    """The row checker over a JSONL file's bytes: line by line, as Python reads a text file."""
    rows = [_check_row(obj, path, f"line {n}") for n, obj in jsonl_buffer_values(data, path)]
    return pa.Table.from_pylist(rows, schema=RAW_PAIR_SCHEMA)


def _check_table_rows(table: pa.Table, path: str) -> pa.Table:
    """The row checker over a Parquet or datasets table: row by row."""
    rows = [_check_row(r, path, f"row {i}") for i, r in enumerate(table.to_pylist())]
    return pa.Table.from_pylist(rows, schema=RAW_PAIR_SCHEMA)


# ------------------------------------------------------------------------------ column checks

def _is_text(type_: pa.DataType) -> bool:
    if pa.types.is_dictionary(type_):
        type_ = type_.value_type
    return pa.types.is_string(type_) or pa.types.is_large_string(type_) or pa.types.is_string_view(type_)


def _holds(type_: pa.DataType, target: pa.DataType) -> bool:
    """Whether a column of `type_` holds only what the row checker accepts for a `target` field."""
    if pa.types.is_null(type_):
        return True
    if pa.types.is_integer(target):
        return pa.types.is_integer(type_)  # not bool, not float: the row checker refuses 3.0
    if pa.types.is_list(target):
        return ((pa.types.is_list(type_) or pa.types.is_large_list(type_))
                and (pa.types.is_null(type_.value_type) or _is_text(type_.value_type)))
    return _is_text(type_)


def _column(table: pa.Table, field: pa.Field) -> pa.ChunkedArray | None:
    """`field` of `table` cast to the field's type (all nulls when absent); None if its type is
    one the row checker refuses."""
    if field.name not in table.column_names:
        return pa.chunked_array([pa.nulls(table.num_rows, field.type)])
    column = table.column(field.name)
    if not _holds(column.type, field.type):
        return None
    try:
        return column.cast(field.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # e.g. a uint64 beyond int64
        return None


def _any(mask) -> bool:
    return bool(pc.any(mask).as_py())  # None (no rows) is False


def _rows_pass(columns: dict[str, pa.ChunkedArray]) -> bool:
    """The row checker's rules, a column at a time."""
    for key in REQUIRED:
        column = columns[key]
        if column.null_count or _any(pc.or_(pc.equal(column, ""), pc.utf8_is_space(column))):
            return False  # utf8_is_space: Python's str.isspace (Unicode White_Space)
    if _any(pc.invert(pc.is_in(columns["lang"], value_set=pa.array(sorted(KNOWN_LANGUAGES))))):
        return False
    article = pc.min_max(columns["article"])
    if article["min"].is_valid and not (-2**31 <= article["min"].as_py() and article["max"].as_py() < 2**31):
        return False
    return pc.list_flatten(columns["hard_negatives"]).null_count == 0


def _conform(table: pa.Table) -> pa.Table | None:
    """`table` as RAW_PAIR_SCHEMA with the defaults filled in, or None when a column has a type
    the row checker refuses or a row breaks one of its rules (the row checker then says which)."""
    columns = {}
    for field in JSONL_TYPES:
        columns[field.name] = _column(table, field)
        if columns[field.name] is None:
            return None
    if not _rows_pass(columns):
        return None
    columns["article"] = pc.fill_null(columns["article"], DEFAULTS["article"]).cast(pa.int32())
    columns["context"] = pc.fill_null(columns["context"], DEFAULTS["context"])
    columns["hard_negatives"] = pc.fill_null(columns["hard_negatives"], pa.scalar([], pa.list_(pa.string())))
    return pa.table([columns[name] for name in RAW_PAIR_SCHEMA.names], schema=RAW_PAIR_SCHEMA)


# ------------------------------------------------------------------------------ shards

def _read_bytes(shard: Shard) -> pa.Buffer:
    if isinstance(shard.filesystem, pafs.LocalFileSystem):
        return pa.memory_map(shard.path, "r").read_buffer()
    with shard.filesystem.open_input_file(shard.path) as handle:
        return handle.read_buffer()


def _parse_jsonl(data: pa.Buffer) -> pa.Table | None:
    """pyarrow's reading of a JSONL file, or None where it might not be the row checker's:
    invalid UTF-8, a parse error, or a row count other than the line count (pyarrow skips blank
    lines and takes objects split over lines or sharing one; the row checker decides those)."""
    offsets = pa.array([0, data.size], pa.int64()).buffers()[1]
    try:
        text = pa.Array.from_buffers(pa.large_binary(), 1,
                                     [None, offsets, data]).cast(pa.large_string())  # checks UTF-8
        table = pajson.read_json(pa.BufferReader(data), read_options=pajson.ReadOptions(block_size=JSONL_BLOCK_BYTES),
                                 parse_options=pajson.ParseOptions(explicit_schema=JSONL_TYPES,
                                                                   unexpected_field_behavior="ignore"))
    except pa.ArrowInvalid:
        return None
    newlines = pc.count_substring_regex(text, "\n")[0].as_py()  # regex: RE2 finds a literal fastest
    unterminated = data.size > 0 and data[data.size - 1:].to_pybytes() != b"\n"
    return table if table.num_rows == newlines + unterminated else None


def _read_jsonl(shard: Shard) -> pa.Table:
    data = _read_bytes(shard)
    table = _parse_jsonl(data)
    table = _conform(table) if table is not None else None
    return table if table is not None else _check_jsonl_lines(data, shard.location)


def _check_columns(table: pa.Table, path: str) -> None:
    for key in REQUIRED:
        if key not in table.column_names:
            raise DataError(f"{path}: missing field {key!r} (columns: {', '.join(table.column_names)})")


def _read_parquet(shard: Shard) -> pa.Table:
    try:
        table = pq.read_table(shard.path, filesystem=shard.filesystem)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for bad files
        raise DataError(f"{shard.location}: not a readable parquet file: {first_line(e)}") from None
    _check_columns(table, shard.location)
    conformed = _conform(table)
    return conformed if conformed is not None else _check_table_rows(table, shard.location)


def _read_datasets_dir(location: str) -> pa.Table:
    import datasets

    try:
        ds = datasets.load_from_disk(location)
    except Exception as e:  # noqa: BLE001 - any failure here is a bad dataset dir
        raise DataError(f"{location}: not a datasets.save_to_disk directory: {first_line(e)}") from None
    if isinstance(ds, datasets.DatasetDict):
        raise DataError(f"{location}: holds a DatasetDict ({', '.join(ds)}); give one split's directory")
    table = ds.with_format("arrow")[:]  # respects select/shuffle indices
    _check_columns(table, location)
    conformed = _conform(table)
    return conformed if conformed is not None else _check_table_rows(table, location)


# ------------------------------------------------------------------------------ locations

def filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path in it) of an absolute location (`hbt.io.absolute_location`)."""
    try:
        return pafs.FileSystem.from_uri(location)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as e:
        raise DataError(f"{location}: cannot open: {first_line(e)}") from None


def _split_glob(location: str) -> tuple[str, list[str]]:
    """(the path components before the first one holding a glob character, the rest)."""
    parts = location.split("/")
    for i, part in enumerate(parts):
        if any(c in part for c in GLOB_CHARACTERS):
            return "/".join(parts[:i]), parts[i:]
    return location, []


def _listing(fs: pafs.FileSystem, path: str, recursive: bool = False) -> list[pafs.FileInfo]:
    try:
        return fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=recursive))
    except (OSError, pa.ArrowInvalid) as e:
        raise DataError(f"{path}: cannot list: {first_line(e)}") from None


def _is_shard(relative: str) -> bool:
    parts = relative.split("/")
    return relative.endswith(SHARD_SUFFIXES) and not any(p.startswith((".", "_")) for p in parts)


def _glob(location: str, base: str, pattern: list[str]) -> list[Shard]:
    """The shard files matching `pattern` (components, each an fnmatch pattern) under `base`."""
    fs, base_path = filesystem(base)
    found = [(base_path, base)]
    for depth, part in enumerate(pattern):
        last = depth == len(pattern) - 1
        wanted = pafs.FileType.File if last else pafs.FileType.Directory
        found = [(info.path, where + info.path[len(path):])
                 for path, where in found for info in _listing(fs, path)
                 if info.type == wanted and fnmatch.fnmatchcase(info.base_name, part)]
    shards = sorted(Shard(where, fs, path) for path, where in found if _is_shard(path.rsplit("/", 1)[-1]))
    if not shards:
        raise DataError(f"{location}: no .jsonl or .parquet file matches")
    return shards


def _directory_shards(location: str, fs: pafs.FileSystem, path: str) -> list[Shard]:
    shards = sorted(Shard(location + info.path[len(path):], fs, info.path)
                    for info in _listing(fs, path, recursive=True)
                    if info.type == pafs.FileType.File and _is_shard(info.path[len(path):].lstrip("/")))
    if not shards:
        raise DataError(f"{location}: no .jsonl or .parquet file in the directory (nor a datasets.save_to_disk dir)")
    return shards


def _is_datasets_dir(fs: pafs.FileSystem, path: str) -> bool:
    names = {info.base_name for info in _listing(fs, path)}
    return bool(names & {"state.json", "dataset_dict.json"})


def pair_files(location) -> tuple[list[Shard], bool]:
    """(the files of the pairs source at `location`, in order; whether they are one
    `datasets.save_to_disk` dir): the file itself, a directory's or a glob's shards, or every
    file of a datasets dir (module doc)."""
    given = str(location)
    where = absolute_location(given)
    base, pattern = _split_glob(where)
    if pattern:
        return _glob(given, base, pattern), False
    fs, path = filesystem(where)
    try:
        info = fs.get_file_info(path)
    except OSError as e:
        raise DataError(f"{given}: cannot open: {first_line(e)}") from None
    if info.type == pafs.FileType.Directory:
        if _is_datasets_dir(fs, path):
            files = [info for info in _listing(fs, path, recursive=True) if info.type == pafs.FileType.File]
            return sorted(Shard(where + f.path[len(path):], fs, f.path) for f in files), True
        return _directory_shards(where, fs, path), False
    if info.type != pafs.FileType.File:
        raise DataError(f"{given}: file not found")
    if not where.endswith(SHARD_SUFFIXES):
        suffix = "." + where.rsplit(".", 1)[-1] if "." in where.rsplit("/", 1)[-1] else ""
        raise DataError(f"{given}: unsupported file type {suffix!r} (want .jsonl, .parquet, a directory or glob "
                        "of them, or a datasets dir)")
    return [Shard(where, fs, path)], False


class Part(NamedTuple):
    """What one reader task reads of a pairs source: a shard file, or a datasets dir whole."""
    shard: Shard
    is_datasets: bool


def pair_parts(location) -> list[Part]:
    """The parts of the pairs source at `location`, in order (`pair_files`)."""
    shards, is_datasets = pair_files(location)
    if is_datasets:
        where = absolute_location(str(location))
        return [Part(Shard(where, *filesystem(where)), True)]
    return [Part(shard, False) for shard in shards]


def read_part(part: Part) -> pa.Table:
    """A part's rows as RAW_PAIR_SCHEMA, checked (module doc)."""
    if part.is_datasets:
        return _read_datasets_dir(part.shard.location)
    return _read_jsonl(part.shard) if part.shard.path.endswith(".jsonl") else _read_parquet(part.shard)


def part_files(part: Part) -> dict[str, str]:
    """Every file of `part` -> its sha256 (for the manifest)."""
    shards = pair_files(part.shard.location)[0] if part.is_datasets else [part.shard]
    return {shard.location: shard_sha256(shard) for shard in shards}


def shard_sha256(shard: Shard) -> str:
    with shard.filesystem.open_input_stream(shard.path) as stream:
        return sha256_stream(stream)


def read_pairs(location) -> pa.Table:
    """Training pairs from a .jsonl / .parquet file, a directory or glob of them, or a datasets dir."""
    return joined(location, [(part.shard.location, read_part(part)) for part in pair_parts(location)])


def joined(location, parts: list[tuple[str, pa.Table]]) -> pa.Table:
    """The rows of a source's parts (each part's location and rows, in order) in one table,
    checked: some rows, one row per (parallel_id, lang)."""
    table = pa.concat_tables([t for _, t in parts])
    if table.num_rows == 0:
        raise DataError(f"{location}: no records")
    _check_unique(table, parts)
    return table


def _check_unique(table: pa.Table, parts: list[tuple[str, pa.Table]]) -> None:
    """One row per (parallel_id, lang) across all of a source's files (`parts`: each file's
    location and rows, in `table`'s order); else name the first repeat and its file(s)."""
    record, records = codes(table.column("parallel_id"))
    lang, langs = codes(table.column("lang"))
    pair = record * len(langs) + lang
    if pc.count_distinct(pa.array(pair)).as_py() == len(pair):
        return
    order = np.argsort(pair, kind="stable")
    repeats = np.flatnonzero(pair[order][1:] == pair[order][:-1])
    second = order[repeats + 1]
    earliest = int(np.argmin(second))  # the earliest second row of any key: its key's second row
    rows = (int(order[repeats[earliest]]), int(second[earliest]))
    ends = np.cumsum([t.num_rows for _, t in parts])
    files = dict.fromkeys(parts[int(np.searchsorted(ends, row, side="right"))][0] for row in rows)
    pid, code = records[int(record[rows[1]])].as_py(), langs[int(lang[rows[1]])].as_py()
    raise DataError(f"{' and '.join(files)}: parallel_id {pid!r} has two rows in language {code!r}")
