"""`hbt report`: aggregates from per_query.parquet, paired bootstrap CIs against a slow
reference, refusal of unpairable runs, and the CLI."""

import json
import re
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pyarrow.parquet as pq
import pytest
from synthetic import LANGS, NQ, reference_aggregates, synthetic_rows, write_run

from hbt.cli import main
from hbt.errors import HbtError
from hbt.eval import report as rep
from hbt.io import write_json_atomic


def shifted(rows, ap=0.05, rd=-1.0):
    """Every query better: AP up by `ap`, rank distance down by `-rd`."""
    return [{**r, "ap": r["ap"] + ap, "rank_distance": r["rank_distance"] + rd} for r in rows]


def reference_bootstrap(rows_a, rows_b, resamples, seed) -> dict:
    """Paired bootstrap as a plain loop: draw question ids, gather their rows, recompute."""
    qids = sorted({r["query_id"] for r in rows_a})
    by_qid = [defaultdict(list), defaultdict(list)]
    for i, rows in enumerate((rows_a, rows_b)):
        for r in rows:
            by_qid[i][r["query_id"]].append(r)
    indices = np.random.default_rng(seed).integers(0, len(qids), size=(resamples, len(qids)))
    diffs = defaultdict(list)
    for draw in indices:
        a, b = ([r for j in draw for r in by_qid[i][qids[j]]] for i in (0, 1))
        agg_a, agg_b = reference_aggregates(a), reference_aggregates(b)
        for m in rep.METRICS:
            diffs[m].append(agg_b[m] - agg_a[m])
    return {m: np.percentile(d, [2.5, 97.5]) for m, d in diffs.items()}


@pytest.fixture
def runs(tmp_path):
    rows = synthetic_rows()
    return {"a": write_run(tmp_path / "a", rows), "b": write_run(tmp_path / "b", synthetic_rows(seed=1)),
            "same": write_run(tmp_path / "same", rows), "better": write_run(tmp_path / "better", shifted(rows)),
            "rows": rows}


# ---------------------------------------------------------------- aggregates

def test_aggregates_reproduce_results_json(runs):
    for name in ("a", "b", "better"):
        run = rep.load_run(runs[name])
        qids, aggs = rep.aggregates(run)
        point = rep.point_values(aggs, len(qids))
        rep.check_against_results(run, point)
        settings = run.results["settings"]
        assert point["mono_map"] == pytest.approx(settings["mono"]["map"], abs=1e-12)
        assert point["cross_map"] == pytest.approx(settings["cross"]["map"], abs=1e-12)
        assert point["multi_map"] == pytest.approx(settings["multi"]["map"], abs=1e-12)
        assert point["rank_distance"] == pytest.approx(settings["multi"]["rank_distance"], abs=1e-12)
        assert len(qids) == NQ


class _OneHot:
    """Embeds a text as the one-hot of its first IDn tag; with `wrong`, `de` queries of odd tags
    point at the next sentence instead (so that run is worse)."""

    def __init__(self, wrong: bool):
        self.wrong = wrong

    def encode(self, texts, kind, batch_size, on_batch=None):
        out = np.zeros((len(texts), 6), np.float32)
        for i, t in enumerate(texts):
            tag = int(re.search(r"ID(\d+)", t).group(1))
            off = self.wrong and kind == "query" and t.startswith("what de") and tag % 2
            out[i, (tag + 1) % 6 if off else tag] = 1.0
        return out


