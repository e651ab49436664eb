import json

import pytest

from hbt.data.lareqa import read_lareqa
from hbt.data.schema import RAW_PAIR_SCHEMA
from hbt.data.squad import read_squad_parallel, split_sentences
from hbt.errors import DataError

LANGS = ["ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh"]
XQUAD_R = [lang for lang in LANGS if lang != "ro"]  # ro is in XQuAD only


@pytest.fixture(scope="module")
def real(data_dir):
    stats = {}
    table = read_squad_parallel(data_dir / "xquad", LANGS, stats, breaks_dir=data_dir / "xquad-r")
    return table, stats


def test_real_parallel_records(real):
    table, stats = real
    assert table.schema == RAW_PAIR_SCHEMA
    rows = table.to_pylist()
    assert len(rows) == 1190 * len(LANGS)
    en_ids = {r["parallel_id"] for r in rows if r["lang"] == "en"}
    assert len(en_ids) == 1190
    by_id = {}
    for r in rows:
        by_id.setdefault(r["parallel_id"], []).append(r["lang"])
    assert set(by_id) == en_ids
    assert all(sorted(langs) == LANGS for langs in by_id.values())  # one row per language


def test_real_positive_holds_answer(real):
    table, stats = real
    rates = {lang: 1 - s["answer_not_in_positive"] / s["questions"] for lang, s in stats.items()}
    print("answer-in-positive rate:", {k: round(v, 4) for k, v in rates.items()})
    assert all(rate >= 0.98 for lang, rate in rates.items() if lang != "ro")  # XQuAD-R's own sentences
    assert rates["ro"] >= 0.95  # the fallback splitter
    assert {lang for lang, s in stats.items() if s["segmentation"] == "splitter"} == {"ro"}
    assert all(s["skipped_no_sentence"] == 0 for s in stats.values())


def test_real_positive_is_the_xquad_r_relevant_candidate(real, data_dir):
    """One segmentation: every training positive is, per language, exactly the XQuAD-R
    candidate sentence that evaluation counts as the question's answer, and the hard
    negatives are the other candidates of that paragraph."""
    table, _ = real
    corpus = read_lareqa(data_dir / "xquad-r", XQUAD_R)
    sentence = dict(zip(corpus.candidates.column("id").to_pylist(), corpus.candidates.column("sentence").to_pylist()))
    relevant = {(q, lang): c for q, lang, c in zip(*(corpus.qrels.column(n).to_pylist()
                                                      for n in ("query_id", "lang", "candidate_id")))}
    paragraph = {}
    for cid, text in sentence.items():
        lang, a, p, _ = cid.split(":")
        paragraph.setdefault((lang, a, p), []).append(text)
    checked = 0
    for r in table.to_pylist():
        if r["lang"] == "ro":
            continue
        cid = relevant[(r["parallel_id"], r["lang"])]
        assert r["positive"] == sentence[cid]
        lang, a, p, _ = cid.split(":")
        others = [t for t in paragraph[(lang, a, p)] if t != r["positive"] and t.strip()]
        assert r["hard_negatives"] == others
        checked += 1
    assert checked == 1190 * len(XQUAD_R)


def test_real_hard_negatives_exclude_positive(real):
    table, _ = real
    for r in table.to_pylist():
        assert r["positive"] and r["positive"] not in r["hard_negatives"]
        assert r["positive"] in r["context"]
        assert all(n in r["context"] for n in r["hard_negatives"])


def test_context_differing_from_xquad_r_is_refused(tmp_path):
    (tmp_path / "xquad").mkdir()
    (tmp_path / "xquad-r").mkdir()
    (tmp_path / "xquad" / "xquad.en.json").write_text(json.dumps(_doc()))
    lareqa = _doc(context="One two. Three five.")
    lareqa["data"][0]["paragraphs"][0].update(sentence_breaks=[[0, 8], [9, 20]], sentences=["One two.", "Three five."])
    (tmp_path / "xquad-r" / "en.json").write_text(json.dumps(lareqa))
    with pytest.raises(DataError, match=r"xquad.en.json: data\[0\].paragraphs\[0\].context: differs from XQuAD-R"):
        read_squad_parallel(tmp_path / "xquad", ["en"], breaks_dir=tmp_path / "xquad-r")


