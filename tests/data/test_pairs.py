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


# -- sources as datasets of files ----------------------------------------------------------

def _rows(pid_prefix, n, lang="en"):
    return [{"parallel_id": f"{pid_prefix}{i}", "lang": lang, "question": f"q{i}?", "positive": f"p{i}."}
            for i in range(n)]


@pytest.fixture
def shard_dir(tmp_path):
    """A directory of mixed shards, a nested one, and files that are not shards."""
    root = tmp_path / "shards"
    (root / "more").mkdir(parents=True)
    _jsonl(root, _rows("a", 2), "part-0.jsonl")
    pq.write_table(pa.Table.from_pylist(_rows("b", 2)), root / "part-1.parquet")
    _jsonl(root / "more", _rows("c", 1, "de"), "part-2.jsonl")
    (root / "_SUCCESS").write_text("")
    (root / ".part-0.jsonl.crc").write_text("x")
    (root / "README.md").write_text("not a shard")
    return root


def test_directory_of_shards_reads_every_jsonl_and_parquet_in_path_order(shard_dir):
    assert read_pairs(shard_dir).column("parallel_id").to_pylist() == ["c0", "a0", "a1", "b0", "b1"]  # more/ < part-0


def test_glob_of_shards(shard_dir):
    assert read_pairs(f"{shard_dir}/part-*").column("parallel_id").to_pylist() == ["a0", "a1", "b0", "b1"]
    assert read_pairs(f"{shard_dir}/*/*.jsonl").column("parallel_id").to_pylist() == ["c0"]
    assert read_pairs(f"file://{shard_dir}/part-[1]*").column("parallel_id").to_pylist() == ["b0", "b1"]
    with pytest.raises(DataError, match=r"\*\.csv: no .jsonl or .parquet file matches"):
        read_pairs(f"{shard_dir}/*.csv")


def test_record_language_repeated_across_shards_names_both(shard_dir):
    _jsonl(shard_dir, [_rows("b", 2)[1]], "part-3.jsonl")
    with pytest.raises(DataError) as e:
        read_pairs(shard_dir)
    msg = str(e.value)
    assert msg == (f"{shard_dir}/part-1.parquet and {shard_dir}/part-3.jsonl: "
                   "parallel_id 'b1' has two rows in language 'en'")


def test_malformed_row_in_a_later_shard_names_the_shard_and_line(shard_dir):
    _jsonl(shard_dir, _rows("d", 2) + [{**_rows("d", 3)[2], "question": 3}], "part-3.jsonl")
    with pytest.raises(DataError) as e:
        read_pairs(shard_dir)
    assert str(e.value) == f"{shard_dir}/part-3.jsonl: line 3.question: expected str, got int"


def test_a_directory_without_shards_is_refused(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "README.md").write_text("x")
    with pytest.raises(DataError, match="docs: no .jsonl or .parquet file in the directory"):
        read_pairs(tmp_path / "docs")


# -- the column-wise checks agree with the row checker -------------------------------------

@pytest.fixture
def no_row_checker(monkeypatch):
    """Fail if a shard falls to the row checker: good shards must not."""
    from hbt.data import pairs

    def refuse(*args):
        raise AssertionError("the row checker read a good shard")

    monkeypatch.setattr(pairs, "_check_jsonl_lines", refuse)
    monkeypatch.setattr(pairs, "_check_table_rows", refuse)


TRICKY = {**FULL, "question": "Wo ist\u2028der \"Bahnhof\"? \u00e9\U0001F600", "hard_negatives": ["x", "\u00a0y"],
          "extra_field": {"nested": [1, 2]}, "article": -2**31}


def test_good_jsonl_takes_the_fast_path_bom_crlf_and_all(tmp_path, no_row_checker):
    path = tmp_path / "pairs.jsonl"
    lines = [json.dumps(r, ensure_ascii=False) for r in (TRICKY, MINIMAL)]
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode())  # BOM, CRLF, no final newline
    expected = [{k: v for k, v in TRICKY.items() if k != "extra_field"}, MINIMAL_FILLED]
    assert read_pairs(path).to_pylist() == expected


def test_good_parquet_takes_the_fast_path_whatever_its_string_types(tmp_path, no_row_checker):
    table = pa.table({"parallel_id": pa.array(["p1", "p2"], pa.large_string()),
                      "lang": pa.array(["en", "de"]).dictionary_encode(), "question": ["Q?", "F?"],
                      "positive": ["A.", "X."], "article": pa.array([3, None], pa.int16()),
                      "hard_negatives": pa.array([["B."], None], pa.large_list(pa.large_string()))})
    pq.write_table(table, tmp_path / "pairs.parquet")
    assert read_pairs(tmp_path / "pairs.parquet").to_pylist() == [
        {**FULL, "context": "", "positive_id": None}, {**MINIMAL_FILLED, "parallel_id": "p2"}]


@pytest.mark.parametrize("lines, message", [
    # what pyarrow's reader would take but a line-by-line reading refuses
    ([json.dumps(FULL) + " " + json.dumps(MINIMAL)], "line 1: invalid JSON: Extra data"),
    ([json.dumps(FULL, indent=1)], "line 1: invalid JSON"),
    # rows pyarrow parses, that a column check refuses
    ([json.dumps(MINIMAL), json.dumps({**FULL, "article": 2**31})], "line 2.article: 2147483648 does not fit in int32"),
    ([json.dumps(MINIMAL), json.dumps({**FULL, "hard_negatives": ["a", None]})],
     "line 2.hard_negatives: expected a list"),
    ([json.dumps(MINIMAL), json.dumps({**FULL, "question": "\u3000 "})], "line 2.question: empty string"),
    ([json.dumps(MINIMAL), json.dumps({**FULL, "positive": None})], "line 2: missing field 'positive'"),
])
def test_what_the_fast_path_lets_through_is_still_refused(tmp_path, lines, message):
    with pytest.raises(DataError) as e:
        read_pairs(_jsonl(tmp_path, lines))
    assert str(e.value).startswith(f"{tmp_path / 'pairs.jsonl'}: {message}"), str(e.value)


def test_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(f"\n{json.dumps(FULL)}\n  \n\n{json.dumps(MINIMAL)}\n\n")
    assert read_pairs(path).to_pylist() == [FULL, MINIMAL_FILLED]


def test_non_utf8_jsonl(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(json.dumps({**FULL, "question": "caf\u00e9"}, ensure_ascii=False).encode("latin-1") + b"\n")
    with pytest.raises(DataError, match=r"pairs.jsonl: line 1: not valid UTF-8 \(byte \d+ of the line\)$"):
        read_pairs(path)


def test_parquet_null_hard_negative_is_named_by_row(tmp_path):
    path = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist([FULL, {**FULL, "parallel_id": "p9", "hard_negatives": ["x", None]}]), path)
    with pytest.raises(DataError, match=r"pairs.parquet: row 1.hard_negatives: expected a list of str"):
        read_pairs(path)
