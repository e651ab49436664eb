"""Where `hbt data prepare --ray`'s work goes: its steps (hbt.data.distributed) run in this
process, one task after the other, each step timed in wall and CPU seconds.

CPU seconds do not count other people's work on a shared machine, so they say what a cluster
takes: the read, route and write tasks spread over its CPUs, the driver's link steps (linking
the skeletons, numbering the records, cutting the route tables) on one. Peak RSS is this
process's after each step (a step's tasks run here one at a time, so it is the largest task's
or the driver's, whichever is larger so far).

    python benchmarks/prepare_phases.py --pool runs/bench/data_scale/pools/pairs-100000xen-de-es-fr-zh-seed0-16shards
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Optional

import pyarrow as pa

from hbt.config import load_config
from hbt.data.distributed import ShardedPrepare, in_process
from hbt.data.prepare import keep_fraction, keep_records


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pool", type=Path, required=True, help="a pairs source (benchmarks/make_pairs_pool.py)")
    p.add_argument("--languages", default="en,de,es,fr,zh")
    p.add_argument("--work", type=Path, help="where the steps stage their files (default: a temporary dir)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    return p.parse_args(argv)


class Clock:
    """Wall and CPU seconds, and the peak RSS after it, of every named step."""

    def __init__(self):
        self.steps: dict[str, dict[str, float]] = defaultdict(lambda: {"wall_s": 0.0, "cpu_s": 0.0, "calls": 0})

    def time(self, name: str, fn, *args):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn(*args)
        step = self.steps[name]
        step["wall_s"] += time.perf_counter() - wall
        step["cpu_s"] += time.process_time() - cpu
        step["calls"] += 1
        step["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return result

    def tasks(self, fn, calls: list[tuple]) -> list:
        """hbt.data.distributed's in-process runner, each call timed under the task's name."""
        return [self.time(fn.__name__, in_process, fn, [args])[0] for args in calls]


def run(args) -> dict:
    data = load_config(None, [f"data.languages=[{args.languages}]", "data.sources=[{kind: pairs, path: "
                              f"{json.dumps(str(args.pool.resolve()))}, name: synthetic}}]"]).data
    work = args.work or Path(tempfile.mkdtemp(prefix="prepare-phases-"))
    work.mkdir(parents=True, exist_ok=True)
    clock = Clock()
    try:
        tasks = ShardedPrepare(data, work / "_work", clock.tasks)
        pool, _, _ = clock.time("read + link (driver: whole step)", tasks.read, (), pa.array([], pa.string()))
        pool = clock.time("keep (driver)", lambda: keep_fraction(keep_records(pool, data.max_train_records, 0),
                                                                 data.imbalance, 0))
        clock.time("route + write (driver: whole step)", tasks.write, pool, work / "train_pairs")
        rows = pool.num_rows
    finally:
        shutil.rmtree(work, ignore_errors=True)
    steps = dict(clock.steps)
    for whole, tasks_in_it in (("read + link (driver: whole step)", ["read_task"]),
                               ("route + write (driver: whole step)", ["route_task", "write_task"])):
        driver = {key: steps[whole][key] - sum(steps[t][key] for t in tasks_in_it) for key in ("wall_s", "cpu_s")}
        steps[whole.replace("whole step", "its own part")] = {**driver, "calls": 1,
                                                              "peak_rss_mb": steps[whole]["peak_rss_mb"]}
    task_cpu = sum(steps[t]["cpu_s"] for t in ("read_task", "route_task", "write_task"))
    driver_cpu = sum(step["cpu_s"] for name, step in steps.items() if "its own part" in name or name == "keep (driver)")
    return {"pool": str(args.pool), "rows": rows, "steps": steps, "task_cpu_s": task_cpu, "driver_cpu_s": driver_cpu,
            "task_cpu_us_per_row": 1e6 * task_cpu / rows, "driver_cpu_us_per_row": 1e6 * driver_cpu / rows}


def main(argv: Optional[list[str]] = None) -> dict:
    args = parse_args(argv)
    result = run(args)
    print(f"{result['rows']:,} rows of {result['pool']}")
    print(f"{'step':<40}{'calls':>6}{'wall s':>9}{'CPU s':>9}{'CPU us/row':>12}{'peak RSS MB':>13}")
    for name, step in result["steps"].items():
        print(f"{name:<40}{step['calls']:>6}{step['wall_s']:>9.1f}{step['cpu_s']:>9.1f}"
              f"{1e6 * step['cpu_s'] / result['rows']:>12.2f}{step['peak_rss_mb']:>13,.0f}")
    print(f"tasks: {result['task_cpu_us_per_row']:.2f} CPU us/row; "
          f"driver: {result['driver_cpu_us_per_row']:.2f} CPU us/row")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
