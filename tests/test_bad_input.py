"""Bad input, table-driven across verbs: one line naming the file and the field, exit 2, no
traceback, and the output location exactly as it was (hashed before and after).

Every case fails before Ray would start; each runs `hbt.cli.main` in this process (the
subprocess path of the same entry point is covered in tests/test_cli.py).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hbt.cli import main


@dataclass
class Env:
    data: Path       # the real data dir
    tmp: Path        # a scratch dir for this case
    model: Path      # a tiny model dir
    prepared: Path   # a small prepared dir (en; train, dev, test)
    corpus: Path     # a one-language LAReQA copy of XQuAD-R (en), to break
    out: Path        # an existing artefact every case must leave untouched


def snapshot(path: Path) -> dict[str, str] | None:
    """sha256 of every file under `path` (None if absent)."""
    if not path.exists():
        return None
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path.parent)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def corpus_doc(env: Env) -> dict:
    return json.loads((env.corpus / "en.json").read_text(encoding="utf-8"))


def write_corpus(env: Env, doc, name: str = "en.json") -> Path:
    directory = env.tmp / "corpus"
    directory.mkdir(exist_ok=True)
    (directory / name).write_text(doc if isinstance(doc, str) else json.dumps(doc), encoding="utf-8")
    return directory


def first_paragraph(doc: dict) -> dict:
    return doc["data"][0]["paragraphs"][0]


def edited(env: Env, edit: Callable[[dict], None]) -> Path:
    doc = corpus_doc(env)
    edit(doc)
    return write_corpus(env, doc)


def eval_argv(env: Env, corpus, *extra) -> list[str]:
    return ["eval", "--model", str(env.model), "--corpus", str(corpus), "--out", str(env.out), *extra]


def pairs_file(env: Env, lines: list, name: str = "pairs.jsonl") -> Path:
    path = env.tmp / name
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def pairs_shards(env: Env, shards: dict[str, list[dict]]) -> Path:
    """A directory of pairs shards: {file name: rows} (.jsonl or .parquet)."""
    directory = env.tmp / "shards"
    directory.mkdir()
    for name, rows in shards.items():
        if name.endswith(".parquet"):
            pq.write_table(pa.Table.from_pylist(rows), directory / name)
        else:
            (directory / name).write_text("".join(json.dumps(row) + "\n" for row in rows))
    return directory


def good_rows(prefix: str, n: int) -> list[dict]:
    return [{"parallel_id": f"{prefix}{i}", "lang": "en", "question": f"q {prefix}{i}?", "positive": f"p {prefix}{i}."}
            for i in range(n)]


def prepare_argv(env: Env, *sets) -> list[str]:
    return ["data", "prepare", "--data-dir", str(env.data), "--out", str(env.out), "--set", "data.languages=[en,de]",
            *(a for s in sets for a in ("--set", s))]


def pairs_argv(env: Env, path: Path | str) -> list[str]:
    return prepare_argv(env, f"data.sources=[{{kind: pairs, path: {path}}}]")


def train_argv(env: Env, *sets, prepared: Path | None = None) -> list[str]:
    return ["train", "--out", str(env.out), "--set", f"data.prepared_dir={prepared or env.prepared}",
            "--set", f"model.name_or_path={env.model}", "--set", "data.languages=[en]",
            *(a for s in sets for a in ("--set", s))]


def model_without(env: Env, *names) -> Path:
    model = env.tmp / "model"
    shutil.copytree(env.model, model)
    for name in names:
        (model / name).unlink()
    return model


def run_dir_of_another_config(env: Env) -> Path:
    """A run dir as `hbt train` leaves it (its config and Ray's run snapshot), trained with
    grad_accum 1."""
    run = env.tmp / "run"
    run.mkdir()
    from hbt.config import load_config

    config = load_config(None, [f"model.name_or_path={env.model}", "data.languages=[en]",
                                f"data.prepared_dir={env.prepared}"]).model_dump(mode="json")
    config["model"]["candidate_context"] = False
    import yaml

    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "checkpoint_manager_snapshot.json").write_text("{}")
    return run


def trained_with_context(env: Env) -> Path:
    model = env.tmp / "trained"
    shutil.copytree(env.model, model)
    (model / "hbt_training.json").write_text(json.dumps({
        "heldin_question_ids": [], "train_config": {"model": {"candidate_context": True}}}))
    return model


def eval_run(env: Env, name: str, languages: str) -> Path:
    """A minimal `hbt eval` output dir (results.json + per_query.parquet)."""
    run = env.tmp / name
    run.mkdir()
    langs = languages.split(",")
    (run / "results.json").write_text(json.dumps({"languages": langs, "settings": {}}))
    rows = [{"setting": "multi", "query_lang": lang, "cand_lang": "*", "query_id": "q1", "ap": 0.5,
             "rank_distance": 1.0} for lang in langs]
    pq.write_table(pa.Table.from_pylist(rows), run / "per_query.parquet")
    return run


# (case id, argv builder, fragments the one line must contain)
CASES: list[tuple[str, Callable[[Env], list[str]], list[str]]] = [
    # -- eval: the corpus ------------------------------------------------------------------
    ("corpus truncated JSON", lambda e: eval_argv(e, write_corpus(e, (e.corpus / "en.json").read_text()[:5000])),
     ["en.json", "invalid JSON"]),
    ("corpus missing paragraphs", lambda e: eval_argv(e, edited(e, lambda d: d["data"][0].pop("paragraphs"))),
     ["en.json", "data[0]", "paragraphs"]),
    ("corpus mistyped context", lambda e: eval_argv(e, edited(e, lambda d: first_paragraph(d).update(context=7))),
     ["en.json", "paragraphs[0].context", "expected str"]),
    ("corpus whitespace question", lambda e: eval_argv(e, edited(
        e, lambda d: first_paragraph(d)["qas"][0].update(question="  "))), ["en.json", "qas[0].question", "empty"]),
    ("corpus duplicate question id", lambda e: eval_argv(e, edited(
        e, lambda d: first_paragraph(d)["qas"].append(first_paragraph(d)["qas"][0]))),
        ["en.json", "repeated question id"]),
    ("corpus answer offset out of range", lambda e: eval_argv(e, edited(
        e, lambda d: first_paragraph(d)["qas"][0]["answers"][0].update(answer_start=10**6))),
     ["en.json", "answer_start", "outside the context"]),
    ("corpus sentences and breaks disagree", lambda e: eval_argv(e, edited(
        e, lambda d: first_paragraph(d)["sentences"].pop())), ["en.json", "paragraphs[0]", "sentence_breaks"]),
    ("corpus sentences missing", lambda e: eval_argv(e, edited(e, lambda d: first_paragraph(d).pop("sentences"))),
     ["en.json", "paragraphs[0]", "'sentences'"]),
    ("corpus sentences not a list", lambda e: eval_argv(e, edited(
        e, lambda d: first_paragraph(d).update(sentences="one string"))), ["en.json", "sentences", "expected list"]),
    ("corpus file named no language", lambda e: eval_argv(e, write_corpus(e, corpus_doc(e), "xx.json")),
     ["xx.json", "not a language code"]),
    ("corpus where no query has a relevant candidate", lambda e: eval_argv(e, write_corpus(e, {"data": [{
        "paragraphs": [{"context": "One. Two.", "sentences": ["One."], "sentence_breaks": [[0, 4]],
                        "qas": [{"id": "q", "question": "Two?",
                                 "answers": [{"answer_start": 5, "text": "Two"}]}]}]}]})),
     ["en.json", "no question has its answer_start inside"]),
    ("eval language missing from the corpus", lambda e: eval_argv(e, e.corpus, "--languages", "en,zh"),
     ["zh.json", "not found"]),
    ("eval unknown language code", lambda e: eval_argv(e, e.corpus, "--languages", "en,english"),
     ["unknown language code 'english'"]),
    ("eval corpus path does not exist", lambda e: eval_argv(e, e.tmp / "nowhere"), ["nowhere", "not found"]),
    ("eval split of a raw corpus", lambda e: eval_argv(e, e.corpus, "--split", "dev"),
     ["--split needs a prepared dir"]),
    ("eval split the prepared dir lacks", lambda e: eval_argv(e, _without_dev(e), "--split", "dev"), ["no dev split"]),
    # -- eval: the model and settings ------------------------------------------------------
    ("model dir without weights", lambda e: eval_argv(_swap_model(e, model_without(e, "model.safetensors")), e.corpus),
     ["model", "not a model directory", "model.safetensors"]),
    ("model dir without tokenizer", lambda e: eval_argv(
        _swap_model(e, model_without(e, "tokenizer.json", "tokenizer_config.json")), e.corpus),
     ["model", "has no tokenizer"]),
    ("model path does not exist", lambda e: eval_argv(_swap_model(e, e.tmp / "no-model"), e.corpus),
     ["model directory not found", "no-model"]),
    ("eval passages unlike the model's training", lambda e: eval_argv(
        _swap_model(e, trained_with_context(e)), e.corpus, "--set", "model.candidate_context=false"),
     ["trained with model.candidate_context=true"]),
    ("eval bad index factory", lambda e: eval_argv(e, e.corpus, "--set", "eval.index_factory=IVF-bogus"),
     ["eval.index_factory 'IVF-bogus'"]),
    ("eval top_k below 10", lambda e: eval_argv(e, e.corpus, "--set", "eval.top_k=5"), ["eval.top_k"]),
    # -- config ------------------------------------------------------------------------------
    ("config truncated YAML",
     lambda e: ["config", "show", "--config", str(_file(e, "c.yaml", "data:\n  languages: [en"))],
     ["c.yaml", "not valid YAML"]),
    ("config file does not exist", lambda e: ["config", "show", "--config", str(e.tmp / "none.yaml")],
     ["config file not found"]),
    ("config out of range", lambda e: prepare_argv(e, "batching.alpha=1.5"), ["batching.alpha"]),
    ("config mistyped", lambda e: prepare_argv(e, "train.steps=many"), ["train.steps"]),
    ("config negative lr", lambda e: prepare_argv(e, "train.lr=-0.1"), ["train.lr"]),
    ("config unknown source kind", lambda e: prepare_argv(e, "data.sources=[{kind: web}]"), ["data.sources.0"]),
    # -- prepare: sources --------------------------------------------------------------------
    ("pairs truncated JSONL", lambda e: pairs_argv(e, pairs_file(e, ['{"parallel_id": "1", "lang": "en", "quest'])),
     ["pairs.jsonl", "line 1", "invalid JSON"]),
    ("pairs truncated Parquet", lambda e: pairs_argv(e, _truncated_parquet(e)),
     ["pairs.parquet", "not a readable parquet"]),
    ("pairs missing field",
     lambda e: pairs_argv(e, pairs_file(e, [{"parallel_id": "1", "lang": "en", "positive": "p"}])),
     ["pairs.jsonl", "line 1", "'question'"]),
    ("pairs mistyped field", lambda e: pairs_argv(e, pairs_file(e, [{"parallel_id": "1", "lang": "en", "question": 3,
                                                                     "positive": "p"}])),
     ["pairs.jsonl", "line 1.question", "expected str"]),
    ("pairs empty string", lambda e: pairs_argv(e, pairs_file(e, [{"parallel_id": "1", "lang": "en", "question": "q",
                                                                   "positive": ""}])),
     ["pairs.jsonl", "line 1.positive", "empty"]),
    ("pairs duplicate record language", lambda e: pairs_argv(e, pairs_file(e, [
        {"parallel_id": "1", "lang": "en", "question": "q", "positive": "p"},
        {"parallel_id": "1", "lang": "en", "question": "q2", "positive": "p2"}])), ["pairs.jsonl", "two rows"]),
    ("pairs unknown language", lambda e: pairs_argv(e, pairs_file(e, [{"parallel_id": "1", "lang": "xx",
                                                                       "question": "q", "positive": "p"}])),
     ["pairs.jsonl", "line 1.lang", "unknown language code 'xx'"]),
    ("pairs path does not exist", lambda e: pairs_argv(e, e.tmp / "none.jsonl"), ["none.jsonl", "not found"]),
    ("pairs malformed row in a later shard", lambda e: pairs_argv(e, pairs_shards(e, {
        "part-0.jsonl": good_rows("a", 3), "part-1.jsonl": good_rows("b", 2) + [{**good_rows("b", 3)[2], "lang": 7}]})),
     ["shards/part-1.jsonl: line 3.lang: expected str, got int"]),
    ("pairs record language repeated across shards", lambda e: pairs_argv(e, pairs_shards(e, {
        "part-0.jsonl": good_rows("a", 3), "part-1.parquet": good_rows("a", 1)})),
     ["shards/part-0.jsonl and ", "shards/part-1.parquet: parallel_id 'a0' has two rows in language 'en'"]),
    ("pairs glob matching no shard", lambda e: pairs_argv(e, f"{pairs_shards(e, {})}/*.jsonl"),
     ["*.jsonl: no .jsonl or .parquet file matches"]),
    ("pairs not UTF-8",
     lambda e: pairs_argv(e, _file_bytes(e, "pairs.jsonl", '{"question": "caf\u00e9"}\n'.encode("latin-1"))),
     ["pairs.jsonl: line 1: not valid UTF-8"]),
    ("data dir does not exist",
     lambda e: ["data", "prepare", "--data-dir", str(e.tmp / "no-data"), "--out", str(e.out)],
     ["no-data", "not found"]),
    ("prepare output under a file", lambda e: ["data", "prepare", "--data-dir", str(e.data), "--out",
                                               str(_file(e, "a-file", "x") / "prepared")], ["a-file is a file"]),
    # -- train --------------------------------------------------------------------------------
    ("train batch larger than distinct positives", lambda e: train_argv(e, "batching.batch_size=500"),
     ["need 500 records", "batch_size*world_size=500*1"]),
    ("train prepared dir without pairs", lambda e: train_argv(e, prepared=e.tmp),
     ["no training pool (run `hbt data prepare` first)"]),
    ("train eval_every without a dev split", lambda e: train_argv(e, "train.eval_every=5", prepared=_without_dev(e)),
     ["no dev split"]),
    ("train resume a dir that holds no run", lambda e: ["train", "--resume", str(e.out), "--set",
                                                        f"model.name_or_path={e.model}"], ["nothing to resume"]),
    ("train resume with another grad_accum", lambda e: ["train", "--resume", str(run_dir_of_another_config(e)),
                                                        "--set", "train.grad_accum=4"],
     ["--resume: train.grad_accum was 1", "now 4"]),
    ("train model that cannot load", lambda e: train_argv(e, f"model.name_or_path={e.tmp / 'nothing'}"),
     ["model directory not found"]),
    # -- report -------------------------------------------------------------------------------
    ("report of runs with other query sets", lambda e: ["report", str(eval_run(e, "a", "en,de")),
                                                       str(eval_run(e, "b", "en")), "--out-md", str(e.out / "r.md")],
     ["languages differ"]),
    ("report of a dir that is no eval run", lambda e: ["report", str(e.prepared), str(e.prepared)],
     ["not an eval run"]),
]


def _file_bytes(env: Env, name: str, data: bytes) -> Path:
    path = env.tmp / name
    path.write_bytes(data)
    return path


def _file(env: Env, name: str, text: str) -> Path:
    path = env.tmp / name
    path.write_text(text)
    return path


def _truncated_parquet(env: Env) -> Path:
    path = env.tmp / "pairs.parquet"
    pq.write_table(pa.table({"parallel_id": ["1"] * 50, "lang": ["en"] * 50, "question": ["q"] * 50,
                             "positive": ["p"] * 50}), path)
    path.write_bytes(path.read_bytes()[:-40])
    return path


def _without_dev(env: Env) -> Path:
    copy = env.tmp / "no-dev"
    shutil.copytree(env.prepared, copy)
    shutil.rmtree(copy / "dev")
    return copy


def _swap_model(env: Env, model: Path) -> Env:
    env.model = model
    return env


@pytest.fixture(scope="module")
def shared(tmp_path_factory, data_dir):
    from hbt.config import load_config
    from hbt.data.prepare import prepare
    from hbt.model.tiny import tiny_bert

    root = tmp_path_factory.mktemp("bad-input")
    prepared = prepare(load_config(None, [f"data.data_dir={data_dir}", "data.languages=[en]",
                                          "data.eval_languages=[en]", "data.max_train_records=40"]).data,
                       root / "prepared")
    corpus = root / "xquad-r-en"
    corpus.mkdir()
    shutil.copy(data_dir / "xquad-r" / "en.json", corpus / "en.json")
    return data_dir, tiny_bert(root / "tiny"), prepared, corpus


def test_the_cases_reach_every_verb_that_reads_a_users_files(shared, tmp_path):
    """Each verb reading a user's files (raw data, a config, a model, a corpus, a prepared dir, an
    eval run) keeps its bad-input cases here: this fails if one verb's cases are dropped."""
    data_dir, model, prepared, corpus = shared
    verbs = set()
    for number, (_, argv_of, _) in enumerate(CASES):
        own = tmp_path / str(number)  # each case writes its own files
        (own / "artefact").mkdir(parents=True)
        verbs.add(argv_of(Env(data_dir, own, model, prepared, corpus, own / "artefact"))[0])
    assert {"data", "train", "eval", "config", "report"} <= verbs


@pytest.mark.parametrize("case_id, argv_of, fragments", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_leaves_the_output_alone(shared, tmp_path, capsys, case_id, argv_of,
                                                                   fragments):
    data_dir, model, prepared, corpus = shared
    out = tmp_path / "artefact"
    out.mkdir()
    (out / "results.json").write_text('{"previous": true}\n')  # what an earlier run left
    env = Env(data_dir, tmp_path, model, prepared, corpus, out)
    argv = argv_of(env)
    before = snapshot(out), snapshot(prepared), snapshot(corpus)
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("hbt: error: "), err
    for fragment in fragments:
        assert fragment in err, err
    assert (snapshot(out), snapshot(prepared), snapshot(corpus)) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left behind
