"""What a user sees of a training run: `metrics.jsonl` and one progress line per report.

Rank 0's reports reach the driver through Ray Train's controller, which appends each to
`RUN/metrics.jsonl` (`MetricsFile`); the driver follows that file and prints a line per
report (`progress_line`), since the workers' own output does not reach the driver (a local
Ray runs with `log_to_driver=False`).
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from ray.train import UserCallback

from hbt.io import write_text_atomic


class MetricsFile(UserCallback):
    """Append rank 0's reported metrics to a JSON-lines file (runs in Ray's train controller).

    One line per step: a run that goes back to a checkpoint (Ray restarting its workers, or
    `--resume` after the driver died) redoes the steps after it, and their new lines replace
    the old ones instead of following them."""

    def __init__(self, path: str):
        self.path = path
        self.last_step: int | None = None  # read from the file at the first report

    def after_report(self, run_context, metrics: List[Dict[str, Any]], checkpoint) -> None:
        if not metrics:
            return
        step = int(metrics[0]["step"])
        if self.last_step is None:
            self.last_step = max((row["step"] for row in read_metrics(Path(self.path))), default=-1)
        if step <= self.last_step:
            kept = [row for row in read_metrics(Path(self.path)) if row["step"] < step]
            write_text_atomic(Path(self.path), "".join(json.dumps(row, default=str) + "\n" for row in kept))
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(json.dumps(metrics[0], default=str) + "\n")
        self.last_step = step


def read_metrics(path: Path) -> list[dict]:
    """The rows of a metrics.jsonl (a last line cut short by a crash is left out)."""
    rows = []
    if not path.is_file():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def to_stderr(line: str) -> None:
    """Print a progress line to the stderr of the moment (not the one at import: a test's
    captured stream may be closed by the time a run prints)."""
    print(line, file=sys.stderr, flush=True)


def progress_line(metrics: Dict[str, Any], total_steps: int, pairs_per_step: Optional[int] = None) -> str:
    """One line for a user watching `hbt train`: step, losses, lr and throughput; with
    `pairs_per_step`, seconds per step and the time left at that pace (dev evaluation excluded)."""
    by_kind = ", ".join(f"{kind} {metrics[f'loss_{kind}']:.4f}" for kind in ("xx", "xy")
                        if metrics.get(f"loss_{kind}") is not None)
    done = metrics["step"] + 1
    line = (f"step {done}/{total_steps}  loss {metrics['loss']:.4f} ({by_kind})  "
            f"lr {metrics['lr']:.2e}  {metrics['pairs_per_s']:.1f} pairs/s  "
            f"{metrics['tokens_per_s']:.0f} real tokens/s "
            f"({metrics['padded_fraction']:.0%} padding)")
    if pairs_per_step and metrics["pairs_per_s"] > 0:
        seconds = pairs_per_step / metrics["pairs_per_s"]  # pairs_per_s: the window's pairs over its wall time
        line += f"  {seconds:.2f} s/step  ETA {_duration(seconds * (total_steps - done))}"
    dev = [f"{label} {metrics[key]:{fmt}}" for key, label, fmt in DEV_COLUMNS if metrics.get(key) is not None]
    if not dev:
        return line
    return f"{line}  dev {' '.join(dev)} ({metrics.get('dev/seconds', 0.0):.0f} s)"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


# On steps evaluated on the dev split (`train.eval_every`), the progress line adds these.
DEV_COLUMNS = [("dev/mono_map", "Mo", ".4f"), ("dev/cross_map", "Cr", ".4f"), ("dev/multi_map", "Mul", ".4f"),
               ("dev/rank_distance", "RD", ".1f")]


class _Follower(threading.Thread):
    """Calls `emit(line)` for each complete line of `path` not there when it started, and not
    emitted before: a redone step's line (the file rewritten by `MetricsFile`) shows again."""

    def __init__(self, path: Path, emit: Callable[[str], None], interval: float = 1.0):
        super().__init__(daemon=True)
        self.path, self.emit, self.interval = path, emit, interval
        self.seen = set(self._lines())  # a resumed run's earlier lines are not shown again
        self.done = threading.Event()

    def _lines(self) -> list[str]:
        data = self.path.read_bytes() if self.path.is_file() else b""
        complete = data[: data.rfind(b"\n") + 1]
        return [line for line in complete.decode("utf-8").splitlines() if line.strip()]

    def run(self) -> None:
        while not self.done.wait(self.interval):
            self._drain()
        self._drain()

    def _drain(self) -> None:
        for line in self._lines():
            if line not in self.seen:
                self.seen.add(line)
                self.emit(line)


@contextlib.contextmanager
def following(path: Path, emit: Callable[[str], None]):
    """While the block runs, `emit` each line appended to `path` (checked every second)."""
    follower = _Follower(path, emit)
    follower.start()
    try:
        yield
    finally:
        follower.done.set()
        follower.join()
