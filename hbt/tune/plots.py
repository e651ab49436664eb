"""The sweep's figures (matplotlib, PNG), from its trial rows (`hbt.tune.outputs.trial_rows`).

Each figure is drawn when the trials vary what it is about: the metric and the Mo / Cr / Mul
trade-off against alpha when alpha varies, Mul and RD against the language count (trained and
never-trained query languages apart) when the count varies; the Mo-vs-Mul Pareto front always.
Completed trials are filled markers, stopped ones hollow: a stopped trial's values are from an
earlier step.
"""

from __future__ import annotations

import math
from pathlib import Path

from hbt.io import write_file_atomic

ALPHA = "batching.alpha"


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> None:
    plt = pyplot()
    try:
        fig.tight_layout()
        write_file_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    finally:
        plt.close(fig)


def _finish(fig, ax, path: Path, xlabel: str, ylabel: str, title: str) -> bool:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    save_figure(fig, path)
    return True


def _scored(rows: list[dict], *columns: str) -> list[dict]:
    return [r for r in rows if r["status"] != "error" and all(not math.isnan(r[c]) for c in columns)]


def _points(ax, rows, x: str, y: str, color, label: str, mean_line: bool = True) -> None:
    """Completed trials filled, stopped ones hollow; a line through the mean at each x."""
    labelled = False
    for status, face in (("completed", color), ("stopped", "none")):
        chosen = [r for r in rows if r["status"] == status]
        if chosen:
            ax.scatter([r[x] for r in chosen], [r[y] for r in chosen], facecolors=face, edgecolors=color,
                       label=None if labelled else label)
            labelled = True
    if not mean_line:
        return
    xs = sorted({r[x] for r in rows})
    means = [sum(r[y] for r in rows if r[x] == v) / sum(1 for r in rows if r[x] == v) for v in xs]
    ax.plot(xs, means, color=color, alpha=0.6)


def metric_vs_alpha(rows: list[dict], metric: str, path: Path) -> bool:
    rows = _scored(rows, metric)
    if len({r[ALPHA] for r in rows}) < 2:
        return False
    fig, ax = pyplot().subplots(figsize=(5, 3.5))
    _points(ax, rows, ALPHA, metric, "C0", metric)
    return _finish(fig, ax, path, "alpha (share of X-X batches)", metric, f"{metric} against alpha")


def tradeoff_vs_alpha(rows: list[dict], path: Path) -> bool:
    settings = {"dev/mono_map": "Mo (X->X)", "dev/cross_map": "Cr (X->Y)", "dev/multi_map": "Mul (pooled)"}
    rows = _scored(rows, *settings)
    if len({r[ALPHA] for r in rows}) < 2:
        return False
    fig, ax = pyplot().subplots(figsize=(5, 3.5))
    for i, (column, label) in enumerate(settings.items()):
        _points(ax, rows, ALPHA, column, f"C{i}", label)
    return _finish(fig, ax, path, "alpha (share of X-X batches)", "dev mAP",
                   "the hybrid trade-off: Mo, Cr, Mul against alpha")


def language_count(rows: list[dict], path: Path) -> bool:
    from matplotlib.ticker import MaxNLocator

    rows = [r for r in rows if r["status"] != "error"]
    if len({r["n_train_languages"] for r in rows}) < 2:
        return False
    fig, (left, right) = pyplot().subplots(1, 2, figsize=(9, 3.5))
    for ax, metric, label in ((left, "dev/multi_map", "Mul (pooled mAP)"),
                              (right, "dev/rank_distance", "rank distance (lower: less language bias)")):
        for i, group in enumerate(("trained", "unseen")):
            scored = _scored(rows, f"{metric}_{group}")
            if scored:
                _points(ax, scored, "n_train_languages", f"{metric}_{group}", f"C{i}",
                        f"{group} query languages" if group == "trained" else "never-trained query languages")
        ax.set_xlabel("training languages")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    fig.suptitle("Mul and RD against the language count")
    save_figure(fig, path)
    return True


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both coordinates (both maximised)."""
    return [i for i, (x, y) in enumerate(points)
            if not any(a >= x and b >= y and (a > x or b > y) for a, b in points)]


def mono_multi_pareto(rows: list[dict], path: Path) -> bool:
    rows = _scored(rows, "dev/mono_map", "dev/multi_map")
    if not rows:
        return False
    points = [(r["dev/mono_map"], r["dev/multi_map"]) for r in rows]
    front = sorted(pareto_front(points), key=lambda i: points[i][0])
    fig, ax = pyplot().subplots(figsize=(5, 4))
    _points(ax, rows, "dev/mono_map", "dev/multi_map", "C0", "trials", mean_line=False)
    ax.plot([points[i][0] for i in front], [points[i][1] for i in front], "r-o", mfc="none", label="Pareto front")
    for i in front:
        ax.annotate(rows[i]["trial_id"].split("_")[-1], points[i], fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    return _finish(fig, ax, path, "Mo: dev X->X mAP", "Mul: dev pooled mAP", "monolingual vs multilingual retrieval")


def write_plots(out: Path, rows: list[dict], metric: str) -> list[str]:
    """Draw every figure that applies (module doc); -> the file names written."""
    figures = {
        "metric_vs_alpha.png": lambda p: metric_vs_alpha(rows, metric, p),
        "tradeoff_vs_alpha.png": lambda p: tradeoff_vs_alpha(rows, p),
        "language_count.png": lambda p: language_count(rows, p),
        "pareto_mono_multi.png": lambda p: mono_multi_pareto(rows, p),
    }
    return [name for name, draw in figures.items() if draw(Path(out) / name)]

