"""`hbt report`: eval runs side by side, each difference to the first run with a paired
bootstrap 95% confidence interval over questions.

The resampling unit is the question id, not the row: a question's translations, and its
rows in every X->Y pair and in the pooled setting, are strongly correlated, so a question
moves with all its rows. The same resamples serve every run (paired bootstrap), so what
varies between runs is the model alone.

Every aggregate is "mean over groups of the group's mean" (mono: groups are X->X pairs;
cross: X->Y pairs; multi mAP: one group, the micro mean; rank distance: query languages).
Per run and aggregate we keep ``sums[q, g]`` and ``counts[q, g]`` over the rows of question
``q`` in group ``g``; a resample drawing question ``q`` ``w[q]`` times is then
``mean_g (w @ sums)[g] / (w @ counts)[g]``: all resamples at once are one matrix product.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pyarrow.parquet as pq

from hbt.errors import HbtError
from hbt.eval.run import PER_QUERY
from hbt.io import write_json_atomic, write_text_atomic

RESULTS = "results.json"
#: metric key -> (column label, key path in results.json settings)
METRICS = {
    "mono_map": ("Mo", ("mono", "map")),
    "cross_map": ("Cr", ("cross", "map")),
    "multi_map": ("Mul", ("multi", "map")),
    "rank_distance": ("RD", ("multi", "rank_distance")),
}
COLUMNS = ["setting", "query_lang", "cand_lang", "query_id", "ap", "rank_distance"]
CONFIDENCE = 0.95
TOLERANCE = 1e-9


# ---------------------------------------------------------------- runs

@dataclass(frozen=True)
class Run:
    """One `hbt eval` output dir: its results.json and its per-query rows as arrays."""

    name: str
    path: Path
    results: dict
    rows: dict[str, np.ndarray]  # column -> (n_rows,)


def load_run(path: Path) -> Run:
    """Read RUN/results.json and RUN/per_query.parquet; anything missing or malformed is one line."""
    path = Path(path)
    for file in (RESULTS, PER_QUERY):
        if not (path / file).is_file():
            raise HbtError(f"{path}: not an eval run (no {file})")
    try:
        results = json.loads((path / RESULTS).read_text(encoding="utf-8"))
        table = pq.read_table(path / PER_QUERY)
    except (OSError, ValueError) as error:
        raise HbtError(f"{path}: unreadable eval run ({type(error).__name__}: {' '.join(str(error).split())})") from None
    if not isinstance(results, dict) or not isinstance(results.get("languages"), list) \
            or not isinstance(results.get("settings"), dict):
        raise HbtError(f"{path / RESULTS}: malformed (needs 'languages' and 'settings')")
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise HbtError(f"{path / PER_QUERY}: malformed (missing column(s) {missing})")
    rows = {c: table.column(c).to_numpy() for c in COLUMNS}
    for c in ("setting", "query_lang", "cand_lang", "query_id"):
        rows[c] = rows[c].astype(str)
    for c in ("ap", "rank_distance"):
        rows[c] = rows[c].astype(np.float64)
    multi = rows["setting"] == "multi"
    if table.num_rows == 0 or not np.isin(rows["setting"], ["mono", "cross", "multi"]).all() \
            or not np.isfinite(rows["ap"]).all() or not np.isfinite(rows["rank_distance"][multi]).all():
        raise HbtError(f"{path / PER_QUERY}: malformed (empty, unknown setting, or non-finite ap/rank_distance)")
    return Run(str(path), path, results, rows)


# ---------------------------------------------------------------- aggregates

@dataclass(frozen=True)
class Aggregate:
    """Per-question sums and counts of one metric's rows in each group."""

    groups: np.ndarray  # (n_groups,) sorted labels: "en->de", a query language, or "*"
    sums: np.ndarray  # (nq, n_groups)
    counts: np.ndarray  # (nq, n_groups)

    def values(self, weights: np.ndarray) -> np.ndarray:
        """The aggregate under each row of question weights, shape (B, nq) -> (B,).

        A group none of whose questions was drawn is left out of that resample's mean
        (its mean is undefined); with every question drawn once this is the plain aggregate."""
        totals, counts = weights @ self.sums, weights @ self.counts  # (B, n_groups)
        present = counts > 0
        means = np.divide(totals, counts, out=np.zeros_like(totals), where=present)
        return means.sum(axis=1) / present.sum(axis=1)


