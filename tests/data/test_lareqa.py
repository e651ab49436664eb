import json

import pytest

from hbt.data.lareqa import LareqaCorpus, read_lareqa
from hbt.data.schema import CANDIDATE_SCHEMA, QREL_SCHEMA, QUERY_SCHEMA
from hbt.errors import DataError

CANDIDATES = {"ar": 1222, "de": 1276, "el": 1234, "en": 1180, "es": 1215, "hi": 1244,
              "ru": 1219, "th": 852, "tr": 1167, "vi": 1209, "zh": 1196}


@pytest.fixture(scope="module")
def corpus(data_dir) -> LareqaCorpus:
    return read_lareqa(data_dir / "xquad-r")


def test_real_counts(corpus):
    print({lang: s for lang, s in corpus.stats.items()})
    assert corpus.queries.schema == QUERY_SCHEMA
    assert corpus.candidates.schema == CANDIDATE_SCHEMA
    assert corpus.qrels.schema == QREL_SCHEMA
    assert set(corpus.stats) == set(CANDIDATES)
    for lang, n in CANDIDATES.items():
        assert corpus.stats[lang]["questions"] == 1190
        assert corpus.stats[lang]["candidates"] == n
    langs = corpus.candidates.column("lang").to_pylist()
    assert {lang: langs.count(lang) for lang in CANDIDATES} == CANDIDATES
    assert corpus.queries.num_rows == corpus.qrels.num_rows == 1190 * 11


def test_real_qrels_point_at_candidates(corpus):
    cand = dict(zip(corpus.candidates.column("id").to_pylist(),
                    corpus.candidates.column("sentence").to_pylist()))
    qrels = corpus.qrels.to_pylist()
    assert all(r["candidate_id"] in cand for r in qrels)
    assert all(r["candidate_id"].startswith(r["lang"] + ":") for r in qrels)
    # every question id has one relevant candidate per language
    ids = {r["query_id"] for r in qrels}
    assert len(ids) == 1190
    # the answer's article matches the candidate's
    q_article = {(q["id"], q["lang"]): q["article"] for q in corpus.queries.to_pylist()}
    for r in qrels[:500]:
        assert int(r["candidate_id"].split(":")[1]) == q_article[(r["query_id"], r["lang"])]


def test_one_language_and_missing_language(data_dir, tmp_path):
    c = read_lareqa(data_dir / "xquad-r", ["en"])
    assert c.candidates.num_rows == 1180 and set(c.stats) == {"en"}
    (tmp_path / "en.json").write_text(json.dumps(_doc()))
    with pytest.raises(DataError, match="de.json"):
        read_lareqa(tmp_path, ["en", "de"])


def _doc(**par_overrides):
    context = "Alpha beta. Gamma delta. Eps"
    par = {
        "context": context,
        "sentences": ["Alpha beta.", "Gamma delta.", "Eps"],
        "sentence_breaks": [[0, 11], [12, 24], [25, 28]],
        "qas": [
            {"id": "q1", "question": "What gamma?", "answers": [{"answer_start": 12, "text": "Gamma"}]},
            {"id": "q2", "question": "Cross?", "answers": [{"answer_start": 6, "text": "beta. Gamma"}]},
            {"id": "q3", "question": "Gap?", "answers": [{"answer_start": 11, "text": " "}]},
        ],
    }
    par.update(par_overrides)
    return {"version": "1.1", "data": [{"title": "t", "paragraphs": [par]}]}


def test_small_file_semantics(tmp_path):
    path = tmp_path / "en.json"
    path.write_text(json.dumps(_doc()))
    c = read_lareqa(path)
    assert c.candidates.column("id").to_pylist() == ["en:0:0:0", "en:0:0:1", "en:0:0:2"]
    assert c.candidates.column("sentence").to_pylist() == ["Alpha beta.", "Gamma delta.", "Eps"]
    assert c.stats["en"] == {"questions": 2, "candidates": 3, "skipped_no_sentence": 1,
                             "answer_past_sentence_end": 1}
    assert c.qrels.column("candidate_id").to_pylist() == ["en:0:0:1", "en:0:0:0"]


def _write(tmp_path, doc):
    path = tmp_path / "en.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def _bad_docs():
    base = _doc()
    no_data = {"version": "1.1"}
    no_ctx = _doc()
    del no_ctx["data"][0]["paragraphs"][0]["context"]
    no_breaks = _doc()
    del no_breaks["data"][0]["paragraphs"][0]["sentence_breaks"]
    return {
        "invalid json": '{"data": [',
        "no data": no_data,
        "data not list": {"data": {}},
        "no context": no_ctx,
        "no breaks": no_breaks,
        "context int": _doc(context=5),
        "break start>end": _doc(sentence_breaks=[[5, 2]], sentences=["x"]),
        "break past context": _doc(sentence_breaks=[[0, 999]], sentences=["x"]),
        "break negative": _doc(sentence_breaks=[[-1, 3]], sentences=["x"]),
        "break not pair": _doc(sentence_breaks=[[0]], sentences=["x"]),
        "break str": _doc(sentence_breaks=[["0", "3"]], sentences=["x"]),
        "no breaks at all": _doc(sentence_breaks=[], sentences=[]),
        "no sentences": {"data": [{"paragraphs": [{k: v for k, v in base["data"][0]["paragraphs"][0].items()
                                                   if k != "sentences"}]}]},
        "sentences not list": _doc(sentences="Alpha beta. Gamma delta. Eps"),
        "sentences and breaks disagree": _doc(sentences=["Alpha beta.", "Gamma delta. Eps"]),
        "sentence not str": _doc(sentences=["Alpha beta.", 7, "Eps"]),
        "whitespace question": _doc(qas=[{"id": "q", "question": "  \t",
                                          "answers": [{"answer_start": 0, "text": "a"}]}]),
        "empty id": _doc(qas=[{"id": "", "question": "?", "answers": [{"answer_start": 0, "text": "a"}]}]),
        "blank context": _doc(context="   ", sentence_breaks=[[0, 3]], sentences=["   "]),
        "answer start str": _doc(qas=[{"id": "q", "question": "?", "answers": [{"answer_start": "1", "text": "a"}]}]),
        "answer past context": _doc(qas=[{"id": "q", "question": "?", "answers": [{"answer_start": 99, "text": "a"}]}]),
        "no answers": _doc(qas=[{"id": "q", "question": "?", "answers": []}]),
        "no question": _doc(qas=[{"id": "q", "answers": [{"answer_start": 0, "text": "a"}]}]),
        "repeated id": _doc(qas=base["data"][0]["paragraphs"][0]["qas"][:1] * 2),
    }


@pytest.mark.parametrize("case", list(_bad_docs()))
def test_bad_input_raises_one_line(tmp_path, case):
    path = _write(tmp_path, _bad_docs()[case])
    with pytest.raises(DataError) as e:
        read_lareqa(path)
    msg = str(e.value)
    assert "en.json" in msg and "\n" not in msg, msg


def test_a_file_name_that_is_no_language_is_refused(tmp_path):
    (tmp_path / "xx.json").write_text(json.dumps(_doc()))
    with pytest.raises(DataError, match=r"xx.json: file name is not a language code"):
        read_lareqa(tmp_path)
    with pytest.raises(DataError, match=r"xx.json: file name is not a language code"):
        read_lareqa(tmp_path / "xx.json")


def test_missing_file_and_empty_dir(tmp_path):
    with pytest.raises(DataError, match="nope.json"):
        read_lareqa(tmp_path / "nope.json")
    with pytest.raises(DataError, match=str(tmp_path)):
        read_lareqa(tmp_path)
