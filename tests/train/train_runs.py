"""Helpers of the training tests: a run's config, its metrics, its batch sequence."""

import json
import math
from pathlib import Path

CHANCE = math.log(8)  # InfoNCE over 8 candidates: 2 workers * 4 pairs, no hard negatives


def make_config(model_dir: Path, prepared: Path, **train):
    from hbt.config import load_config

    overrides = {"steps": 6, "lr": 5e-3, "num_workers": 2, "strategy": "ddp", "checkpoint_every": 100,
                 "freeze_embeddings": False, "temperature": 0.1, **train}
    sets = [f"model.name_or_path={model_dir}", "model.max_length=48", "data.languages=[en,de,es]",
            f"data.prepared_dir={prepared}", "batching.batch_size=4", "batching.mode=hybrid", "batching.seed=3"]
    return load_config(None, sets + [f"train.{key}={value}" for key, value in overrides.items()])


def read_metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]


def step_ids(metrics: list[dict]) -> list[list[str]]:
    return [ids for row in metrics for ids in row["batch_ids"]]


def check_metrics(metrics: list[dict], steps: int, grad_accum: int) -> None:
    assert [m["step"] for m in metrics] == list(range(steps))
    for m in metrics:
        assert math.isfinite(m["loss"]) and m["pairs_per_s"] > 0 and m["tokens_per_s"] > m["pairs_per_s"]
        assert [len(ids) for ids in m["batch_ids"]] == [4] * grad_accum  # grad_accum composer batches a step
        kinds = [k for k in ("xx", "xy") if m[f"loss_{k}"] is not None]
        assert m["kind"] in kinds and all(math.isfinite(m[f"loss_{k}"]) for k in kinds)


def assert_loss_falls(metrics: list[dict], window: int) -> None:
    losses = [m["loss"] for m in metrics]
    first, last = sum(losses[:window]) / window, sum(losses[-window:]) / window
    assert first > 0.85 * CHANCE and last < 0.6 * CHANCE, losses