def group_aggregate(qidx: np.ndarray, nq: int, mask: np.ndarray, groups: np.ndarray, values: np.ndarray) -> Optional[Aggregate]:
    if not mask.any():
        return None
    labels, gidx = np.unique(groups[mask], return_inverse=True)
    n_groups = len(labels)
    flat = qidx[mask] * n_groups + gidx  # (n_rows,)
    size = nq * n_groups
    sums = np.bincount(flat, weights=values[mask], minlength=size).reshape(nq, n_groups)
    counts = np.bincount(flat, minlength=size).astype(np.float64).reshape(nq, n_groups)
    return Aggregate(labels, sums, counts)


def aggregates(run: Run) -> tuple[np.ndarray, dict[str, Optional[Aggregate]]]:
    """The run's sorted question ids and its four aggregates (cross is None with one language)."""
    r = run.rows
    qids, qidx = np.unique(r["query_id"], return_inverse=True)
    nq = len(qids)
    pair = np.char.add(np.char.add(r["query_lang"], "->"), r["cand_lang"])
    multi = r["setting"] == "multi"
    return qids, {
        "mono_map": group_aggregate(qidx, nq, r["setting"] == "mono", pair, r["ap"]),
        "cross_map": group_aggregate(qidx, nq, r["setting"] == "cross", pair, r["ap"]),
        "multi_map": group_aggregate(qidx, nq, multi, r["cand_lang"], r["ap"]),
        "rank_distance": group_aggregate(qidx, nq, multi, r["query_lang"], r["rank_distance"]),
    }


def check_pairable(runs: Sequence[Run], tables: Sequence[tuple[np.ndarray, dict]]) -> None:
    """Refuse runs without the same languages and the same rows (question x group, counted in
    every aggregate): a paired difference is only meaningful over the same questions."""
    base, (base_qids, base_aggs) = runs[0], tables[0]
    for run, (qids, aggs) in zip(runs[1:], tables[1:]):
        what = f"cannot pair {run.name} with {base.name}"
        if sorted(run.results["languages"]) != sorted(base.results["languages"]):
            raise HbtError(f"{what}: languages differ "
                           f"({','.join(run.results['languages'])} vs {','.join(base.results['languages'])})")
        if not np.array_equal(qids, base_qids):
            only_run, only_base = np.setdiff1d(qids, base_qids), np.setdiff1d(base_qids, qids)
            example = (only_run.tolist() + only_base.tolist())[0]
            raise HbtError(f"{what}: query sets differ ({len(only_run)} question ids only in {run.name}, "
                           f"{len(only_base)} only in {base.name}, e.g. {example})")
        for metric, (label, _) in METRICS.items():
            a, b = base_aggs[metric], aggs[metric]
            if a is None and b is None:
                continue
            if a is None or b is None or not np.array_equal(a.groups, b.groups):
                groups = [",".join(x.groups) if x is not None else "none" for x in (b, a)]
                raise HbtError(f"{what}: query sets differ in {label} (groups {groups[0]} vs {groups[1]})")
            if not np.array_equal(a.counts, b.counts):
                q, g = np.argwhere(a.counts != b.counts)[0]
                raise HbtError(f"{what}: query sets differ in {label} (question {qids[q]} in {a.groups[g]} has "
                               f"{b.counts[q, g]:.0f} row(s) in {run.name}, {a.counts[q, g]:.0f} in {base.name})")


def point_values(aggs: dict[str, Optional[Aggregate]], nq: int) -> dict[str, Optional[float]]:
    ones = np.ones((1, nq))
    return {m: (None if a is None else float(a.values(ones)[0])) for m, a in aggs.items()}


def check_against_results(run: Run, point: dict[str, Optional[float]]) -> None:
    """per_query.parquet must reproduce results.json: otherwise the files are out of sync
    and a bootstrap over the rows would not be about the reported numbers."""
    for metric, (label, (setting, key)) in METRICS.items():
        section = run.results["settings"].get(setting)
        reported = section.get(key) if isinstance(section, dict) else None
        if point[metric] is None and reported is None:
            continue
        if point[metric] is None or not isinstance(reported, (int, float)) \
                or abs(point[metric] - reported) > TOLERANCE:
            raise HbtError(f"{run.path}: {label} from {PER_QUERY} is {point[metric]} but {RESULTS} says {reported}")


# ---------------------------------------------------------------- bootstrap

def resample_indices(nq: int, resamples: int, seed: int) -> np.ndarray:
    """Question indices of each resample, shape (resamples, nq), drawn with replacement."""
    return np.random.default_rng(seed).integers(0, nq, size=(resamples, nq))


