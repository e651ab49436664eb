"""`hbt experiment` end to end: table1's smoke size with a tiny model on a real local Ray. The
report holds every arm, its CIs are `hbt report`'s paired bootstrap, and an interrupted
experiment resumes without redoing what it finished."""

import json
import os
from pathlib import Path

import pytest

from hbt.errors import HbtError
from hbt.eval.report import compare, load_run

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]

TABLE1 = Path(__file__).resolve().parents[2] / "configs" / "experiments" / "table1.yaml"
ARMS = ["base", "xx", "xy", "hybrid"]
TRAINED = ["xx-s0", "xy-s0", "hybrid-s0"]


def smoke_overrides(tiny_model: Path, data_dir: Path) -> list[str]:
    # A quarter CPU per worker and per tokenize actor: the three runs train side by side on the
    # test session's 2 CPUs, as the trials of one Tune grid do on a bigger Ray.
    return [f"model.name_or_path={tiny_model}", "model.max_length=48", f"data.data_dir={data_dir}",
            "cluster.cpus_per_worker=0.25", "cluster.cpus_per_data_task=0.25"]


@pytest.fixture(scope="module")
def smoke(ray_local, tiny_model, data_dir, tmp_path_factory) -> tuple[Path, list[str]]:
    from hbt.experiment.run import run_experiment

    lines: list[str] = []
    out = run_experiment(TABLE1, tmp_path_factory.mktemp("experiment") / "table1", "smoke", (),
                         smoke_overrides(tiny_model, data_dir), progress=lines.append)
    return out, lines


def test_every_arm_is_trained_evaluated_and_reported(smoke):
    out, lines = smoke
    report = json.loads((out / "report.json").read_text())
    assert report["reference"] == "hybrid" and report["seeds"] == [0]
    test = report["corpora"]["test"]
    assert sorted(test["arms"]) == sorted(ARMS) and test["languages"] == ["en", "de", "el"]
    for arm in ARMS:
        row = test["arms"][arm]
        assert row["runs"] == [str(out / "eval" / "test" / (arm if arm == "base" else f"{arm}-s0"))]
        assert all(0 <= row["metrics"][m]["mean"] <= 1 for m in ("mono_map", "cross_map", "multi_map", "hit@10"))
        assert (row["vs_reference"] is None) == (arm == "hybrid")
    assert list(test["groups"]) == ["unseen"]  # el; vi is not evaluated at this size
    assert sorted(p.name for p in (out / "models").iterdir()) == sorted(TRAINED)
    assert not list((out / "runs").iterdir()), "an exported run's checkpoints are removed"
    for run in TRAINED:  # each run's reports, one line per step
        reports = (out / "metrics" / f"{run}.jsonl").read_text().splitlines()
        assert [json.loads(report)["step"] for report in reports] == [0, 1]
    for png in ["curves.png", "comparison_test.png", "comparison_tatoeba.png",
                *(f"heatmaps/test_{arm}.png" for arm in ARMS)]:
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    markdown = (out / "report.md").read_text()
    assert "| arm - hybrid | ΔMo [95% CI]" in markdown and "### query languages unseen (el)" in markdown
    assert "each run's model, evaluated below, is its last checkpoint (train.select_checkpoint)" in markdown
    assert "## Dev curves" in markdown and "![dev curves](curves.png)" in markdown
    trained = [line.split(" ", 2) for line in lines if line.startswith("trained ")]  # side by side: any order
    assert sorted(run for _, run, _ in trained) == sorted(TRAINED)
    assert [count for _, _, count in trained] == ["(1 of 3)", "(2 of 3)", "(3 of 3)"]


