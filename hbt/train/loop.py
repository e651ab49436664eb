"""The per-worker training loop (`TorchTrainer`'s `train_loop_per_worker`).

The loop reads only its config dict and its Ray Data shard:

    config = {"hbt": HbtConfig.model_dump(mode="json"),
              "dev": object ref of the prepared dev split, or None}   # hbt.train.dev
    ray.train.get_dataset_shard(dataset_name(rank))                     # hbt.train.stream

Each row of the shard is one whole micro-batch of this rank, composed on the driver by the
`HybridBatchComposer` (the single source of batch order) and tokenized by a Ray Data actor
in the layout of `hbt.train.batch` (queries, positives and `train.hard_negatives` negatives
per pair, ragged); the worker cuts them into length-sorted chunks padded to their own length
(`hbt.train.packing`), encoded in one forward call. One optimizer step is `train.grad_accum`
micro-batches. InfoNCE gathers embeddings from all workers, so every query of a micro-batch
sees the whole global micro-batch as negatives:

    # 4 workers * 16 pairs = 64 queries vs 64 positives (+ 64 * N hard negatives) per loss
    # * grad_accum micro-batches = pairs per optimizer step

`train.steps` counts optimizer steps. The strategy (DDP or DeepSpeed, `hbt.train.engine`)
runs backward and the optimizer.

With `train.eval_every`, rank 0 scores the dev split every `eval_every` steps and at every
checkpoint (`hbt.train.dev`); with `train.select_checkpoint` best (the default) every step so
scored is checkpointed too: each checkpoint carries the dev metrics the driver selects the
export by. With `last`, the scores are only reported (a learning curve).

Checkpoint (every `train.checkpoint_every` steps and at the end): the strategy's files
(`hbt.train.engine`: always `model/`, the HF export) plus `composer.json`, the composer's
state after the last micro-batch done (carried by the stream's rows, written by rank 0).
A worker group restarted by Ray (`FailureConfig`) resumes from the last checkpoint and skips
the rows of its stream that the checkpoint already covers.

Reported metrics (every `train.report_every` steps; rank 0's are the ones Ray keeps):
step (0-based index of the last optimizer step done), loss (mean over all ranks' micro-batches
since the previous report), loss_xx / loss_xy (the same over micro-batches of that kind; None
when there were none), kind (of the last micro-batch), lr (of the last step), pairs_per_s and
tokens_per_s (global: all ranks' pairs and real, non-padding tokens over the wall time since
the previous report, dev evaluation excluded), padded_fraction (of the tokens the encoder
computed, the padding of the chunks), batch_ids: one list of rank 0's parallel_ids per
micro-batch since the previous report, and on evaluated steps the `hbt.train.dev` metrics.
"""

from __future__ import annotations

import json
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

import torch

from hbt.config import HbtConfig
from hbt.layout import COMPOSER_STATE
from hbt.train.packing import pack

KINDS = ("xx", "xy")


MASKS_AND_KEYS = ("negative_mask", "positive_key", "negative_key")  # a step's inputs besides its tokens


def contrastive_loss(model, loss_fn, inputs: dict) -> torch.Tensor:
    """One forward call over the packed queries, positives and hard negatives (`inputs["packed"]`,
    `hbt.train.packing.Packed`), then InfoNCE (candidates sharing a query's positive key masked
    for it)."""
    b, n = inputs["negative_mask"].shape
    packed = inputs["packed"]
    emb = model(packed.input_ids, packed.attention_mask)[packed.restore]  # (B * (2 + N), D), step order
    query, positive = emb[:b], emb[b:2 * b]  # (B, D) each
    if n == 0:
        return loss_fn(query, positive, positive_keys=inputs["positive_key"])
    negatives = emb[2 * b:].reshape(b, n, -1)  # (B, N, D)
    return loss_fn(query, positive, negatives, inputs["negative_mask"], inputs["positive_key"], inputs["negative_key"])


