"""One JSONL reader: UTF-8 (a leading byte-order mark skipped), one JSON value per non-blank line;
its line decoder also serves other line-based text files (BEIR qrels).

Read line by line from a binary stream (a local file, a pyarrow input stream, a buffer), so a
corpus of millions of lines is never decoded whole; any line that is not UTF-8 or not JSON is a
one-line `DataError` naming the file and the line.
"""

from __future__ import annotations

import codecs
import io
import json
from pathlib import Path
from typing import BinaryIO, Iterator

from hbt.errors import DataError


def utf8_lines(stream: BinaryIO, path) -> Iterator[tuple[int, str]]:
    """(line number, text) of every line of `stream`, a leading BOM dropped; `path` names it in errors."""
    for number, raw in enumerate(stream, 1):
        if number == 1:
            raw = raw.removeprefix(codecs.BOM_UTF8)
        try:
            yield number, raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DataError(f"{path}: line {number}: not valid UTF-8 (byte {error.start} of the line)") from None


def jsonl_values(stream: BinaryIO, path) -> Iterator[tuple[int, object]]:
    """(line number, parsed value) of every non-blank line of `stream`; `path` names it in errors."""
    for number, line in utf8_lines(stream, path):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}: line {number}: invalid JSON: {error.msg}") from None
        yield number, value


def read_jsonl(path: Path) -> Iterator[tuple[int, object]]:
    """`jsonl_values` of a local file, opened and closed here."""
    with open(path, "rb") as stream:
        yield from jsonl_values(stream, path)


def jsonl_buffer_values(data, path) -> Iterator[tuple[int, object]]:
    """`jsonl_values` of bytes already read (a `bytes` or pyarrow `Buffer`)."""
    return jsonl_values(io.BytesIO(memoryview(data)), path)
