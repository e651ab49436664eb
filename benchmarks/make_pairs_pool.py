"""Write a synthetic mMARCO-shaped `pairs` pool (docs/training.md): N records x L languages.

One JSON line per (record, language), record-major like a conversion of mMARCO's files:

    {"parallel_id": "17", "lang": "de", "question": "...?", "positive": "....",
     "hard_negatives": ["...", ...], "positive_id": "17"}

Texts are word-like tokens from a fixed vocabulary per language (`vocabulary(lang)`: syllables
of that language's letters; zh: CJK characters), so a test model's word-level tokenizer can
cover them, drawn as phrases of 2-5 words from a fixed phrase table whose word positions every
language shares: the rows of a record are "translations" of one another. Lengths are mMARCO's:
a question of 2-3 phrases (~40-80 characters), a positive passage of 10-16 phrases (~250-400
characters), 0-3 hard negatives of passage length. A `--shared` fraction of the records
(default 10%) share their positive passage with another record, in pairs: the same
`positive_id` and the same positive text in every language, as two MS MARCO queries answered
by one passage do.

Deterministic in `--seed`: the pool is generated in fixed chunks of `CHUNK_RECORDS` records,
chunk c from its own generator `(seed, c)`, so its content does not depend on `--shards`.
Streaming: one chunk at a time is built (pyarrow string kernels, no Python loop over rows or
words) and appended to the output, so memory stays flat in N.

    python benchmarks/make_pairs_pool.py --records 100000 --out runs/pools/pool.jsonl
    python benchmarks/make_pairs_pool.py --records 1000000 --shards 8 --out runs/pools/pool-1m/
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

LANGUAGES = ("en", "de", "es", "fr", "zh")
CHUNK_RECORDS = 10_000  # part of the pool's definition: changing it changes the pool
VOCABULARY_SIZE = 2048
PHRASES = 16_384          # phrases of 2-5 words (3.5 on average, ~25 characters with a space)
PHRASE_SEED = 23
QUESTION_PHRASES = (2, 3)  # inclusive ranges: ~60 characters
PASSAGE_PHRASES = (10, 16)  # ~320 characters
MAX_NEGATIVES = 3

# Letters each language's syllables are made of (consonant + vowel), for text that looks and
# encodes (UTF-8 widths) roughly like the language; zh: a "syllable" is one CJK character.
_LETTERS = {
    "en": ("bcdfghklmnprstvwy", "aeiou"),
    "de": ("bcdfghklmnprstwz", "aeiouäöü"),
    "es": ("bcdfglmnprstvñ", "aeiouáéó"),
    "fr": ("bcdfglmnprstv", "aeiouéèà"),
}
_CJK = "".join(chr(0x4E00 + i) for i in range(400))


@lru_cache(maxsize=None)
def vocabulary(lang: str, size: int = VOCABULARY_SIZE) -> tuple[str, ...]:
    """`size` distinct words of 2-4 syllables, deterministic per language (not per seed: a test
    model's tokenizer is built from them once)."""
    rng = np.random.default_rng(zlib.crc32(lang.encode()))
    if lang in _LETTERS:
        consonants, vowels = _LETTERS[lang]
        syllables = [c + v for c in consonants for v in vowels]
    else:
        syllables = list(_CJK)
    words: dict[str, None] = {}  # insertion-ordered set
    while len(words) < size:
        count = int(rng.integers(2, 5))
        words["".join(syllables[i] for i in rng.integers(0, len(syllables), count))] = None
    return tuple(words)


@lru_cache(maxsize=None)
def _phrases(languages: tuple[str, ...]) -> pa.Array:
    """`PHRASES` phrases of 2-5 words in every language, language-major (phrase p of language
    l at l * PHRASES + p). Texts are drawn as phrases, not words: a quarter of the elements to
    gather and join, which is what the generator's time goes to. The word positions are shared
    by all languages, so phrase p is one "phrase" in each of them; Zipf-like word frequencies
    (log-uniform positions), as words in text have."""
    rng = np.random.default_rng(PHRASE_SEED)
    counts = rng.integers(2, 6, PHRASES)
    positions = (np.exp(rng.random(int(counts.sum())) * np.log(VOCABULARY_SIZE)) - 1).astype(np.int64)
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    phrases = []
    for lang in languages:
        words = pa.array(vocabulary(lang)).take(pa.array(positions))
        phrases.append(pc.binary_join(pa.ListArray.from_arrays(offsets, words), " "))
    return pa.concat_arrays(phrases)


def _texts(rng: np.random.Generator, count: int, phrases: tuple[int, int], languages: tuple[str, ...],
           end: str) -> pa.Array:
    """`count` texts of `phrases` (inclusive range) phrases each, in every language,
    language-major (text t of language l at l * count + t), each ending in `end`."""
    sizes = rng.integers(phrases[0], phrases[1] + 1, count)
    positions = rng.integers(0, PHRASES, int(sizes.sum()))
    offsets = np.concatenate([[0], np.cumsum(np.tile(sizes, len(languages)))]).astype(np.int32)
    flat = np.concatenate([positions + l * PHRASES for l in range(len(languages))])
    lists = pa.ListArray.from_arrays(pa.array(offsets), _phrases(languages).take(pa.array(flat)))
    return pc.binary_join_element_wise(pc.binary_join(lists, " "), end, "")


def _chunk_lines(seed: int, chunk: int, first: int, count: int, languages: tuple[str, ...],
                 shared: float, context: bool) -> pa.Array:
    """The JSON lines of records [first, first + count), record-major (each ends in a newline).
    The texts hold no quote, backslash or control character, so they need no JSON escaping."""
    rng, n_langs = np.random.default_rng([seed, chunk]), len(languages)
    questions = _texts(rng, count, QUESTION_PHRASES, languages, "?")
    passages = _texts(rng, count, PASSAGE_PHRASES, languages, ".")
    negative_counts = rng.integers(0, MAX_NEGATIVES + 1, count)
    negatives = _texts(rng, int(negative_counts.sum()), PASSAGE_PHRASES, languages, ".")
    # Shared positives, in pairs within the chunk: record dst takes record src's passage.
    passage_of = np.arange(count)
    pairs = int(round(count * shared / 2))
    chosen = rng.permutation(count)[:2 * pairs]
    passage_of[chosen[pairs:]] = chosen[:pairs]

    # Row r * L + l is record r in language l; text t of language l is at l * count + t.
    record = np.repeat(np.arange(count), n_langs)
    lang = np.tile(np.arange(n_langs), count)
    question = questions.take(pa.array(lang * count + record))
    positive = passages.take(pa.array(lang * count + passage_of[record]))
    # A row's hard negatives: its record's negative texts, in its language, as a JSON list body.
    row_negatives = negative_counts[record]
    first_negative = np.concatenate([[0], np.cumsum(negative_counts)])[record]
    within = np.arange(int(row_negatives.sum())) - np.repeat(np.cumsum(row_negatives) - row_negatives, row_negatives)
    negative = (np.repeat(first_negative + lang * int(negative_counts.sum()), row_negatives) + within)
    quoted = pc.binary_join_element_wise('"', negatives.take(pa.array(negative)), '"', "")
    negative_lists = pa.ListArray.from_arrays(
        pa.array(np.concatenate([[0], np.cumsum(row_negatives)]).astype(np.int32)), quoted)
    ids = pc.cast(pa.array(first + np.arange(count)), pa.string())
    return pc.binary_join_element_wise(
        '{"parallel_id": "', ids.take(pa.array(record)), '", "lang": "', pa.array(languages).take(pa.array(lang)),
        '", "question": "', question, '", "positive": "', positive,
        '", "hard_negatives": [', pc.binary_join(negative_lists, ", "),
        '], "positive_id": "', ids.take(pa.array(passage_of[record])),
        '", "context": ""}\n' if context else '"}\n', "")


def _write(lines: pa.Array, file) -> None:
    """Append `lines` (a StringArray) to `file` as its bytes: no Python string per row."""
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32, count=len(lines) + 1, offset=lines.offset * 4)
    file.write(memoryview(lines.buffers()[2])[offsets[0]:offsets[-1]])


