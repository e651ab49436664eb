"""BEIR-format retrieval corpora (MIRACL ships in this layout): read, check, stream, score.

    DIR/corpus.jsonl       {"_id": ..., "title": ..., "text": ...} per line
      or DIR/corpus/       shards of those records: .jsonl and .parquet files (columns _id, text,
                           title optional), recursively, in path order (as training sources'
                           shards: `hbt.data.pairs.pair_files`)
    DIR/queries.jsonl      {"_id": ..., "text": ...} per line
    DIR/qrels/SPLIT.tsv    query-id <TAB> corpus-id <TAB> score, after a header line

DIR is a local path or a URI pyarrow reads (s3://, gs://, hdfs://, file://): every file is read
through its filesystem, a line or a record batch at a time.

A document is encoded as BEIR's models do, "title text" (title omitted when empty). Queries and
qrels are read whole; the documents, which may be millions, are checked in one pass that keeps
only their ids and each shard's digest (`scan_documents`), then streamed in blocks for encoding
into shard files of `eval.shard_docs` (`hbt.eval.streamed`). ranx scores nDCG@10 (graded
qrels) and Recall@100 per query from each query's top RECALL_DEPTH. Queries without a relevant
document (score > 0) are left out, as BEIR's evaluation does.
"""

from __future__ import annotations

import array
import contextlib
import csv
import hashlib
import io
from dataclasses import dataclass
from typing import BinaryIO, Iterator, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from hbt.data.pairs import Shard, filesystem, pair_files
from hbt.errors import DataError, first_line
from hbt.io import absolute_location
from hbt.jsonl import jsonl_values, utf8_lines

CORPUS, CORPUS_SHARDS, QUERIES, QRELS_DIR = "corpus.jsonl", "corpus", "queries.jsonl", "qrels"
METRICS = {"ndcg@10": "ndcg@10", "recall@100": "recall@100"}  # reported name -> ranx name
RECALL_DEPTH = 100
SHARD_DOCS = 250_000  # documents per embeddings shard (eval.shard_docs)
DOCS_BLOCK = 8192  # documents read at once, sorted by length and cut into encode chunks


def _join(location: str, *names: str) -> str:
    return "/".join([location, *names])


def _file_type(location: str) -> pafs.FileType:
    fs, path = filesystem(location)
    try:
        return fs.get_file_info(path).type
    except OSError as error:
        raise DataError(f"{location}: cannot open: {first_line(error)}") from None


def is_beir_dir(location) -> bool:
    """Whether `location` (a local path or URI) holds a BEIR corpus."""
    where = absolute_location(location)
    if _file_type(_join(where, CORPUS)) == pafs.FileType.File:
        return True
    return (_file_type(_join(where, CORPUS_SHARDS)) == pafs.FileType.Directory
            and _file_type(_join(where, QUERIES)) == pafs.FileType.File)


def _record(record, where: str) -> tuple[str, str]:
    """(`_id`, "title text") of one record, checked: an object with `_id` and a non-empty `text`
    (and `title`, when given) strings; `where` ("FILE: line N") names it in errors."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: not a JSON object")
    for name in ("_id", "text"):
        if not isinstance(record.get(name), str):
            raise DataError(f"{where}: field {name!r} missing or not a string")
    title = record.get("title")
    if not isinstance(title if title is not None else "", str):
        raise DataError(f"{where}: field 'title' is not a string")
    if not record["text"].strip():
        raise DataError(f"{where}: empty text")
    return record["_id"], " ".join(t for t in ((title or "").strip(), record["text"]) if t)


def _file(location: str) -> Shard:
    """The file at `location` (absolute), which must exist."""
    if _file_type(location) != pafs.FileType.File:
        raise DataError(f"{location}: not found (a BEIR dir holds {CORPUS} or {CORPUS_SHARDS}/, {QUERIES} and "
                        f"{QRELS_DIR}/SPLIT.tsv)")
    return Shard(location, *filesystem(location))


@contextlib.contextmanager
def _lines(file: Shard) -> Iterator[BinaryIO]:
    """A buffered binary stream of `file` (a pyarrow stream reads, but does not iterate by lines)."""
    try:
        with io.BufferedReader(file.filesystem.open_input_stream(file.path)) as stream:
            yield stream
    except OSError as error:
        raise DataError(f"{file.location}: cannot read: {first_line(error)}") from None


def _shard_records(shard) -> Iterator[tuple[str, str, str]]:
    """("FILE: line N" or "FILE: row N", `_id`, text) of one corpus shard (`hbt.data.pairs.Shard`),
    read a line or a record batch at a time."""
    import pyarrow.parquet as pq

    if shard.location.endswith(".jsonl"):
        with _lines(shard) as stream:
            for number, record in jsonl_values(stream, shard.location):
                where = f"{shard.location}: line {number}"
                yield (where, *_record(record, where))
        return
    try:
        with shard.filesystem.open_input_file(shard.path) as handle:
            parquet = pq.ParquetFile(handle)
            names = [n for n in ("_id", "title", "text") if n in parquet.schema_arrow.names]
            row = 0
            for batch in parquet.iter_batches(columns=names, batch_size=DOCS_BLOCK):
                for record in batch.to_pylist():
                    row += 1
                    where = f"{shard.location}: row {row}"
                    yield (where, *_record(record, where))
    except (OSError, pa.ArrowInvalid) as error:
        raise DataError(f"{shard.location}: cannot read: {first_line(error)}") from None


def _documents(location: str) -> Iterator[tuple[str, str, str]]:
    """(where, `_id`, text) of every document: DIR/corpus.jsonl, else DIR/corpus/'s shards in order."""
    shards_dir = _join(location, CORPUS_SHARDS)
    if (_file_type(_join(location, CORPUS)) == pafs.FileType.File
            or _file_type(shards_dir) != pafs.FileType.Directory):
        yield from _shard_records(_file(_join(location, CORPUS)))
        return
    shards, is_datasets_dir = pair_files(shards_dir)
    if is_datasets_dir:
        raise DataError(f"{shards_dir}: a datasets dir; BEIR documents are .jsonl or .parquet shards")
    for shard in shards:
        yield from _shard_records(shard)