def test_the_curves_are_the_runs_dev_metrics(smoke):
    out, lines = smoke
    curves = json.loads((out / "report.json").read_text())["curves"]
    assert sorted(curves["arms"]) == ["hybrid", "xx", "xy"]  # the untrained base has no curve
    for arm, curve in curves["arms"].items():
        rows = [json.loads(line) for line in (out / "metrics" / f"{arm}-s0.jsonl").read_text().splitlines()]
        assert curve["runs"] == [f"{arm}-s0"] and curve["steps"] == [1, 2]  # train.eval_every 1: both steps
        for metric in ("mono_map", "cross_map", "multi_map", "rank_distance"):
            expected = [row[f"dev/{metric}"] for row in rows]
            points = curve["metrics"][metric]
            assert points["seeds"] == {f"{arm}-s0": expected}
            assert points["mean"] == points["min"] == points["max"] == expected  # one seed: no band
    assert set(curves["order"]["multi_map"]) == {"xx", "xy"}
    for run in TRAINED:  # the curve scored the dev split; the model is still the last checkpoint
        manifest = json.loads((out / "models" / run / "hbt_training.json").read_text())
        assert manifest["exported_checkpoint"] == {"selected_by": "last checkpoint"}
    # a progress line per report of every run, as `hbt train` prints it, the run named first
    for run in TRAINED:
        shown = [line for line in lines if line.startswith(f"{run}: step ")]
        assert [line.split()[2] for line in shown] == ["1/2", "2/2"] and all(" s/step  ETA " in line for line in shown)


def test_every_corpus_has_its_table_and_they_stand_side_by_side(smoke):
    out, _ = smoke
    report = json.loads((out / "report.json").read_text())
    tatoeba = report["corpora"]["tatoeba"]
    assert tatoeba["kind"] == "tatoeba" and tatoeba["languages"] == ["de", "el"]
    assert sorted(tatoeba["arms"]) == sorted(ARMS)
    assert report["across_corpora"]["headlines"] == {"test": "multi_map", "tatoeba": "accuracy"}
    markdown = (out / "report.md").read_text()
    assert "## tatoeba (tatoeba): 2000 sentence pairs, languages de, el" in markdown  # 1,000 pairs a language
    assert "| arm - hybrid | test ΔMul [95% CI] | tatoeba Δaccuracy [95% CI] |" in markdown
    for change in report["across_corpora"]["direction_changes"]:  # each call-out is in the tables' CIs
        for corpus, way in change["directions"].items():
            headline = change["metric"] == "headline"
            metric = report["across_corpora"]["headlines"][corpus] if headline else change["metric"]
            diff = report["corpora"][corpus]["arms"][change["arm"]]["vs_reference"][metric]["diff"]
            assert way == ("better" if (-diff if metric == "rank_distance" else diff) > 0 else "worse")


def test_the_cis_are_hbt_reports_paired_bootstrap(smoke):
    out, _ = smoke
    arms = json.loads((out / "report.json").read_text())["corpora"]["test"]["arms"]
    reference = load_run(out / "eval" / "test" / "hybrid-s0")
    for arm, run in (("xx", "xx-s0"), ("base", "base")):
        expected = compare([reference, load_run(out / "eval" / "test" / run)], resamples=1000, seed=0)
        assert arms[arm]["vs_reference"] == expected["differences"][0]["metrics"]


def test_resume_redoes_only_what_is_missing(smoke, tiny_model, data_dir):
    import shutil

    from hbt.experiment.run import run_experiment

    out, _ = smoke
    kept = {path: path.stat().st_mtime_ns for path in (out / "models" / "xx-s0").iterdir()}
    kept_eval = (out / "eval" / "test" / "hybrid-s0" / "results.json").stat().st_mtime_ns
    shutil.rmtree(out / "models" / "xy-s0")
    shutil.rmtree(out / "eval" / "test" / "xy-s0")
    os.unlink(out / "report.md")

    with pytest.raises(HbtError, match="already holds an experiment: continue it with --resume"):
        run_experiment(TABLE1, out, "smoke", (), smoke_overrides(tiny_model, data_dir))
    lines: list[str] = []
    run_experiment(None, out, resume=True, progress=lines.append)
    assert "1 run(s) to train: xy-s0" in lines and "evaluating xy-s0 on test" in lines
    assert not [line for line in lines if line.startswith("evaluating") and "xy-s0" not in line]
    assert {path: path.stat().st_mtime_ns for path in (out / "models" / "xx-s0").iterdir()} == kept
    assert (out / "eval" / "test" / "hybrid-s0" / "results.json").stat().st_mtime_ns == kept_eval
    assert (out / "models" / "xy-s0" / "hbt_training.json").is_file() and (out / "report.md").is_file()
