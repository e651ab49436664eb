"""BEIR-format corpora: the reader refuses malformed input with one line naming file and line;
search over shards and ranx's nDCG@10 / Recall@100 match a brute-force computation; `hbt eval`
on a BEIR dir writes its outputs."""

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hbt.cli import main
from hbt.config import HbtConfig
from hbt.errors import DataError
from hbt.eval import beir, encode, streamed
from hbt.eval.encode import write_rows
from hbt.eval.run import run_eval
from hbt.eval.streamed import recall_against, search_documents
from hbt.index.store import EmbeddingStore

N_DOCS, N_QUERIES = 30, 8


def write_beir(root, docs=None, queries=None, qrels=None, header="query-id\tcorpus-id\tscore"):
    """A BEIR dir: doc d is "doc d", query q asks for docs q and q + 10 (grades 2 and 1)."""
    root.mkdir(parents=True, exist_ok=True)
    docs = docs if docs is not None else [{"_id": f"d{i}", "title": f"t{i}", "text": f"doc {i}"} for i in range(N_DOCS)]
    queries = queries if queries is not None else [{"_id": f"q{i}", "text": f"query {i}"} for i in range(N_QUERIES)]
    qrels = qrels if qrels is not None else [f"q{i}\td{i}\t2" for i in range(N_QUERIES)] + \
        [f"q{i}\td{i + 10}\t1" for i in range(N_QUERIES)]
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (root / "qrels").mkdir(exist_ok=True)
    (root / "qrels" / "test.tsv").write_text("\n".join([header, *qrels]) + "\n")
    return root


def test_reader_keeps_queries_with_a_relevant_document(tmp_path):
    extra = [{"_id": "lonely", "text": "nothing answers me"}]
    corpus = beir.BeirCorpus(write_beir(tmp_path / "b", queries=[{"_id": f"q{i}", "text": f"query {i}"}
                                                                   for i in range(N_QUERIES)] + extra))
    assert corpus.query_ids == [f"q{i}" for i in range(N_QUERIES)] and len(corpus.docs.ids) == N_DOCS
    assert corpus.query_texts[1] == "query 1" and corpus.qrels["q1"] == {"d1": 2, "d11": 1}


def test_documents_stream_in_blocks_within_shards(tmp_path):
    corpus = beir.BeirCorpus(write_beir(tmp_path / "b"), shard_docs=7)
    assert [count for count, _ in corpus.docs.shards] == [7, 7, 7, 7, 2]
    blocks = list(corpus.document_blocks(skip={1, 3}, size=4))
    assert [(shard, first, len(texts)) for shard, first, texts in blocks] == \
        [(0, 0, 4), (0, 4, 3), (2, 0, 4), (2, 4, 3), (4, 0, 2)]
    assert blocks[0][2][3] == "t3 doc 3" and blocks[2][2][0] == "t14 doc 14"


