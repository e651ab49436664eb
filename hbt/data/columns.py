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
