"""The Ray Data path that streams whole composed, tokenized steps into each Ray Train worker.

    PoolIndex.read(prepared_dir)                       driver: the index columns, once; checks
                                                       the pool fills a batch
    ray.data.from_items(steps) -> TokenizeSteps        one actor per rank: composes its steps
      (StepMaker: HybridBatchComposer + PairPool)      (seeded), reads their rows from the
                                                       pool's shards, tokenizes
      -> ray.train.get_dataset_shard("train_rank{r}")  worker r: iter_steps(shard)

One dataset row is one (micro-step, rank) unit: that rank's whole slice of the composer's
global batch, tokenized in the layout of `hbt.train.batch`:

    step            int                 composer batch index (a micro-step: one optimizer
                                        step is `train.grad_accum` of them)
    kind            str                 "xx" or "xy"
    composer_state  str                 JSON of the composer's state_dict() after this
                                        step: what a checkpoint taken here must hold
    parallel_id     (B,) str            the slice's records, in composer order
    token_ids       (S,)                int32: the step's sequences end to end, unpadded; S
                                        varies per step (a variable-shaped tensor column)
    lengths         (B * (2 + N),)      int32: each sequence's tokens (`hbt.train.packing`
                                        pads them into chunks on the worker)
    negative_mask   (B, N)              bool
    positive_key    (B,)                int64 key ids: the loss masks false negatives
    negative_key    (B, N)              int64   (`hbt.train.batch`, `hbt.losses.infonce`)

Why each rank's actor composes: the composer is the single source of batch order (a resumed
run must replay exactly the uninterrupted sequence) and a pure function of its seed and
state, so every rank's actor runs its own copy and keeps its slice, as the composer was built
for. The plan is never materialized: the dataset's rows are only step numbers, and an actor
composes a step when Ray Data asks for it, a few steps ahead of its trainer (Ray Data's
backpressure). An actor that Ray restarts, or that is asked for an earlier step, rebuilds its
composer from the run's start state and replays the composition (cheap: ids only) up to it.

Memory: the driver reads the pool's three index columns (record, lang, key) once; each actor
builds the same index from the shards and reads only the record batches that hold its steps'
rows (`PairPool.texts`). Every actor, run and Tune trial reads the same prepared files
(the OS's page cache keeps them once per node): nothing is copied per run.

Each rank's steps are their own dataset, handed to the trainer unsplit (`DataConfig(
datasets_to_split=[])`) so worker r reads exactly `train_rank{r}`; `streaming_split` would
deal rows to whichever worker asks first. Rows stay in step order because the datasets run
with `preserve_order=True`, which must reach the trainer as `dataset_config=
train_data_config()` (see `ordered_options`); `iter_steps` checks the order.

CPU budget (2 cores, 2 workers): the trainer reserves `world_size * cluster.cpus_per_worker`
(2 * 0.5) and each rank's tokenize actor `cluster.cpus_per_data_task` (0.5): the Ray
resources add up to the 2 CPUs. Ray Data's executor inside a worker then has no CPU left to
budget and logs that it is backpressured; steps still flow, because the fixed one-actor pool
(`ActorPoolStrategy(size=1)`) starts its actor regardless. The step numbers come from
`from_items`: no read task, which would want a CPU of its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from hbt.config import HbtConfig
from hbt.data.composer import ComposerConfig, HybridBatchComposer
from hbt.io import absolute_location
from hbt.model.encoder import resolve_model_name
from hbt.train.batch import PairPool, PoolIndex, tokenize_step

# Step numbers per input block: the tokenize actor gets one task per block and returns one
# output block per task, so Ray Data's per-task work (a submission, a block put, its fetch and
# deserialization on the worker, beside the training loop's thread) is paid once per this many
# steps; a step still reaches the trainer as soon as its task ends, a few steps ahead.
STEPS_PER_TASK = 32

if TYPE_CHECKING:
    import ray.data
    import ray.train
    import torch


@dataclass
class TokenizedStep:
    """One rank's share of one micro-step: its tokens ragged (numpy), masks and keys as torch
    tensors (layout: `hbt.train.batch`)."""

    step: int
    kind: str
    composer_state: str             # JSON: the composer's state after this step
    parallel_ids: list[str]         # (B,)
    token_ids: np.ndarray           # (S,) int32, the sequences end to end
    lengths: np.ndarray             # (B * (2 + N),) int32
    negative_mask: "torch.Tensor"   # (B, N) bool
    positive_key: "torch.Tensor"    # (B,) int64
    negative_key: "torch.Tensor"    # (B, N) int64


def dataset_name(rank: int) -> str:
    """The name of rank `rank`'s dataset in the trainer's `datasets`."""
    return f"train_rank{rank}"


def num_micro_steps(config: HbtConfig) -> int:
    """Composer batches in a run: `train.steps` optimizer steps of `train.grad_accum` each."""
    return config.train.steps * config.train.grad_accum


def composer_config(config: HbtConfig) -> ComposerConfig:
    """The composer settings of `config.batching`."""
    bc = config.batching
    return ComposerConfig(mode=bc.mode, alpha=bc.alpha, batch_size=bc.batch_size, seed=bc.seed,
                          language_sampling=bc.language_sampling)


def build_composer(index: PoolIndex, config: HbtConfig, world_size: int, rank: int = 0) -> HybridBatchComposer:
    """The run's composer: the pool's records in the training languages, `config.batching`."""
    return HybridBatchComposer(index.record_set(config.data.train_languages), composer_config(config),
                               rank=rank, world_size=world_size)


class StepMaker:
    """One rank's micro-steps, composed and tokenized on demand (`make(step)`).

    The composer starts from `composer_state` (a resumed run's checkpoint) or fresh, and
    moves forward to whichever step is asked for; asked for an earlier one, it starts over
    from that same state and replays (see the module doc).
    """

    def __init__(self, pool: PairPool, config: HbtConfig, world_size: int, rank: int, tokenizer,
                 composer_state: dict | None = None):
        self.pool = pool
        self.config = config
        self.world_size = world_size
        self.rank = rank
        self.tokenizer = tokenizer
        self.start_state = composer_state
        self.composer = self._fresh_composer()

    def _fresh_composer(self) -> HybridBatchComposer:
        composer = build_composer(self.pool.index, self.config, self.world_size)
        if self.start_state is not None:
            composer.load_state_dict(self.start_state)
        return composer

    def global_batch(self, step: int):
        """The composer's global batch of `step` (>= the start state's step)."""
        if step < self.composer.step:
            self.composer = self._fresh_composer()
        if step < self.composer.step:
            raise ValueError(f"step {step} comes before the run's start state (step {self.composer.step})")
        while self.composer.step < step:
            self.composer.next_global_batch()
        return self.composer.next_global_batch()

    def make(self, step: int) -> dict[str, np.ndarray]:
        """Rank `rank`'s row of `step` (the layout of the module doc), without the leading axis."""
        batch = self.global_batch(step)
        state = json.dumps(self.composer.state_dict())
        b = self.config.batching.batch_size
        step_keys = frozenset(self.pool.index.keys[[record for record, _, _ in batch.examples]].tolist())
        examples = batch.examples[self.rank * b:(self.rank + 1) * b]
        texts = self.pool.texts(examples, self.config.train.hard_negatives, step, step_keys)
        tokens = tokenize_step(self.tokenizer, self.config.model, texts)
        return {"step": step, "kind": batch.kind, "composer_state": state,
                "parallel_id": np.array(texts.parallel_ids, dtype=object), **tokens}


