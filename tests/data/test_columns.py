"""Column helpers (hbt.data.columns)."""

import numpy as np
import pyarrow as pa

from hbt.data.columns import take_rows


def test_take_rows_equals_take_in_pieces_of_any_size():
    table = pa.concat_tables([pa.table({"s": ["a", "bb", None], "l": [["x"], [], None], "i": [1, 2, 3]})] * 3)
    indices = np.array([8, 0, 4, 3, 3])
    for rows_per_chunk in (1, 2, 5, 100):
        got = take_rows(table, indices, rows_per_chunk)
        assert got.schema == table.schema  # cast back from the 64-bit-offset copy
        assert got.to_pylist() == table.take(indices).to_pylist()
    assert take_rows(table, np.array([], dtype=np.int64)).num_rows == 0
