"""Read generic training pairs (.jsonl, .parquet, or a `datasets.save_to_disk` dir)
into RAW_PAIR_SCHEMA.

Required fields: parallel_id, lang (an ISO 639-1 code), question, positive (non-empty strings).
Optional fields are filled when the column is absent or the value is null:
article -> -1, context -> "", hard_negatives -> [], positive_id -> null.

One row per (record, language); the rows of one record share its `parallel_id` and hold
the record's question and positive in their language. `positive_id` names the positive
passage across its translations: records whose positive is the same passage share it, and
hbt never puts two of them in one batch (without it, identical positive texts tell). A worked
example (mMARCO-style translated passages) is in docs/training.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from hbt.data.schema import RAW_PAIR_SCHEMA
from hbt.errors import DataError
from hbt.languages import KNOWN_LANGUAGES

REQUIRED = ("parallel_id", "lang", "question", "positive")
DEFAULTS = {"article": -1, "context": "", "hard_negatives": [], "positive_id": None}


def _check_row(row, path: Path, where: str) -> dict:
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


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    try:
        with open(path, encoding="utf-8-sig") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}: line {n}: invalid JSON: {e.msg}") from None
                rows.append(_check_row(obj, path, f"line {n}"))
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 (byte {e.start})") from None
    return rows


def _check_table(table: pa.Table, path: Path) -> list[dict]:
    for key in REQUIRED:
        if key not in table.column_names:
            raise DataError(f"{path}: missing field {key!r} (columns: {', '.join(table.column_names)})")
    return [_check_row(r, path, f"row {i}") for i, r in enumerate(table.to_pylist())]


def read_pairs(path) -> pa.Table:
    """Read training pairs from a .jsonl file, a .parquet file, or a HF datasets dir."""
    path = Path(path)
    if path.is_dir():
        if not any(path.iterdir()):
            raise DataError(f"{path}: empty directory")
        import datasets
        try:
            ds = datasets.load_from_disk(str(path))
        except Exception as e:  # noqa: BLE001 - any failure here is a bad dataset dir
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise DataError(f"{path}: not a datasets.save_to_disk directory: {msg}") from None
        if isinstance(ds, datasets.DatasetDict):
            raise DataError(f"{path}: holds a DatasetDict ({', '.join(ds)}); give one split's directory")
        rows = _check_table(ds.with_format("arrow")[:], path)  # respects select/shuffle indices
    elif not path.is_file():
        raise DataError(f"{path}: file not found")
    elif path.suffix == ".jsonl":
        rows = _read_jsonl(path)
    elif path.suffix == ".parquet":
        try:
            table = pq.read_table(path)
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for bad files
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise DataError(f"{path}: not a readable parquet file: {msg}") from None
        rows = _check_table(table, path)
    else:
        raise DataError(f"{path}: unsupported file type {path.suffix!r} (want .jsonl, .parquet or a datasets dir)")
    if not rows:
        raise DataError(f"{path}: no records")
    _check_unique(rows, path)
    return pa.Table.from_pylist(rows, schema=RAW_PAIR_SCHEMA)


def _check_unique(rows: list[dict], path: Path) -> None:
    seen = set()
    for row in rows:
        key = (row["parallel_id"], row["lang"])
        if key in seen:
            raise DataError(f"{path}: parallel_id {key[0]!r} has two rows in language {key[1]!r}")
        seen.add(key)
