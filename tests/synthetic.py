"""A synthetic LAReQA corpus whose relevance structure is known exactly, and synthetic `hbt eval`
runs (per-query rows with their aggregates computed the slow, obvious way)."""

import json
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hbt.io import write_json_atomic

LANGS = ["en", "de", "es"]
N_ART, N_SENT = 2, 3  # one paragraph per article; questions answered by sentences 0 and 2
DIM = N_ART * N_SENT


def _doc(lang):
    data = []
    for a in range(N_ART):
        sents = [f"{lang} sentence ID{a * N_SENT + s} words." for s in range(N_SENT)]
        context, breaks = "", []
        for s in sents:
            start = len(context) + (1 if context else 0)
            context = (context + " " + s) if context else s
            breaks.append([start, start + len(s)])
        qas = []
        for n, s in enumerate([0, 2]):
            tag = a * N_SENT + s
            # de questions answered by sentence 2 carry a distractor tag (sentence 1 of the paragraph)
            alt = f" ALT{a * N_SENT + 1}" if lang == "de" and s == 2 else ""
            qas.append({"id": f"q{a}{n}", "question": f"what {lang} ID{tag}{alt}?",
                        "answers": [{"answer_start": breaks[s][0], "text": lang}]})
        data.append({"title": f"t{a}", "paragraphs": [{"context": context, "sentences": sents,
                                                       "sentence_breaks": breaks, "qas": qas}]})
    return {"data": data}


def write_corpus(directory):
    """{lang}.json for every language of LANGS into `directory`."""
    directory.mkdir()
    for lang in LANGS:
        (directory / f"{lang}.json").write_text(json.dumps(_doc(lang)))
    return directory


# ---------------------------------------------------------------- synthetic eval runs

NQ = 25
SKIPPED = {("q03", "es"), ("q11", "de")}  # no answer in that language: left out of every X->Y pair


def synthetic_rows(seed=0, langs=LANGS, nq=NQ, skipped=SKIPPED) -> list[dict]:
    """Per-query rows in the `hbt eval` layout, AP in [0, 0.9], rank distance in [0, 20]."""
    rng = np.random.default_rng(seed)
    qids = [f"q{i:02d}" for i in range(nq)]
    rows = []
    for x in langs:
        for y in langs:
            setting = "mono" if x == y else "cross"
            rows += [{"setting": setting, "query_lang": x, "cand_lang": y, "query_id": q,
                      "ap": rng.uniform(0, 0.9), "rank_distance": float("nan")}
                     for q in qids if (q, y) not in skipped]
    rows += [{"setting": "multi", "query_lang": x, "cand_lang": "*", "query_id": q,
              "ap": rng.uniform(0, 0.9), "rank_distance": rng.uniform(0, 20)} for x in langs for q in qids]
    return rows


def _mean(values) -> float:
    return sum(values) / len(values)


def reference_aggregates(rows: list[dict]) -> dict:
    """The four aggregates the slow, obvious way (the definitions in hbt/eval/allpairs.py)."""
    pairs, by_lang = defaultdict(list), defaultdict(list)
    for r in rows:
        if r["setting"] != "multi":
            pairs[(r["setting"], r["query_lang"], r["cand_lang"])].append(r["ap"])
        else:
            by_lang[r["query_lang"]].append(r["rank_distance"])
    mono = [_mean(v) for k, v in pairs.items() if k[0] == "mono"]
    cross = [_mean(v) for k, v in pairs.items() if k[0] == "cross"]
    return {"mono_map": _mean(mono), "cross_map": _mean(cross) if cross else None,
            "multi_map": _mean([r["ap"] for r in rows if r["setting"] == "multi"]),
            "rank_distance": _mean([_mean(v) for v in by_lang.values()])}


def write_run(path, rows, langs=LANGS):
    """A run dir as `hbt eval` leaves it: results.json (from the rows) + per_query.parquet."""
    agg = reference_aggregates(rows)
    settings = {"mono": {"map": agg["mono_map"]},
                "multi": {"map": agg["multi_map"], "rank_distance": agg["rank_distance"]}}
    if agg["cross_map"] is not None:
        settings["cross"] = {"map": agg["cross_map"]}
    path.mkdir(parents=True)
    write_json_atomic(path / "results.json", {"model": f"model-{path.name}", "corpus": "synthetic",
                                              "languages": langs, "settings": settings, "pairs": [], "eval": {}})
    pq.write_table(pa.Table.from_pylist(rows), path / "per_query.parquet")
    return path
