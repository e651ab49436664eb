"""The Ray Data path that streams whole composed, tokenized steps into each Ray Train worker.

    read_train_table(prepared_dir)                     driver: the pair texts, once
      -> HybridBatchComposer (seeded)                  driver: the plan, ids only
      -> TokenizeSteps (callable class, 1 step a call) one actor per rank's dataset
      -> ray.train.get_dataset_shard("train_rank{r}")  worker r: iter_steps(shard)

One dataset row is one (micro-step, rank) unit: that rank's whole slice of the composer's
global batch, tokenized in the layout of `hbt.train.batch`:

    step            int                 composer batch index (a micro-step: one optimizer
                                        step is `train.grad_accum` of them)
    kind            str                 "xx" or "xy"
    composer_state  str                 JSON of the composer's state_dict() after this
                                        step: what a checkpoint taken here must hold
    parallel_id     (B,) str            the slice's records, in composer order
    input_ids       (B * (2 + N), T)    int64; T varies per step (a variable-shaped
    attention_mask  (B * (2 + N), T)    int64   tensor column)
    negative_mask   (B, N)              bool
    positive_key    (B,)                int64 key ids: the loss masks false negatives
    negative_key    (B, N)              int64   (`hbt.train.batch`, `hbt.losses.infonce`)

Why plan on the driver and keep one dataset per rank: the composer is the single source of
batch order (a resumed run must replay exactly the uninterrupted sequence), and it is cheap
(ids only), so it runs once, on the driver, where the table is read anyway. Each rank's
steps become their own dataset, handed to the trainer unsplit (`DataConfig(
datasets_to_split=[])`) so worker r reads exactly `train_rank{r}`; `streaming_split` would
deal rows to whichever worker asks first. Rows stay in step order because the datasets run
with `preserve_order=True`, which must reach the trainer as `dataset_config=
train_data_config()` (see `ordered_options`); `iter_steps` checks the order.

The pair texts travel to the tokenize actors as one object ref of the Arrow table, read
once by the driver (local paths or s3://, gs://... URIs), never re-read per actor.

CPU budget (2 cores, measured here with 2 workers): the trainer reserves `world_size *
cluster.cpus_per_worker` (2 * 0.5) and each rank's tokenize actor takes
`cluster.cpus_per_data_task` (0.5), so the Ray resources add up to the 2 CPUs exactly. Inside
the workers each rank's Ray Data executor saw a CPU budget of 1 (2 minus Train's 1), then 0
once both ranks' datasets ran, and reported itself backpressured; it still made progress: the fixed one-actor pool (`ActorPoolStrategy(size=1)`) starts its actor
regardless, and a 0.5-CPU *task* map also ran, one task at a time. Actors are used because
they load the tokenizer and index the pair texts once per dataset, not once per task; the
0.25-CPU actor-pool hang noted in DESIGN.md was not reproduced with this fixed-size pool.
Nothing else may want CPU while training runs: the table is read before `fit`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from hbt.config import HbtConfig, ModelConfig
from hbt.data.composer import ComposerConfig, HybridBatchComposer
from hbt.model.encoder import resolve_model_name
from hbt.train.batch import PairTexts, read_train_table, tokenize_step

if TYPE_CHECKING:
    import ray.data
    import ray.train
    import torch


@dataclass
class TokenizedStep:
    """One rank's share of one micro-step, as torch tensors (layout: `hbt.train.batch`)."""

    step: int
    kind: str
    composer_state: str             # JSON: the composer's state after this step
    parallel_ids: list[str]         # (B,)
    input_ids: "torch.Tensor"       # (B * (2 + N), T) int64
    attention_mask: "torch.Tensor"  # (B * (2 + N), T) int64
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


def build_composer(pairs: PairTexts, config: HbtConfig, world_size: int, rank: int = 0) -> HybridBatchComposer:
    """The run's composer: the pairs' records and positive keys, `config.batching`."""
    return HybridBatchComposer(pairs.records(), composer_config(config), rank=rank, world_size=world_size,
                               positive_keys=pairs.positive_keys())


