"""Which eval corpus a model may be scored on: never on articles it was trained on.

`hbt train` copies the prepared manifest (article split + sha256 of every source file) into
the exported model dir as `hbt_training.json`. XQuAD (training) and XQuAD-R (evaluation)
hold the same articles in the same order, so a corpus language whose file is one of the
manifest's sources shares the split's article indices: those languages are checked. A
corpus the manifest does not know (MLQA-R, a user's own) has unrelated article indices and
is not restricted.

An eval corpus is either a dir of LAReQA `{lang}.json` files or a prepared dir
(`hbt data prepare`: `manifest.json` + `eval/{queries,candidates,qrels}.parquet`, the
held-out articles only). On held-in articles `hbt eval` refuses (exit 2) unless asked for
`heldout_only`, which drops them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hbt.data.lareqa import LareqaCorpus, read_lareqa
from hbt.data.prepare import EVAL_DIR, MANIFEST, TRAINING_MANIFEST, load_manifest, rows_in_articles
from hbt.data.splits import check_no_leakage
from hbt.errors import DataError
from hbt.io import sha256_file
from hbt.languages import check_languages


@dataclass
class EvalCorpus:
    corpus: LareqaCorpus
    sources: dict[str, str]  # lang -> sha256 of the LAReQA file its rows come from
    note: str = ""           # how the corpus was restricted, for the report


def is_prepared_dir(path: Path) -> bool:
    return (Path(path) / MANIFEST).is_file() and (Path(path) / EVAL_DIR).is_dir()


def _read_prepared(path: Path, languages: Optional[Sequence[str]]) -> EvalCorpus:
    manifest = load_manifest(path)
    tables = {}
    for name in ("queries", "candidates", "qrels"):
        file = Path(path) / EVAL_DIR / f"{name}.parquet"
        if not file.is_file():
            raise DataError(f"{file}: not found (re-run `hbt data prepare`)")
        tables[name] = pq.read_table(file)
    if languages is not None:
        langs = check_languages(languages)
        missing = sorted(set(langs) - set(tables["queries"].column("lang").to_pylist()))
        if missing:
            raise DataError(f"{path}: prepared eval corpus has no language(s) {missing}")
        keep = pa.array(langs)
        tables = {k: t.filter(pc.is_in(t.column("lang"), value_set=keep)) for k, t in tables.items()}
    sources = {key.split("/")[1].removesuffix(".json"): sha
               for key, sha in manifest.get("sources", {}).items() if key.startswith("xquad-r/")}
    return EvalCorpus(LareqaCorpus(tables["queries"], tables["candidates"], tables["qrels"]), sources,
                      note=f"prepared held-out split (seed {manifest.get('split', {}).get('seed')})")


def read_eval_corpus(path: Path, languages: Optional[Sequence[str]] = None) -> EvalCorpus:
    """A LAReQA dir/file or a prepared dir, with the sha256 of each language's source file."""
    path = Path(path)
    if is_prepared_dir(path):
        return _read_prepared(path, languages)
    corpus = read_lareqa(path, languages)
    langs = list(dict.fromkeys(corpus.queries.column("lang").to_pylist()))
    files = {lang: (path / f"{lang}.json" if path.is_dir() else path) for lang in langs}
    return EvalCorpus(corpus, {lang: sha256_file(f) for lang, f in files.items()})


def training_manifest(model_dir: Path) -> Optional[dict]:
    """The model's training manifest, or None for a model hbt did not train (e.g. the base)."""
    path = Path(model_dir) / TRAINING_MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON (line {error.lineno})") from None


def restrict_to_articles(corpus: LareqaCorpus, articles) -> LareqaCorpus:
    queries = rows_in_articles(corpus.queries, articles)
    candidates = rows_in_articles(corpus.candidates, articles)
    qrels = corpus.qrels.filter(pc.is_in(corpus.qrels.column("query_id"), value_set=queries.column("id").unique()))
    return replace(corpus, queries=queries, candidates=candidates, qrels=qrels)


def guard(eval_corpus: EvalCorpus, manifest: Optional[dict], heldout_only: bool) -> EvalCorpus:
    """Refuse (DataError) or, with `heldout_only`, drop the articles the model was trained on."""
    if manifest is None:
        if heldout_only:
            raise DataError(f"--heldout-only: the model has no {TRAINING_MANIFEST}, so no split to hold out from")
        return eval_corpus
    try:
        trained = set(int(a) for a in manifest["split"]["train_articles"])
        known = set(manifest.get("sources", {}).values())
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{TRAINING_MANIFEST}: malformed (no split.train_articles)") from None
    aligned = sorted(lang for lang, sha in eval_corpus.sources.items() if sha in known)
    if not aligned:
        return eval_corpus  # a corpus the model never saw: its article indices are unrelated
    corpus = eval_corpus.corpus
    used = set(corpus.queries.filter(pc.is_in(corpus.queries.column("lang"), value_set=pa.array(aligned)))
               .column("article").to_pylist())
    if not heldout_only:
        try:
            check_no_leakage(trained, used)
        except DataError as error:
            raise DataError(f"{error}; pass --heldout-only to drop them") from None
        return eval_corpus
    heldout = sorted(set(corpus.queries.column("article").to_pylist()) - trained)
    if not heldout:
        raise DataError("--heldout-only: every article of the corpus was trained on")
    note = f"held-out articles only ({len(heldout)} of {len(set(corpus.queries.column('article').to_pylist()))})"
    return replace(eval_corpus, corpus=restrict_to_articles(corpus, heldout), note=note)
