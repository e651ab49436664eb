import pytest

from hbt.data.schema import BITEXT_SCHEMA
from hbt.data.tatoeba import read_tatoeba
from hbt.errors import DataError

LINES = {"ara": 1000, "cmn": 1000, "deu": 1000, "ell": 1000, "hin": 1000, "rus": 1000,
         "spa": 1000, "tha": 548, "tur": 1000, "vie": 1000}


def test_real_all(data_dir):
    table = read_tatoeba(data_dir / "tatoeba-laser")
    assert table.schema == BITEXT_SCHEMA
    assert table.num_rows == 2 * sum(LINES.values())
    rows = table.to_pylist()
    assert rows[0]["parallel_id"] == "ara-eng:0" and rows[0]["lang"] == "ar"
    assert rows[1]["parallel_id"] == "ara-eng:0" and rows[1]["lang"] == "en"
    langs = {r["lang"] for r in rows}
    assert langs == {"ar", "zh", "de", "el", "hi", "ru", "es", "th", "tr", "vi", "en"}


def test_real_selected_iso1_and_iso3(data_dir):
    a = read_tatoeba(data_dir / "tatoeba-laser", ["th", "deu"])
    ids = a.column("parallel_id").to_pylist()
    assert len(ids) == 2 * (548 + 1000)
    assert ids[-1] == "deu-eng:999" and ids[0] == "tha-eng:0"
    first = (data_dir / "tatoeba-laser" / "tatoeba.tha-eng.tha").read_text(encoding="utf-8").split("\n")[0]
    assert a.column("text")[0].as_py() == first.lstrip("\ufeff").rstrip("\r")


def _pair(tmp_path, src, eng, iso3="deu"):
    (tmp_path / f"tatoeba.{iso3}-eng.{iso3}").write_bytes(src)
    (tmp_path / f"tatoeba.{iso3}-eng.eng").write_bytes(eng)


def test_small(tmp_path):
    _pair(tmp_path, "Hallo\nWelt\n".encode(), b"Hello\r\nWorld")
    rows = read_tatoeba(tmp_path, ["de"]).to_pylist()
    assert rows == [
        {"parallel_id": "deu-eng:0", "lang": "de", "text": "Hallo"},
        {"parallel_id": "deu-eng:0", "lang": "en", "text": "Hello"},
        {"parallel_id": "deu-eng:1", "lang": "de", "text": "Welt"},
        {"parallel_id": "deu-eng:1", "lang": "en", "text": "World"},
    ]


@pytest.mark.parametrize("src,eng,name", [
    (b"a\nb\n", b"a\n", "tatoeba.deu-eng.deu"),        # line count mismatch
    (b"a\n\nc\n", b"a\nb\nc\n", "tatoeba.deu-eng.deu"),  # empty line
    (b"\xff\xfe\n", b"a\n", "tatoeba.deu-eng.deu"),      # not UTF-8
    (b"", b"", "tatoeba.deu-eng.deu"),                   # empty files
])
def test_bad_input_raises_one_line(tmp_path, src, eng, name):
    _pair(tmp_path, src, eng)
    with pytest.raises(DataError) as e:
        read_tatoeba(tmp_path, ["de"])
    assert name in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_missing(tmp_path):
    with pytest.raises(DataError, match="tatoeba.rus-eng.rus"):
        read_tatoeba(tmp_path, ["ru"])
    with pytest.raises(DataError, match=str(tmp_path)):
        read_tatoeba(tmp_path)  # empty dir
    with pytest.raises(DataError, match="xx"):
        read_tatoeba(tmp_path, ["xx"])
