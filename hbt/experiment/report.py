"""The report of `hbt experiment`: every arm on every corpus, against the reference arm.

With `train.eval_every`, the trained arms' dev curves come first (`hbt.experiment.curves`);
with more than one corpus, every corpus side by side and the differences in direction between
them come last (`hbt.experiment.directions`).

Per arm and corpus: Mo / Cr / Mul mAP, multi hit@1 and hit@10, and rank distance (RD), each
the mean over the arm's seeds with their standard deviation; and for every arm but the
reference, its difference to the reference with a paired-bootstrap 95% CI over questions
(`hbt.eval.report`: the same resampled questions for both arms).

An arm's seeds are pooled before the bootstrap: its per-question sums and counts are added
over seeds, which (every seed scoring the same rows) makes each aggregate the mean over seeds,
and the CI is that of the seed-averaged arm's difference over the questions drawn. It does
not hold the seed-to-seed spread, which the table gives beside it: with few seeds, read both.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow.parquet as pq

from hbt.errors import HbtError
from hbt.eval.report import (
    CONFIDENCE,
    METRICS,
    RESULTS,
    Aggregate,
    Run,
    aggregates,
    check_pairable,
    ci_cell,
    format_metric,
    group_aggregate,
    load_run,
    paired_interval,
    point_values,
    resample_indices,
    resample_weights,
)
from hbt.experiment.curves import experiment_curves, format_curves, write_curves_figure
from hbt.experiment.directions import across_corpora, format_across
from hbt.experiment.spec import Experiment
from hbt.io import write_file_atomic, write_json_atomic, write_text_atomic
from hbt.layout import PER_QUERY

RESAMPLES = 1000
HITS = ("hit@1", "hit@10")  # from each run's results.json, multi setting (no per-query rows: no CI)
LABELS = {**{m: label for m, (label, _) in METRICS.items()}, **{h: f"Mul {h}" for h in HITS}}
LAREQA_PANELS = (["mono_map", "cross_map", "multi_map"], ["rank_distance"])

Tables = dict[str, list[dict[str, Optional[Aggregate]]]]  # arm -> per seed: metric -> aggregate


def pooled(tables: list[dict[str, Optional[Aggregate]]]) -> dict[str, Optional[Aggregate]]:
    """One arm's aggregates over its seeds: sums and counts added (see the module docstring)."""
    out = {}
    for metric in tables[0]:
        parts = [t[metric] for t in tables]
        out[metric] = None if parts[0] is None else Aggregate(
            parts[0].groups, sum(p.sums for p in parts), sum(p.counts for p in parts))
    return out


def restricted(run: Run, languages: list[str]) -> Run:
    """The run's rows whose query language is one of `languages`."""
    keep = np.isin(run.rows["query_lang"], languages)
    return replace(run, rows={column: values[keep] for column, values in run.rows.items()})


def _spread(values: list[Optional[float]]) -> dict:
    known = [v for v in values if v is not None]
    if not known:
        return {"mean": None, "std": None, "seeds": values}
    return {"mean": float(np.mean(known)), "std": float(np.std(known, ddof=1)) if len(known) > 1 else None,
            "seeds": values}


def _compare(reference: str, names: dict[str, list[str]], tables: Tables, nq: int,
             extra: Optional[dict[str, dict[str, list]]] = None, seed: int = 0) -> dict:
    """Per arm: per-seed values, mean and spread (and `extra` per-seed values, no CI); per arm but
    the reference: the paired-bootstrap CI of its difference to the reference, seeds pooled."""
    weights = resample_weights(resample_indices(nq, RESAMPLES, seed), nq)
    base = pooled(tables[reference])
    arms = {}
    for arm, seeds in tables.items():
        per_seed = [point_values(aggs, nq) for aggs in seeds]
        values = {m: _spread([p[m] for p in per_seed]) for m in seeds[0]}
        values.update({m: _spread(v) for m, v in (extra or {}).get(arm, {}).items()})
        mine = pooled(seeds)
        arms[arm] = {"runs": names[arm], "metrics": values, "vs_reference": None if arm == reference else {
            m: None if mine[m] is None else paired_interval(base[m], mine[m], weights) for m in mine}}
    return {"n_questions": nq, "arms": arms}