class ReportWindow:
    """Sums over the micro-batches since the last report; `metrics` reduces them over ranks.

    The losses are summed on their own device and read once per report, not per micro-step:
    on a GPU, reading a loss waits for the step's kernels (a sync every micro-step)."""

    def __init__(self):
        self.started = time.perf_counter()
        # loss, count, then per kind in KINDS: loss, count; then pairs, real tokens, computed tokens
        # the counts on the CPU; `metrics` sums it over ranks on the process group's device
        self.sums = torch.zeros(2 + 2 * len(KINDS) + 3, dtype=torch.float64)  # (S,)
        self.losses: torch.Tensor | None = None  # (1 + len(KINDS),) float64 on the losses' device
        self.batch_ids: list[list[str]] = []
        self.kind: str | None = None

    def add(self, kind: str, parallel_ids: list[str], real_tokens: int, computed_tokens: int,
            loss: torch.Tensor) -> None:
        k = 1 + KINDS.index(kind)
        if self.losses is None:
            self.losses = torch.zeros(1 + len(KINDS), dtype=torch.float64, device=loss.device)
        value = loss.detach().to(torch.float64)  # exact: the float32 loss as a float64, no sync
        self.losses[0] += value
        self.losses[k] += value
        self.sums[1] += 1
        self.sums[2 * k + 1] += 1
        self.sums[-3:] += torch.tensor([len(parallel_ids), real_tokens, computed_tokens], dtype=torch.float64)
        self.batch_ids.append(list(parallel_ids))
        self.kind = kind

    def metrics(self, step: int, lr: float) -> dict:
        """A collective when torch.distributed is up: every rank must call it at the same step."""
        from hbt.collectives import all_reduce_sum

        if self.losses is not None:
            self.sums[0:-3:2] = self.losses.cpu()  # the one read of the losses: loss, then each kind's
        sums = all_reduce_sum(self.sums)  # (S,) on the CPU, summed over ranks
        elapsed = max(time.perf_counter() - self.started, 1e-9)

        def mean(k: int) -> float | None:
            return float(sums[k] / sums[k + 1]) if sums[k + 1] > 0 else None

        return {
            "step": step,
            "loss": mean(0),
            **{f"loss_{kind}": mean(2 + 2 * i) for i, kind in enumerate(KINDS)},
            "kind": self.kind,
            "lr": lr,
            "pairs_per_s": float(sums[-3]) / elapsed,
            "tokens_per_s": float(sums[-2]) / elapsed,
            "padded_fraction": 1 - float(sums[-2] / sums[-1]) if sums[-1] > 0 else 0.0,
            "batch_ids": self.batch_ids,
        }


def report_and_checkpoint(metrics: dict, strategy, composer_state: str, rank: int, checkpoint: bool) -> None:
    """`ray.train.report` the metrics, with a checkpoint of the strategy and composer if asked."""
    import ray.train

    if not checkpoint:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        strategy.save(directory, rank)
        if rank == 0:
            (directory / COMPOSER_STATE).write_text(composer_state)
        # DDP ranks > 0 write nothing; DeepSpeed ranks each write their ZeRO shards.
        written = any(directory.iterdir())
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp) if written else None)


def load_checkpoint(strategy) -> int:
    """Restore the strategy from Ray's latest checkpoint, if any; -> micro-batches already done."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as directory:
        strategy.load(Path(directory))
        return int(json.loads((Path(directory) / COMPOSER_STATE).read_text())["step"])


def step_seed(seed: int, rank: int, micro_step: int) -> int:
    """torch's seed for one rank's micro-batch: dropout draws depend on (seed, rank, step) only,
    so a run restarted from a checkpoint draws exactly what the uninterrupted run drew."""
    import numpy as np

    return int(np.random.SeedSequence([seed, rank, micro_step]).generate_state(1)[0])


def seed_dropout(seed: int, device: torch.device) -> None:
    """Seed the generator the step's dropout draws from (the CPU's, or the GPU's on CUDA).

    Not `torch.manual_seed`: it also queues a seed for each accelerator backend not yet
    initialised (CUDA, XPU, MTIA), formatting a stack trace for each, on every step."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)  # the current device's generator, as dropout on it uses


