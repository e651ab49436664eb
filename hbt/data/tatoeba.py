"""Read Tatoeba bitexts in the LASER layout into BITEXT_SCHEMA rows.

Line i of tatoeba.{iso3}-eng.{iso3} is aligned with line i of tatoeba.{iso3}-eng.eng.
Each aligned pair gives two rows sharing parallel_id f"{iso3}-eng:{i}" (i from 0):
one in the language (mapped to ISO 639-1 via ISO3_TO_ISO1) and one in "en".
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from hbt.data.schema import BITEXT_SCHEMA
from hbt.errors import DataError
from hbt.languages import ISO3_TO_ISO1

ISO1_TO_ISO3 = {v: k for k, v in ISO3_TO_ISO1.items()}


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 (byte {e.start})") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line, it does not start a new one
    lines = [line.rstrip("\r") for line in lines]
    for i, line in enumerate(lines):
        if not line.strip():
            raise DataError(f"{path}: line {i + 1}: empty line")
    return lines


def _iso3(code: str) -> str:
    if code in ISO3_TO_ISO1 and code != "eng":
        return code
    if code in ISO1_TO_ISO3 and code != "en":
        return ISO1_TO_ISO3[code]
    known = sorted(c for c in ISO1_TO_ISO3 if c != "en")
    raise DataError(f"unknown Tatoeba language {code!r} (known: {', '.join(known)})")


def read_tatoeba(dir, languages=None) -> pa.Table:
    """Read the {xx}-eng bitexts in `dir` for `languages` (ISO 639-1 or 639-3 codes;
    all tatoeba.*-eng.* pairs found if None) into BITEXT_SCHEMA rows."""
    root = Path(dir)
    if not root.is_dir():
        raise DataError(f"{root}: directory not found")
    if languages is None:
        iso3s = sorted({p.name.split(".")[1][:-4] for p in root.glob("tatoeba.*-eng.eng")})
        if not iso3s:
            raise DataError(f"{root}: no tatoeba.{{xxx}}-eng.eng files in this directory")
        for code in iso3s:
            if code not in ISO3_TO_ISO1:
                raise DataError(f"{root / f'tatoeba.{code}-eng.eng'}: unknown language code {code!r}")
    else:
        iso3s = [_iso3(c) for c in languages]
        if not iso3s:
            raise DataError(f"{root}: empty language list")
    ids, langs, texts = [], [], []
    for iso3 in iso3s:
        src_path = root / f"tatoeba.{iso3}-eng.{iso3}"
        eng_path = root / f"tatoeba.{iso3}-eng.eng"
        src, eng = _lines(src_path), _lines(eng_path)
        if len(src) != len(eng):
            raise DataError(f"{src_path}: {len(src)} lines but {eng_path.name} has {len(eng)}")
        if not src:
            raise DataError(f"{src_path}: empty file")
        iso1 = ISO3_TO_ISO1[iso3]
        for i, (a, b) in enumerate(zip(src, eng)):
            pid = f"{iso3}-eng:{i}"
            ids += [pid, pid]
            langs += [iso1, "en"]
            texts += [a, b]
    return pa.table({"parallel_id": ids, "lang": langs, "text": texts}, schema=BITEXT_SCHEMA)
