"""BEIR-format retrieval corpora (MIRACL ships in this layout): read, encode once, search, score.

    DIR/corpus.jsonl       {"_id": ..., "title": ..., "text": ...} per line
    DIR/queries.jsonl      {"_id": ..., "text": ...} per line
    DIR/qrels/SPLIT.tsv    query-id <TAB> corpus-id <TAB> score, after a header line

A document is encoded as BEIR's models do, "title text" (title omitted when empty). Queries
and documents go through the same encode-once path as LAReQA corpora (`hbt.eval.encode`, on
Ray actors or in process as `run_eval` decides), the documents into faiss shards of at most
SHARD_DOCS each (held by shard actors on Ray) searched for each query's top RECALL_DEPTH, and ranx scores nDCG@10
(graded qrels) and Recall@100 per query. Queries without a relevant document (score > 0) are
left out, as BEIR's evaluation does.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow as pa

from hbt.data.lareqa import LareqaCorpus
from hbt.errors import DataError
from hbt.jsonl import read_jsonl, utf8_lines

CORPUS, QUERIES, QRELS_DIR = "corpus.jsonl", "queries.jsonl", "qrels"
METRICS = {"ndcg@10": "ndcg@10", "recall@100": "recall@100"}  # reported name -> ranx name
RECALL_DEPTH = 100
SHARD_DOCS = 250_000
LANG = "beir"  # the one "language" key the encode path files a BEIR corpus under


def is_beir_dir(path: Path) -> bool:
    return (Path(path) / CORPUS).is_file()


def _jsonl(path: Path) -> dict[str, dict]:
    """`_id` -> record, every line checked: valid JSON, `_id` and a non-empty `text` (and `title`,
    when given) strings, ids unique."""
    if not path.is_file():
        raise DataError(f"{path}: not found (a BEIR dir holds {CORPUS}, {QUERIES} and {QRELS_DIR}/SPLIT.tsv)")
    records: dict[str, dict] = {}
    for number, record in read_jsonl(path):
        if not isinstance(record, dict):
            raise DataError(f"{path}: line {number}: not a JSON object")
        for name in ("_id", "text"):
            if not isinstance(record.get(name), str):
                raise DataError(f"{path}: line {number}: field {name!r} missing or not a string")
        if not isinstance(record.get("title", ""), str):
            raise DataError(f"{path}: line {number}: field 'title' is not a string")
        if not record["text"].strip():
            raise DataError(f"{path}: line {number}: empty text")
        if record["_id"] in records:
            raise DataError(f"{path}: line {number}: duplicate _id {record['_id']!r}")
        records[record["_id"]] = record
    if not records:
        raise DataError(f"{path}: no records")
    return records


def _qrels(path: Path, queries: dict, docs: dict) -> dict[str, dict[str, int]]:
    if not path.is_file():
        raise DataError(f"{path}: not found")
    qrels: dict[str, dict[str, int]] = {}
    with open(path, "rb") as stream:
        for number, line in utf8_lines(stream, path):
            row = next(csv.reader([line], delimiter="\t"), [])
            if number == 1:
                if [h.strip() for h in row[:3]] != ["query-id", "corpus-id", "score"]:
                    raise DataError(f"{path}: line 1: expected the header query-id, corpus-id, score")
                continue
            if not row:
                continue
            if len(row) != 3 or not row[2].strip().lstrip("-").isdigit():
                raise DataError(f"{path}: line {number}: expected query-id, corpus-id and an integer score")
            qid, did, score = row[0], row[1], int(row[2])
            if qid not in queries:
                raise DataError(f"{path}: line {number}: query-id {qid!r} is not in {QUERIES}")
            if did not in docs:
                raise DataError(f"{path}: line {number}: corpus-id {did!r} is not in {CORPUS}")
            if score > 0:
                qrels.setdefault(qid, {})[did] = score
    if not qrels:
        raise DataError(f"{path}: no query has a relevant document (score > 0)")
    return qrels


class BeirCorpus:
    """A BEIR dir read and checked; `.encodable` is its view for `hbt.eval.encode`."""

    def __init__(self, path: Path, split: str = "test"):
        self.path = Path(path)
        docs, queries = _jsonl(self.path / CORPUS), _jsonl(self.path / QUERIES)
        self.qrels = _qrels(self.path / QRELS_DIR / f"{split}.tsv", queries, docs)
        self.query_ids = [qid for qid in queries if qid in self.qrels]
        self.doc_ids = list(docs)
        texts = [" ".join(t for t in (docs[d].get("title", "").strip(), docs[d]["text"]) if t) for d in self.doc_ids]
        n_q, n_d = len(self.query_ids), len(self.doc_ids)
        self.encodable = LareqaCorpus(
            pa.table({"id": self.query_ids, "lang": [LANG] * n_q, "text": [queries[q]["text"] for q in self.query_ids]}),
            pa.table({"id": self.doc_ids, "lang": [LANG] * n_d, "sentence": texts, "context": [""] * n_d}),
            pa.table({"query_id": [], "lang": [], "candidate_id": []}))


def search(query_emb: np.ndarray, doc_emb: np.ndarray, k: int, factory: str, on_ray: bool) -> tuple:
    """Top-k (scores, doc positions) of every query over shards of at most SHARD_DOCS documents."""
    import ray

    from hbt.index.shards import IndexShard, search_actor_shards, search_shards, start_shard_actors

    starts = range(0, len(doc_emb), SHARD_DOCS)
    parts = [(doc_emb[s:s + SHARD_DOCS], np.arange(s, min(s + SHARD_DOCS, len(doc_emb)))) for s in starts]
    k = min(k, len(doc_emb))
    if not on_ray:
        return search_shards([IndexShard.from_vectors(xb, ids, factory) for xb, ids in parts], query_emb, k)
    actors = start_shard_actors(parts, factory)
    try:
        return search_actor_shards(actors, query_emb, k)
    finally:
        for actor in actors:
            ray.kill(actor)


def score(corpus: BeirCorpus, scores: np.ndarray, positions: np.ndarray) -> tuple[dict, pa.Table]:
    """ranx's nDCG@10 and Recall@100 -> (means, per-query table: query_id, group, one column each)."""
    import ranx

    run = {qid: {corpus.doc_ids[j]: float(s) for s, j in zip(scores[i], positions[i]) if j >= 0}
           for i, qid in enumerate(corpus.query_ids)}
    ids = sorted(corpus.query_ids)  # ranx's typed lists are sorted by query id
    per_query = ranx.evaluate(ranx.Qrels({q: corpus.qrels[q] for q in ids}).to_typed_list(),
                              ranx.Run({q: run[q] for q in ids}).to_typed_list(),
                              list(METRICS.values()), return_mean=False, save_results_in_run=False)
    table = pa.table({"query_id": ids, "group": ["all"] * len(ids),
                      **{name: np.asarray(per_query[ranx_name], dtype=np.float64) for name, ranx_name in METRICS.items()}})
    return {name: float(np.mean(per_query[ranx_name])) for name, ranx_name in METRICS.items()}, table
