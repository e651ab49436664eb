"""Benchmark hbt's fixed cost per training step: `hbt train` with a model whose compute is near
zero against a bare loop over the same pre-tokenized steps, in one run.

    overhead of step i = (hbt's step i) - (the bare loop's step i)   the same batch, same model
    mean ms/step       = (total hbt time - total bare time) / timed steps, over every round
    p95 ms/step        = 95th percentile of the per-step overheads
    goal: mean <= 10 ms at train.report_every 10

On a GPU a step of e5-small at batch 100 takes tens of milliseconds, so what hbt does around
the model (the Ray Data fetch, the metrics' all-reduce, `ray.train.report`, progress) would
dominate it; on this CPU the model's seconds hide it. Here the model is `hbt.model.tiny`
(hidden 32, 2 layers) so the compute is a few milliseconds and the rest is that fixed cost.

Contenders, taking turns over `--rounds` rounds (order rotating): the bare loop
(`train_overhead.bare_loop_step_seconds`: pre-tokenized tensors -> the one-rank `DDPStrategy`,
reading every loss) and `hbt.train.driver.train` (Ray Data stream -> Ray Train worker -> reports
-> `metrics.jsonl`) at each `--report-every`. A step of hbt is the time between two consecutive
`ReportWindow.add` calls of its worker (once per micro-step, after the backward and optimizer):
it holds waiting on the stream, the step itself and, every `report_every` steps, the metrics'
all-reduce and `ray.train.report`. A bare step is `micro_step` and reading its loss. One worker,
one micro-batch a step, the same torch threads (`--torch-threads`, 1 by default: on 2 cores the
second one is the pipeline's, whose tokenize actor and Ray Data threads run beside the loop as
they do on a GPU node's spare cores; with 2 threads the loop's thread team stalls whenever any
of them runs, this machine's contention rather than hbt's cost); no dev evaluation, and no checkpoint before the
run's last step (a checkpoint's cost is the strategy's save, not per step). Start-up and the
first `--warmup` steps are left out.

On paper, the measured overhead beside a GPU step of `--paper-model` (e5-small) at
`--paper-batch` pairs (queries and positives, `--paper-length` tokens each: today's padded
step): FLOPs from `limit.encoder_flops` (forward + backward = 3 x forward), at `--mfu` of an
A100's and an H100's dense bf16 peak (312 and 989 TFLOP/s).

    python benchmarks/step_overhead.py --json runs/bench/step_overhead.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional
from unittest.mock import patch

import numpy as np
from bench_rounds import positive_int, report, rotating_rounds
from limit import encoder_flops
from train_overhead import bare_loop_step_seconds, bench_config, prepared_dir, tokenized_steps

from hbt.config import REPO_ROOT, HbtConfig
from hbt.model.tiny import tiny_bert

GOAL_MS = 10.0  # mean overhead per step at report_every 10
GPU_PEAK_TFLOPS = {"A100": 312.0, "H100": 989.0}  # dense bf16, the vendors' data sheets (SXM)


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=REPO_ROOT / "configs" / "local.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--model", type=Path, default=None, help="model dir (default: a fresh `hbt.model.tiny` BERT)")
    p.add_argument("--prepared", type=Path, default=None,
                   help="prepared dir (default: data.prepared_dir if it holds train pairs, else a fresh temp one)")
    p.add_argument("--torch-threads", type=positive_int, default=1,
                   help="train.torch_threads of both contenders (see the module docstring for why 1)")
    p.add_argument("--steps", type=positive_int, default=200, help="timed optimizer steps per contender and round")
    p.add_argument("--warmup", type=positive_int, default=10,
                   help="untimed steps before them (>= 1: a step is timed from the end of the one before)")
    p.add_argument("--rounds", type=positive_int, default=2, help="rounds of every contender, rotating their order")
    p.add_argument("--report-every", default="1,10", help="comma-separated train.report_every values, one hbt run each")
    p.add_argument("--paper-model", type=Path, default=REPO_ROOT / "runs" / "models" / "e5-small",
                   help="model dir whose config sizes the on-paper GPU step (skipped when absent)")
    p.add_argument("--paper-batch", type=positive_int, default=100, help="pairs of the on-paper GPU step")
    p.add_argument("--paper-length", type=positive_int, default=128, help="tokens per sequence of that step")
    p.add_argument("--mfu", type=float, default=0.4, help="fraction of the GPU's peak the on-paper step reaches")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers to this file")
    return p.parse_args(argv)


def _timed_train_func(stamps_path: str) -> Callable[[dict], None]:
    """`hbt.train.loop.train_func`, recording the time of every `ReportWindow.add` (one per
    micro-step) into `stamps_path` (a JSON list) when it ends."""

    def train_func(config: dict) -> None:
        from hbt.train import loop

        stamps: list[float] = []
        add = loop.ReportWindow.add

        def timed_add(window, *args, **kwargs):
            add(window, *args, **kwargs)
            stamps.append(time.perf_counter())

        try:
            with patch.object(loop.ReportWindow, "add", timed_add):
                loop.train_func(config)
        finally:
            Path(stamps_path).write_text(json.dumps(stamps))

    return train_func


def hbt_step_seconds(config: HbtConfig, prepared: Path, warmup: int) -> list[float]:
    """Seconds of each step after `warmup` in `hbt.train.driver.train` (one worker on this node)."""
    from hbt.train import driver

    with tempfile.TemporaryDirectory() as tmp:
        stamps_path = Path(tmp) / "stamps.json"
        with patch.object(driver, "train_func", _timed_train_func(str(stamps_path))):
            out = driver.train(config, prepared, Path(tmp) / "run", progress=None)
        stamps = json.loads(stamps_path.read_text())
        reported = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    every = config.train.report_every
    assert reported == [s for s in range(config.train.steps) if (s + 1) % every == 0 or s + 1 == config.train.steps]
    assert len(stamps) == config.train.steps, "one ReportWindow.add per step expected"
    return np.diff(stamps)[warmup - 1:].tolist()  # step i: from the end of step i - 1 to its own end


def overhead(hbt: list[list[float]], bare: list[list[float]]) -> dict:
    """Milliseconds per step of hbt over bare: mean by total time, p95 of the step pairs."""
    per_step = np.concatenate([np.subtract(h, b) for h, b in zip(hbt, bare)]) * 1e3  # (rounds * steps,)
    return {"mean_ms": float(per_step.sum() / per_step.size), "p95_ms": float(np.percentile(per_step, 95))}


def on_paper(args: argparse.Namespace, overhead_ms: dict[str, float]) -> Optional[dict]:
    """The GPU step time of `--paper-model` at `--paper-batch` pairs and `--mfu`, and each
    measured mean overhead as a fraction of the step with it (overhead / (step + overhead); a
    negative overhead, the noise of a busy machine, counts as none)."""
    from transformers import AutoConfig

    if not (args.paper_model / "config.json").is_file():
        return None
    sequences = 2 * args.paper_batch  # a query and a positive per pair, one padded matrix
    tflop = 3 * encoder_flops(AutoConfig.from_pretrained(args.paper_model), sequences, args.paper_length) / 1e12
    gpus = {}
    for gpu, peak in GPU_PEAK_TFLOPS.items():
        step_ms = 1e3 * tflop / (peak * args.mfu)
        gpus[gpu] = {"step_ms": step_ms, "overhead_share": {name: max(ms, 0.0) / (step_ms + max(ms, 0.0))
                                                       for name, ms in overhead_ms.items()}}
    return {"model": str(args.paper_model), "batch": args.paper_batch, "length": args.paper_length,
            "mfu": args.mfu, "tflop_per_step": tflop, "gpus": gpus}


def run(args: argparse.Namespace) -> dict:
    import ray

    from hbt.ray_session import ensure_ray

    every = [int(v) for v in args.report_every.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        # train_overhead's config (one worker, no dev evaluation, one checkpoint: at the end) on this model
        with_model = argparse.Namespace(**{**vars(args), "model": args.model or tiny_bert(Path(tmp) / "tiny"),
                                           "overrides": [f"train.torch_threads={args.torch_threads}", *args.overrides]})
        configs = {f"hbt_report_every_{e}": bench_config(with_model, e) for e in every}
        base = next(iter(configs.values()))
        prepared = prepared_dir(args, base, Path(tmp))
        steps = tokenized_steps(base, prepared)
        ensure_ray(base.cluster)
        # This script is not importable on Ray's workers: ship its functions by value.
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        contenders = {"bare": lambda: bare_loop_step_seconds(base, steps, args.warmup)}
        contenders.update({name: (lambda c=c: hbt_step_seconds(c, prepared, args.warmup))
                           for name, c in configs.items()})
        seconds = rotating_rounds(contenders, args.rounds)
    total = {name: sum(map(sum, rounds)) for name, rounds in seconds.items()}
    timed = args.rounds * args.steps
    result = {
        "model": str(args.model or "hbt.model.tiny"), "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds,
        "batch_size": base.batching.batch_size, "max_length": base.model.max_length,
        "hard_negatives": base.train.hard_negatives, "report_poll_s": base.train.report_poll_s,
        "torch_threads": base.train.torch_threads, "step_seconds": seconds, "total_s": total,
        "mean_step_ms": {name: 1e3 * t / timed for name, t in total.items()},
        "overhead": {name: overhead(seconds[name], seconds["bare"]) for name in configs},
        "goal_ms": GOAL_MS,
    }
    result["on_paper"] = on_paper(args, {name: o["mean_ms"] for name, o in result["overhead"].items()})
    goal_run = "hbt_report_every_10"
    if goal_run in result["overhead"]:
        result["pass"] = result["overhead"][goal_run]["mean_ms"] <= GOAL_MS
    return result


def format_table(r: dict) -> str:
    lines = [f"model {r['model']}  batch {r['batch_size']} pairs (+{r['hard_negatives']} hard negatives each)  "
             f"max_length {r['max_length']}  torch threads {r['torch_threads']}  report poll {r['report_poll_s']} s",
             f"{r['rounds']} rounds x {r['steps']} timed steps (after {r['warmup']} warm-up steps) per contender",
             "", f"{'contender':<24}{'total (s)':>11}{'ms/step':>10}{'overhead mean (ms)':>20}{'p95 (ms)':>10}"]
    for name, total in r["total_s"].items():
        o = r["overhead"].get(name)
        lines.append(f"{name:<24}{total:>11.2f}{r['mean_step_ms'][name]:>10.2f}"
                     + (f"{o['mean_ms']:>20.2f}{o['p95_ms']:>10.2f}" if o else ""))
    if "pass" in r:
        lines += ["", "overhead at report_every 10: "
                  f"mean {r['overhead']['hbt_report_every_10']['mean_ms']:.2f} ms/step   "
                  f"goal <= {r['goal_ms']:.0f}   {'PASS' if r['pass'] else 'FAIL'}"]
    paper = r["on_paper"]
    if paper:
        lines += ["", f"on paper: {paper['model']} at {paper['batch']} pairs x 2 sequences x {paper['length']} tokens "
                  f"= {paper['tflop_per_step']:.2f} TFLOP a step (fwd + bwd), at {paper['mfu']:.0%} MFU"]
        for gpu, g in paper["gpus"].items():
            lines.append(f"  {gpu}: step {g['step_ms']:.1f} ms; overhead share " + "  ".join(
                f"{name} {share:.0%}" for name, share in g["overhead_share"].items()))
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> dict:
    return report(parse_args(argv), run, format_table)


if __name__ == "__main__":
    main(sys.argv[1:])
