"""Read LAReQA-format retrieval corpora (XQuAD-R) into the canonical Arrow tables.

LAReQA format = SQuAD v1.1 JSON where every paragraph also has `sentences` and
`sentence_breaks` ([start, end] character spans into `context`). We follow the
reference reader (google-research/xtreme, third_party/utils_lareqa.py):

* candidates are every sentence of every paragraph, text = context[start:end]
  from `sentence_breaks`, one candidate per (paragraph, position). No
  de-duplication by text: this reproduces the published counts exactly
  (ar 1222, de 1276, el 1234, en 1180, es 1215, hi 1244, ru 1219, th 852,
  tr 1167, vi 1209, zh 1196). De-duplicating by identical text within a
  paragraph would give zh 1195 (one zh paragraph repeats a sentence).
* a question's relevant candidate is the sentence whose span holds
  `answer_start`. Spans are read half-open, start <= answer_start < end: in zh the
  spans touch (end == next start) and 29 answers start exactly at a boundary;
  they belong to the next sentence, where their text actually is.
* a question whose answer_start lies in no span is skipped and counted (`answer_sentence`,
  the same rule as the training pairs of `hbt.data.squad`);
  an answer whose text runs past its sentence end is kept and counted.
* article index = position in the `data` list (same order in every language).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import pyarrow as pa

from hbt.data.schema import CANDIDATE_SCHEMA, QREL_SCHEMA, QUERY_SCHEMA
from hbt.errors import DataError
from hbt.languages import KNOWN_LANGUAGES, check_languages


@dataclass
class LareqaCorpus:
    queries: pa.Table
    candidates: pa.Table
    qrels: pa.Table
    # per language: questions, candidates, skipped_no_sentence, answer_past_sentence_end
    stats: dict = field(default_factory=dict)


# ---------------------------------------------------------------- helpers shared with squad.py

def load_json(path: Path):
    """Parse a JSON file or raise a one-line DataError naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None


def need(obj, key, typ, path, where):
    """obj[key] checked to be of type `typ`, else a one-line DataError naming file and field."""
    if not isinstance(obj, dict):
        raise DataError(f"{path}: {where}: expected an object, got {type(obj).__name__}")
    if key not in obj:
        raise DataError(f"{path}: {where}: missing key {key!r}")
    value = obj[key]
    ok = isinstance(value, typ) and not (typ is int and isinstance(value, bool))
    if not ok:
        name = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
        raise DataError(f"{path}: {where}.{key}: expected {name}, got {type(value).__name__}")
    return value


def unique_question(qa, q, seen: set, path, where) -> tuple[str, dict]:
    """(id, first answer) of question `q`; a repeated id across the file is a DataError."""
    qid = qa["id"]
    if qid in seen:
        raise DataError(f"{path}: {where}.qas[{q}].id: repeated question id {qid!r}")
    seen.add(qid)
    return qid, qa["answers"][0]


def iter_squad(doc, path):
    """Yield (article_index, paragraph_index, paragraph, where) of a validated SQuAD document,
    with each paragraph's `context` (str) and `qas` (list of questions with id, question and
    a non-empty `answers` list of {answer_start: int, text: str}) checked."""
    data = need(doc, "data", list, path, "top level")
    for a, article in enumerate(data):
        paragraphs = need(article, "paragraphs", list, path, f"data[{a}]")
        for p, par in enumerate(paragraphs):
            where = f"data[{a}].paragraphs[{p}]"
            if not need(par, "context", str, path, where).strip():
                raise DataError(f"{path}: {where}.context: empty")
            qas = need(par, "qas", list, path, where)
            for q, qa in enumerate(qas):
                qw = f"{where}.qas[{q}]"
                if not need(qa, "id", str, path, qw).strip():
                    raise DataError(f"{path}: {qw}.id: empty")
                if not need(qa, "question", str, path, qw).strip():
                    raise DataError(f"{path}: {qw}.question: empty")
                answers = need(qa, "answers", list, path, qw)
                if not answers:
                    raise DataError(f"{path}: {qw}.answers: empty list")
                for n, ans in enumerate(answers):
                    need(ans, "answer_start", int, path, f"{qw}.answers[{n}]")
                    need(ans, "text", str, path, f"{qw}.answers[{n}]")
            yield a, p, par, where


def check_span(start, end, length, path, where):
    if not (0 <= start <= end <= length):
        raise DataError(f"{path}: {where}: broken span [{start}, {end}] for a context of {length} chars")


def paragraph_breaks(par: dict, path, where: str) -> list[tuple[int, int]]:
    """The checked [start, end) spans of a paragraph's `sentence_breaks`, which must pair up
    with its `sentences` (a list of strings: the reference reads the text from the breaks, and
    a length mismatch means the two were not made together)."""
    context = par["context"]
    breaks = need(par, "sentence_breaks", list, path, where)
    sentences = need(par, "sentences", list, path, where)
    if len(sentences) != len(breaks):
        raise DataError(f"{path}: {where}: {len(sentences)} sentences but {len(breaks)} sentence_breaks")
    if not breaks:
        raise DataError(f"{path}: {where}.sentence_breaks: empty list")
    bad = next((i for i, text in enumerate(sentences) if not isinstance(text, str)), None)
    if bad is not None:
        raise DataError(f"{path}: {where}.sentences[{bad}]: expected str, got {type(sentences[bad]).__name__}")
    spans = []
    for s, br in enumerate(breaks):
        bw = f"{where}.sentence_breaks[{s}]"
        if (not isinstance(br, list) or len(br) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in br)):
            raise DataError(f"{path}: {bw}: expected [start, end] integers, got {br!r}")
        check_span(br[0], br[1], len(context), path, bw)
        spans.append((br[0], br[1]))
    return spans