def resample_weights(indices: np.ndarray, nq: int) -> np.ndarray:
    """How often each question is drawn in each resample, shape (resamples, nq)."""
    resamples = indices.shape[0]
    flat = (np.arange(resamples)[:, None] * nq + indices).ravel()
    return np.bincount(flat, minlength=resamples * nq).astype(np.float64).reshape(resamples, nq)


def paired_interval(base: Aggregate, other: Aggregate, weights: np.ndarray) -> dict:
    ones = np.ones((1, weights.shape[1]))
    diff = float(other.values(ones)[0] - base.values(ones)[0])
    tail = 100 * (1 - CONFIDENCE) / 2
    lo, hi = np.percentile(other.values(weights) - base.values(weights), [tail, 100 - tail])
    return {"diff": diff, "lo": float(lo), "hi": float(hi), "significant": bool(lo > 0 or hi < 0)}


def _require_two(n_runs: int) -> None:
    if n_runs < 2:
        raise HbtError(f"report needs at least 2 runs to compare, got {n_runs}")


def compare(runs: Sequence[Run], resamples: int = 1000, seed: int = 0) -> dict:
    """Aggregates of every run and, for every later run, its paired-bootstrap differences to runs[0]."""
    _require_two(len(runs))
    if resamples < 1:
        raise HbtError(f"--resamples must be at least 1, got {resamples}")
    tables = [aggregates(run) for run in runs]
    check_pairable(runs, tables)
    nq = len(tables[0][0])  # the same questions in every run: check_pairable compared them
    per_run = []
    for run, (_, aggs) in zip(runs, tables):
        point = point_values(aggs, nq)
        check_against_results(run, point)
        per_run.append((aggs, point))
    weights = resample_weights(resample_indices(nq, resamples, seed), nq)
    base = per_run[0][0]
    differences = []
    for run, (aggs, _) in zip(runs[1:], per_run[1:]):
        cis = {m: None if aggs[m] is None else paired_interval(base[m], aggs[m], weights) for m in METRICS}
        differences.append({"run": run.name, "baseline": runs[0].name, "metrics": cis})
    return {
        "resamples": resamples, "seed": seed, "confidence": CONFIDENCE, "unit": "query_id",
        "n_questions": nq, "languages": runs[0].results["languages"],
        "runs": [{"name": run.name, "path": str(run.path), "model": run.results.get("model"), "metrics": point}
                 for run, (_, point) in zip(runs, per_run)],
        "differences": differences,
    }


# ---------------------------------------------------------------- output

def format_metric(metric: str, value: float, signed: bool = False) -> str:
    digits = 2 if metric == "rank_distance" else 4
    return f"{value:{'+' if signed else ''}.{digits}f}"


def ci_cell(metric: str, ci: Optional[dict]) -> str:
    if ci is None:
        return "-"
    cell = f"{format_metric(metric, ci['diff'], True)} [{format_metric(metric, ci['lo'], True)}, {format_metric(metric, ci['hi'], True)}]"
    return cell + ("*" if ci["significant"] else "")


def format_markdown(comparison: dict) -> str:
    """One row per run: its aggregates, then (later runs) each difference to the first run."""
    labels = [label for label, _ in METRICS.values()]
    header = ["run"] + labels + [f"Δ{label} [95% CI]" for label in labels]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for i, run in enumerate(comparison["runs"]):
        cells = [run["name"]] + ["-" if v is None else format_metric(m, v) for m, v in run["metrics"].items()]
        if i == 0:
            cells += ["baseline"] + ["-"] * (len(METRICS) - 1)
        else:
            cells += [ci_cell(m, ci) for m, ci in comparison["differences"][i - 1]["metrics"].items()]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Δ = run - {comparison['runs'][0]['name']}; paired bootstrap over "
              f"{comparison['n_questions']} questions, {comparison['resamples']} resamples, seed {comparison['seed']}; "
              "* = the 95% CI excludes 0. Mo/Cr/Mul: mAP (higher is better); RD: rank distance (lower is better)."]
    return "\n".join(lines) + "\n"


def report(paths: Sequence[Path], resamples: int = 1000, seed: int = 0,
           out_json: Optional[Path] = None, out_md: Optional[Path] = None) -> dict:
    """Load, compare and (optionally) write the comparison as JSON and Markdown, each atomically."""
    _require_two(len(paths))  # before loading: one run is a usage error, whatever its state
    comparison = compare([load_run(p) for p in paths], resamples, seed)
    if out_json is not None:
        write_json_atomic(Path(out_json), comparison)
    if out_md is not None:
        write_text_atomic(Path(out_md), format_markdown(comparison))
    return comparison
