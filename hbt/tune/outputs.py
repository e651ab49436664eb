"""What a sweep leaves in its output dir, each file written atomically:

    trials.csv, trials.parquet   one row per trial: its sampled values, the languages it trained
                                 on, status (completed | stopped | error), why it stopped, the
                                 dev metrics of its last evaluation and its best value of the
                                 sweep's metric
    best.yaml                    the best completed trial's full config (`hbt train --config`)
    summary.md                   the sweep's settings, the table ranked by the metric, the plots
    *.png                        `hbt.tune.plots`
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import yaml

from hbt.config import GROUP_METRICS, TuneConfig
from hbt.errors import first_line, user_error
from hbt.io import write_file_atomic, write_text_atomic
from hbt.train.dev import DEV_METRICS, selection_mode
from hbt.train.progress import DEV_COLUMNS
from hbt.tune.space import SearchSpace

# Every dev metric a trial reports (hbt.train.dev), and the short names its progress lines use.
TRIAL_METRIC_COLUMNS = (*DEV_METRICS, *GROUP_METRICS)
SHORT_NAMES = {key: label for key, label, _ in DEV_COLUMNS}


def _error_line(error: BaseException) -> str:
    """A trial's failure as one line: the user error inside it, else Ray's first line."""
    cause = user_error(error)
    if cause is not None:
        return str(cause)
    return f"{type(error).__name__}: {first_line(str(error))}"[:300]


def trial_rows(grid, space: SearchSpace, base: dict, settings: TuneConfig) -> list[dict]:
    """One dict per trial of a Tune ResultGrid, ordered by trial id (see module doc)."""
    metric, mode = settings.metric, selection_mode(settings.metric)
    rows = []
    for result in grid:
        params = {key: result.config.get(key) for key in space.keys}
        config = space.trial_config(base, params, settings)
        last = result.metrics or {}
        history = result.metrics_dataframe
        steps_done = int(last.get("steps", 0))
        if result.error is not None:
            status, reason = "error", _error_line(result.error)
        elif steps_done >= config.train.steps:
            status, reason = "completed", ""
        else:
            status, reason = "stopped", f"{settings.scheduler} at step {steps_done}"
        row = {"trial_id": last.get("trial_id") or Path(result.path).name, "status": status, "stop_reason": reason,
               **params, "train_languages": ",".join(config.data.train_languages),
               "n_train_languages": len(config.data.train_languages), "steps": config.train.steps,
               "steps_done": steps_done}
        row.update({name: last.get(name, math.nan) for name in TRIAL_METRIC_COLUMNS})
        best_value, best_step = math.nan, None
        if history is not None and metric in history:
            scored = history.dropna(subset=[metric])
            if len(scored):
                at = scored[metric].idxmax() if mode == "max" else scored[metric].idxmin()
                best_value, best_step = float(scored.loc[at, metric]), int(scored.loc[at, "steps"])
        row[f"best {metric}"], row["best_step"] = best_value, best_step
        rows.append(row)
    return sorted(rows, key=lambda row: row["trial_id"])


def best_row(rows: list[dict], settings: TuneConfig) -> Optional[dict]:
    """The completed trial with the best final metric (None when no trial completed)."""
    done = [row for row in rows if row["status"] == "completed" and not math.isnan(row[settings.metric])]
    if not done:
        return None
    pick = max if selection_mode(settings.metric) == "max" else min
    return pick(done, key=lambda row: row[settings.metric])


def write_tables(out: Path, rows: list[dict]) -> None:
    import pandas as pd

    frame = pd.DataFrame(rows)
    write_file_atomic(out / "trials.csv", lambda tmp: frame.to_csv(tmp, index=False))
    write_file_atomic(out / "trials.parquet", lambda tmp: frame.to_parquet(tmp, index=False))


def write_best(out: Path, best: dict, space: SearchSpace, base: dict, settings: TuneConfig) -> None:
    params = {key: best[key] for key in space.keys}
    config = space.trial_config(base, params, settings)
    header = (f"# The best trial of the sweep {space.name} ({best['trial_id']}: {settings.metric} "
              f"{best[settings.metric]:.4f}). Train it: hbt train --config best.yaml\n")
    write_text_atomic(out / "best.yaml", header + yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))


def _cell(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4f}"
    return "" if value is None else str(value)


def summary_markdown(rows: list[dict], space: SearchSpace, settings: TuneConfig, best: Optional[dict],
                     plots: list[str], wall_s: Optional[float]) -> str:
    metric, mode = settings.metric, selection_mode(settings.metric)
    counts = {status: sum(row["status"] == status for row in rows) for status in ("completed", "stopped", "error")}
    lines = [f"# Sweep {space.name}", ""]
    if space.spec.description:
        lines += [space.spec.description.strip(), ""]
    lines += [f"- space: `{space.path}` ({', '.join(space.keys)})",
              f"- metric: `{metric}` ({mode}), on the dev split every {settings.eval_every} steps",
              f"- scheduler: {settings.scheduler}; {len(rows)} trials: " +
              ", ".join(f"{n} {status}" for status, n in counts.items())]
    if wall_s is not None:
        lines.append(f"- wall time of this `hbt tune` call: {wall_s / 60:.1f} min")
    if best is not None:
        lines.append(f"- best: {best['trial_id']} ({', '.join(f'{k}={best[k]}' for k in space.keys)}): "
                     f"{metric} {best[metric]:.4f} -> `best.yaml`")
    columns = ["trial_id", *space.keys, "n_train_languages", "status", "steps_done", *SHORT_NAMES, f"best {metric}"]
    ranked = sorted(rows, key=lambda row: (math.isnan(row[metric]),
                                           -row[metric] if mode == "max" else row[metric]))
    lines += ["", "| " + " | ".join(SHORT_NAMES.get(c, c) for c in columns) + " |",
              "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row[c]) for c in columns) + " |" for row in ranked]
    lines += ["", "Mo / Cr / Mul: dev mAP (X->X, X->Y, pooled); RD: rank distance; the values of each trial's "
              "last evaluation (a stopped trial's at the step it stopped)."]
    lines += [""] + [f"![{name}]({name})" for name in plots]
    return "\n".join(lines) + "\n"
