"""Driver: build and run the Ray `TorchTrainer` for `hbt.train.loop.train_func`.

Output layout of `train(config, prepared_dir, OUT)`:

    OUT/metrics.jsonl   one JSON line per report of rank 0 (appended to on resume)
    OUT/model/          the final model (HF dir, loads with AutoModel / Encoder.from_config)

The Ray run itself (checkpoints, Ray's own state) lives in `STORAGE/NAME` with
`STORAGE = cluster.storage_path or OUT's parent` and `NAME = OUT's name`: by default the
checkpoints sit inside OUT. Ray Train restores a run found at that location automatically,
so a fresh run (`resume=False`) refuses a location that already holds one.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

from ray.train import UserCallback

from hbt.config import HbtConfig
from hbt.errors import HbtError
from hbt.io import atomic_directory
from hbt.train.loop import TRAIN_PAIRS, train_func

log = logging.getLogger(__name__)

SNAPSHOT = "checkpoint_manager_snapshot.json"


class MetricsFile(UserCallback):
    """Append rank 0's reported metrics to a JSON-lines file (runs in Ray's train controller)."""

    def __init__(self, path: str):
        self.path = path

    def after_report(self, run_context, metrics: List[Dict[str, Any]], checkpoint) -> None:
        if not metrics:
            return
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(json.dumps(metrics[0], default=str) + "\n")


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def _ensure_ray(config: HbtConfig) -> None:
    import ray

    if ray.is_initialized():
        return
    cluster = config.cluster
    if cluster.address is None:
        ray.init(num_cpus=cluster.num_cpus, object_store_memory=cluster.object_store_memory,
                 include_dashboard=True, log_to_driver=False)
    else:
        ray.init(address=cluster.address)


def _absolute_model_path(config: HbtConfig) -> HbtConfig:
    """Workers may run elsewhere (another cwd): pass an existing local model dir as an absolute path."""
    path = Path(config.model.name_or_path).expanduser()
    if path.exists():
        return config.model_copy(update={"model": config.model.model_copy(update={"name_or_path": str(path.resolve())})})
    return config


def train(config: HbtConfig, prepared_dir: Path, out_dir: Path, resume: bool = False) -> Path:
    """Train with `config` on `prepared_dir/train_pairs.parquet`; returns OUT (see module docstring)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    if config.train.strategy == "deepspeed":
        # Refused here, before any worker starts, rather than failing inside the loop.
        raise HbtError("train.strategy=deepspeed is not implemented yet; use --set train.strategy=ddp")
    prepared_dir = Path(prepared_dir).resolve()
    if not (prepared_dir / TRAIN_PAIRS).is_file():
        raise HbtError(f"{prepared_dir / TRAIN_PAIRS} not found: run `hbt data prepare` first")
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    storage = config.cluster.storage_path or str(out.parent)
    name = out.name
    if _is_local(storage):
        storage = str(Path(storage.removeprefix("file://")).resolve())
        existing = Path(storage) / name / SNAPSHOT
        if existing.exists() and not resume:
            raise HbtError(f"{existing.parent} already holds a training run: pass resume=True (--resume) "
                           "or choose another output directory")

    config = _absolute_model_path(config)
    _ensure_ray(config)

    metrics_path = out / "metrics.jsonl"
    if not resume:
        metrics_path.write_text("")
    tc = config.train
    trainer = TorchTrainer(
        train_func,
        train_loop_config={"hbt": config.model_dump(mode="json"), "prepared_dir": str(prepared_dir)},
        scaling_config=ray.train.ScalingConfig(
            num_workers=tc.num_workers, use_gpu=config.cluster.use_gpu,
            resources_per_worker={"CPU": config.cluster.cpus_per_worker}),
        run_config=ray.train.RunConfig(
            name=name, storage_path=storage,
            failure_config=ray.train.FailureConfig(max_failures=tc.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=[MetricsFile(str(metrics_path))]),
    )
    result = trainer.fit()
    if result.error is not None:
        first_line = str(result.error).strip().splitlines()[0] if str(result.error).strip() else type(result.error).__name__
        raise HbtError(f"training failed: {first_line}") from result.error
    if result.checkpoint is None:
        raise HbtError("training finished without a checkpoint")
    model_dir = out / "model"
    with result.checkpoint.as_directory() as directory, atomic_directory(model_dir) as staging:
        shutil.copytree(Path(directory) / "model", staging, dirs_exist_ok=True)
    log.info("model exported to %s", model_dir)
    return out
