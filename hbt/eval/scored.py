"""`hbt eval` on corpora scored query by query with plain metrics: a BEIR dir (nDCG@10 and
Recall@100, `hbt.eval.beir`) or a Tatoeba dir (bitext accuracy both ways, `hbt.eval.bitext`).

    OUT/results.json       {"kind": "beir" | "tatoeba", "model", "corpus", "metrics": {name: mean}, ...}
    OUT/per_query.parquet  query_id, group, one column per metric: what `hbt experiment`'s paired
                           bootstrap resamples (by query_id)
    OUT/summary.md

all written at once (the dir is replaced whole).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pyarrow.parquet as pq

from hbt.config import HbtConfig
from hbt.errors import DataError
from hbt.eval import beir, bitext
from hbt.io import atomic_directory, write_json_atomic
from hbt.layout import PER_QUERY, RESULTS, SUMMARY


def is_scored_corpus(path) -> bool:
    return beir.is_beir_dir(path) or bitext.is_tatoeba_dir(path)


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


def run_scored_eval(model_dir, corpus_dir, out_dir, languages, config: HbtConfig, start_ray: bool,
                    split: Optional[str]) -> dict:
    import ray

    from hbt.eval.encode import checked_model, encode_for_eval
    from hbt.eval.heldout import training_manifest

    manifest = training_manifest(model_dir)
    # Documents and bitext sides are bare texts: no paragraph after them.
    model_cfg = config.model.model_copy(update={"candidate_context": False})
    result = {"model": str(model_dir), "corpus": str(corpus_dir)}
    if beir.is_beir_dir(corpus_dir):
        if languages is not None:
            raise DataError(f"{corpus_dir}: a BEIR dir is one corpus: --languages does not apply")
        corpus = beir.BeirCorpus(corpus_dir, split or "test")
        model_cfg = checked_model(model_dir, model_cfg, config, start_ray)
        query_emb, doc_emb = encode_for_eval(model_cfg, corpus.encodable, config)
        scores, positions = beir.search(query_emb[beir.LANG], doc_emb[beir.LANG], beir.RECALL_DEPTH,
                                        config.eval.index_factory, ray.is_initialized())
        metrics, per_query = beir.score(corpus, scores, positions)
        result.update(kind="beir", split=split or "test", n_queries=len(corpus.query_ids),
                      n_documents=len(corpus.doc_ids))
    else:
        if split is not None:
            raise DataError(f"{corpus_dir}: --split needs a prepared dir or a BEIR dir; this is a Tatoeba dir")
        corpus = bitext.BitextCorpus(corpus_dir, languages)
        model_cfg = model_cfg.model_copy(update={"passage_prefix": model_cfg.query_prefix})
        model_cfg = checked_model(model_dir, model_cfg, config, start_ray)
        query_emb, cand_emb = encode_for_eval(model_cfg, corpus.encodable, config)
        metrics, per_language, per_query = bitext.score(corpus, query_emb, cand_emb)
        result.update(kind="tatoeba", languages=per_language)
        if _trained_on_tatoeba(manifest):
            result["corpus_note"] = "the model trained on Tatoeba pairs: these are not held-out scores"
    result["metrics"] = metrics
    with atomic_directory(Path(out_dir)) as staging:
        write_json_atomic(staging / RESULTS, result)
        pq.write_table(per_query, staging / PER_QUERY)
        (staging / SUMMARY).write_text(_summary(result), encoding="utf-8")
    return result