class TokenizeSteps:
    """Ray Data callable class: step numbers -> tokenized rows, one step per call.

    `__init__` loads the tokenizer, memory-maps the pool and builds its index once per actor.
    """

    def __init__(self, prepared_dir: str, config: dict, world_size: int, rank: int,
                 composer_state: dict | None):
        from transformers import AutoTokenizer

        cfg = HbtConfig.model_validate(config)
        pool = PairPool.open(prepared_dir, cfg.model.resolved_candidate_context())
        self.maker = StepMaker(pool, cfg, world_size, rank, AutoTokenizer.from_pretrained(cfg.model.name_or_path),
                               composer_state)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # batch_size=1: one step a call, so T is that step's own padded length.
        (step,) = batch["step"].tolist()
        row = self.maker.make(step)
        return {key: np.asarray([value]) if np.ndim(value) == 0 else value[None]  # leading axis: 1 row
                for key, value in row.items()}


def quiet_progress(ds: "ray.data.Dataset") -> None:
    """No Ray Data progress output for `ds`: the training loop prints its own line per step,
    and with stdout not a terminal (a log file, `ray job logs`) Ray Data would log a progress
    block every 10 s between those lines."""
    ds.context.enable_progress_bars = False


def ordered_options():
    """Ray Data execution options for the step datasets: the trainer's default ingest
    options with `preserve_order=True`.

    Pass them to the trainer (`train_data_config`): Ray Train overwrites each dataset's own
    `context.execution_options` with `DataConfig`'s, so setting them on the dataset alone
    would be lost inside the workers.
    """
    from ray.train import DataConfig

    options = DataConfig.default_ingest_options()
    options.preserve_order = True
    return options