def build_encoder(cfg: HbtConfig):
    from hbt.model.encoder import Encoder

    encoder = Encoder.from_config(cfg.model)
    if cfg.train.freeze_embeddings:
        encoder.freeze_word_embeddings()
    return encoder


def set_torch_threads(cfg: HbtConfig, local_world_size: int) -> int:
    # Ray starts a fractional-CPU worker with one intra-op thread; by default a worker takes
    # the CPUs Ray reserved for it, or (fractional) its share of the node's usable CPUs
    # (2 cores, 1 worker: 2 threads), never more than its pod's quota (hbt.threads).
    from hbt.threads import torch_threads

    threads = cfg.train.torch_threads or torch_threads(sharing=local_world_size)
    torch.set_num_threads(threads)
    return threads


def _inputs(step, device: torch.device) -> dict:
    return {"packed": pack(step.token_ids, step.lengths).to(device),
            **{name: getattr(step, name).to(device) for name in MASKS_AND_KEYS}}


def row_inputs(row: dict, layout: Callable = pack) -> dict:
    """`contrastive_loss`'s inputs from a tokenized step (`hbt.train.batch` layout, numpy), its
    tokens laid out by `layout` (`hbt.train.packing.pack`, or `one_matrix`): for loops outside Ray."""
    return {"packed": layout(row["token_ids"], row["lengths"]),
            **{name: torch.from_numpy(row[name]) for name in MASKS_AND_KEYS}}


def train_func(config: dict) -> None:
    """Ray Train per-worker loop; see the module docstring."""
    import ray.train
    import ray.train.torch

    from hbt.losses.infonce import InfoNCELoss
    from hbt.train.dev import evaluate_on_rank0
    from hbt.train.engine import build_strategy
    from hbt.train.stream import dataset_name, iter_steps

    cfg = HbtConfig.model_validate(config["hbt"])
    tc = cfg.train
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    set_torch_threads(cfg, ctx.get_local_world_size())

    strategy = build_strategy(build_encoder(cfg), cfg, world, ray.train.torch.get_device())
    dev = ray.get(config["dev"]) if rank == 0 and config.get("dev") is not None else None
    done_micro = load_checkpoint(strategy)
    loss_fn = InfoNCELoss.from_config(tc, gather=world > 1)
    strategy.encoder.train()

    # A restarted worker group reads its stream from the start: skip what the checkpoint holds.
    stream: Iterator = (s for s in iter_steps(ray.train.get_dataset_shard(dataset_name(rank))) if s.step >= done_micro)
    window = ReportWindow()
    for step in range(done_micro // tc.grad_accum, tc.steps):
        lr = strategy.lr
        for micro in range(tc.grad_accum):
            batch = next(stream)
            seed_dropout(step_seed(cfg.batching.seed, rank, batch.step), strategy.device)
            inputs = _inputs(batch, strategy.device)
            loss = strategy.micro_step(partial(contrastive_loss, loss_fn=loss_fn, inputs=inputs),
                                       boundary=micro == tc.grad_accum - 1)
            packed = inputs["packed"]
            window.add(batch.kind, batch.parallel_ids, packed.real_tokens, packed.computed_tokens, loss)
        done = step + 1
        want_eval = tc.eval_every is not None and (
            done % tc.eval_every == 0 or done % tc.checkpoint_every == 0 or done >= tc.steps)
        # An evaluated step is a candidate for the export only when selecting on dev.
        want_checkpoint = (want_eval and tc.select_checkpoint == "best") or done % tc.checkpoint_every == 0 \
            or done >= tc.steps
        if done % tc.report_every == 0 or want_checkpoint:
            metrics = window.metrics(step, lr)
            if want_eval:
                metrics.update(evaluate_on_rank0(strategy.encoder, dev, cfg, rank))
            window = ReportWindow()  # before the report: its time (and a checkpoint's) counts in the next window
            report_and_checkpoint(metrics, strategy, batch.composer_state, rank, want_checkpoint)
