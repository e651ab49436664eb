"""What a user sees of a training run: `metrics.jsonl` and one progress line per report.

Rank 0's reports reach the driver through Ray Train's controller, which appends each to
`RUN/metrics.jsonl` (`MetricsFile`); the driver follows that file and prints a line per
report (`progress_line`), since the workers' own output does not reach the driver (a local
Ray runs with `log_to_driver=False`).
"""

from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List

from ray.train import UserCallback


class MetricsFile(UserCallback):
    """Append rank 0's reported metrics to a JSON-lines file (runs in Ray's train controller)."""

    def __init__(self, path: str):
        self.path = path

    def after_report(self, run_context, metrics: List[Dict[str, Any]], checkpoint) -> None:
        if not metrics:
            return
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(json.dumps(metrics[0], default=str) + "\n")


def progress_line(metrics: Dict[str, Any], total_steps: int) -> str:
    """One line for a user watching `hbt train`: step, losses, lr and throughput."""
    by_kind = ", ".join(f"{kind} {metrics[f'loss_{kind}']:.4f}" for kind in ("xx", "xy")
                        if metrics.get(f"loss_{kind}") is not None)
    line = (f"step {metrics['step'] + 1}/{total_steps}  loss {metrics['loss']:.4f} ({by_kind})  "
            f"lr {metrics['lr']:.2e}  {metrics['pairs_per_s']:.1f} pairs/s  {metrics['tokens_per_s']:.0f} tokens/s")
    dev = [f"{label} {metrics[key]:{fmt}}" for key, label, fmt in DEV_COLUMNS if metrics.get(key) is not None]
    if not dev:
        return line
    return f"{line}  dev {' '.join(dev)} ({metrics.get('dev/seconds', 0.0):.0f} s)"


# On steps evaluated on the dev split (`train.eval_every`), the progress line adds these.
DEV_COLUMNS = [("dev/mono_map", "Mo", ".4f"), ("dev/cross_map", "Cr", ".4f"), ("dev/multi_map", "Mul", ".4f"),
               ("dev/rank_distance", "RD", ".1f")]


class _Follower(threading.Thread):
    """Calls `emit(line)` for each complete line appended to `path` after it started."""

    def __init__(self, path: Path, emit: Callable[[str], None], interval: float = 1.0):
        super().__init__(daemon=True)
        self.path, self.emit, self.interval = path, emit, interval
        self.offset = path.stat().st_size  # a resumed run's earlier lines are not shown again
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            self._drain()
        self._drain()

    def _drain(self) -> None:
        with open(self.path, "rb") as stream:
            stream.seek(self.offset)
            data = stream.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        for line in complete.decode("utf-8").splitlines():
            if line.strip():
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
