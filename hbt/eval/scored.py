"""`hbt eval` on corpora scored query by query with plain metrics: a BEIR dir (nDCG@10 and
Recall@100, `hbt.eval.beir`) or a Tatoeba dir (bitext accuracy both ways, `hbt.eval.bitext`).

    OUT/results.json       {"kind": "beir" | "tatoeba", "model", "corpus", "metrics": {name: mean}, ...}
    OUT/per_query.parquet  query_id, group, one column per metric: what `hbt experiment`'s paired
                           bootstrap resamples (by query_id)
    OUT/summary.md

written at once by `hbt.eval.run.run_eval` (the dir is replaced whole).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from hbt.config import HbtConfig
from hbt.errors import DataError
from hbt.eval import beir, bitext, streamed
from hbt.eval.encode import encode_for_eval
from hbt.layout import SUMMARY


def _trained_on_tatoeba(manifest: Optional[dict]) -> bool:
    return any(source.get("kind") == "tatoeba" for source in (manifest or {}).get("sources", []))


def _summary(result: dict) -> str:
    lines = [f"# {result['kind']} evaluation", "", f"- model: `{result['model']}`", f"- corpus: `{result['corpus']}`",
             *([f"- note: {result['corpus_note']}"] if result.get("corpus_note") else []), "",
             "| metric | value |", "|---|---|", *(f"| {m} | {v:.4f} |" for m, v in result["metrics"].items())]
    if result["kind"] == "tatoeba":
        lines += ["", "| language | xx->en | en->xx |", "|---|---|---|"]
        lines += [f"| {lang} | {d[f'{lang}->en']:.4f} | {d[f'en->{lang}']:.4f} |"
                  for lang, d in result["languages"].items()]
    return "\n".join(lines) + "\n"


class _ScoredEvaluator:
    """Shared by the BEIR and Tatoeba evaluators: documents and bitext sides are bare texts (no
    paragraph after them); the outputs are results.json, per_query.parquet and summary.md."""

    def write_outputs(self, staging: Path, result: dict) -> None:
        (staging / SUMMARY).write_text(_summary(result), encoding="utf-8")


class BeirEvaluator(_ScoredEvaluator):
    """A BEIR dir at `split` (default test): nDCG@10 and Recall@100 (`hbt.eval.beir`). The
    documents are encoded in a stream into resumable shard files (`hbt.eval.streamed`)."""

    kind = "beir"
    primary_metric = "ndcg@10"

    def __init__(self, corpus_dir, languages, split: Optional[str], manifest: Optional[dict], config: HbtConfig):
        if languages is not None:
            raise DataError(f"{corpus_dir}: a BEIR dir is one corpus: --languages does not apply")
        self.split = split or "test"
        self.corpus = beir.BeirCorpus(corpus_dir, self.split, config.eval.shard_docs)
        self.model_cfg = config.model.model_copy(update={"candidate_context": False})

    def evaluate(self, model_cfg, config: HbtConfig, on_ray: bool, out_dir: Path) -> tuple[dict, object]:
        """-> (results.json's fields, the per-query table)."""
        from tqdm import tqdm

        from hbt.index.store import EmbeddingStore
        from hbt.model.encoder import embedding_dim

        corpus = self.corpus
        key = {"model": model_cfg.model_dump(mode="json"),
               "model_files": streamed.model_fingerprint(model_cfg.name_or_path),
               "precision": config.eval.precision, "shard_docs": corpus.shard_docs}
        store = EmbeddingStore(streamed.embeddings_dir(config, out_dir), key, embedding_dim(model_cfg.name_or_path))
        encoder = streamed.TextEncoder(model_cfg, config, on_ray, store.root)
        try:
            # On stderr, also when not a terminal (Ray job logs); at most one line per 5 s.
            with tqdm(total=len(corpus.docs.ids), desc="encode", unit="doc", mininterval=5) as bar:
                streamed.encode_documents(corpus, store, encoder, bar.update)
            query_emb = encoder.encode(corpus.query_texts, "query")  # (nq, d)
        finally:
            encoder.close()
        k = min(beir.RECALL_DEPTH, len(corpus.docs.ids))
        scores, positions, index = streamed.search_documents(store, corpus, query_emb, k, config, on_ray)
        metrics, per_query = beir.score(corpus, scores, positions)
        return {"kind": self.kind, "split": self.split, "n_queries": len(corpus.query_ids),
                "n_documents": len(corpus.docs.ids), "index": index, "embeddings": str(store.root),
                "metrics": metrics}, per_query


class TatoebaEvaluator(_ScoredEvaluator):
    """A Tatoeba dir: bitext accuracy both ways (`hbt.eval.bitext`); both sides take the query prefix."""

    kind = "tatoeba"
    primary_metric = "accuracy"

    def __init__(self, corpus_dir, languages, split: Optional[str], manifest: Optional[dict], config: HbtConfig):
        if split is not None:
            raise DataError(f"{corpus_dir}: --split needs a prepared dir or a BEIR dir; this is a Tatoeba dir")
        self.corpus = bitext.BitextCorpus(corpus_dir, languages)
        model_cfg = config.model.model_copy(update={"candidate_context": False})
        self.model_cfg = model_cfg.model_copy(update={"passage_prefix": model_cfg.query_prefix})
        self.note = "the model trained on Tatoeba pairs: these are not held-out scores" \
            if _trained_on_tatoeba(manifest) else None

    def evaluate(self, model_cfg, config: HbtConfig, on_ray: bool, out_dir: Path) -> tuple[dict, object]:
        """-> (results.json's fields, the per-query table)."""
        query_emb, cand_emb = encode_for_eval(model_cfg, self.corpus.encodable, config, on_ray)
        metrics, per_language, per_query = bitext.score(self.corpus, query_emb, cand_emb)
        result = {"kind": self.kind, "languages": per_language, "metrics": metrics}
        if self.note:
            result["corpus_note"] = self.note
        return result, per_query