def test_real_eval_output_loads_and_matches(corpus_dir, tmp_path):
    """per_query.parquet as `evaluate` builds it reproduces its own settings."""
    from hbt.config import EvalConfig
    from hbt.data.lareqa import read_lareqa
    from hbt.eval import allpairs
    from hbt.eval.encode import encode_corpus

    corpus = read_lareqa(corpus_dir, LANGS)
    results = []
    for wrong in (False, True):
        q, c = encode_corpus(_OneHot(wrong), corpus, EvalConfig(batch_size=2))
        result = allpairs.evaluate(q, c, corpus, LANGS, top_k=5)
        out = tmp_path / f"wrong-{wrong}"
        out.mkdir()
        pq.write_table(result.pop("per_query"), out / "per_query.parquet")
        write_json_atomic(out / "results.json", result)
        results.append(result)
    comparison = rep.compare([rep.load_run(tmp_path / "wrong-False"), rep.load_run(tmp_path / "wrong-True")],
                             resamples=50)
    assert comparison["n_questions"] == 4
    diffs = comparison["differences"][0]["metrics"]
    for m, (_, (setting, key)) in rep.METRICS.items():
        expected = results[1]["settings"][setting][key] - results[0]["settings"][setting][key]
        assert diffs[m]["diff"] == pytest.approx(expected, abs=1e-12)
    assert diffs["mono_map"]["diff"] < 0


def test_results_json_out_of_sync_is_refused(runs):
    results = json.loads((runs["b"] / "results.json").read_text())
    results["settings"]["cross"]["map"] += 1e-6
    (runs["b"] / "results.json").write_text(json.dumps(results))
    with pytest.raises(HbtError, match=r"Cr from per_query.parquet .* results.json says"):
        rep.compare([rep.load_run(runs["a"]), rep.load_run(runs["b"])])


# ---------------------------------------------------------------- bootstrap

def test_bootstrap_matches_reference_loop(runs, tmp_path):
    rows_b = synthetic_rows(seed=1)
    comparison = rep.compare([rep.load_run(runs["a"]), rep.load_run(runs["b"])], resamples=200, seed=7)
    expected = reference_bootstrap(runs["rows"], rows_b, resamples=200, seed=7)
    point_a, point_b = reference_aggregates(runs["rows"]), reference_aggregates(rows_b)
    for m, ci in comparison["differences"][0]["metrics"].items():
        assert ci["diff"] == pytest.approx(point_b[m] - point_a[m], abs=1e-12)
        assert ci["lo"] == pytest.approx(expected[m][0], abs=1e-12)
        assert ci["hi"] == pytest.approx(expected[m][1], abs=1e-12)
        assert ci["significant"] == (ci["lo"] > 0 or ci["hi"] < 0)


def test_identical_runs_differ_by_exactly_zero(runs):
    comparison = rep.compare([rep.load_run(runs["a"]), rep.load_run(runs["same"])], resamples=100)
    for ci in comparison["differences"][0]["metrics"].values():
        assert (ci["diff"], ci["lo"], ci["hi"], ci["significant"]) == (0.0, 0.0, 0.0, False)


def test_uniformly_better_run_is_significant(runs):
    comparison = rep.compare([rep.load_run(runs["a"]), rep.load_run(runs["better"])], resamples=300)
    cis = comparison["differences"][0]["metrics"]
    for m in ("mono_map", "cross_map", "multi_map"):
        assert cis[m]["diff"] == pytest.approx(0.05) and cis[m]["lo"] > 0 and cis[m]["significant"]
    assert cis["rank_distance"]["diff"] == pytest.approx(-1.0) and cis["rank_distance"]["hi"] < 0


def test_seed_is_reproducible_and_matters(runs):
    loaded = [rep.load_run(runs["a"]), rep.load_run(runs["b"])]
    one, again, other = (rep.compare(loaded, resamples=100, seed=s) for s in (1, 1, 2))
    assert one == again
    assert one["differences"] != other["differences"]