BAD = [
    (lambda r: (r / "corpus.jsonl").write_text('{"_id": "d0", "text": "a"}\n{broken\n'),
     "corpus.jsonl: line 2: invalid JSON"),
    (lambda r: (r / "corpus.jsonl").write_text('{"_id": "d0"}\n'), "corpus.jsonl: line 1: field 'text' missing"),
    (lambda r: (r / "corpus.jsonl").write_text('{"_id": 3, "text": "a"}\n'), "corpus.jsonl: line 1: field '_id'"),
    (lambda r: (r / "corpus.jsonl").write_text('{"_id": "d0", "text": "  "}\n'), "corpus.jsonl: line 1: empty text"),
    (lambda r: (r / "corpus.jsonl").write_text('{"_id": "d0", "text": "a", "title": 5}\n'), "field 'title'"),
    (lambda r: (r / "corpus.jsonl").write_text('[1]\n'), "corpus.jsonl: line 1: not a JSON object"),
    (lambda r: (r / "queries.jsonl").write_text('{"_id": "q0", "text": "a"}\n{"_id": "q0", "text": "b"}\n'),
     "queries.jsonl: line 2: duplicate _id 'q0'"),
    (lambda r: (r / "corpus.jsonl").write_text("".join(f'{{"_id": "d{i % 20}", "text": "a"}}\n\n' for i in range(30))),
     "corpus.jsonl: line 41: duplicate _id 'd0'"),
    (lambda r: (r / "queries.jsonl").unlink(), "queries.jsonl: not found"),
    (lambda r: (r / "qrels" / "test.tsv").unlink(), "test.tsv: not found"),
    (lambda r: (r / "qrels" / "test.tsv").write_text("q\td\ts\n"), "test.tsv: line 1: expected the header"),
    (lambda r: (r / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td0\n"),
     "test.tsv: line 2: expected query-id, corpus-id and an integer score"),
    (lambda r: (r / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq0\tnope\t1\n"),
     "test.tsv: line 2: corpus-id 'nope' is not among the documents"),
    (lambda r: (r / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nzz\td0\t1\n"),
     "test.tsv: line 2: query-id 'zz' is not in queries.jsonl"),
    (lambda r: (r / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td0\t0\n"),
     "no query has a relevant document"),
]


def test_byte_order_marks_are_read_and_a_bad_encoding_deep_inside_is_named_by_line(tmp_path, tiny_model, capsys):
    docs = [{"_id": f"d{i}", "title": f"t{i}", "text": f"doc {i}"} for i in range(N_DOCS)]
    root = write_beir(tmp_path / "b", docs=docs)
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        (root / name).write_bytes(b"\xef\xbb\xbf" + (root / name).read_bytes())
    corpus = beir.BeirCorpus(root)
    assert corpus.query_ids[0] == "q0" and corpus.qrels["q0"] == {"d0": 2, "d10": 1}
    lines = (root / "corpus.jsonl").read_bytes().splitlines(keepends=True)
    lines[24] = json.dumps({"_id": "d24", "text": "caf\u00e9"}, ensure_ascii=False).encode("latin-1") + b"\n"
    (root / "corpus.jsonl").write_bytes(b"".join(lines))
    assert main(["eval", "--model", str(tiny_model), "--corpus", str(root), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("corpus.jsonl: line 25: not valid UTF-8 (byte 27 of the line)") and "\n" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage,message", BAD, ids=[m[:40] for _, m in BAD])
def test_malformed_input_is_one_line_naming_the_file(tmp_path, damage, message):
    root = write_beir(tmp_path / "b")
    damage(root)
    with pytest.raises(DataError) as caught:
        beir.BeirCorpus(root)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def brute_force(scores: np.ndarray, qrels: dict, query_ids, doc_ids) -> dict:
    """nDCG@10 (gain = the graded relevance, as trec_eval and BEIR) and Recall@100 by their definitions."""
    ndcg, recall = [], []
    for i, qid in enumerate(query_ids):
        ranked = [doc_ids[j] for j in np.argsort(-scores[i], kind="stable")]
        gains = [qrels[qid].get(d, 0) for d in ranked[:10]]
        ideal = sorted(qrels[qid].values(), reverse=True)[:10]
        dcg = sum(g / math.log2(r + 2) for r, g in enumerate(gains))
        ndcg.append(dcg / sum(g / math.log2(r + 2) for r, g in enumerate(ideal)))
        recall.append(len(set(ranked[:100]) & set(qrels[qid])) / len(qrels[qid]))
    return {"ndcg@10": float(np.mean(ndcg)), "recall@100": float(np.mean(recall))}


def store_of(corpus, docs, root):
    """`docs` (n, d) written as `corpus`'s shards, as the encode path writes them."""
    store = EmbeddingStore(root, {"test": True}, docs.shape[1])
    start = 0
    for shard, (count, source) in enumerate(corpus.docs.shards):
        write_rows(store.begin(shard, count), np.arange(count), docs[start:start + count])
        store.finish(shard, count, source)
        start += count
    return store


@pytest.mark.parametrize("shard_docs", [7, 1000])
def test_search_over_shard_files_and_scores_match_brute_force(tmp_path, shard_docs):
    corpus = beir.BeirCorpus(write_beir(tmp_path / "b"), shard_docs=shard_docs)
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(N_DOCS, 16)).astype(np.float32)
    queries = (docs[:N_QUERIES] * 0.6 + rng.normal(size=(N_QUERIES, 16)) * 0.8).astype(np.float32)
    store = store_of(corpus, docs, tmp_path / "emb")
    scores, positions, index = search_documents(store, corpus, queries, N_DOCS, HbtConfig(), on_ray=False)
    assert index == {"factory": "Flat", "exact": True}
    metrics, per_query = beir.score(corpus, scores, positions)
    expected = brute_force(queries @ docs.T, corpus.qrels, corpus.query_ids, [f"d{i}" for i in range(N_DOCS)])
    assert metrics == pytest.approx(expected, abs=1e-6)
    assert 0 < metrics["ndcg@10"] < 1 and metrics["recall@100"] == 1.0  # 30 docs: all retrieved
    assert per_query.column_names == ["query_id", "group", "ndcg@10", "recall@100"]
    assert np.mean(per_query.column("ndcg@10").to_numpy()) == pytest.approx(metrics["ndcg@10"])


def test_an_approximate_index_reports_its_recall_against_flat(tmp_path):
    """IVF over 4 lists: probing all 4 is exact (recall 1), probing 1 misses some of the top 10."""
    docs = [{"_id": f"d{i}", "text": f"doc {i}"} for i in range(400)]
    corpus = beir.BeirCorpus(write_beir(tmp_path / "b", docs=docs), shard_docs=200)
    rng = np.random.default_rng(1)
    store = store_of(corpus, rng.normal(size=(400, 16)).astype(np.float32), tmp_path / "emb")
    queries = rng.normal(size=(N_QUERIES, 16)).astype(np.float32)
    config = HbtConfig()
    config.eval.index_factory, config.eval.recall_queries = "IVF4,Flat", 5
    recalls = {}
    for nprobe in (4, 1):
        config.eval.nprobe = nprobe
        _, positions, index = search_documents(store, corpus, queries, 10, config, on_ray=False)
        assert index["factory"] == "IVF4,Flat" and not index["exact"] and index["recall_queries"] == 5
        recalls[nprobe] = index["recall@10_vs_flat"]
    assert recalls[4] == 1.0 and recalls[1] < 1.0
    flat = np.argsort(-(queries[:5] @ np.load(store.path(0)).T), axis=1)[:, :10]  # shard 0: rows 0-199
    assert recall_against(flat, flat) == 1.0


def test_an_interrupted_encoding_resumes_from_its_last_finished_shard(tiny_model, tmp_path, monkeypatch):
    """Shards 0 and 1 finished, 2 half-written when the run dies; shard 1's file then damaged. The
    rerun keeps shard 0, encodes 1 (digest), 2 (never finished), 3, 4 again, and scores as a
    fresh run does."""
    root = write_beir(tmp_path / "b")
    config = HbtConfig()
    config.eval.shard_docs = 7
    finish = EmbeddingStore.finish

    def dies_on_shard_2(store, shard, count, source):
        if shard == 2:
            raise KeyboardInterrupt
        finish(store, shard, count, source)

    monkeypatch.setattr(EmbeddingStore, "finish", dies_on_shard_2)
    with pytest.raises(KeyboardInterrupt):
        run_eval(tiny_model, root, tmp_path / "out", config=config)
    monkeypatch.setattr(EmbeddingStore, "finish", finish)
    embeddings = tmp_path / "out.embeddings"
    assert sorted(p.name for p in embeddings.iterdir()) == [
        ".shard-00002.partial.npy", "manifest.json", "shard-00000.npy", "shard-00001.npy"]
    damaged = bytearray((embeddings / "shard-00001.npy").read_bytes())
    damaged[-1] ^= 0xFF
    (embeddings / "shard-00001.npy").write_bytes(bytes(damaged))

    written = []
    monkeypatch.setattr(streamed, "write_rows", lambda path, rows, emb: written.append(Path(path).name) or
                        encode.write_rows(path, rows, emb))
    resumed = run_eval(tiny_model, root, tmp_path / "out", config=config)
    assert sorted(set(written)) == [f".shard-0000{i}.partial.npy" for i in (1, 2, 3, 4)]
    config.eval.embeddings_dir = str(tmp_path / "fresh")
    fresh = run_eval(tiny_model, root, tmp_path / "fresh-out", config=config)
    assert resumed["metrics"] == fresh["metrics"]
    for shard in range(5):
        np.testing.assert_array_equal(np.load(embeddings / f"shard-0000{shard}.npy"),
                                      np.load(tmp_path / "fresh" / f"shard-0000{shard}.npy"))


def test_hbt_eval_on_a_beir_dir(tiny_model, tmp_path, capsys):
    root = write_beir(tmp_path / "b")
    out = tmp_path / "out"
    assert main(["eval", "--model", str(tiny_model), "--corpus", str(root), "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["kind"] == "beir" and set(results["metrics"]) == {"ndcg@10", "recall@100"}
    assert results["n_queries"] == N_QUERIES and results["n_documents"] == N_DOCS
    assert results["index"] == {"factory": "Flat", "exact": True}
    assert results["embeddings"] == str(tmp_path / "out.embeddings")
    assert (out / "per_query.parquet").is_file() and "ndcg@10" in capsys.readouterr().out
    assert main(["eval", "--model", str(tiny_model), "--corpus", str(root), "--out", str(out),
                 "--languages", "en"]) == 2
    assert "a BEIR dir is one corpus" in capsys.readouterr().err


def shard_corpus(root, parts=((0, 9, "jsonl"), (9, 20, "parquet"), (20, N_DOCS, "jsonl"))):
    """The BEIR dir `root` with its corpus.jsonl moved into corpus/ shards: JSONL and Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = [json.loads(line) for line in (root / "corpus.jsonl").read_text().splitlines()]
    (root / "corpus.jsonl").unlink()
    for k, (a, b, kind) in enumerate(parts):
        path = root / "corpus" / ("z" if k == 2 else "") / f"part-{k}.{kind}"  # path order: z/ last
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "parquet":
            pq.write_table(pa.Table.from_pylist(docs[a:b]), path)
        else:
            path.write_text("".join(json.dumps(d) + "\n" for d in docs[a:b]))
    return root


def test_a_corpus_dir_of_jsonl_and_parquet_shards_reads_as_its_one_file(tmp_path):
    """corpus/ shards (JSONL, Parquet, a nested dir) in path order: the same ids, shard digests
    (what a resumed encoding checks) and text blocks as the same documents in corpus.jsonl."""
    whole = beir.BeirCorpus(write_beir(tmp_path / "one"), shard_docs=7)
    sharded_dir = shard_corpus(write_beir(tmp_path / "many"))
    assert beir.is_beir_dir(sharded_dir) and not (sharded_dir / "corpus.jsonl").exists()
    sharded = beir.BeirCorpus(sharded_dir, shard_docs=7)
    assert sharded.docs.ids.equals(whole.docs.ids) and sharded.docs.shards == whole.docs.shards
    assert list(sharded.document_blocks(skip={1}, size=4)) == list(whole.document_blocks(skip={1}, size=4))
    assert sharded.qrels == whole.qrels


@pytest.mark.parametrize("layout", ["corpus.jsonl", "corpus/ shards"])
def test_a_beir_dir_at_a_uri_reads_as_the_same_dir_on_disk(tmp_path, layout):
    """Every file through a pyarrow filesystem (file:// here; s3:// and gs:// the same way): the
    same ids, shard digests, text blocks, queries and qrels as the local path."""
    root = write_beir(tmp_path / "b")
    if layout == "corpus/ shards":
        root = shard_corpus(root)
    uri = f"file://{root}"
    assert beir.is_beir_dir(uri)
    local, remote = beir.BeirCorpus(root, shard_docs=7), beir.BeirCorpus(uri, shard_docs=7)
    assert remote.docs.ids.equals(local.docs.ids) and remote.docs.shards == local.docs.shards
    assert list(remote.document_blocks(skip=set(), size=4)) == list(local.document_blocks(skip=set(), size=4))
    assert (remote.query_ids, remote.query_texts, remote.qrels) == (local.query_ids, local.query_texts, local.qrels)


def test_a_remote_uri_that_is_no_beir_dir_is_one_line_and_a_file_uri_is_a_local_dir(tmp_path, monkeypatch):
    from hbt.config import HbtConfig
    from hbt.eval import run

    lareqa = tmp_path / "lareqa"
    lareqa.mkdir()
    (lareqa / "en.json").write_text("{}")
    seen = []
    monkeypatch.setattr(run, "LareqaEvaluator", lambda corpus_dir, *args: seen.append(corpus_dir))
    run.evaluator_for(f"file://{lareqa}", None, None, None, HbtConfig())
    assert seen == [lareqa]
    with pytest.raises(DataError, match=r"^nope://x/corpus.jsonl: cannot open: Unrecognized filesystem"):
        beir.is_beir_dir("nope://x")
    monkeypatch.setattr(beir, "is_beir_dir", lambda location: False)  # no bucket to ask here
    with pytest.raises(DataError, match=r"^s3://b/x: not a BEIR dir .*a corpus at a URI is read as a BEIR dir only$"):
        run.evaluator_for("s3://b/x", None, None, None, HbtConfig())


@settings(max_examples=200, deadline=None)
@given(ids=st.lists(st.sampled_from(["a", "b", "c", "d", "e", "f", "g"]), min_size=1, max_size=12),
       collide=st.booleans())
def test_first_repeat_is_the_first_id_seen_before_whatever_the_hashes(ids, collide):
    """Against a walk in row order; with every hash equal (all collide), strings still decide."""
    expected = next(((row, value) for row, value in enumerate(ids) if value in ids[:row]), None)
    hashes = np.zeros(len(ids), np.int64) if collide else np.array([hash(v) for v in ids], np.int64)
    assert beir._first_repeat(pa.array(ids), hashes) == expected


@pytest.mark.parametrize("case", ["parquet row", "jsonl line", "duplicate across shards"])
def test_a_bad_document_deep_in_a_shard_is_one_line_naming_the_shard(tmp_path, case):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = shard_corpus(write_beir(tmp_path / "b"))
    if case == "parquet row":
        rows = pq.read_table(root / "corpus" / "part-1.parquet").to_pylist()
        rows[6]["text"] = " "
        pq.write_table(pa.Table.from_pylist(rows), root / "corpus" / "part-1.parquet")
        expected = "part-1.parquet: row 7: empty text"
    elif case == "jsonl line":
        with open(root / "corpus" / "z" / "part-2.jsonl", "a") as out:
            out.write('{"_id": "late"}\n')
        expected = "part-2.jsonl: line 11: field 'text' missing or not a string"
    else:
        with open(root / "corpus" / "z" / "part-2.jsonl", "a") as out:
            out.write('{"_id": "d3", "text": "again"}\n')
        expected = "part-2.jsonl: line 11: duplicate _id 'd3'"
    with pytest.raises(DataError) as caught:
        beir.BeirCorpus(root)
    assert str(caught.value).endswith(expected) and "\n" not in str(caught.value)
