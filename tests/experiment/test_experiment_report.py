"""The experiment report's arithmetic against slow, obvious references: seeds pooled into the
mean over seeds, the paired bootstrap of seed-averaged arms, a language group's rows alone."""

import numpy as np
import pytest
from synthetic import reference_aggregates, synthetic_rows, write_run

from hbt.eval import report as rep
from hbt.experiment.report import compare_arms, restricted
from hbt.experiment.spec import Experiment, base_config

SPEC = {"description": "d", "reference": "ref", "seeds": [0, 1, 2], "arms": {"ref": {}, "other": {}},
        "groups": {"g": ["de", "es"]}}


def shifted(rows, ap):
    return [{**r, "ap": min(1.0, r["ap"] + ap)} for r in rows]


@pytest.fixture
def arms(tmp_path):
    """Three seeds of two arms: `other` is each `ref` seed's rows with AP up by 0.02 + noise."""
    experiment = Experiment(tmp_path / "x.yaml", SPEC, "cpu", base_config(tmp_path / "x.yaml", SPEC, "cpu"))
    rows = {"ref": [synthetic_rows(seed=s) for s in range(3)]}
    rows["other"] = [shifted(r, 0.02 + 0.01 * s) for s, r in enumerate(rows["ref"])]
    runs = {arm: [rep.load_run(write_run(tmp_path / f"{arm}-s{s}", r)) for s, r in enumerate(seeds)]
            for arm, seeds in rows.items()}
    return experiment, runs, rows


def seed_averaged_bootstrap(rows: dict, resamples: int, seed: int) -> dict:
    """The CI of (mean over other's seeds) - (mean over ref's seeds), questions drawn as a loop."""
    qids = sorted({r["query_id"] for r in rows["ref"][0]})
    position = {q: i for i, q in enumerate(qids)}
    indices = rep.resample_indices(len(qids), resamples, seed)
    diffs = {m: [] for m in rep.METRICS}
    for draw in indices:
        counts = np.bincount(draw, minlength=len(qids))

        def mean_over_seeds(seeds):
            drawn = [[r for r in rs for _ in range(counts[position[r["query_id"]]])] for rs in seeds]
            aggs = [reference_aggregates(d) for d in drawn]
            return {m: np.mean([a[m] for a in aggs]) for m in rep.METRICS}

        a, b = mean_over_seeds(rows["ref"]), mean_over_seeds(rows["other"])
        for m in rep.METRICS:
            diffs[m].append(b[m] - a[m])
    return {m: np.percentile(d, [2.5, 97.5]) for m, d in diffs.items()}


def test_an_arm_is_the_mean_over_its_seeds_with_their_spread(arms):
    experiment, runs, rows = arms
    comparison = compare_arms(experiment, runs, hits=False)
    for arm in ("ref", "other"):
        per_seed = [reference_aggregates(r) for r in rows[arm]]
        for m in rep.METRICS:
            values = comparison["arms"][arm]["metrics"][m]
            assert values["seeds"] == pytest.approx([p[m] for p in per_seed])
            assert values["mean"] == pytest.approx(np.mean([p[m] for p in per_seed]))
            assert values["std"] == pytest.approx(np.std([p[m] for p in per_seed], ddof=1))
    assert comparison["arms"]["ref"]["vs_reference"] is None


def test_the_ci_is_the_paired_bootstrap_of_the_seed_averaged_arms(arms):
    experiment, runs, rows = arms
    other = compare_arms(experiment, runs, hits=False)["arms"]["other"]["vs_reference"]
    expected = seed_averaged_bootstrap(rows, 1000, 0)  # compare_arms: 1000 resamples, seed 0
    for m in rep.METRICS:
        assert [other[m]["lo"], other[m]["hi"]] == pytest.approx(expected[m], abs=1e-9)
    assert other["mono_map"]["diff"] > 0 and other["mono_map"]["significant"]


