"""Benchmark hbt's training path against a bare PyTorch loop, in one run.

    ratio = steps/s of `hbt.train.driver.train` (Ray Data stream -> Ray Train worker)
            / steps/s of a bare loop (pre-tokenized batches in a list -> the same strategy)
    target >= 0.95

A third contender runs the same bare loop inside a one-worker Ray Train `TorchTrainer` (no
Ray Data, one report at the end): hbt over it is the price of hbt's own pipeline (stream,
per-step reports), apart from the price of running under Ray Train at all (its controller
and helper actors, the raylet, the dashboard: on 2 cores about a tenth of the machine).

On a shared 2-core machine one run of the same loop varies by +-15% from the next, more than
the overhead measured. So the contenders take turns over `--rounds` rounds (their order
rotating each round), every timed step's duration is kept, and steps/s is the number of timed
steps over their total time, all rounds together: the occasional slow step (waiting on the
stream, a report poll) is where pipeline overhead lives, and a median would hide it. Each
round's own ratio is printed beside it to show the spread.

All three contenders train the same model dir with the same config (batch size, max_length,
hard negatives, frozen embeddings, AdamW and its schedule: the one-rank `DDPStrategy`), on
the same batches (the composer's first steps, tokenized by `tokenize_step`, which the
stream also uses: tests/train/test_stream.py checks the tensors are identical), with one
worker and the same torch threads; both Ray Train runs poll reports every
`train.report_poll_s`. Start-up (Ray, the model load, the Ray Data actor) and
the first `--warmup` steps are left out of every timing; hbt's steps include waiting on the
stream, the all-reduce of the metrics and each step's `ray.train.report`. The final
checkpoint and export, once per run, are not steps.

    python benchmarks/train_overhead.py --model runs/models/e5-small --json runs/bench/train_overhead.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from bench_rounds import positive_int, report, rotating_rounds

from hbt.config import REPO_ROOT, HbtConfig, load_config
from hbt.data.pool import TRAIN_POOL
from hbt.data.prepare import prepare
from hbt.losses.infonce import InfoNCELoss
from hbt.train.batch import PairPool
from hbt.train.engine import DDPStrategy
from hbt.train.loop import contrastive_loss, row_inputs
from hbt.train.packing import pack
from hbt.train.stream import StepMaker, num_micro_steps

TARGET = 0.95


def training_parser(doc: str, steps: int, warmup: int, rounds: int) -> argparse.ArgumentParser:
    """The arguments of the training benchmarks: config, model, prepared dir, rounds of steps, json."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=REPO_ROOT / "configs" / "local.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--model", type=Path, default=REPO_ROOT / "runs" / "models" / "e5-small")
    p.add_argument("--prepared", type=Path, default=None,
                   help="prepared dir (default: data.prepared_dir if it holds train pairs, else a fresh temp one)")
    p.add_argument("--steps", type=positive_int, default=steps, help="timed optimizer steps per contender and round")
    p.add_argument("--warmup", type=int, default=warmup, help="untimed steps before them")
    p.add_argument("--rounds", type=positive_int, default=rounds,
                   help="rounds of every contender, rotating their order")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers to this file")
    return p


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    return training_parser(__doc__, steps=10, warmup=2, rounds=3).parse_args(argv)


def bench_config(args: argparse.Namespace, report_every: int = 1) -> HbtConfig:
    """The run's config with one worker, one micro-batch a step, a report every `report_every`
    steps and no checkpoint before the end (`checkpoint_every` beyond the run)."""
    total = args.warmup + args.steps
    return load_config(args.config, [*args.overrides, f"model.name_or_path={args.model.resolve()}",
                                     "train.num_workers=1", "train.grad_accum=1", f"train.report_every={report_every}",
                                     f"train.steps={total}", f"train.checkpoint_every={total + 1}",
                                     "train.eval_every=null"])  # the contenders train; none evaluates


def tokenized_steps(config: HbtConfig, prepared: Path) -> list[dict[str, np.ndarray]]:
    """The composer's batches of the run, tokenized: exactly what the stream delivers to rank 0."""
    from transformers import AutoTokenizer

    pool = PairPool.open(prepared, config.model.resolved_candidate_context())
    maker = StepMaker(pool, config, world_size=1, rank=0,
                      tokenizer=AutoTokenizer.from_pretrained(config.model.name_or_path))
    return [maker.make(step) for step in range(num_micro_steps(config))]