def compare_arms(experiment: Experiment, runs: dict[str, list[Run]], hits: bool = True, seed: int = 0) -> dict:
    """LAReQA eval runs of every arm (`hbt eval` dirs): Mo, Cr, Mul, RD (and with `hits` the
    multi setting's hit@1 and hit@10 of results.json)."""
    # Per arm, per run: (question ids, metric -> aggregate), computed once.
    computed = {arm: [aggregates(run) for run in arm_runs] for arm, arm_runs in runs.items()}
    every = [run for arm_runs in runs.values() for run in arm_runs]
    every_computed = [c for arm_computed in computed.values() for c in arm_computed]
    check_pairable(every, every_computed)
    tables = {arm: [aggs for _, aggs in arm_computed] for arm, arm_computed in computed.items()}
    nq = len(every_computed[0][0])
    extra = {arm: {h: [run.results["settings"]["multi"].get(h) for run in arm_runs] for h in HITS}
             for arm, arm_runs in runs.items()} if hits else None
    names = {arm: [run.name for run in arm_runs] for arm, arm_runs in runs.items()}
    return {"kind": "lareqa", "languages": every[0].results["languages"],
            **_compare(experiment.reference, names, tables, nq, extra, seed)}


def _scored_tables(path: Path) -> tuple[dict, np.ndarray, dict[str, Aggregate]]:
    """A BEIR or Tatoeba eval dir (`hbt.eval.scored`): results, question ids, metric -> aggregate."""
    results = json.loads((path / RESULTS).read_text(encoding="utf-8"))
    rows = pq.read_table(path / PER_QUERY).to_pydict()
    qids, qidx = np.unique(np.asarray(rows["query_id"], dtype=str), return_inverse=True)
    groups, everything = np.asarray(rows["group"], dtype=str), np.ones(len(qidx), dtype=bool)
    return results, qids, {m: group_aggregate(qidx, len(qids), everything, groups,
                                              np.asarray(rows[m], dtype=np.float64))
                           for m in results["metrics"]}


def compare_scored_arms(experiment: Experiment, dirs: dict[str, list[Path]], seed: int = 0) -> dict:
    """BEIR or Tatoeba eval dirs of every arm: their metrics, the same paired bootstrap by query id."""
    loaded = {arm: [_scored_tables(path) for path in paths] for arm, paths in dirs.items()}
    first_results, first_qids, _ = next(iter(loaded.values()))[0]
    for arm, seeds in loaded.items():
        for path, (_, qids, _) in zip(dirs[arm], seeds):
            if not np.array_equal(qids, first_qids):
                raise HbtError(f"{path}: its queries differ from those of the other runs on this corpus")
    tables = {arm: [aggs for _, _, aggs in seeds] for arm, seeds in loaded.items()}
    names = {arm: [str(path) for path in paths] for arm, paths in dirs.items()}
    return {"kind": first_results["kind"], "languages": sorted(first_results.get("languages", {})),
            **_compare(experiment.reference, names, tables, len(first_qids), None, seed)}


def _cell(metric: str, value: dict) -> str:
    if value["mean"] is None:
        return "-"
    spread = f" ± {format_metric(metric, value['std'])}" if value["std"] is not None else ""
    return format_metric(metric, value["mean"]) + spread


def _tables(comparison: dict, reference: str) -> list[str]:
    shown = list(next(iter(comparison["arms"].values()))["metrics"])
    with_ci = list(next(row["vs_reference"] for row in comparison["arms"].values() if row["vs_reference"]))
    lines = ["| arm | runs | " + " | ".join(LABELS.get(m, m) for m in shown) + " |", "|---" * (len(shown) + 2) + "|"]
    for arm, row in comparison["arms"].items():
        lines.append(f"| {arm} | {len(row['runs'])} | " + " | ".join(_cell(m, row["metrics"][m]) for m in shown) + " |")
    lines += ["", f"| arm - {reference} | " + " | ".join(f"Δ{LABELS.get(m, m)} [95% CI]" for m in with_ci) + " |",
              "|---" * (len(with_ci) + 1) + "|"]
    for arm, row in comparison["arms"].items():
        if row["vs_reference"] is not None:
            lines.append(f"| {arm} | " + " | ".join(ci_cell(m, row["vs_reference"][m]) for m in with_ci) + " |")
    return lines


