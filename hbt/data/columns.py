"""Column helpers shared by the readers and the pool builder: whole-column operations
(pyarrow.compute, numpy) in place of Python loops over rows."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def codes(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, pa.Array]:
    """(int64 code of every value, -1 for a null; the distinct values, in order of first
    appearance): the code of a value is its index in the distinct values."""
    encoded = pc.dictionary_encode(column)
    if isinstance(encoded, pa.Array):
        encoded = pa.chunked_array([encoded])
    if encoded.num_chunks == 0:
        return np.zeros(0, np.int64), pa.array([], column.type)
    indices = [pc.fill_null(chunk.indices, -1).to_numpy() for chunk in encoded.chunks]
    # dictionary_encode of a chunked array shares one dictionary between its chunks.
    return np.concatenate(indices).astype(np.int64), encoded.chunk(0).dictionary


def sorted_distinct(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """The distinct values of `column`, sorted (strings: by code point, as Python sorts them)."""
    distinct = pc.unique(column)
    return distinct.take(pc.array_sort_indices(distinct))


def kept(table: pa.Table, mask) -> pa.Table:
    """`table.filter(mask)`, without copying the table when the mask keeps every row."""
    if pc.all(mask).as_py() is not False:
        return table
    return table.filter(mask)


def _large(data_type: pa.DataType) -> pa.DataType:
    """`data_type` with 64-bit offsets wherever it had 32-bit ones (strings, lists)."""
    if pa.types.is_string(data_type):
        return pa.large_string()
    if pa.types.is_list(data_type):
        return pa.large_list(_large(data_type.value_type))
    return data_type


def take_rows(table: pa.Table, indices: np.ndarray, rows_per_chunk: int = 1 << 20) -> pa.Table:
    """`table.take(indices)` that also works when a string column holds more than 2 GB.

    pyarrow concatenates a chunked column's chunks to take from it, and a string column's
    32-bit offsets overflow past 2 GB (a pool of 5M rows has 2.3 GB of hard negatives). So each
    column in turn is made one chunk with 64-bit offsets and taken from `rows_per_chunk` rows at
    a time, each piece cast back to the column's type (a piece stays far below 2 GB). A column at
    a time: the copy beside the table and its result is one column, not the whole table."""
    columns = []
    for field, column in zip(table.schema, table.columns):
        large = column.cast(_large(field.type)).combine_chunks()
        pieces = [large.take(indices[start:start + rows_per_chunk]).cast(field.type)
                  for start in range(0, len(indices), rows_per_chunk)]
        del large
        columns.append(pa.chunked_array(pieces, field.type))
    return pa.table(columns, schema=table.schema)


def text_hashes(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """The 64-bit xxh3 hash of every string's UTF-8 bytes (a null stays null): a text's identity
    in 8 bytes. Two different texts share a hash with probability ~n^2 / 2^65 for n texts
    (1e-5 at 20M distinct texts)."""
    from xxhash import xxh3_64_intdigest

    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    hashes = []
    for chunk in chunks:
        if len(chunk) == 0:
            continue
        _, offsets_buffer, data_buffer = chunk.buffers()
        width = np.int64 if pa.types.is_large_string(chunk.type) else np.int32
        offsets = np.frombuffer(offsets_buffer, width)[chunk.offset:chunk.offset + len(chunk) + 1].tolist()
        data = memoryview(data_buffer if data_buffer is not None else b"")
        # One C call per string: ~1 us a row, no Python str made.
        values = np.fromiter((xxh3_64_intdigest(data[a:b]) for a, b in zip(offsets[:-1], offsets[1:])),
                             np.uint64, len(chunk))
        nulls = chunk.is_null().to_numpy(zero_copy_only=False) if chunk.null_count else None
        hashes.append(pa.array(values, mask=nulls))
    return pa.concat_arrays([pa.array([], pa.uint64())] + hashes)


def list_text_hashes(lists: pa.ChunkedArray) -> pa.ChunkedArray:
    """`text_hashes` of every element of a list<string> column, as lists of the same shape."""
    chunks = []
    for chunk in lists.chunks:
        offsets = chunk.offsets
        rebased = pc.subtract(offsets, offsets[0])  # a sliced chunk's offsets start past 0
        chunks.append(pa.ListArray.from_arrays(rebased, text_hashes(chunk.flatten()), mask=chunk.is_null()))
    return pa.chunked_array(chunks, pa.list_(pa.uint64()))
