"""Encoding a corpus once: chunking, row placement, and the Ray actor path."""

import json

import numpy as np
import pytest
from synthetic import LANGS

from hbt.config import EvalConfig, HbtConfig, ModelConfig
from hbt.data.lareqa import read_lareqa
from hbt.eval.encode import corpus_chunks, corpus_texts, encode_corpus, encode_corpus_on_actors
from hbt.eval.heldout import restrict_to_articles
from hbt.model.encoder import Encoder
from hbt.model.tiny import tiny_bert


@pytest.fixture(scope="module")
def corpus(data_dir):
    return restrict_to_articles(read_lareqa(data_dir / "xquad-r", ["en", "de"]), [0, 1])


@pytest.fixture(scope="module")
def tiny_cfg(tmp_path_factory) -> ModelConfig:
    return ModelConfig(name_or_path=str(tiny_bert(tmp_path_factory.mktemp("enc") / "bert")), max_length=32)


class LengthEncoder:
    """Embeds a text as (len(text), kind flag): row placement is checkable exactly."""

    def __init__(self):
        self.batches = []

    def encode(self, texts, kind, batch_size):
        self.batches.append(len(texts))
        return np.array([[len(t), kind == "query"] for t in texts], dtype=np.float32)


def test_chunks_cover_every_text_once_sorted_by_length_across_languages(corpus):
    cfg = EvalConfig(batch_size=4)
    chunks = corpus_chunks(corpus, cfg, candidate_context=True)
    for kind, table in (("query", corpus.queries), ("passage", corpus.candidates)):
        mine = [c for c in chunks if c.kind == kind]
        rows = np.concatenate([c.rows for c in mine])
        assert sorted(rows.tolist()) == list(range(table.num_rows))  # both languages' rows, once each
        lengths = [len(t) for c in mine for t in c.texts]
        assert lengths == sorted(lengths)  # one sort over both languages, not one per language
        assert all(len(c.texts) <= 4 * 8 for c in mine)


def test_token_lengths_batch_as_one_sort_of_every_text_would(corpus, tiny_cfg):
    """Chunked by the encoder's token counts, the batches pad to no more tokens than sorting all
    of a kind's texts (every language) by token count and cutting batches: the least padding."""
    encoder = Encoder.from_config(tiny_cfg)
    chunks = corpus_chunks(corpus, EvalConfig(batch_size=4), candidate_context=True, lengths=encoder.token_lengths)
    for kind, by_lang in corpus_texts(corpus, candidate_context=True).items():
        batches = [c.texts[s:s + 4] for c in chunks if c.kind == kind for s in range(0, len(c.texts), 4)]
        padded = sum(encoder.tokenize(batch, kind)["input_ids"].numel() for batch in batches)
        every = sorted(encoder.tokenize([t], kind)["input_ids"].shape[1] for texts in by_lang.values() for t in texts)
        least = sum(max(every[s:s + 4]) * len(every[s:s + 4]) for s in range(0, len(every), 4))
        assert padded == least


def test_rows_come_back_in_table_order(corpus):
    q, c = encode_corpus(LengthEncoder(), corpus, EvalConfig(batch_size=4), candidate_context=False)
    en_questions = [t for t, l in zip(corpus.queries.column("text").to_pylist(),
                                      corpus.queries.column("lang").to_pylist()) if l == "en"]
    assert q["en"][:, 0].tolist() == [len(t) for t in en_questions]
    assert q["en"][:, 1].all() and not c["de"][:, 1].any()
    de_sentences = [s for s, l in zip(corpus.candidates.column("sentence").to_pylist(),
                                      corpus.candidates.column("lang").to_pylist()) if l == "de"]
    assert c["de"][:, 0].tolist() == [len(s) for s in de_sentences]


@pytest.mark.timeout(300)
def test_actor_path_equals_in_process(ray_local, corpus_dir, tiny_cfg):
    corpus = read_lareqa(corpus_dir)
    cfg = EvalConfig(batch_size=2, encode_actors=2, encode_threads=1)
    local_q, local_c = encode_corpus(Encoder.from_config(tiny_cfg), corpus, cfg,
                                     tiny_cfg.resolved_candidate_context())
    actor_q, actor_c = encode_corpus_on_actors(tiny_cfg, corpus, cfg, cpus_per_actor=0.5)
    assert sorted(actor_q) == sorted(local_q) == sorted(LANGS)
    for lang in LANGS:
        np.testing.assert_allclose(actor_q[lang], local_q[lang], atol=1e-5)
        np.testing.assert_allclose(actor_c[lang], local_c[lang], atol=1e-5)