def _settings_line(experiment: Experiment) -> str:
    from hbt.train.driver import pairs_per_step, selects_on_dev

    trained = experiment.trained()
    if not trained:
        return ""
    c = trained[0].config
    dev = f", the dev split scored every {c.train.eval_every} steps" if c.train.eval_every else ""
    exported = (f"the checkpoint best on dev by {c.train.select_metric}" if selects_on_dev(c)
                else "its last checkpoint")
    return (f"Every trained run: {c.train.steps} steps of {pairs_per_step(c)} pairs, "
            f"lr {c.train.lr:g}, model `{Path(c.model.name_or_path).name}`, seeds {experiment.seeds} "
            f"(set into {', '.join(experiment.spec.seed_keys)}){dev}; each run's model, evaluated below, is "
            f"{exported} (train.select_checkpoint).")


def _corpus_heading(name: str, comparison: dict) -> str:
    what = {"lareqa": "questions", "beir": "queries", "tatoeba": "sentence pairs"}[comparison["kind"]]
    languages = f", languages {', '.join(comparison['languages'])}" if comparison["languages"] else ""
    return f"## {name} ({comparison['kind']}): {comparison['n_questions']} {what}{languages}"


def format_markdown(experiment: Experiment, comparisons: dict[str, dict], seconds: float,
                    curves: Optional[dict] = None, across: Optional[dict] = None) -> str:
    spec = experiment.spec
    lines = [f"# Experiment `{experiment.path.stem}` (size {experiment.size})", "", " ".join(spec.description.split()),
             "", _settings_line(experiment), f"Wall time: {seconds / 60:.1f} min (this invocation).", ""]
    if curves:
        lines += format_curves(curves, experiment.reference)
    for corpus, comparison in comparisons.items():
        lines += [_corpus_heading(corpus, comparison), "", *_tables(comparison, experiment.reference), ""]
        for group, group_comparison in comparison.get("groups", {}).items():
            languages = ", ".join(lang for lang in spec.groups[group] if lang in comparison["languages"])
            lines += [f"### query languages {group} ({languages})", "",
                      *_tables(group_comparison, experiment.reference), ""]
        lines += [f"![comparison](comparison_{corpus}.png)", ""]
        if comparison["kind"] == "lareqa":
            lines += ["Heatmaps (X -> Y mAP, mean over seeds): " + ", ".join(
                f"[{arm}](heatmaps/{corpus}_{arm}.png)" for arm in comparison["arms"]), ""]
    if across:
        lines += format_across(comparisons, across, experiment.reference, LABELS)
    lines += [f"Values: mean ± standard deviation over an arm's seeds. Δ: arm - {experiment.reference}, seeds pooled; "
              f"paired bootstrap over questions ({RESAMPLES} resamples, {int(CONFIDENCE * 100)}% CI); * = the CI "
              "excludes 0. The CI holds the question sampling, not the seed-to-seed spread. Mo / Cr / Mul: LAReQA "
              "mAP (higher is better); RD: rank distance (lower is better)."]
    return "\n".join(lines) + "\n"


def _mean_result(arm_runs: list[Run]) -> dict:
    """A results-like dict whose pair mAPs are the mean over the arm's seeds (for the heatmap)."""
    first = arm_runs[0].results
    pairs = [{**pair, "map": float(np.mean([run.results["pairs"][i]["map"] for run in arm_runs]))}
             for i, pair in enumerate(first["pairs"])]
    return {"languages": first["languages"], "pairs": pairs}


