"""Benchmark hbt's training step encoded as one padded matrix against length-sorted chunks, in one run.

    ratio   = steps/s packed (`hbt.train.packing.pack`, what `hbt train` runs)
              / steps/s one matrix (`one_matrix`: every sequence padded to the step's longest,
              in step order, the layout `tokenize_step` produced before packing)
              target >= 1.8
    loss    = each step's loss under both, dropout off: largest relative difference, target <= 1e-4
    real    = real tokens / computed tokens over the composer's first `--fraction-steps` steps at
              batch 16 and 100 (`--fraction-batches`; the tokenizer only, no model), target >= 0.80
              packed

Both contenders are train_overhead.py's bare loop (the one-rank `DDPStrategy`, hbt's
`contrastive_loss`, AdamW and its schedule, the worker's torch threads) from the same model
dir, on the same pre-tokenized steps of the run's config (default: configs/local.yaml, batch
16, no hard negatives, max_length 128, frozen word embeddings), each laying out a step's tokens
inside its timed step. Dropout is off in both, so their losses are the same function of the
same weights and must agree to float order. They take turns over `--rounds` rounds, order
rotating (bench_rounds); steps/s is timed steps over their total time, all rounds together.

    python benchmarks/train_speed.py --model runs/models/e5-small --json runs/bench/train_speed.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

import torch
from bench_rounds import positive_int, report, rotating_rounds
from train_overhead import bare_loop, bench_config, prepared_dir, tokenized_steps, training_parser

from hbt.config import HbtConfig
from hbt.train.packing import one_matrix, pack

TARGETS = {"ratio": 1.8, "loss_rel": 1e-4, "real_fraction": 0.80}
LAYOUTS = {"one_matrix": one_matrix, "packed": pack}


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = training_parser(__doc__, steps=4, warmup=1, rounds=2)
    p.add_argument("--fraction-steps", type=positive_int, default=100,
                   help="composer steps the real-token fraction is counted over, at each batch size")
    p.add_argument("--fraction-batches", type=positive_int, nargs="+", default=[16, 100],
                   help="batch sizes the real-token fraction is counted at")
    return p.parse_args(argv)


def real_fractions(config: HbtConfig, prepared: Path, steps: int, batches: list[int]) -> dict[str, dict[str, float]]:
    """batch size -> layout -> real tokens / computed tokens over the composer's first `steps` steps."""
    out = {}
    for batch in batches:
        cfg = config.model_copy(deep=True)
        cfg.batching.batch_size, cfg.train.steps, cfg.train.grad_accum = batch, steps, 1
        rows = tokenized_steps(cfg, prepared)
        out[str(batch)] = {name: sum(int(r["lengths"].sum()) for r in rows)
                           / sum(layout(r["token_ids"], r["lengths"]).computed_tokens for r in rows)
                           for name, layout in LAYOUTS.items()}
    return out


def run(args: argparse.Namespace) -> dict:
    import tempfile

    config = bench_config(args)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = prepared_dir(args, config, Path(tmp))
        fractions = real_fractions(config, prepared, args.fraction_steps, args.fraction_batches)
        steps = tokenized_steps(config, prepared)
        results = rotating_rounds({name: lambda layout=layout: bare_loop(config, steps, args.warmup, layout,
                                                                         dropout=False)
                                   for name, layout in LAYOUTS.items()}, args.rounds)
    seconds = {name: [s for s, _ in rounds] for name, rounds in results.items()}
    total = {name: sum(t for rnd in rounds for t in rnd) for name, rounds in seconds.items()}
    timed = {name: sum(len(rnd) for rnd in rounds) for name, rounds in seconds.items()}
    losses = {name: rounds[0][1] for name, rounds in results.items()}  # every round trains from the same start
    loss_rel = max(abs(p - o) / abs(o) for o, p in zip(losses["one_matrix"], losses["packed"]))
    ratio = total["one_matrix"] / total["packed"]  # steps/s packed over steps/s one matrix
    real = min(f["packed"] for f in fractions.values())
    return {
        "model": str(args.model), "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds,
        "batch_size": config.batching.batch_size, "max_length": config.model.max_length,
        "hard_negatives": config.train.hard_negatives, "freeze_embeddings": config.train.freeze_embeddings,
        "torch_threads": torch.get_num_threads(),
        "tokens": {name: [layout(r["token_ids"], r["lengths"]).computed_tokens for r in steps]
                   for name, layout in LAYOUTS.items()} | {"real": [int(r["lengths"].sum()) for r in steps]},
        "step_seconds": seconds, "total_s": total,
        "steps_per_s": {name: timed[name] / total[name] for name in total},
        "round_ratios": [sum(o) / sum(p) for o, p in zip(seconds["one_matrix"], seconds["packed"])],
        "losses": losses, "loss_max_rel_diff": loss_rel, "real_fraction": fractions,
        "targets": TARGETS,
        "pass": {"ratio": ratio >= TARGETS["ratio"], "loss_rel": loss_rel <= TARGETS["loss_rel"],
                 "real_fraction": real >= TARGETS["real_fraction"]},
        "ratio": ratio,
    }


def format_table(r: dict) -> str:
    sps, total = r["steps_per_s"], r["total_s"]
    verdict = {name: "PASS" if ok else "FAIL" for name, ok in r["pass"].items()}
    tokens = r["tokens"]
    return "\n".join([
        f"model {r['model']}  batch {r['batch_size']} pairs (+{r['hard_negatives']} hard negatives each)  "
        f"max_length {r['max_length']}  frozen embeddings {r['freeze_embeddings']}  torch threads {r['torch_threads']}",
        f"{r['rounds']} rounds x {r['steps']} timed steps (after {r['warmup']} warm-up steps) per contender, "
        "dropout off; "
        f"computed tokens of all {len(tokens['real'])} steps: one matrix {sum(tokens['one_matrix'])}, "
        f"packed {sum(tokens['packed'])}, real {sum(tokens['real'])}",
        "",
        f"{'contender':<52}{'total (s)':>12}{'steps/s':>10}",
        *(f"{label:<52}{total[name]:>12.2f}{sps[name]:>10.3f}" for name, label in (
            ("one_matrix", "one matrix: the step padded to its longest"),
            ("packed", "packed: length-sorted chunks (hbt train)"))),
        "",
        "per-round ratio (one matrix time / packed time): " + "  ".join(f"{x:.3f}" for x in r["round_ratios"]),
        f"{'ratio packed / one matrix (steps/s, total time)':<52}{r['ratio']:>12.3f}"
        f"{'>= ' + str(r['targets']['ratio']):>10}   {verdict['ratio']}",
        f"{'per-step loss, largest relative difference':<52}{r['loss_max_rel_diff']:>12.1e}"
        f"{'<= ' + str(r['targets']['loss_rel']):>10}   {verdict['loss_rel']}",
        "",
        f"{'real-token fraction of the computed tokens':<52}{'one matrix':>12}{'packed':>10}",
        *(f"{'  batch ' + batch:<52}{f['one_matrix']:>12.3f}{f['packed']:>10.3f}"
          for batch, f in r["real_fraction"].items()),
        f"{'packed, at every batch':<52}{'':>12}{'>= ' + str(r['targets']['real_fraction']):>10}   "
        f"{verdict['real_fraction']}",
    ])


def main(argv: Optional[list[str]] = None) -> dict:
    return report(parse_args(argv), run, format_table)


if __name__ == "__main__":
    main(sys.argv[1:])
