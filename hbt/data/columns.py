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