def write_comparison_figure(path: Path, comparison: dict) -> None:
    """Bars: each arm's metrics, mean over seeds, a dot per seed (LAReQA: Mo / Cr / Mul left, RD right)."""
    from hbt.tune.plots import pyplot, save_figure

    arms = list(comparison["arms"])
    panels = LAREQA_PANELS if comparison["kind"] == "lareqa" else (list(comparison["arms"][arms[0]]["metrics"]),)
    fig, axes = pyplot().subplots(1, len(panels), figsize=(4 + 1.2 * len(arms), 4), squeeze=False,
                                  gridspec_kw={"width_ratios": [len(p) for p in panels]})
    width = 0.8 / len(arms)
    for panel, metrics in zip(axes[0], panels):
        for i, arm in enumerate(arms):
            xs = np.arange(len(metrics)) + (i - (len(arms) - 1) / 2) * width
            values = [comparison["arms"][arm]["metrics"][m] for m in metrics]
            panel.bar(xs, [v["mean"] or 0.0 for v in values], width, label=arm, color=f"C{i}", alpha=0.8)
            for x, v in zip(xs, values):
                seeds = [s for s in v["seeds"] if s is not None]
                panel.plot([x] * len(seeds), seeds, "k.", markersize=4)
        panel.set_xticks(range(len(metrics)), [LABELS.get(m, m) for m in metrics])
    axes[0][0].set_ylabel("LAReQA mAP" if comparison["kind"] == "lareqa" else "score")
    if comparison["kind"] == "lareqa":
        axes[0][1].set_ylabel("rank distance (lower is better)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("arms: mean over seeds (bars), each seed (dots)")
    save_figure(fig, path)


def _lareqa_comparison(experiment: Experiment, corpus: str, runs: dict[str, list[Run]], out: Path) -> dict:
    from hbt.eval.allpairs import write_heatmap

    comparison = compare_arms(experiment, runs)
    comparison["groups"] = {
        group: compare_arms(experiment, {arm: [restricted(r, languages) for r in rs] for arm, rs in runs.items()},
                            hits=False)
        for group, languages in experiment.spec.groups.items() if set(languages) & set(comparison["languages"])}
    for arm, arm_runs in runs.items():
        write_file_atomic(out / "heatmaps" / f"{corpus}_{arm}.png",
                          lambda tmp, result=_mean_result(arm_runs), arm=arm: write_heatmap(
                              tmp, result, f"{arm}: LAReQA mAP, X -> Y"))
    return comparison


def write_report(experiment: Experiment, out: Path, seconds: float) -> dict:
    """Compare the arms on every corpus; write report.json, report.md and the figures."""
    comparisons = {}
    for corpus in experiment.corpora:
        dirs = {arm: [out / "eval" / corpus.name / plan.name for plan in experiment.runs_of(arm)]
                for arm in experiment.spec.arms}
        if is_lareqa_run(next(iter(dirs.values()))[0]):
            runs = {arm: [load_run(path) for path in paths] for arm, paths in dirs.items()}
            comparison = _lareqa_comparison(experiment, corpus.name, runs, out)
        else:
            comparison = compare_scored_arms(experiment, dirs)
        comparisons[corpus.name] = comparison
        write_comparison_figure(out / f"comparison_{corpus.name}.png", comparison)
    curves = experiment_curves(experiment, out)
    if curves["arms"]:
        write_curves_figure(out / "curves.png", curves)
    across = across_corpora(comparisons)
    report = {"experiment": experiment.path.stem, "size": experiment.size, "reference": experiment.reference,
              "seeds": experiment.seeds, "resamples": RESAMPLES, "confidence": CONFIDENCE,
              "seconds": seconds, "corpora": comparisons, "across_corpora": across, "curves": curves}
    write_json_atomic(out / "report.json", json.loads(json.dumps(report)))
    write_text_atomic(out / "report.md", format_markdown(experiment, comparisons, seconds, curves, across))
    return report


def is_lareqa_run(path: Path) -> bool:
    """Whether an eval dir is a LAReQA run (its results.json has `settings`), not a BEIR or Tatoeba one."""
    return "settings" in json.loads((path / RESULTS).read_text(encoding="utf-8"))