def train_data_config() -> "ray.train.DataConfig":
    """`DataConfig` for `TorchTrainer(datasets=build_train_datasets(...))`: nothing is split
    (worker r reads its own `train_rank{r}`), rows in order."""
    from ray.train import DataConfig

    return DataConfig(datasets_to_split=[], execution_options=ordered_options())


def build_train_datasets(config: HbtConfig, prepared_dir: str | Path, world_size: int,
                         composer_state: dict | None = None,
                         index: PoolIndex | None = None) -> dict[str, "ray.data.Dataset"]:
    """`{dataset_name(r): rank r's tokenized micro-steps}` for r in `range(world_size)`.

    The micro-steps run from the composer's position (0, or that of `composer_state`: a
    resumed run's last checkpoint) to `num_micro_steps(config)`. Lazy: composing and
    tokenizing run when a worker iterates its shard. `index`: the pool's, if the caller has
    read it already; a `composer_state` from another setup is refused here, before any actor.
    """
    import ray.data

    composer = build_composer(index if index is not None else PoolIndex.read(prepared_dir), config, world_size)
    if composer_state is not None:
        composer.load_state_dict(composer_state)
    steps = [{"step": step} for step in range(composer.step, num_micro_steps(config))]
    worker_config = config.model_dump(mode="json")
    # Actors run in other cwds, maybe on other nodes: absolute paths.
    worker_config["model"]["name_or_path"] = resolve_model_name(config.model.name_or_path)
    location = absolute_location(prepared_dir)

    datasets = {}
    for rank in range(world_size):
        ds = ray.data.from_items(steps, override_num_blocks=max(1, -(-len(steps) // STEPS_PER_TASK))).map_batches(
            TokenizeSteps,
            fn_constructor_kwargs={"prepared_dir": location, "config": worker_config, "world_size": world_size,
                                   "rank": rank, "composer_state": composer_state},
            batch_size=1, batch_format="numpy",
            num_cpus=config.cluster.cpus_per_data_task, compute=ray.data.ActorPoolStrategy(size=1))
        ds.context.execution_options = ordered_options()  # for iterating on the driver too
        quiet_progress(ds)
        datasets[dataset_name(rank)] = ds
    return datasets


def iter_steps(shard) -> Iterator[TokenizedStep]:
    """A worker's steps from its shard (`ray.train.get_dataset_shard(dataset_name(rank))`),
    as torch tensors; raises if the steps arrive out of order."""
    import torch

    previous = None
    for batch in shard.iter_batches(batch_size=1, batch_format="numpy"):
        step = int(batch["step"][0])
        if previous is not None and step != previous + 1:
            raise RuntimeError(f"step {step} arrived after step {previous}: the stream lost its order")
        previous = step
        yield TokenizedStep(
            step=step, kind=str(batch["kind"][0]), composer_state=str(batch["composer_state"][0]),
            parallel_ids=[str(p) for p in batch["parallel_id"][0]],
            # Copies: Ray hands out read-only views of its blocks.
            token_ids=np.array(batch["token_ids"][0], dtype=np.int32),
            lengths=np.array(batch["lengths"][0], dtype=np.int32),
            negative_mask=torch.tensor(batch["negative_mask"][0], dtype=torch.bool),
            positive_key=torch.tensor(batch["positive_key"][0], dtype=torch.int64),
            negative_key=torch.tensor(batch["negative_key"][0], dtype=torch.int64))
