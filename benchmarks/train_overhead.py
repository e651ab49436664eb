"""Benchmark hbt's training path against a bare PyTorch loop, in one run.

    ratio = steps/s of `hbt.train.driver.train` (Ray Data stream -> Ray Train worker)
            / steps/s of a bare loop (pre-tokenized batches in a list -> the same strategy)
    target >= 0.95

Both contenders train the same model dir with the same config (batch size, max_length,
hard negatives, frozen embeddings, AdamW and its schedule: the one-rank `DDPStrategy`), on
the same batches (the composer's first steps, tokenized by `tokenize_step`, which the
stream also uses: tests/train/test_stream.py checks the tensors are identical), with one
worker and the same torch threads. Start-up (Ray, the model load, the Ray Data actor) and
the first `--warmup` steps are left out of both timings; hbt's steps include waiting on the
stream, the all-reduce of the metrics and each step's `ray.train.report`. The final
checkpoint and export, once per run, are not steps.

    python benchmarks/train_overhead.py --model runs/models/e5-small --steps 20 --json runs/bench/train_overhead.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Optional

import torch

from hbt.config import REPO_ROOT, HbtConfig, load_config
from hbt.data.prepare import TRAIN_PAIRS, prepare
from hbt.io import write_json_atomic
from hbt.losses.infonce import InfoNCELoss
from hbt.train.batch import PairTexts, tokenize_step
from hbt.train.engine import DDPStrategy
from hbt.train.loop import contrastive_loss
from hbt.train.stream import num_micro_steps, plan_micro_steps

TARGET = 0.95


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=REPO_ROOT / "configs" / "local.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--model", type=Path, default=REPO_ROOT / "runs" / "models" / "e5-small")
    p.add_argument("--prepared", type=Path, default=None,
                   help="prepared dir (default: data.prepared_dir if it holds train pairs, else a fresh temp one)")
    p.add_argument("--steps", type=int, default=20, help="timed optimizer steps per contender")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before them")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers to this file")
    return p.parse_args(argv)


def bench_config(args: argparse.Namespace) -> HbtConfig:
    """The run's config with one worker, one micro-batch a step, a report every step and no
    checkpoint before the end (`checkpoint_every` beyond the run)."""
    total = args.warmup + args.steps
    return load_config(args.config, [*args.overrides, f"model.name_or_path={args.model.resolve()}",
                                     "train.num_workers=1", "train.grad_accum=1", "train.report_every=1",
                                     f"train.steps={total}", f"train.checkpoint_every={total + 1}"])


def tokenized_steps(config: HbtConfig, prepared: Path) -> list[dict[str, torch.Tensor]]:
    """The composer's batches of the run, tokenized: exactly what the stream delivers to rank 0."""
    from transformers import AutoTokenizer

    pairs = PairTexts.read(prepared, config.data.train_languages)
    (plan,) = plan_micro_steps(pairs.records(), config, world_size=1, stop=num_micro_steps(config))
    tokenizer = AutoTokenizer.from_pretrained(config.model.name_or_path)
    steps = []
    for row in plan:
        examples = list(zip(row["parallel_id"], row["query_lang"], row["passage_lang"]))
        texts = pairs.texts(examples, config.train.hard_negatives, row["step"])
        steps.append({k: torch.from_numpy(v) for k, v in tokenize_step(tokenizer, config.model, texts).items()})
    return steps


def bare_loop_seconds(config: HbtConfig, steps: list[dict[str, torch.Tensor]], warmup: int) -> float:
    """Seconds of the steps after `warmup` in a plain loop over pre-tokenized tensors."""
    from hbt.train.loop import build_encoder, set_torch_threads

    set_torch_threads(config, local_world_size=1)  # as the single Ray Train worker sets itself
    strategy = DDPStrategy(build_encoder(config), config, world_size=1)
    strategy.encoder.train()
    loss_fn = InfoNCELoss.from_config(config.train, gather=False)
    for i, inputs in enumerate(steps):
        if i == warmup:
            start = time.perf_counter()
        loss = strategy.micro_step(partial(contrastive_loss, loss_fn=loss_fn, inputs=inputs), boundary=True)
        float(loss)  # the loop reads every loss too
    return time.perf_counter() - start


def hbt_seconds(config: HbtConfig, prepared: Path, warmup: int) -> float:
    """Seconds of the steps after `warmup` in `hbt.train.driver.train`, from its per-step
    reports: each report's window is the wall time since the previous one."""
    from hbt.train.driver import train

    with tempfile.TemporaryDirectory() as tmp:
        out = train(config, prepared, Path(tmp) / "run", progress=None)
        reports = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert [r["step"] for r in reports] == list(range(config.train.steps)), "one report per step expected"
    return sum(sum(len(ids) for ids in r["batch_ids"]) / r["pairs_per_s"] for r in reports[warmup:])


def prepared_dir(args: argparse.Namespace, config: HbtConfig, tmp: Path) -> Path:
    for candidate in (args.prepared, config.data.prepared_dir):
        if candidate is not None and (Path(candidate) / TRAIN_PAIRS).is_file():
            return Path(candidate)
    return Path(prepare(config.data, tmp / "prepared"))


def run(args: argparse.Namespace) -> dict:
    from hbt.ray_session import ensure_ray

    config = bench_config(args)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = prepared_dir(args, config, Path(tmp))
        steps = tokenized_steps(config, prepared)
        bare = bare_loop_seconds(config, steps, args.warmup)
        ensure_ray(config.cluster)
        hbt = hbt_seconds(config, prepared, args.warmup)
    ratio = (args.steps / hbt) / (args.steps / bare)
    tokens = sum(int(s["attention_mask"].sum()) for s in steps[args.warmup:])
    return {
        "model": str(args.model), "steps": args.steps, "warmup": args.warmup,
        "batch_size": config.batching.batch_size, "max_length": config.model.max_length,
        "hard_negatives": config.train.hard_negatives, "freeze_embeddings": config.train.freeze_embeddings,
        "torch_threads": torch.get_num_threads(), "timed_tokens": tokens,
        "seconds": {"bare": bare, "hbt": hbt},
        "steps_per_s": {"bare": args.steps / bare, "hbt": args.steps / hbt},
        "ratio": ratio, "target": f">= {TARGET}", "pass": ratio >= TARGET,
    }


def format_table(r: dict) -> str:
    sps = r["steps_per_s"]
    return "\n".join([
        f"model {r['model']}  batch {r['batch_size']} pairs (+{r['hard_negatives']} hard negatives each)  "
        f"max_length {r['max_length']}  frozen embeddings {r['freeze_embeddings']}  torch threads {r['torch_threads']}",
        f"{r['steps']} timed steps after {r['warmup']} warm-up steps; {r['timed_tokens']} non-padding tokens",
        "",
        f"{'contender':<52}{'time (s)':>10}{'steps/s':>10}",
        f"{'bare loop: pre-tokenized tensors -> DDPStrategy':<52}{r['seconds']['bare']:>10.2f}{sps['bare']:>10.3f}",
        f"{'hbt: Ray Data stream -> Ray Train worker':<52}{r['seconds']['hbt']:>10.2f}{sps['hbt']:>10.3f}",
        "",
        f"{'ratio hbt / bare (steps/s)':<52}{r['ratio']:>10.3f}{r['target']:>10}   {'PASS' if r['pass'] else 'FAIL'}",
    ])


def main(argv: Optional[list[str]] = None) -> dict:
    args = parse_args(argv)
    result = run(args)
    print(format_table(result))
    if args.json is not None:
        write_json_atomic(args.json, result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
