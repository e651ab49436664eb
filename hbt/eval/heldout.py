"""Which eval corpus a model may be scored on, and how its passages must be written.

Never on what it trained on: `hbt train` copies the prepared manifest into the exported
model dir as `hbt_training.json`, with `heldin_question_ids`, the XQuAD question ids of its
training pool. XQuAD-R (and any LAReQA corpus built from XQuAD) shares those ids, so the
guard is keyed on what the data is, not on file bytes: an article of the eval corpus that
holds one of those questions was trained on. `hbt eval` refuses such a corpus (exit 2)
unless asked for `heldout_only`, which drops those articles and the split's dev articles too
(a model selected on dev was chosen on them), leaving the test articles. A corpus with none of those
ids (MLQA-R, your own, or any corpus for a model trained on other sources) is not
restricted.

An eval corpus is either a dir of LAReQA `{lang}.json` files or a prepared dir
(`hbt data prepare`: `manifest.json` + `dev/` and `test/` tables); a prepared dir is read
at one split (`test` unless asked for `dev`).

Passages are written as in training (`model.candidate_context`): unset, it is what the
model trained with; set to the other value, the evaluation is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hbt.config import DEFAULT_CANDIDATE_CONTEXT, ModelConfig
from hbt.data.lareqa import LareqaCorpus, read_lareqa
from hbt.data.prepare import corpus_in_articles, load_manifest
from hbt.data.splits import SPLITS
from hbt.errors import DataError
from hbt.languages import check_languages
from hbt.layout import EVAL_TABLES, MANIFEST, TRAINING_MANIFEST


@dataclass
class EvalCorpus:
    corpus: LareqaCorpus
    note: str = ""  # where the corpus comes from and how it was restricted, for the report


def is_prepared_dir(path: Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def _read_prepared(path: Path, languages: Optional[Sequence[str]], split: str) -> EvalCorpus:
    manifest = load_manifest(path)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
    if not (Path(path) / split).is_dir():
        raise DataError(f"{path}: no {split} split (it was prepared with data.dev_fraction=0)")
    tables = {}
    for name in EVAL_TABLES:
        file = Path(path) / split / f"{name}.parquet"
        if not file.is_file():
            raise DataError(f"{file}: not found (re-run `hbt data prepare`)")
        tables[name] = pq.read_table(file)
    if languages is not None:
        langs = check_languages(languages)
        missing = sorted(set(langs) - set(tables["queries"].column("lang").to_pylist()))
        if missing:
            raise DataError(f"{path}: prepared {split} split has no language(s) {missing}")
        keep = pa.array(langs)
        tables = {k: t.filter(pc.is_in(t.column("lang"), value_set=keep)) for k, t in tables.items()}
    protocol = manifest["split"].get("protocol", "held-out articles")
    note = f"prepared {split} split, {protocol} (seed {manifest['split'].get('seed')})"
    return EvalCorpus(LareqaCorpus(tables["queries"], tables["candidates"], tables["qrels"]), note)


def read_eval_corpus(path: Path, languages: Optional[Sequence[str]] = None, split: Optional[str] = None) -> EvalCorpus:
    """A LAReQA dir/file, or a prepared dir at `split` (default: test)."""
    path = Path(path)
    if is_prepared_dir(path):
        return _read_prepared(path, languages, split or "test")
    if split is not None:
        raise DataError(f"--split needs a prepared dir (`hbt data prepare`); {path} is a LAReQA corpus")
    return EvalCorpus(read_lareqa(path, languages))


def training_manifest(model_dir: Path) -> Optional[dict]:
    """The model's training manifest, or None for a model hbt did not train (e.g. the base)."""
    path = Path(model_dir) / TRAINING_MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON (line {error.lineno})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("heldin_question_ids"), list):
        raise DataError(f"{path}: malformed (no heldin_question_ids list); retrain with this hbt")
    return manifest


def restrict_to_articles(corpus: LareqaCorpus, articles) -> LareqaCorpus:
    return corpus_in_articles(corpus, articles)


def guard(eval_corpus: EvalCorpus, manifest: Optional[dict], heldout_only: bool) -> EvalCorpus:
    """Refuse (DataError) or, with `heldout_only`, drop the articles the model was trained on
    and the dev articles of its split (its checkpoint may have been selected on them)."""
    if manifest is None:
        if heldout_only:
            raise DataError(f"--heldout-only: the model has no {TRAINING_MANIFEST}, so no split to hold out from")
        return eval_corpus
    corpus = eval_corpus.corpus
    heldin = pa.array(sorted(set(manifest["heldin_question_ids"])), pa.string())
    queries = corpus.queries
    trained = queries.filter(pc.is_in(queries.column("id"), value_set=heldin))
    held_in = sorted(set(trained.column("article").to_pylist()))
    articles = set(queries.column("article").to_pylist())
    dev = articles & set(manifest.get("split", {}).get("dev_articles", ())) - set(held_in)
    if not held_in and not (heldout_only and dev):
        return eval_corpus
    if not heldout_only:
        raise DataError(f"evaluation uses {len(held_in)} article(s) the model was trained on (e.g. {held_in[:5]}: "
                        f"{trained.num_rows} of their questions are in its training pool); evaluate on the "
                        f"held-out split only, or pass --heldout-only to drop them")
    heldout = sorted(articles - set(held_in) - dev)
    if not heldout:
        raise DataError("--heldout-only: every article of the corpus was trained on or is a dev article")
    note = (f"held-out test articles only ({len(heldout)} of {len(articles)}: {len(held_in)} trained on "
            f"and {len(dev)} dev dropped)")
    return replace(eval_corpus, corpus=restrict_to_articles(corpus, heldout),
                   note="; ".join(n for n in (eval_corpus.note, note) if n))


def resolve_candidate_context(model_cfg: ModelConfig, manifest: Optional[dict]) -> ModelConfig:
    """`model_cfg` with `candidate_context` decided: as the model trained (see module doc)."""
    trained = None
    if manifest is not None:
        trained = manifest.get("train_config", {}).get("model", {}).get("candidate_context")
    asked = model_cfg.candidate_context
    if asked is not None and trained is not None and asked != trained:
        raise DataError(f"the model trained with model.candidate_context={str(trained).lower()}; evaluating it "
                        f"with {str(asked).lower()} would score other passages than it learned: drop the setting")
    value = asked if asked is not None else trained if trained is not None else DEFAULT_CANDIDATE_CONTEXT
    return model_cfg.model_copy(update={"candidate_context": bool(value)})