def write_pool(out: Path, records: int, languages=LANGUAGES, seed: int = 0, shards: Optional[int] = None,
               shared: float = 0.1, context: bool = False) -> dict:
    """Write the pool to `out`: one file when `shards` is None, else a directory of `shards`
    files `part-00000.jsonl`... holding consecutive records. Written beside `out` and moved into
    place, so a pool found at `out` is complete. -> a summary (rows, bytes, seconds)."""
    out, languages = Path(out), tuple(languages)
    if records < 1 or (shards is not None and not 1 <= shards <= records) or not 0 <= shared <= 1:
        raise ValueError(f"need records >= 1, 1 <= shards <= records, 0 <= shared <= 1 "
                         f"(got {records}, {shards}, {shared})")
    started, cpu_started = time.perf_counter(), time.process_time()
    staging = out.with_name(out.name + ".partial")
    if shards is None:
        paths, bounds = [staging], [0, records]
    else:
        staging.mkdir(parents=True, exist_ok=True)
        paths = [staging / f"part-{k:05d}.jsonl" for k in range(shards)]
        bounds = [records * k // shards for k in range(shards + 1)]
    files = [open(path, "wb") for path in paths]
    try:
        for chunk, first in enumerate(range(0, records, CHUNK_RECORDS)):
            count = min(CHUNK_RECORDS, records - first)
            lines = _chunk_lines(seed, chunk, first, count, languages, shared, context)
            for k, file in enumerate(files):  # the shards this chunk's records fall in
                lo, hi = max(bounds[k], first), min(bounds[k + 1], first + count)
                if lo < hi:
                    _write(lines.slice((lo - first) * len(languages), (hi - lo) * len(languages)), file)
    finally:
        for file in files:
            file.close()
    size = sum(path.stat().st_size for path in paths)
    os.replace(staging, out)
    pa.default_memory_pool().release_unused()  # the chunks' buffers: give them back to the machine
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return {"path": str(out), "records": records, "languages": list(languages), "rows": records * len(languages),
            "shards": shards, "seed": seed, "shared": shared, "bytes": size, "seconds": seconds,
            "rows_per_s": records * len(languages) / seconds,
            # CPU time apart: on a shared machine the wall time also counts other people's work
            "cpu_seconds": cpu, "rows_per_cpu_s": records * len(languages) / cpu}


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=100_000, help="parallel records (default 100000)")
    p.add_argument("--languages", default=",".join(LANGUAGES), help=f"default {','.join(LANGUAGES)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shards", type=int, help="write a directory of this many part-NNNNN.jsonl files "
                   "(default: one file)")
    p.add_argument("--shared", type=float, default=0.1, help="fraction of records whose positive passage "
                   "another record shares (default 0.1)")
    p.add_argument("--context", action="store_true", help='give every row a "context": "" field')
    p.add_argument("--out", type=Path, required=True, help="the file (or, with --shards, the directory) to write")
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> dict:
    args = parse_args(argv)
    if args.out.exists():
        sys.exit(f"error: {args.out} exists")
    summary = write_pool(args.out, args.records, args.languages.split(","), args.seed, args.shards,
                         args.shared, args.context)
    print(f"{summary['rows']} rows ({summary['records']} records x {len(summary['languages'])} languages), "
          f"{summary['bytes'] / 2**20:.0f} MiB in {summary['seconds']:.1f} s ({summary['rows_per_s']:,.0f} rows/s; "
          f"{summary['cpu_seconds']:.1f} s of CPU, {summary['rows_per_cpu_s']:,.0f} rows/s) "
          f"-> {summary['path']}")
    return summary


if __name__ == "__main__":
    main()