def test_breaks_give_the_sentences(tmp_path):
    (tmp_path / "xquad").mkdir()
    (tmp_path / "xquad-r").mkdir()
    (tmp_path / "xquad" / "xquad.en.json").write_text(json.dumps(_doc()))
    lareqa = _doc()
    # not where a splitter would cut
    lareqa["data"][0]["paragraphs"][0].update(sentence_breaks=[[0, 4], [4, 20]], sentences=["One ", "two. Three four."])
    (tmp_path / "xquad-r" / "en.json").write_text(json.dumps(lareqa))
    rows = read_squad_parallel(tmp_path / "xquad", ["en"], breaks_dir=tmp_path / "xquad-r").to_pylist()
    assert rows[0]["positive"] == "two. Three four." and rows[0]["hard_negatives"] == ["One "]


def test_splitter():
    text = "Dr. Who met e.g. them in 3.5 hours. He left! Did she? Yes."
    spans = split_sentences(text, "en")
    assert [text[s:e].strip() for s, e in spans] == [
        "Dr. Who met e.g. them in 3.5 hours.", "He left!", "Did she?", "Yes."]
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    zh = "他来了。她走了！为什么？好"
    assert [zh[s:e] for s, e in split_sentences(zh, "zh")] == ["他来了。", "她走了！", "为什么？", "好"]
    hi = "वह आया। वह गया।"
    assert len(split_sentences(hi, "hi")) == 2
    ar = "هل جاء؟ نعم."
    assert len(split_sentences(ar, "ar")) == 2
    th = " ".join(["ก" * 30] * 10)
    th_spans = split_sentences(th, "th")
    assert 1 < len(th_spans) < 10
    assert "".join(th[s:e] for s, e in th_spans) == th
    assert split_sentences(th, "th") == th_spans  # deterministic


def _doc(context="One two. Three four.", answer_start=9, text="Three", qid="q1"):
    return {"data": [{"title": "t", "paragraphs": [{"context": context, "qas": [
        {"id": qid, "question": "Q?", "answers": [{"answer_start": answer_start, "text": text}]}]}]}]}


def test_small_files(tmp_path):
    for lang in ("en", "de"):
        (tmp_path / f"xquad.{lang}.json").write_text(json.dumps(_doc()))
    rows = read_squad_parallel(tmp_path, ["en", "de"]).to_pylist()
    assert [(r["parallel_id"], r["lang"]) for r in rows] == [("q1", "en"), ("q1", "de")]
    assert rows[0]["positive"] == "Three four."
    assert rows[0]["hard_negatives"] == ["One two."]
    assert rows[0]["article"] == 0 and rows[0]["context"] == "One two. Three four."


@pytest.mark.parametrize("doc", [
    "{not json",
    {"nodata": []},
    {"data": [{"paragraphs": [{"qas": []}]}]},
    {"data": [{"paragraphs": [{"context": 1, "qas": []}]}]},
    _doc(answer_start=-1),
    _doc(answer_start=100),
    _doc(answer_start=15, text="four. and more"),
    _doc(answer_start="9"),
    {"data": [{"paragraphs": [{"context": "a", "qas": [{"id": "q", "question": "?"}]}]}]},
])
def test_bad_input_raises_one_line(tmp_path, doc):
    (tmp_path / "xquad.en.json").write_text(doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(DataError) as e:
        read_squad_parallel(tmp_path, ["en"])
    assert "xquad.en.json" in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_missing_file_and_dir(tmp_path):
    with pytest.raises(DataError, match="xquad.de.json"):
        read_squad_parallel(tmp_path, ["de"])
    with pytest.raises(DataError, match="nodir"):
        read_squad_parallel(tmp_path / "nodir", ["de"])
