"""`hbt data download`: complete corpus dirs or nothing (served from file:// URLs here)."""

import filecmp

import pytest

from hbt.data import download as dl
from hbt.errors import DataError


def test_download_copies_every_file(data_dir, tmp_path, monkeypatch):
    names = ["en.json", "de.json", "README.md"]
    monkeypatch.setitem(dl.SOURCES, "xquad-r", ((data_dir / "xquad-r").as_uri(), names))
    dl.download(tmp_path, ["xquad-r"])
    for name in names:
        assert filecmp.cmp(tmp_path / "xquad-r" / name, data_dir / "xquad-r" / name, shallow=False)


def test_failed_download_leaves_no_partial_dir(data_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(dl.SOURCES, "xquad-r", ((data_dir / "xquad-r").as_uri(), ["en.json", "missing.json"]))
    with pytest.raises(DataError, match="download failed: .*missing.json"):
        dl.download(tmp_path, ["xquad-r"])
    assert list(tmp_path.iterdir()) == []


def test_unknown_corpus():
    with pytest.raises(DataError, match="unknown corpus"):
        dl.download("unused", ["mlqa"])


def test_sources_pin_the_manifest_commits():
    assert "9bc8c7fb6dd8d01d72a05a93c2cb96882b0d299c" in dl.SOURCES["xquad-r"][0]
    assert len(dl.SOURCES["xquad"][1]) == 14 and len(dl.SOURCES["tatoeba-laser"][1]) == 21
