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


@pytest.mark.parametrize("corpus", sorted(dl.SOURCES))
def test_sources_fetch_what_the_shipped_data_dir_holds_from_its_manifest_commit(data_dir, corpus):
    """A download gives the same files, from the same commit, as the data every number in the
    docs was measured on (shared/data, listed in its MANIFEST.md)."""
    import re

    base, names = dl.SOURCES[corpus]
    assert sorted(names) == sorted(p.name for p in (data_dir / corpus).iterdir())
    row = next(line for line in (data_dir / "MANIFEST.md").read_text().splitlines() if line.startswith(f"| {corpus}/"))
    assert re.search(r"\b[0-9a-f]{40}\b", row).group(0) in base
