"""Dev curves of an experiment: each trained arm's dev metrics against steps, seeds as a band.

Every run reports the dev split's metrics every `train.eval_every` steps (`hbt.train.dev`) into
DIR/metrics/RUN.jsonl; an arm's curve is, at each step every one of its seeds evaluated, the
mean over seeds and their range (min to max). Dev only: the test split and the other corpora
are scored once, on the exported model (`hbt.experiment.report`).

    {"arms": {ARM: {"runs": [RUN, ...], "steps": [25, 50, ...],      # steps done
                    "metrics": {"mono_map": {"mean": [...], "min": [...], "max": [...],
                                             "seeds": {RUN: [...]}}, ...}}},
     "order": {METRIC: {ARM: [{"from": 25, "to": 100, "reference": "ahead"}, ...]}}}
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hbt.eval.report import METRICS, format_metric
from hbt.experiment.spec import Experiment
from hbt.train.progress import read_metrics

CURVE_METRICS = {metric: f"dev/{metric}" for metric in METRICS}  # mono_map -> dev/mono_map, ...


def run_curve(path: Path) -> dict[int, dict[str, float]]:
    """Steps done -> the dev metrics reported then, from a run's metrics file."""
    return {row["step"] + 1: {m: row[key] for m, key in CURVE_METRICS.items()}
            for row in read_metrics(path) if all(row.get(key) is not None for key in CURVE_METRICS.values())}


def arm_curve(runs: dict[str, dict[int, dict[str, float]]]) -> dict:
    """One arm's runs' curves -> the mean and range over seeds at the steps every seed evaluated."""
    steps = sorted(set.intersection(*(set(curve) for curve in runs.values())))
    metrics = {}
    for metric in CURVE_METRICS:
        seeds = {run: [curve[step][metric] for step in steps] for run, curve in runs.items()}
        values = np.array(list(seeds.values())).reshape(len(seeds), len(steps))  # (seeds, steps)
        metrics[metric] = {"mean": values.mean(axis=0).tolist(), "min": values.min(axis=0).tolist(),
                           "max": values.max(axis=0).tolist(), "seeds": seeds}
    return {"runs": list(runs), "steps": steps, "metrics": metrics}


def order_segments(steps: list[int], reference: list[float], other: list[float], lower_is_better: bool) -> list[dict]:
    """Where the reference arm's mean is ahead of, behind or level with another's, as runs of steps."""
    segments: list[dict] = []
    for step, mine, theirs in zip(steps, reference, other):
        lead = (theirs - mine) if lower_is_better else (mine - theirs)
        state = "ahead" if lead > 0 else "behind" if lead < 0 else "level"
        if segments and segments[-1]["reference"] == state:
            segments[-1]["to"] = step
        else:
            segments.append({"from": step, "to": step, "reference": state})
    return segments


def _means_at(curve: dict, metric: str, steps: list[int]) -> list[float]:
    return [curve["metrics"][metric]["mean"][curve["steps"].index(step)] for step in steps]


def experiment_curves(experiment: Experiment, out: Path) -> dict:
    """Every trained arm's dev curve (an arm whose runs evaluated no step has none)."""
    arms = {}
    for arm, spec in experiment.spec.arms.items():
        if not spec.train:
            continue
        runs = {plan.name: run_curve(out / "metrics" / f"{plan.name}.jsonl") for plan in experiment.runs_of(arm)}
        if all(runs.values()):
            arms[arm] = arm_curve(runs)
    reference = arms.get(experiment.reference)
    order = {}
    if reference is not None:
        for metric in CURVE_METRICS:
            order[metric] = {}
            for arm, curve in arms.items():
                if arm == experiment.reference:
                    continue
                shared = [s for s in reference["steps"] if s in curve["steps"]]  # steps both arms evaluated
                order[metric][arm] = order_segments(shared, _means_at(reference, metric, shared),
                                                    _means_at(curve, metric, shared), metric == "rank_distance")
    return {"arms": arms, "order": order}


def write_curves_figure(path: Path, curves: dict) -> None:
    """Mo, Cr, Mul and RD against steps: a line per arm (mean over seeds), its seeds' range shaded."""
    from hbt.tune.plots import pyplot, save_figure

    fig, axes = pyplot().subplots(1, len(CURVE_METRICS), figsize=(4 * len(CURVE_METRICS), 3.6), squeeze=False)
    for panel, metric in zip(axes[0], CURVE_METRICS):
        for i, (arm, curve) in enumerate(curves["arms"].items()):
            values = curve["metrics"][metric]
            panel.plot(curve["steps"], values["mean"], "o-", color=f"C{i}", label=arm, markersize=3)
            panel.fill_between(curve["steps"], values["min"], values["max"], color=f"C{i}", alpha=0.2)
        label = METRICS[metric][0]
        panel.set_title(f"dev {label}" + (" (lower is better)" if metric == "rank_distance" else ""))
        panel.set_xlabel("steps")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("dev split: mean over seeds (line), min to max over seeds (band)")
    save_figure(fig, path)


def _segments_text(segments: list[dict]) -> str:
    return ", ".join(f"{s['reference']} at {s['from']}" + (f"-{s['to']}" if s["to"] != s["from"] else "")
                     for s in segments)


def _last_point(metric: str, means: list[float]) -> str:
    """An arm's mean at its last dev step, and its change since the step before: whether the
    curve has flattened is that change, not the value."""
    last = format_metric(metric, means[-1])
    return last if len(means) < 2 else f"{last} ({format_metric(metric, means[-1] - means[-2], signed=True)})"


def format_curves(curves: dict, reference: str) -> list[str]:
    """The curves section of report.md: the figure, each arm's last point, where the order changes."""
    if not curves["arms"]:
        return []
    lines = ["## Dev curves", "", "![dev curves](curves.png)", "",
             "| arm | runs | steps evaluated | " + " | ".join(f"last {METRICS[m][0]}" for m in CURVE_METRICS) + " |",
             "|---" * (3 + len(CURVE_METRICS)) + "|"]
    for arm, curve in curves["arms"].items():
        last = [_last_point(m, curve["metrics"][m]["mean"]) for m in CURVE_METRICS]
        steps = ", ".join(map(str, curve["steps"]))
        lines.append(f"| {arm} | {len(curve['runs'])} | {steps} | " + " | ".join(last) + " |")
    lines += ["", "last: the mean over seeds at the last step evaluated (its change since the step before)."]
    if curves["order"]:
        lines += ["", f"{reference} against each arm along the curve (means over seeds; ahead = better):", ""]
        for metric, arms in curves["order"].items():
            for arm, segments in arms.items():
                changes = "" if len(segments) == 1 else " (the order changes)"
                lines.append(f"- {METRICS[metric][0]}, vs {arm}: {_segments_text(segments)}{changes}")
    return lines + [""]