def test_full_size_comparison_covers_every_question():
    """1,190 questions x 11 languages (121 pairs + pooled), 1,000 resamples, as a full XQuAD-R
    report resamples. (Its speed is no test's business on a shared machine: no clock here.)"""
    langs = [f"l{i}" for i in range(11)]
    rng = np.random.default_rng(0)
    qids = np.array([f"q{i:04d}" for i in range(1190)])
    cols = defaultdict(list)
    for x in langs:
        for y in langs + ["*"]:
            cols["setting"].append(np.full(qids.size, "multi" if y == "*" else "mono" if x == y else "cross"))
            cols["query_lang"].append(np.full(qids.size, x))
            cols["cand_lang"].append(np.full(qids.size, y))
            cols["query_id"].append(qids)
            cols["ap"].append(rng.uniform(size=qids.size))
            cols["rank_distance"].append(rng.uniform(0, 50, size=qids.size))
    arrays = {k: np.concatenate(v) for k, v in cols.items()}
    qid_sorted, aggs = rep.aggregates(rep.Run("x", None, {"languages": langs}, arrays))
    settings = {"mono": {"map": 0}, "cross": {"map": 0}, "multi": {"map": 0, "rank_distance": 0}}
    point = rep.point_values(aggs, len(qid_sorted))
    for (setting, key), m in zip([p for _, p in rep.METRICS.values()], rep.METRICS):
        settings[setting][key] = point[m]
    runs = [rep.Run(name, None, {"languages": langs, "settings": settings}, arrays) for name in ("a", "b")]
    comparison = rep.compare(runs, resamples=1000)
    assert comparison["n_questions"] == 1190


# ---------------------------------------------------------------- refusals

def test_mismatched_languages_are_refused(runs, tmp_path):
    two = write_run(tmp_path / "two", synthetic_rows(langs=["en", "de"]), langs=["en", "de"])
    with pytest.raises(HbtError, match="languages differ") as info:
        rep.compare([rep.load_run(runs["a"]), rep.load_run(two)])
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kwargs", [{"nq": NQ - 1}, {"skipped": set()}])
def test_mismatched_query_sets_are_refused(runs, tmp_path, kwargs):
    other = write_run(tmp_path / "other", synthetic_rows(**kwargs))
    with pytest.raises(HbtError, match="query sets differ") as info:
        rep.compare([rep.load_run(runs["a"]), rep.load_run(other)])
    assert "\n" not in str(info.value)


def test_malformed_run_names_its_path(runs, tmp_path):
    (runs["b"] / "per_query.parquet").write_text("not parquet")
    with pytest.raises(HbtError, match=re.escape(str(runs["b"]))):
        rep.load_run(runs["b"])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "results.json").write_text("{}")
    with pytest.raises(HbtError, match="malformed"):
        rep.load_run(bad)


# ---------------------------------------------------------------- CLI

def test_cli_prints_table_and_writes_outputs(runs, tmp_path, capsys):
    out_json, out_md = tmp_path / "cmp" / "report.json", tmp_path / "report.md"
    code = main(["report", str(runs["a"]), str(runs["b"]), str(runs["better"]), "--resamples", "200",
                 "--seed", "3", "--out", str(out_json), "--out-md", str(out_md)])
    assert code == 0
    printed = capsys.readouterr().out
    table = [line for line in printed.splitlines() if line.startswith("|")]
    assert table[0].startswith("| run | Mo | Cr | Mul | RD | ΔMo [95% CI]")
    assert len(table) == 2 + 3 and "baseline" in table[2]
    assert re.search(r"\| \+0\.0500 \[\+0\.0500, \+0\.0500\]\*", table[4])
    saved = json.loads(out_json.read_text())
    assert [r["name"] for r in saved["runs"]] == [str(runs[k]) for k in ("a", "b", "better")]
    assert saved["resamples"] == 200 and saved["seed"] == 3 and len(saved["differences"]) == 2
    assert out_md.read_text() in printed


def test_cli_missing_run_exits_2_with_one_line(runs, tmp_path):
    missing = tmp_path / "nope"
    result = subprocess.run([sys.executable, "-m", "hbt.cli", "report", str(runs["a"]), str(missing)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert f"{missing}: not an eval run" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_cli_single_run_is_a_usage_error(runs, capsys):
    assert main(["report", str(runs["a"])]) == 2
    err = capsys.readouterr().err
    assert "at least 2 runs" in err and len(err.strip().splitlines()) == 1


def test_cli_refuses_zero_resamples(runs, capsys):
    assert main(["report", str(runs["a"]), str(runs["b"]), "--resamples", "0"]) == 2
    err = capsys.readouterr().err
    assert "--resamples must be at least 1" in err and len(err.strip().splitlines()) == 1