def bare_loop(config: HbtConfig, steps: list[dict[str, np.ndarray]], warmup: int, layout: Callable = pack,
              dropout: bool = True) -> tuple[list[float], list[float]]:
    """Seconds and loss of each step after `warmup` in a plain loop over pre-tokenized steps,
    their tokens laid out by `layout` inside the timed step (as the worker packs them)."""
    from hbt.train.loop import build_encoder, set_torch_threads

    set_torch_threads(config, local_world_size=1)  # as the single Ray Train worker sets itself
    strategy = DDPStrategy(build_encoder(config), config, world_size=1)
    strategy.encoder.train(dropout)
    loss_fn = InfoNCELoss.from_config(config.train, gather=False)
    seconds, losses = [], []
    for row in steps:
        start = time.perf_counter()
        inputs = row_inputs(row, layout)
        loss = strategy.micro_step(partial(contrastive_loss, loss_fn=loss_fn, inputs=inputs), boundary=True)
        losses.append(float(loss))  # the loop reads every loss too
        seconds.append(time.perf_counter() - start)
    return seconds[warmup:], losses


def bare_loop_step_seconds(config: HbtConfig, steps: list[dict[str, np.ndarray]], warmup: int) -> list[float]:
    """Seconds of each step after `warmup` in a plain loop over pre-tokenized steps."""
    return bare_loop(config, steps, warmup)[0]