def answer_sentence(spans: list[tuple[int, int]], answer: dict, context: str, path, where: str) -> Optional[int]:
    """The index of the [start, end) sentence span holding the answer's start, or None (no span
    holds it: the question is skipped). The one rule of the evaluation's relevant candidate and
    the training pairs' positive.

    Half-open, start <= answer_start < end: in zh the spans touch and an answer starting at a
    boundary belongs to the next sentence, where its text is. An answer that does not lie inside
    its context (start or end) is a DataError.
    """
    start, length = answer["answer_start"], len(answer["text"])
    if not 0 <= start < len(context) or start + length > len(context):
        raise DataError(f"{path}: {where}.answers[0]: answer_start {start} (+{length} chars) lies outside the "
                        f"context ({len(context)} chars)")
    return next((i for i, (begin, end) in enumerate(spans) if begin <= start < end), None)


def answered_questions(par: dict, spans: list[tuple[int, int]], seen: set, path, where: str,
                       stats: dict) -> Iterator[tuple[dict, str, dict, int]]:
    """(qa, question id, answer, sentence index) of each question of paragraph `par` whose answer
    starts in one of `spans`; the others are counted in `stats["skipped_no_sentence"]`."""
    for q, qa in enumerate(par["qas"]):
        qid, ans = unique_question(qa, q, seen, path, where)
        hit = answer_sentence(spans, ans, par["context"], path, f"{where}.qas[{q}]")
        if hit is None:
            stats["skipped_no_sentence"] += 1
            continue
        yield qa, qid, ans, hit


def read_breaks(path: Path) -> dict[tuple[int, int], tuple[str, list[tuple[int, int]]]]:
    """{(article, paragraph): (context, sentence spans)} of one LAReQA file."""
    path = Path(path)
    return {(a, p): (par["context"], paragraph_breaks(par, path, where))
            for a, p, par, where in iter_squad(load_json(path), path)}


# ---------------------------------------------------------------- reader

def _read_one(path: Path, lang: str, seen_ids: set, queries, candidates, qrels) -> dict:
    doc = load_json(path)
    stats = {"questions": 0, "candidates": 0, "skipped_no_sentence": 0, "answer_past_sentence_end": 0}
    for a, p, par, where in iter_squad(doc, path):
        context = par["context"]
        spans = paragraph_breaks(par, path, where)
        for s, (start, end) in enumerate(spans):
            candidates.append({
                "id": f"{lang}:{a}:{p}:{s}", "lang": lang, "sentence": context[start:end],
                "context": context, "article": a,
            })
            stats["candidates"] += 1
        for qa, qid, ans, hit in answered_questions(par, spans, seen_ids, path, where, stats):
            if ans["answer_start"] + len(ans["text"]) > spans[hit][1]:
                stats["answer_past_sentence_end"] += 1
            queries.append({"id": qid, "lang": lang, "text": qa["question"], "article": a})
            qrels.append({"query_id": qid, "lang": lang, "candidate_id": f"{lang}:{a}:{p}:{hit}"})
            stats["questions"] += 1
    return stats


def _file_language(path: Path) -> str:
    """The language a `{lang}.json` file holds, from its name."""
    if path.stem not in KNOWN_LANGUAGES:
        raise DataError(f"{path}: file name is not a language code ({{lang}}.json, lang an ISO 639-1 code)")
    return path.stem


def read_lareqa(path_or_dir, languages=None) -> LareqaCorpus:
    """Read one LAReQA file ({lang}.json) or a directory of them.

    languages: codes to read from a directory (all {lang}.json found if None);
    a requested language without its file raises DataError naming the file."""
    root = Path(path_or_dir)
    if root.is_dir():
        if languages is None:
            files = sorted(root.glob("*.json"))
            if not files:
                raise DataError(f"{root}: no {{lang}}.json files in this directory")
            pairs = [(_file_language(f), f) for f in files]
        else:
            langs = check_languages(languages)
            if not langs:
                raise DataError(f"{root}: empty language list")
            pairs = [(lang, root / f"{lang}.json") for lang in langs]
            for _, f in pairs:
                if not f.is_file():
                    raise DataError(f"{f}: file not found")
    elif root.is_file():
        pairs = [(_file_language(root), root)]
        if languages is not None and list(languages) != [root.stem]:
            raise DataError(f"{root}: file holds language {root.stem!r}, asked for {list(languages)}")
    else:
        raise DataError(f"{root}: file or directory not found")

    queries, candidates, qrels, stats = [], [], [], {}
    for lang, f in pairs:
        stats[lang] = _read_one(f, lang, set(), queries, candidates, qrels)
        if stats[lang]["questions"] == 0:
            raise DataError(f"{f}: no question has its answer_start inside a sentence_breaks span "
                            f"({stats[lang]['skipped_no_sentence']} skipped): nothing to evaluate")
    return LareqaCorpus(
        queries=pa.Table.from_pylist(queries, schema=QUERY_SCHEMA),
        candidates=pa.Table.from_pylist(candidates, schema=CANDIDATE_SCHEMA),
        qrels=pa.Table.from_pylist(qrels, schema=QREL_SCHEMA),
        stats=stats,
    )
