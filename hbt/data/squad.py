"""Read XQuAD (SQuAD v1.1 format, xquad.{lang}.json) as parallel training pairs.

One row per (question, language): parallel_id = the question id (XQuAD shares ids
across languages), positive = the sentence holding answer_start, context = the
paragraph, hard_negatives = the paragraph's other sentences.

One segmentation for training and evaluation: XQuAD-R is XQuAD plus `sentence_breaks`
(same articles, paragraphs, contexts and answer offsets), and its candidates are
`context[start:end]` of those breaks. Given `breaks_dir` (the XQuAD-R dir), every language
that has a `{lang}.json` there takes its sentences from it, exactly as the evaluation's
candidates (`hbt.data.lareqa`): a positive is the candidate sentence whose half-open span
holds answer_start, and a question whose answer_start lies in no span is skipped, as the
evaluation skips it. A context that differs from XQuAD-R's is an error, not a silent
re-split.

A language without XQuAD-R breaks (ro, or no `breaks_dir`) falls back to
`split_sentences`, a simple deterministic rule set:
* after `.`, `?` or `!` (plus any closing quotes/brackets) when followed by
  whitespace and then a character that is not a lowercase letter or digit
  (keeps "e.g. the" and "3.5" together), unless the "." ends a short list of
  abbreviations ("Dr.", "Mr.", "St.", "Jan.", ...) or a single capital initial
  ("J. Smith", "U.S. Army");
* right after the CJK / Devanagari / Arabic terminators `。！？।॥؟` (plus closing
  quotes/brackets), whitespace or not;
* Thai writes no sentence terminators; a space marks a clause/sentence break.
  Splitting on every space gives fragments of a few words, and the whole paragraph
  gives no hard negatives at all. We take the middle road: split Thai at runs of
  whitespace, then greedily merge consecutive chunks until each piece has at least
  THAI_MIN_CHARS characters (a trailing short piece joins the previous one).
Each sentence owns the text from its start up to the next sentence's start, so every
character of the context (also inter-sentence whitespace) lies in exactly one sentence;
the stored sentence text is stripped of surrounding whitespace.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa

from hbt.data.lareqa import answered_questions, iter_squad, load_json, read_breaks
from hbt.data.schema import RAW_PAIR_SCHEMA
from hbt.errors import DataError
from hbt.languages import check_languages

THAI_MIN_CHARS = 80

_CLOSERS = "\"'”’»)\\]」』）"
# A Latin-style terminator: split point after closers + whitespace, next char not lowercase/digit.
_LATIN_END = re.compile(rf"[.?!]+[{_CLOSERS}]*(\s+)(?=[^\s\da-zäöüßàâçéèêëîïôûùüÿñæœα-ωа-яё])")
# CJK / Devanagari / Arabic terminators: split right after them (and closers, whitespace).
_OTHER_END = re.compile(rf"[。！？।॥؟]+[{_CLOSERS}]*\s*")
_SPACE = re.compile(r"\s+")
# Words that end in "." without ending a sentence (checked case-insensitively).
_ABBREVIATIONS = frozenset("""
    mr mrs ms dr prof st jr sr mt ft no nr vs etc approx ca cf inc ltd co corp gen col lt sgt
    jan feb mar apr jun jul aug sep sept oct nov dec hr fr hl bzw evtl ggf usw sog""".split())
_WORD_BEFORE = re.compile(r"(\w+)$")


def _is_abbreviation(text: str, dot: int) -> bool:
    """True when the '.' at `dot` ends an abbreviation or an initial ("Dr.", "J.", "U.S.")."""
    if text[dot] != ".":
        return False
    m = _WORD_BEFORE.search(text, 0, dot)
    if not m:
        return False
    word = m.group(1)
    return word.lower() in _ABBREVIATIONS or (len(word) == 1 and word.isupper())


def _starts(text: str, lang: str) -> list[int]:
    """Start offsets of the sentences of `text` (first is always 0)."""
    cuts = {0}
    if lang == "th":
        pieces, last = [0], 0
        for m in _SPACE.finditer(text):
            # start a new piece at m.end() once the current one is long enough
            if m.end() < len(text) and m.start() - last >= THAI_MIN_CHARS:
                pieces.append(m.end())
                last = m.end()
        if len(pieces) > 1 and len(text) - pieces[-1] < THAI_MIN_CHARS // 2:
            pieces.pop()  # a short tail joins the previous piece
        cuts.update(pieces)
    else:
        for m in _LATIN_END.finditer(text):
            if not _is_abbreviation(text, m.start()):
                cuts.add(m.end())
        for m in _OTHER_END.finditer(text):
            if m.end() < len(text):
                cuts.add(m.end())
    return sorted(c for c in cuts if c < len(text)) or [0]


def split_sentences(text: str, lang: str) -> list[tuple[int, int]]:
    """Deterministic [start, end) spans covering `text`, one per sentence (see module doc)."""
    starts = _starts(text, lang)
    ends = starts[1:] + [len(text)]
    return list(zip(starts, ends))


def _paragraph_spans(context: str, lang: str, breaks, key: tuple[int, int], path: Path,
                     where: str) -> tuple[list[tuple[int, int]], bool]:
    """([start, end) sentence spans, whether they come from XQuAD-R) of paragraph `key`."""
    if breaks is None:
        return split_sentences(context, lang), False
    if key not in breaks:
        raise DataError(f"{path}: {where}: no such paragraph in the XQuAD-R file (the two files disagree)")
    r_context, spans = breaks[key]
    if r_context != context:
        raise DataError(f"{path}: {where}.context: differs from XQuAD-R's, whose sentence breaks hbt trains on")
    return spans, True


def _read_one(path: Path, lang: str, breaks, rows: list, stats: dict) -> None:
    doc = load_json(path)
    seen = set()
    for a, p, par, where in iter_squad(doc, path):
        context = par["context"]
        spans, from_breaks = _paragraph_spans(context, lang, breaks, (a, p), path, where)
        # XQuAD-R candidates are context[start:end] as they are; the fallback splitter's
        # sentences own their trailing whitespace, so they are stripped.
        texts = [context[s:e] if from_breaks else context[s:e].strip().strip("\ufeff").strip() for s, e in spans]
        for qa, qid, ans, hit in answered_questions(par, spans, seen, path, where, stats):
            positive = texts[hit]
            if ans["text"].strip() not in positive:
                stats["answer_not_in_positive"] += 1
            negatives = [t for i, t in enumerate(texts) if i != hit and t.strip() and t != positive]
            rows.append({
                "parallel_id": qid, "lang": lang, "article": a, "question": qa["question"],
                "positive": positive, "context": context, "hard_negatives": negatives, "positive_id": None,
            })
            stats["questions"] += 1


def read_squad_parallel(dir, languages, stats: dict | None = None, breaks_dir=None) -> pa.Table:
    """Read xquad.{lang}.json of each language in `dir` into RAW_PAIR_SCHEMA rows.

    `breaks_dir`: the XQuAD-R dir whose sentence breaks cut the paragraphs (see the module
    doc); None: `split_sentences` for every language. If `stats` is a dict it receives, per
    language, {questions, answer_not_in_positive, skipped_no_sentence, segmentation}."""
    root = Path(dir)
    if not root.is_dir():
        raise DataError(f"{root}: directory not found")
    langs = check_languages(languages)
    if not langs:
        raise DataError(f"{root}: empty language list")
    rows = []
    for lang in langs:
        path = root / f"xquad.{lang}.json"
        if not path.is_file():
            raise DataError(f"{path}: file not found")
        breaks_file = Path(breaks_dir) / f"{lang}.json" if breaks_dir is not None else None
        breaks = read_breaks(breaks_file) if breaks_file is not None and breaks_file.is_file() else None
        s = {"questions": 0, "answer_not_in_positive": 0, "skipped_no_sentence": 0,
             "segmentation": "xquad-r" if breaks is not None else "splitter"}
        _read_one(path, lang, breaks, rows, s)
        if stats is not None:
            stats[lang] = s
    return pa.Table.from_pylist(rows, schema=RAW_PAIR_SCHEMA)