def _queries(location: str) -> dict[str, str]:
    """`_id` -> text of every query, ids unique."""
    queries: dict[str, str] = {}
    for where, qid, text in _shard_records(_file(location)):
        if qid in queries:
            raise DataError(f"{where}: duplicate _id {qid!r}")
        queries[qid] = text
    if not queries:
        raise DataError(f"{location}: no records")
    return queries


@dataclass
class DocumentScan:
    """What one checking pass over the documents keeps: their ids, and per shard of
    `shard_docs` documents its size and the sha256 of its ids and texts (`hbt.index.store`)."""

    ids: pa.Array          # (n,) string, file order
    shards: list[tuple[int, str]]


def scan_documents(location: str, shard_docs: int) -> DocumentScan:
    """Every document of the BEIR dir at `location` (absolute) checked (the first bad line or
    row, or repeated id, is one `DataError` naming it) and digested, no text kept: ~35 bytes a
    document in the driver (its id in a pyarrow array, the id's 8-byte hash)."""
    ids, parts, shards = [], [], []
    hashes = array.array("q")  # (n,) Python's hash of each id: the repeat check, 8 bytes a document
    digest = hashlib.sha256()
    for _, doc_id, text in _documents(location):
        ids.append(doc_id)
        hashes.append(hash(doc_id))
        digest.update(f"{doc_id}\t{text}\n".encode())
        if len(ids) == shard_docs:
            parts.append(pa.array(ids, pa.string()))
            shards.append((len(ids), digest.hexdigest()))
            ids, digest = [], hashlib.sha256()
    if ids:
        parts.append(pa.array(ids, pa.string()))
        shards.append((len(ids), digest.hexdigest()))
    if not parts:
        raise DataError(f"{location}: no records in its documents")
    all_ids = pa.concat_arrays(parts)
    repeat = _first_repeat(all_ids, np.frombuffer(hashes, dtype=np.int64))
    if repeat is not None:
        row, doc_id = repeat
        where = next(w for i, (w, _, _) in enumerate(_documents(location)) if i == row)
        raise DataError(f"{where}: duplicate _id {doc_id!r}")
    return DocumentScan(all_ids, shards)


def _first_repeat(ids: pa.Array, hashes: np.ndarray) -> Optional[tuple[int, str]]:
    """The row and value of the first id seen before, or None. A sort of the ids' hashes finds
    the candidates (8 bytes a document, where a hash table of the strings takes ~90); only the
    rows whose hash repeats are compared as strings, so a collision is no repeat."""
    ordered = np.sort(hashes)
    same = ordered[1:] == ordered[:-1]  # (n - 1,)
    if not same.any():
        return None
    repeated = np.unique(ordered[1:][same])
    seen = set()
    for row in np.flatnonzero(np.isin(hashes, repeated)):  # ascending rows: the first repeat first
        value = ids[int(row)].as_py()
        if value in seen:
            return int(row), value
        seen.add(value)
    return None