def _bare_loop_on_a_train_worker(loop_config: dict) -> None:
    """Ray Train worker function: the bare loop; its step times come back in a checkpoint
    (Ray Train V2 keeps a result's metrics only for reports that carry one)."""
    import ray
    import ray.train

    config = HbtConfig.model_validate(loop_config["config"])
    seconds = bare_loop_step_seconds(config, ray.get(loop_config["steps"]), loop_config["warmup"])
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "step_seconds.json").write_text(json.dumps(seconds))
        ray.train.report({}, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def bare_in_train_step_seconds(config: HbtConfig, steps: list[dict[str, np.ndarray]], warmup: int) -> list[float]:
    """The bare loop's step times inside a one-worker `TorchTrainer`, as hbt's worker runs."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    # This script is not importable on Ray's workers: ship its functions by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with tempfile.TemporaryDirectory() as tmp:
        trainer = TorchTrainer(
            _bare_loop_on_a_train_worker,
            train_loop_config={"config": config.model_dump(mode="json"), "steps": ray.put(steps), "warmup": warmup},
            scaling_config=ray.train.ScalingConfig(num_workers=1,
                                                   resources_per_worker={"CPU": config.cluster.cpus_per_worker}),
            run_config=ray.train.RunConfig(name="bare", storage_path=tmp))
        with trainer.fit().checkpoint.as_directory() as directory:
            return json.loads((Path(directory) / "step_seconds.json").read_text())


def hbt_step_seconds(config: HbtConfig, prepared: Path, warmup: int) -> list[float]:
    """Seconds of each step after `warmup` in `hbt.train.driver.train`, from its per-step
    reports: a report's window is the wall time since the previous one (its report included)."""
    from hbt.train.driver import train

    with tempfile.TemporaryDirectory() as tmp:
        out = train(config, prepared, Path(tmp) / "run", progress=None)
        reports = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert [r["step"] for r in reports] == list(range(config.train.steps)), "one report per step expected"
    return [sum(len(ids) for ids in r["batch_ids"]) / r["pairs_per_s"] for r in reports[warmup:]]


def prepared_dir(args: argparse.Namespace, config: HbtConfig, tmp: Path) -> Path:
    for candidate in (args.prepared, config.data.prepared_dir):
        if candidate is not None and (Path(candidate) / TRAIN_POOL).is_dir():
            return Path(candidate)
    return Path(prepare(config.data, tmp / "prepared"))


def run(args: argparse.Namespace) -> dict:
    from hbt.ray_session import ensure_ray
    from hbt.train.driver import set_report_poll_interval

    config = bench_config(args)
    contenders = {
        "bare": lambda: bare_loop_step_seconds(config, steps, args.warmup),
        "bare_in_train": lambda: bare_in_train_step_seconds(config, steps, args.warmup),
        "hbt": lambda: hbt_step_seconds(config, prepared, args.warmup),
    }
    with tempfile.TemporaryDirectory() as tmp:
        prepared = prepared_dir(args, config, Path(tmp))
        steps = tokenized_steps(config, prepared)
        ensure_ray(config.cluster)
        # hbt's driver sets Ray Train's report poll interval for the process; set it before any
        # contender so the bare loop inside Ray Train runs under the same controller in every round.
        set_report_poll_interval(config)
        seconds = rotating_rounds(contenders, args.rounds)
    # Every contender times the same number of steps: steps/s is steps over total time.
    total = {name: sum(t for rnd in rounds for t in rnd) for name, rounds in seconds.items()}
    timed_steps = {name: sum(len(rnd) for rnd in rounds) for name, rounds in seconds.items()}
    ratio = total["bare"] / total["hbt"]  # steps/s of hbt over steps/s of bare
    return {
        "model": str(args.model), "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds,
        "batch_size": config.batching.batch_size, "max_length": config.model.max_length,
        "hard_negatives": config.train.hard_negatives, "freeze_embeddings": config.train.freeze_embeddings,
        "torch_threads": torch.get_num_threads(),
        "timed_tokens_per_round": sum(int(s["lengths"].sum()) for s in steps[args.warmup:]),
        "step_seconds": seconds,
        "total_s": total,
        "median_step_s": {name: statistics.median(t for rnd in rounds for t in rnd)
                          for name, rounds in seconds.items()},
        "steps_per_s": {name: timed_steps[name] / total[name] for name in total},
        "round_ratios": [sum(b) / sum(h) for b, h in zip(seconds["bare"], seconds["hbt"])],
        "ratio": ratio, "target": f">= {TARGET}", "pass": ratio >= TARGET,
        "ratio_vs_bare_in_train": total["bare_in_train"] / total["hbt"],
        "ratio_bare_in_train_vs_bare": total["bare"] / total["bare_in_train"],
    }


def format_table(r: dict) -> str:
    sps, total, med = r["steps_per_s"], r["total_s"], r["median_step_s"]
    spread = "  ".join(f"{x:.3f}" for x in r["round_ratios"])
    return "\n".join([
        f"model {r['model']}  batch {r['batch_size']} pairs (+{r['hard_negatives']} hard negatives each)  "
        f"max_length {r['max_length']}  frozen embeddings {r['freeze_embeddings']}  torch threads {r['torch_threads']}",
        f"{r['rounds']} rounds x {r['steps']} timed steps (after {r['warmup']} warm-up steps) per contender; "
        f"{r['timed_tokens_per_round']} non-padding tokens a round",
        "",
        f"{'contender':<52}{'total (s)':>12}{'steps/s':>10}{'median step (s)':>17}",
        *(f"{label:<52}{total[name]:>12.2f}{sps[name]:>10.3f}{med[name]:>17.3f}" for name, label in (
            ("bare", "bare loop: pre-tokenized tensors -> DDPStrategy"),
            ("bare_in_train", "bare loop inside a one-worker Ray Train TorchTrainer"),
            ("hbt", "hbt: Ray Data stream -> Ray Train worker"))),
        "",
        f"per-round ratio (total bare time / total hbt time): {spread}",
        f"{'ratio hbt / bare (steps/s over total time)':<52}{r['ratio']:>12.3f}{r['target']:>10}   "
        f"{'PASS' if r['pass'] else 'FAIL'}",
        f"  of which running under Ray Train (bare in Train / bare): {r['ratio_bare_in_train_vs_bare']:.3f}",
        f"  and hbt's own stream and reports (hbt / bare in Train):  {r['ratio_vs_bare_in_train']:.3f}",
    ])


def main(argv: Optional[list[str]] = None) -> dict:
    return report(parse_args(argv), run, format_table)


if __name__ == "__main__":
    main(sys.argv[1:])