@pytest.mark.timeout(300)
def test_int8_encodes_on_actors_close_to_fp32(ray_local, corpus_dir, tiny_cfg):
    """eval.precision=int8 in an encode actor: ONNX Runtime on the actor's threads, unit vectors
    close to the fp32 ones."""
    corpus = read_lareqa(corpus_dir)
    cfg = EvalConfig(batch_size=2, encode_actors=1, encode_threads=1, precision="int8")
    actor_q, actor_c = encode_corpus_on_actors(tiny_cfg, corpus, cfg, cpus_per_actor=0.5)
    local_q, local_c = encode_corpus(Encoder.from_config(tiny_cfg), corpus, cfg, tiny_cfg.resolved_candidate_context())
    for lang in LANGS:
        for int8, fp32 in ((actor_q[lang], local_q[lang]), (actor_c[lang], local_c[lang])):
            assert int8.dtype == np.float32 and (int8 * fp32).sum(axis=1).min() > 0.95


@pytest.mark.timeout(300)
def test_run_eval_on_ray_matches_in_process(ray_local, corpus_dir, tiny_cfg, tmp_path, monkeypatch):
    """on_ray: run_eval encodes on actors and searches actor-held shards; on_ray=False, with the
    same Ray up, runs in process (no actor is asked for); same report."""
    from hbt.eval import encode
    from hbt.eval.run import run_eval
    from hbt.index import shards

    config = HbtConfig()
    config.eval.top_k = 10
    config.eval.encode_threads = 1
    on_ray = run_eval(tiny_cfg.name_or_path, corpus_dir, tmp_path / "ray", config=config, on_ray=True)

    def no_actors(*args, **kwargs):
        raise AssertionError("an actor was started in process mode")

    monkeypatch.setattr(encode, "encode_corpus_on_actors", no_actors)
    monkeypatch.setattr(shards, "start_shard_actors", no_actors)
    local = run_eval(tiny_cfg.name_or_path, corpus_dir, tmp_path / "local", config=config, on_ray=False)
    for name in ("mono", "cross", "multi"):
        for metric in ("map", "r@1", "r@10", "hit@1", "hit@10", "mrr"):
            assert on_ray["settings"][name][metric] == pytest.approx(local["settings"][name][metric], abs=1e-5)
    saved = json.loads((tmp_path / "ray" / "results.json").read_text())
    assert saved["settings"]["multi"]["n_queries"] == len(LANGS) * 4


@pytest.mark.timeout(300)
def test_an_encode_actor_that_dies_is_restarted_and_its_chunk_retried(ray_local, corpus_dir, tiny_cfg, tmp_path):
    """The actor's process exits (as if killed) on its first chunk, once: Ray restarts it, the
    chunk is encoded again, and the embeddings equal the in-process ones."""
    from hbt.eval.encode import EncodeActor

    marker = tmp_path / "die-once"
    marker.write_text("")

    class DiesOnce(EncodeActor):
        def encode(self, index, texts, kind, batch_size):
            import os

            if os.path.exists(str(marker)):
                os.unlink(str(marker))
                os._exit(1)  # the process dies mid-task, as under SIGKILL or the OOM killer
            return super().encode(index, texts, kind, batch_size)

    corpus = read_lareqa(corpus_dir)
    cfg = EvalConfig(batch_size=2, encode_actors=1, encode_threads=1)
    actor_q, actor_c = encode_corpus_on_actors(tiny_cfg, corpus, cfg, cpus_per_actor=0.5, actor_class=DiesOnce)
    assert not marker.exists()  # it did die once
    local_q, local_c = encode_corpus(Encoder.from_config(tiny_cfg), corpus, cfg, tiny_cfg.resolved_candidate_context())
    for lang in LANGS:
        np.testing.assert_allclose(actor_q[lang], local_q[lang], atol=1e-5)
        np.testing.assert_allclose(actor_c[lang], local_c[lang], atol=1e-5)