def _qrels(location: str, queries: dict, doc_ids: pa.Array) -> dict[str, dict[str, int]]:
    file = _file(location)
    qrels: dict[str, dict[str, int]] = {}
    rows: list[tuple[int, str]] = []  # (line, corpus-id), checked against the documents at once
    with _lines(file) as stream:
        for number, line in utf8_lines(stream, location):
            row = next(csv.reader([line], delimiter="\t"), [])
            if number == 1:
                if [h.strip() for h in row[:3]] != ["query-id", "corpus-id", "score"]:
                    raise DataError(f"{location}: line 1: expected the header query-id, corpus-id, score")
                continue
            if not row:
                continue
            if len(row) != 3 or not row[2].strip().lstrip("-").isdigit():
                raise DataError(f"{location}: line {number}: expected query-id, corpus-id and an integer score")
            qid, did, score = row[0], row[1], int(row[2])
            if qid not in queries:
                raise DataError(f"{location}: line {number}: query-id {qid!r} is not in {QUERIES}")
            rows.append((number, did))
            if score > 0:
                qrels.setdefault(qid, {})[did] = score
    # The few qrels' ids are the hash set, the documents' ids scanned past it (the other way
    # round, a hash set of millions of ids is ~90 bytes a document).
    named = pa.array(sorted({did for _, did in rows}), pa.string())
    found = set(doc_ids.filter(pc.is_in(doc_ids, value_set=named)).to_pylist())
    missing = next(((number, did) for number, did in rows if did not in found), None)
    if missing is not None:
        number, did = missing
        raise DataError(f"{location}: line {number}: corpus-id {did!r} is not among the documents")
    if not qrels:
        raise DataError(f"{location}: no query has a relevant document (score > 0)")
    return qrels


class BeirCorpus:
    """A BEIR dir read and checked: queries and qrels whole, documents scanned (ids and shard
    digests kept) and then streamed in blocks (`document_blocks`) for encoding."""

    def __init__(self, location, split: str = "test", shard_docs: int = SHARD_DOCS):
        self.location = absolute_location(location)
        self.shard_docs = shard_docs
        queries = _queries(_join(self.location, QUERIES))
        self.docs = scan_documents(self.location, shard_docs)
        self.qrels = _qrels(_join(self.location, QRELS_DIR, f"{split}.tsv"), queries, self.docs.ids)
        self.query_ids = [qid for qid in queries if qid in self.qrels]
        self.query_texts = [queries[qid] for qid in self.query_ids]

    def document_blocks(self, skip: set[int], size: int = DOCS_BLOCK) -> Iterator[tuple[int, int, list[str]]]:
        """(shard, its row of the block's first text, texts) of at most `size` documents in file
        order, the shards in `skip` passed over."""
        block: list[str] = []
        shard = first = 0
        for row, (_, _, text) in enumerate(_documents(self.location)):
            shard_of_row, row_in_shard = divmod(row, self.shard_docs)
            if block and (shard_of_row != shard or len(block) == size):
                yield shard, first, block
                block = []
            if shard_of_row in skip:
                continue
            if not block:
                shard, first = shard_of_row, row_in_shard
            block.append(text)
        if block:
            yield shard, first, block


def score(corpus: BeirCorpus, scores: np.ndarray, positions: np.ndarray) -> tuple[dict, pa.Table]:
    """ranx's nDCG@10 and Recall@100 -> (means, per-query table: query_id, group, one column each)."""
    import ranx

    found = corpus.docs.ids.take(pa.array(np.maximum(positions, 0).ravel())).to_pylist()  # (nq * k,)
    k = positions.shape[1]
    run = {qid: {found[i * k + r]: float(scores[i, r]) for r in range(k) if positions[i, r] >= 0}
           for i, qid in enumerate(corpus.query_ids)}
    ids = sorted(corpus.query_ids)  # ranx's typed lists are sorted by query id
    per_query = ranx.evaluate(ranx.Qrels({q: corpus.qrels[q] for q in ids}).to_typed_list(),
                              ranx.Run({q: run[q] for q in ids}).to_typed_list(),
                              list(METRICS.values()), return_mean=False, save_results_in_run=False)
    table = pa.table({"query_id": ids, "group": ["all"] * len(ids),
                      **{name: np.asarray(per_query[ranx_name], dtype=np.float64)
                         for name, ranx_name in METRICS.items()}})
    return {name: float(np.mean(per_query[ranx_name])) for name, ranx_name in METRICS.items()}, table
