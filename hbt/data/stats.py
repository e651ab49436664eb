"""`hbt data stats`: per corpus and language, how many queries and candidates."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc

from hbt.data.lareqa import read_lareqa
from hbt.data.prepare import counts_by_lang, load_manifest
from hbt.data.squad import read_squad_parallel
from hbt.data.tatoeba import read_tatoeba
from hbt.errors import DataError
from hbt.languages import ISO3_TO_ISO1


def _langs_in(directory: Path, pattern: str, strip) -> list[str]:
    return sorted(strip(path.name) for path in directory.glob(pattern))


def _distinct_sentences(pairs, lang: str) -> int:
    """A training language's candidates: the distinct positives and hard negatives."""
    rows = pairs.filter(pc.equal(pairs.column("lang"), lang))
    sentences = set(rows.column("positive").to_pylist())
    for negatives in rows.column("hard_negatives").to_pylist():
        sentences.update(negatives)
    return len(sentences)


def raw_stats(data_dir: Path) -> list[tuple[str, str, int, int]]:
    """Rows of (corpus, lang, queries, candidates) for every corpus found under `data_dir`."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"data directory not found: {data_dir}")
    rows = []
    if (data_dir / "xquad-r").is_dir():
        corpus = read_lareqa(data_dir / "xquad-r")
        queries, candidates = counts_by_lang(corpus.queries), counts_by_lang(corpus.candidates)
        rows += [("xquad-r", lang, queries.get(lang, 0), candidates.get(lang, 0)) for lang in sorted(candidates)]
    if (data_dir / "xquad").is_dir():
        langs = _langs_in(data_dir / "xquad", "xquad.*.json", lambda name: name.split(".")[1])
        breaks = data_dir / "xquad-r" if (data_dir / "xquad-r").is_dir() else None
        pairs = read_squad_parallel(data_dir / "xquad", langs, breaks_dir=breaks)
        for lang, count in counts_by_lang(pairs).items():
            rows.append(("xquad", lang, count, _distinct_sentences(pairs, lang)))
    if (data_dir / "tatoeba-laser").is_dir():
        iso3 = _langs_in(data_dir / "tatoeba-laser", "tatoeba.*-eng.eng", lambda name: name.split(".")[1][:3])
        bitext = read_tatoeba(data_dir / "tatoeba-laser", [ISO3_TO_ISO1[code] for code in iso3 if code in ISO3_TO_ISO1])
        counts = counts_by_lang(bitext)
        rows += [("tatoeba", lang, count, count) for lang, count in counts.items() if lang != "en"]
    if not rows:
        raise DataError(f"{data_dir}: no xquad-r/, xquad/ or tatoeba-laser/ corpus found")
    return rows


def prepared_stats(prepared_dir: Path) -> list[tuple[str, str, int, int]]:
    """Rows of (split, lang, queries, candidates); a training pair counts as one of each."""
    counts = load_manifest(prepared_dir)["counts"]
    rows = [("train", lang, n, n) for lang, n in counts["train_pairs"].items()]
    for split in ("dev", "test"):
        queries, candidates = counts.get(f"{split}_queries", {}), counts.get(f"{split}_candidates", {})
        rows += [(split, lang, n, candidates.get(lang, 0)) for lang, n in queries.items()]
    return rows


def format_table(rows) -> str:
    lines = [f"{'corpus':<10}{'lang':<6}{'queries':>9}{'candidates':>12}"]
    lines += [f"{corpus:<10}{lang:<6}{queries:>9,}{candidates:>12,}" for corpus, lang, queries, candidates in rows]
    return "\n".join(lines)
