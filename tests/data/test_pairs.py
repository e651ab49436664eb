import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hbt.data.pairs import read_pairs
from hbt.data.schema import RAW_PAIR_SCHEMA
from hbt.errors import DataError

FULL = {"parallel_id": "p1", "lang": "en", "article": 3, "question": "Q?", "positive": "A.",
        "context": "A. B.", "hard_negatives": ["B."], "positive_id": "passage-7"}
MINIMAL = {"parallel_id": "p2", "lang": "de", "question": "F?", "positive": "X."}
MINIMAL_FILLED = {**MINIMAL, "article": -1, "context": "", "hard_negatives": [], "positive_id": None}


def _jsonl(tmp_path, rows, name="pairs.jsonl"):
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_jsonl(tmp_path):
    table = read_pairs(_jsonl(tmp_path, [FULL, MINIMAL]))
    assert table.schema == RAW_PAIR_SCHEMA
    assert table.to_pylist() == [FULL, MINIMAL_FILLED]


def test_parquet_missing_optional_columns(tmp_path):
    path = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist([MINIMAL]), path)
    assert read_pairs(path).to_pylist() == [MINIMAL_FILLED]
    pq.write_table(pa.Table.from_pylist([FULL]), path)
    assert read_pairs(path).to_pylist() == [FULL]


def test_datasets_dir(tmp_path):
    import datasets
    ds = datasets.Dataset.from_list([FULL, {**FULL, "parallel_id": "p3"}])
    ds.save_to_disk(str(tmp_path / "ds"))
    assert read_pairs(tmp_path / "ds").column("parallel_id").to_pylist() == ["p1", "p3"]
    ds.select([1]).save_to_disk(str(tmp_path / "ds1"))
    assert read_pairs(tmp_path / "ds1").column("parallel_id").to_pylist() == ["p3"]
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DataError, match="dd"):
        read_pairs(tmp_path / "dd")


@pytest.mark.parametrize("field", ["parallel_id", "lang", "question", "positive"])
def test_missing_required_field(tmp_path, field):
    row = {k: v for k, v in FULL.items() if k != field}
    with pytest.raises(DataError) as e:
        read_pairs(_jsonl(tmp_path, [FULL, row]))
    msg = str(e.value)
    assert "pairs.jsonl" in msg and field in msg and "line 2" in msg and "\n" not in msg
    path = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist([row]), path)
    with pytest.raises(DataError) as e:
        read_pairs(path)
    assert "pairs.parquet" in str(e.value) and field in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("line,field", [
    ("{broken", "line 1"),
    ("[1, 2]", "line 1"),
    (json.dumps({**FULL, "article": "3"}), "article"),
    (json.dumps({**FULL, "question": 7}), "question"),
    (json.dumps({**FULL, "hard_negatives": "B."}), "hard_negatives"),
    (json.dumps({**FULL, "context": ["x"]}), "context"),
    (json.dumps({**FULL, "lang": "xx"}), "unknown language code 'xx'"),
    (json.dumps({**FULL, "question": "  "}), "question: empty"),
    (json.dumps({**FULL, "positive_id": 3}), "positive_id"),
])
def test_bad_jsonl(tmp_path, line, field):
    with pytest.raises(DataError) as e:
        read_pairs(_jsonl(tmp_path, [line]))
    msg = str(e.value)
    assert "pairs.jsonl" in msg and field in msg and "\n" not in msg, msg


def test_bad_paths(tmp_path):
    for path, name in [
        (tmp_path / "none.jsonl", "none.jsonl"),
        (_jsonl(tmp_path, [], "empty.jsonl"), "empty.jsonl"),
        (_jsonl(tmp_path, [FULL], "pairs.csv"), "pairs.csv"),
    ]:
        with pytest.raises(DataError, match=name):
            read_pairs(path)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(DataError, match="bad.parquet"):
        read_pairs(bad)
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(DataError, match="emptydir"):
        read_pairs(tmp_path / "emptydir")
    (tmp_path / "junkdir").mkdir()
    (tmp_path / "junkdir" / "x.txt").write_text("x")
    with pytest.raises(DataError, match="junkdir"):
        read_pairs(tmp_path / "junkdir")


def test_repeated_record_language_is_refused(tmp_path):
    with pytest.raises(DataError, match="'p1' has two rows in language 'en'"):
        read_pairs(_jsonl(tmp_path, [FULL, {**FULL, "question": "Again?"}]))