def plan_micro_steps(pairs: PairTexts, config: HbtConfig, world_size: int, stop: int,
                     composer_state: dict | None = None) -> list[list[dict]]:
    """Per rank, one plan row per micro-step from the composer's position up to `stop`.

    The composer starts fresh, or from `composer_state` (a checkpoint's `composer.json`; a
    state saved under another config, world size or record set is refused). Rank r's row of
    step s holds exactly the examples of the s-th
    `build_composer(pairs, config, world_size, rank=r).next_batch()`, and every rank's row the
    positive keys of the whole global step (`step_keys`: no hard negative may be one of them).
    """
    composer = build_composer(pairs, config, world_size)
    if composer_state is not None:
        composer.load_state_dict(composer_state)
    keys = pairs.positive_keys()
    b = config.batching.batch_size
    plans: list[list[dict]] = [[] for _ in range(world_size)]
    while composer.step < stop:
        batch = composer.next_global_batch()
        state = json.dumps(composer.state_dict())
        step_keys = sorted({keys[pid] for pid, _, _ in batch.examples})
        for rank, plan in enumerate(plans):
            pids, q_langs, p_langs = zip(*batch.examples[rank * b:(rank + 1) * b])
            plan.append({"step": batch.step, "kind": batch.kind, "composer_state": state,
                         "parallel_id": list(pids), "query_lang": list(q_langs), "passage_lang": list(p_langs),
                         "step_keys": step_keys})
    return plans


class TokenizeSteps:
    """Ray Data callable class: plan rows -> tokenized rows, one step per call.

    `__init__` loads the tokenizer and indexes the pair texts once per actor; `pairs` is an
    object ref of the Arrow table (`ray.put`), so the actor fetches it from the object store.
    """

    def __init__(self, pairs, model: dict, num_negatives: int):
        import ray
        from transformers import AutoTokenizer

        self.model_cfg = ModelConfig.model_validate(model)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_cfg.name_or_path)
        self.pairs = PairTexts(ray.get(pairs), self.model_cfg.resolved_candidate_context())
        self.num_negatives = num_negatives

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # batch_size=1: one step a call, so T is that step's own padded length.
        (step,) = batch["step"].tolist()
        examples = list(zip(batch["parallel_id"][0], batch["query_lang"][0], batch["passage_lang"][0]))
        texts = self.pairs.texts(examples, self.num_negatives, step, frozenset(batch["step_keys"][0]))
        tokens = tokenize_step(self.tokenizer, self.model_cfg, texts)
        return {"step": batch["step"], "kind": batch["kind"], "composer_state": batch["composer_state"],
                "parallel_id": batch["parallel_id"],
                **{key: value[None] for key, value in tokens.items()}}  # leading axis: 1 row


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
                         composer_state: dict | None = None) -> dict[str, "ray.data.Dataset"]:
    """`{dataset_name(r): rank r's tokenized micro-steps}` for r in `range(world_size)`.

    The micro-steps run from the composer's position (0, or that of `composer_state`: a
    resumed run's last checkpoint) to `num_micro_steps(config)`. Lazy: tokenizing runs when
    a worker iterates its shard.
    """
    import ray
    import ray.data

    table = read_train_table(prepared_dir, config.data.train_languages)
    plans = plan_micro_steps(PairTexts(table), config, world_size, num_micro_steps(config), composer_state)
    pairs = ray.put(table)
    model = config.model.model_dump(mode="json")
    model["name_or_path"] = resolve_model_name(model["name_or_path"])  # actors run in other cwds

    datasets = {}
    for rank, plan in enumerate(plans):
        ds = ray.data.from_items(plan).map_batches(
            TokenizeSteps,
            fn_constructor_kwargs={"pairs": pairs, "model": model,
                                   "num_negatives": config.train.hard_negatives},
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
            # torch.tensor copies: Ray hands out read-only views of its blocks.
            input_ids=torch.tensor(batch["input_ids"][0], dtype=torch.int64),
            attention_mask=torch.tensor(batch["attention_mask"][0], dtype=torch.int64),
            negative_mask=torch.tensor(batch["negative_mask"][0], dtype=torch.bool),
            positive_key=torch.tensor(batch["positive_key"][0], dtype=torch.int64),
            negative_key=torch.tensor(batch["negative_key"][0], dtype=torch.int64))
