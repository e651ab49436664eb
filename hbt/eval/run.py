"""`hbt eval`'s entry: pick the evaluator of the corpus's kind, decide once where it runs, write its outputs.

Every evaluator has one interface (as sentence-transformers' evaluators do):

* built from ``(corpus_dir, languages, split, manifest, config)``: it reads and checks its corpus
  there, before any model loads or Ray starts, so bad input fails fast;
* ``kind`` and ``primary_metric``; ``model_cfg``: how this kind's texts are encoded;
* ``evaluate(model_cfg, config, on_ray, out_dir) -> (results.json fields, per-query table)``
  (`out_dir`: where the outputs will go, beside which an evaluator may keep resumable work);
* ``write_outputs(staging, result)``: its files beside results.json and per_query.parquet.

Kinds, in the order they are recognised: a BEIR dir, local or at a URI (`hbt.eval.scored.BeirEvaluator`), a
Tatoeba dir (`TatoebaEvaluator`), else a LAReQA or prepared dir (`hbt.eval.allpairs.LareqaEvaluator`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Protocol

import pyarrow.parquet as pq

from hbt.config import HbtConfig, ModelConfig
from hbt.errors import DataError
from hbt.eval import beir, bitext
from hbt.eval.allpairs import LareqaEvaluator
from hbt.eval.scored import BeirEvaluator, TatoebaEvaluator
from hbt.io import absolute_location, atomic_directory, is_local, write_json_atomic
from hbt.layout import PER_QUERY, RESULTS


class Evaluator(Protocol):
    kind: str
    primary_metric: str
    model_cfg: ModelConfig

    def evaluate(self, model_cfg: ModelConfig, config: HbtConfig, on_ray: bool,
                 out_dir: Path) -> tuple[dict, object]: ...

    def write_outputs(self, staging: Path, result: dict) -> None: ...


def evaluator_for(corpus_dir, languages, split: Optional[str], manifest: Optional[dict],
                  config: HbtConfig) -> Evaluator:
    """The evaluator of `corpus_dir`'s kind, its corpus read and checked."""
    if beir.is_beir_dir(corpus_dir):
        return BeirEvaluator(corpus_dir, languages, split, manifest, config)
    if not is_local(corpus_dir):
        raise DataError(f"{corpus_dir}: not a BEIR dir ({beir.CORPUS} or {beir.CORPUS_SHARDS}/ beside "
                        f"{beir.QUERIES}); a corpus at a URI is read as a BEIR dir only")
    corpus_dir = Path(absolute_location(corpus_dir))  # file:// too
    if bitext.is_tatoeba_dir(corpus_dir):
        return TatoebaEvaluator(corpus_dir, languages, split, manifest, config)
    return LareqaEvaluator(corpus_dir, languages, split, manifest, config)


def run_eval(model_dir, corpus_dir, out_dir, languages=None, config: Optional[HbtConfig] = None,
             on_ray: bool = False, split: Optional[str] = None) -> dict:
    """Evaluate the model at `model_dir` on `corpus_dir`; write OUT/{results.json,
    per_query.parquet, the evaluator's files} all-or-nothing and return results.json's dict.

    Args:
        languages: a subset of the corpus's languages (LAReQA, Tatoeba); None: all.
        on_ray: encode and search on Ray actors, Ray started (or joined, per `config.cluster`)
            once the inputs are checked; False: everything in process, whether or not a Ray is
            up. Decided here, once, for every step.
        split: a prepared dir's or BEIR dir's split (default test).
    """
    from hbt.eval.encode import checked_model
    from hbt.eval.heldout import training_manifest

    config = config or HbtConfig()
    manifest = training_manifest(model_dir)
    evaluator = evaluator_for(corpus_dir, languages, split, manifest, config)
    model_cfg = checked_model(model_dir, evaluator.model_cfg, config, start_ray=on_ray)
    fields, per_query = evaluator.evaluate(model_cfg, config, on_ray, Path(out_dir))
    result = {"model": str(model_dir), "corpus": str(corpus_dir), **fields}
    with atomic_directory(Path(out_dir)) as staging:
        write_json_atomic(staging / RESULTS, result)
        pq.write_table(per_query, staging / PER_QUERY)
        evaluator.write_outputs(staging, result)
    return result