def test_a_group_keeps_its_query_languages_only(arms):
    experiment, runs, rows = arms
    run = restricted(runs["ref"][0], ["de", "es"])
    assert set(run.rows["query_lang"]) == {"de", "es"}
    kept = [r for r in rows["ref"][0] if r["query_lang"] in ("de", "es")]
    point = rep.point_values(rep.aggregates(run)[1], len(set(r["query_id"] for r in kept)))
    assert point == pytest.approx(reference_aggregates(kept))


def write_scored_run(path, accuracy: np.ndarray, groups: list[str]):
    """A Tatoeba eval dir as `hbt.eval.scored` writes it: pair i of each group is query i."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hbt.io import write_json_atomic

    n = len(accuracy) // len(groups)
    path.mkdir(parents=True)
    pq.write_table(pa.table({"query_id": [f"p{i}" for _ in groups for i in range(n)],
                             "group": [g for g in groups for _ in range(n)], "accuracy": accuracy}),
                   path / "per_query.parquet")
    means = {g: float(accuracy[k * n:(k + 1) * n].mean()) for k, g in enumerate(groups)}
    write_json_atomic(path / "results.json", {"kind": "tatoeba", "languages": {"de": means},
                                              "metrics": {"accuracy": float(np.mean(list(means.values())))}})
    return path


def test_scored_corpora_get_the_same_paired_bootstrap_by_query_id(tmp_path):
    from hbt.experiment.report import compare_scored_arms

    spec = {**SPEC, "seeds": [0]}
    experiment = Experiment(tmp_path / "x.yaml", spec, "cpu", base_config(tmp_path / "x.yaml", spec, "cpu"))
    rng = np.random.default_rng(0)
    groups, n = ["de->en", "en->de"], 60
    ref = (rng.random(2 * n) < 0.6).astype(float)
    other = np.maximum(ref, (rng.random(2 * n) < 0.2).astype(float))  # a few more right
    dirs = {"ref": [write_scored_run(tmp_path / "ref", ref, groups)],
            "other": [write_scored_run(tmp_path / "other", other, groups)]}
    comparison = compare_scored_arms(experiment, dirs)
    assert comparison["kind"] == "tatoeba" and comparison["n_questions"] == n
    row = comparison["arms"]["other"]
    assert row["metrics"]["accuracy"]["mean"] == pytest.approx(other.mean())

    # the reference loop: draw pair ids, each drawn pair brings both of its directions
    diffs = []
    for draw in rep.resample_indices(n, 1000, 0):
        def macro(values):
            return np.mean([values[k * n:(k + 1) * n][draw].mean() for k in range(len(groups))])
        diffs.append(macro(other) - macro(ref))
    ci = row["vs_reference"]["accuracy"]
    assert [ci["lo"], ci["hi"]] == pytest.approx(np.percentile(diffs, [2.5, 97.5]))
    assert ci["diff"] == pytest.approx(other.mean() - ref.mean()) and ci["significant"]


def test_scored_runs_over_different_queries_are_refused(tmp_path):
    from hbt.errors import HbtError
    from hbt.experiment.report import compare_scored_arms

    experiment = Experiment(tmp_path / "x.yaml", SPEC, "cpu", base_config(tmp_path / "x.yaml", SPEC, "cpu"))
    dirs = {"ref": [write_scored_run(tmp_path / "ref", np.ones(8), ["a", "b"])],
            "other": [write_scored_run(tmp_path / "other", np.ones(6), ["a", "b"])]}
    with pytest.raises(HbtError, match="other: its queries differ"):
        compare_scored_arms(experiment, dirs)


def test_a_curve_is_the_mean_and_range_over_seeds_at_the_steps_every_seed_evaluated(tmp_path):
    import json

    from hbt.experiment.curves import arm_curve, order_segments, run_curve

    def metrics_file(name, points):  # steps done -> Mul; the other dev metrics follow from it
        rows = [{"step": 0, "loss": 1.0}]  # a step not evaluated: no point
        rows += [{"step": step - 1, "loss": 0.5, "dev/mono_map": mul + 0.1, "dev/cross_map": mul - 0.1,
                  "dev/multi_map": mul, "dev/rank_distance": 100 * (1 - mul)} for step, mul in points.items()]
        (tmp_path / name).write_text("".join(json.dumps(row) + "\n" for row in rows))
        return run_curve(tmp_path / name)

    curve = arm_curve({"a-s0": metrics_file("a-s0.jsonl", {5: 0.2, 10: 0.4}),
                       "a-s1": metrics_file("a-s1.jsonl", {5: 0.3, 10: 0.5, 15: 0.6})})  # s0 stopped at 10
    assert curve["steps"] == [5, 10]
    mul = curve["metrics"]["multi_map"]
    assert mul["seeds"] == {"a-s0": [0.2, 0.4], "a-s1": [0.3, 0.5]}
    assert mul["mean"] == pytest.approx([0.25, 0.45]) and mul["min"] == [0.2, 0.4] and mul["max"] == [0.3, 0.5]
    assert curve["metrics"]["rank_distance"]["max"] == pytest.approx([80.0, 60.0])
    # the reference behind, then ahead; rank distance: lower is better
    assert order_segments([5, 10, 15], [0.1, 0.3, 0.4], [0.2, 0.2, 0.2], lower_is_better=False) == [
        {"from": 5, "to": 5, "reference": "behind"}, {"from": 10, "to": 15, "reference": "ahead"}]
    assert order_segments([5, 10], [50.0, 40.0], [60.0, 60.0], lower_is_better=True) == [
        {"from": 5, "to": 10, "reference": "ahead"}]


def test_differences_in_direction_between_corpora_are_called_out():
    from hbt.experiment.directions import across_corpora

    def ci(diff, significant=True):
        return {"diff": diff, "lo": diff - 0.01, "hi": diff + 0.01, "significant": significant}

    def corpus(kind, differences):
        metrics = {m: {"mean": 0.5, "std": None, "seeds": [0.5]} for m in differences}
        return {"kind": kind, "arms": {"ref": {"metrics": metrics, "vs_reference": None},
                                       "xy": {"metrics": metrics, "vs_reference": differences}}}

    comparisons = {"test": corpus("lareqa", {"multi_map": ci(0.02), "rank_distance": ci(-5.0)}),
                   "mlqa": corpus("lareqa", {"multi_map": ci(0.01), "rank_distance": ci(3.0, False)}),
                   "tatoeba": corpus("tatoeba", {"accuracy": ci(-0.03)})}
    across = across_corpora(comparisons)
    assert across["headlines"] == {"test": "multi_map", "mlqa": "multi_map", "tatoeba": "accuracy"}
    assert across["direction_changes"] == [
        # RD: lower is better, so -5 on test is better and +3 on mlqa worse
        {"arm": "xy", "metric": "rank_distance", "directions": {"test": "better", "mlqa": "worse"},
         "significant": {"test": True, "mlqa": False}},
        {"arm": "xy", "metric": "headline", "directions": {"test": "better", "mlqa": "better", "tatoeba": "worse"},
         "significant": {"test": True, "mlqa": True, "tatoeba": True}}]


def test_the_curves_table_gives_each_arms_last_point_and_its_change_since_the_step_before():
    from hbt.experiment.curves import format_curves

    def curve(means, rank_distance):
        metrics = {m: {"mean": means} for m in ("mono_map", "cross_map", "multi_map")}
        return {"runs": ["r-s0", "r-s1"], "steps": [25, 50, 75][:len(means)],
                "metrics": {**metrics, "rank_distance": {"mean": rank_distance}}}

    lines = format_curves({"arms": {"ref": curve([0.5, 0.61, 0.6125], [90.0, 81.5, 80.25]),
                                    "one": curve([0.7], [50.0])}, "order": {}}, "ref")
    assert "| ref | 2 | 25, 50, 75 | 0.6125 (+0.0025) | 0.6125 (+0.0025) | 0.6125 (+0.0025) | 80.25 (-1.25) |" in lines
    assert "| one | 2 | 25 | 0.7000 | 0.7000 | 0.7000 | 50.00 |" in lines  # one point: no change to give
