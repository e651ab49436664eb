"""A sweep's outputs from its trial rows: the Pareto front, the best trial, the plots that apply."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hbt.config import TuneConfig
from hbt.tune.outputs import best_row, summary_markdown
from hbt.tune.plots import pareto_front, write_plots


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=12))
def test_pareto_front_is_the_set_of_undominated_points(points):
    front = set(pareto_front(points))
    for i, (x, y) in enumerate(points):
        beaten = any((a >= x and b >= y) and (a, b) != (x, y) for a, b in points)
        assert (i in front) == (not beaten)
    assert front  # a finite set always has an undominated point


def row(trial, alpha, n_langs, status="completed", **metrics):
    base = {"trial_id": f"t_{trial:05d}", "batching.alpha": alpha, "n_train_languages": n_langs, "status": status,
            "steps_done": 4, "dev/mono_map": 0.5, "dev/cross_map": 0.4, "dev/multi_map": 0.3,
            "dev/rank_distance": 10.0, "dev/multi_map_trained": 0.35, "dev/multi_map_unseen": 0.2,
            "dev/rank_distance_trained": 8.0, "dev/rank_distance_unseen": 14.0, "best dev/multi_map": 0.3}
    return {**base, **metrics}


def test_the_best_is_the_best_completed_trial_by_the_metrics_direction():
    rows = [row(0, 0.1, 2, **{"dev/multi_map": 0.4}), row(1, 0.5, 2, status="stopped", **{"dev/multi_map": 0.9}),
            row(2, 0.9, 3, **{"dev/multi_map": 0.6, "dev/rank_distance": 30.0}),
            row(3, 0.2, 3, status="error", **{"dev/multi_map": math.nan})]
    assert best_row(rows, TuneConfig(metric="dev/multi_map"))["trial_id"] == "t_00002"
    assert best_row(rows, TuneConfig(metric="dev/rank_distance"))["trial_id"] == "t_00000"  # lower is better
    assert best_row([rows[1], rows[3]], TuneConfig()) is None


def test_plots_are_drawn_when_the_trials_vary_what_they_show(tmp_path):
    varied = [row(0, 0.0, 2), row(1, 0.5, 4, status="stopped"), row(2, 1.0, 6), row(3, 0.5, 4)]
    assert write_plots(tmp_path / "a", varied, "dev/multi_map") == [
        "metric_vs_alpha.png", "tradeoff_vs_alpha.png", "language_count.png", "pareto_mono_multi.png"]
    assert all((tmp_path / "a" / name).stat().st_size > 1000 for name in ("metric_vs_alpha.png", "language_count.png"))
    fixed = [row(0, 0.5, 3), row(1, 0.5, 3, **{"dev/mono_map": 0.7})]
    assert write_plots(tmp_path / "b", fixed, "dev/multi_map") == ["pareto_mono_multi.png"]
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["pareto_mono_multi.png"]  # no temp file left


def test_summary_ranks_trials_by_the_metric(tmp_path):
    from hbt.tune.space import parse_space

    space = parse_space(tmp_path / "s.yaml", {"space": {"batching.alpha": {"grid": [0.0, 1.0]}}})
    rows = [row(0, 0.0, 2, **{"dev/multi_map": 0.2}), row(1, 1.0, 2, **{"dev/multi_map": 0.7})]
    text = summary_markdown(rows, space, TuneConfig(), rows[1], ["pareto_mono_multi.png"], wall_s=90.0)
    assert text.index("t_00001") < text.index("| t_00000")
    assert "best: t_00001" in text and "1.5 min" in text and "![pareto_mono_multi.png]" in text


@pytest.mark.parametrize("metric", ["dev/multi_map_unseen", "dev/rank_distance_trained"])
def test_group_metrics_can_drive_a_sweep(metric):
    from hbt.config import load_config

    assert load_config(None, [f"tune.metric={metric}", f"train.select_metric={metric}"]).tune.metric == metric


def test_group_metrics_average_the_trained_and_the_unseen_query_languages():
    from hbt.train.dev import group_metrics

    multi = {"map_by_lang": {"en": 0.8, "de": 0.6, "el": 0.3, "vi": 0.1},
             "rank_distance_by_lang": {"en": 2.0, "de": 4.0, "el": 9.0, "vi": 11.0}}
    got = group_metrics(multi, ["en", "de", "zh"])  # zh trained on but not in the dev split
    assert got == pytest.approx({"dev/multi_map_trained": 0.7, "dev/rank_distance_trained": 3.0,
                                 "dev/multi_map_unseen": 0.2, "dev/rank_distance_unseen": 10.0})
    assert set(group_metrics(multi, ["en", "de", "el", "vi"])) == {"dev/multi_map_trained", "dev/rank_distance_trained"}
