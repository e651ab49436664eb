"""`hbt data download`: fetch the corpora from their public repositories, pinned by commit."""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from pathlib import Path

from hbt.errors import DataError
from hbt.io import atomic_directory
from hbt.languages import XQUAD_R_LANGUAGES

_RAW = "https://raw.githubusercontent.com"
# Same files and commits as the shipped data directory's MANIFEST.md.
SOURCES = {
    "xquad-r": (f"{_RAW}/google-research-datasets/lareqa/9bc8c7fb6dd8d01d72a05a93c2cb96882b0d299c/xquad-r",
                [f"{lang}.json" for lang in XQUAD_R_LANGUAGES] + ["LICENSE", "README.md"]),
    "xquad": (f"{_RAW}/deepmind/xquad/60cac411649156efb6aab9dd4c9cde787a2c0345",
              [f"xquad.{lang}.json" for lang in (*XQUAD_R_LANGUAGES, "ro")] + ["CC-BY-SA4.0.txt", "README.md"]),
    "tatoeba-laser": (f"{_RAW}/facebookresearch/LASER/74bc6ae7ffb7cba670fe0f428d0ede9f666fb821/data/tatoeba/v1",
                      [f"tatoeba.{code}-eng.{side}"
                       for code in ("ara", "cmn", "deu", "ell", "hin", "rus", "spa", "tha", "tur", "vie")
                       for side in (code, "eng")] + ["README.md"]),
}


def download(out_dir: Path, corpora=tuple(SOURCES), timeout: float = 60.0) -> Path:
    """Download each corpus into `out_dir/<corpus>/`; a corpus directory appears only when complete."""
    out_dir = Path(out_dir)
    for corpus in corpora:
        if corpus not in SOURCES:
            raise DataError(f"unknown corpus {corpus!r} (known: {', '.join(SOURCES)})")
        base, names = SOURCES[corpus]
        with atomic_directory(out_dir / corpus) as staging:
            for name in names:
                url = f"{base}/{name}"
                try:
                    with urllib.request.urlopen(url, timeout=timeout) as response, open(staging / name, "wb") as sink:
                        shutil.copyfileobj(response, sink)
                except (urllib.error.URLError, OSError) as error:
                    raise DataError(f"download failed: {url} ({getattr(error, 'reason', error)})") from None
    return out_dir
