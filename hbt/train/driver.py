"""Driver: build the Ray Data stream and the Ray `TorchTrainer` for `hbt.train.loop.train_func`.

Output layout of `train(config, prepared_dir, OUT)`:

    OUT/config.yaml     the run's resolved config (`hbt train --resume OUT` starts from it)
    OUT/metrics.jsonl   one JSON line per report of rank 0 (appended to on resume)
    OUT/model/          the final model: HF + sentence-transformers dir, with
                        `hbt_training.json` (the prepared manifest: which questions it saw;
                        the run's config; which checkpoint was exported and why)

The export is the last checkpoint, or with `train.eval_every` the checkpoint with the best
dev `train.select_metric` (`hbt.train.dev`).

While the run lasts, each new line of metrics.jsonl is also shown as one progress line
(`hbt.train.progress`).

The Ray run itself (checkpoints, Ray's own state) lives in `STORAGE/NAME` with
`STORAGE = cluster.storage_path or OUT's parent` and `NAME = OUT's name`: by default the
checkpoints sit inside OUT; with `cluster.storage_path` (s3://, gs://, an NFS path) they sit
where every node reaches them. Ray Train restores a run found at that location
automatically, so a fresh run (`resume=False`) refuses a location that already holds one,
and a resumed run plans its stream from the composer state of the run's last checkpoint.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Callable, Optional

import yaml

from hbt.config import TRAINING_TIME_DATA_KEYS, HbtConfig
from hbt.errors import HbtError
from hbt.io import absolute_location, atomic_directory, write_text_atomic
from hbt.layout import CHECKPOINT_SNAPSHOT, COMPOSER_STATE, METRICS_LOG, MODEL_DIR, RUN_CONFIG, TRAINING_MANIFEST
from hbt.ray_session import cluster_address, ensure_ray
from hbt.shared_paths import check_shared, local_model_dir
from hbt.train.batch import PoolIndex
from hbt.train.dev import load_dev_corpus
from hbt.train.loop import train_func
from hbt.train.progress import MetricsFile, following, progress_line, to_stderr

log = logging.getLogger(__name__)

POLL_INTERVAL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"


def _check_strategy(config: HbtConfig) -> None:
    # Refused here, before any worker starts, rather than failing inside the loop.
    if config.train.strategy == "deepspeed" and importlib.util.find_spec("deepspeed") is None:
        raise HbtError("train.strategy=deepspeed needs the deepspeed package: pip install deepspeed")


def run_location(config: HbtConfig, out: Path) -> str:
    """`STORAGE/NAME` of the Ray run (see the module docstring), as a path or URI."""
    return f"{absolute_location(config.cluster.storage_path or out.parent)}/{out.name}"


def holds_run(run_path: str) -> bool:
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(run_path)
    return fs.get_file_info(f"{path}/{CHECKPOINT_SNAPSHOT}").type != pyarrow.fs.FileType.NotFound


def _resolved_model(config: HbtConfig) -> HbtConfig:
    """Workers run elsewhere (another cwd, another node): a local model dir goes as an absolute
    path, checked to load here rather than in every worker. The passage format is fixed here,
    so the run's config records what it trained on."""
    from hbt.model.encoder import check_model

    update = {"name_or_path": check_model(config.model.name_or_path),
              "candidate_context": config.model.resolved_candidate_context()}
    return config.model_copy(update={"model": config.model.model_copy(update=update)})


def selected_checkpoint(result, config: HbtConfig) -> tuple[object, dict]:
    """(checkpoint to export, why): the best by the dev metric with `train.eval_every`, else the last."""
    from hbt.train.dev import selection_mode

    metric = config.train.select_metric
    if config.train.eval_every is None or not result.best_checkpoints:
        return result.checkpoint, {"selected_by": "last checkpoint"}
    mode = selection_mode(metric)
    scored = [(c, m) for c, m in result.best_checkpoints if m.get(metric) is not None]
    pick = (max if mode == "max" else min)(scored, key=lambda cm: cm[1][metric])
    return pick[0], {"selected_by": f"{mode} {metric}", "step": pick[1]["step"],
                     **{k: v for k, v in pick[1].items() if k.startswith("dev/")}}


def export_model(checkpoint, model_dir: Path, prepared_dir: Path, config: HbtConfig, selection: dict) -> None:
    """Copy the checkpoint's model dir to `model_dir` (all or nothing), with the training manifest."""
    from hbt.data.prepare import load_manifest

    manifest = {**load_manifest(prepared_dir), "train_config": config.model_dump(mode="json"),
                "exported_checkpoint": selection}
    with checkpoint.as_directory() as directory, atomic_directory(model_dir) as staging:
        shutil.copytree(Path(directory) / MODEL_DIR, staging, dirs_exist_ok=True)
        (staging / TRAINING_MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


# What a resumed run must keep: it shapes the batches already drawn (the composer checks its
# records, batch size and world size itself), the meaning of a step, or the weights' form.
RESUME_FIXED = (*TRAINING_TIME_DATA_KEYS, "model", "batching", "train.grad_accum",
                "train.strategy", "train.zero_stage", "train.hard_negatives", "train.temperature",
                "train.symmetric_loss", "train.freeze_embeddings", "train.num_workers")


def _check_resume_config(saved_yaml: Path, config: HbtConfig) -> None:
    """Refuse a `--resume` whose config changes a RESUME_FIXED key of the run's own config."""
    from hbt.config import load_config

    if not saved_yaml.is_file():
        return
    saved = load_config(saved_yaml).model_dump(mode="json")
    new = config.model_dump(mode="json")
    for key in RESUME_FIXED:
        before, after = saved, new
        for part in key.split("."):
            before, after = before[part], after[part]
        if before != after:
            raise HbtError(f"--resume: {key} was {json.dumps(before)} in {saved_yaml}, now {json.dumps(after)}; "
                           "a resumed run keeps it (start a new run to change it)")


def cpus_per_run(config: HbtConfig) -> float:
    """CPUs one training run holds: every rank has a train worker and a tokenize actor at once."""
    cl = config.cluster
    return config.train.num_workers * (cl.cpus_per_worker + cl.cpus_per_data_task)


def check_cpus(config: HbtConfig) -> None:
    """On a Ray that cannot fit one training run, it would wait forever: a local Ray is
    refused; a cluster may scale up."""
    import ray

    cl, workers = config.cluster, config.train.num_workers
    need = cpus_per_run(config)
    have = ray.cluster_resources().get("CPU", 0.0)
    if need <= have + 1e-9:
        return
    message = (f"train.num_workers={workers} needs {workers} * (cluster.cpus_per_worker {cl.cpus_per_worker} + "
               f"cluster.cpus_per_data_task {cl.cpus_per_data_task}) = {need:g} CPUs, but Ray has {have:g}")
    if cluster_address(cl) is None:
        raise HbtError(f"{message}: lower them or raise cluster.num_cpus")
    log.warning("%s; waiting for the cluster to scale up", message)


def _checkpoint_config(config: HbtConfig):
    """Keep the 2 latest checkpoints; with dev evaluation the 2 best by `train.select_metric`
    (Ray always keeps the latest as well, for resuming)."""
    import ray.train

    from hbt.train.dev import selection_mode

    if config.train.eval_every is None:
        return ray.train.CheckpointConfig(num_to_keep=2)
    metric = config.train.select_metric
    return ray.train.CheckpointConfig(num_to_keep=2, checkpoint_score_attribute=metric,
                                      checkpoint_score_order=selection_mode(metric))


def set_report_poll_interval(config: HbtConfig) -> None:
    """Set Ray Train's report poll interval to `train.report_poll_s` (an environment variable).

    Ray Train's controller takes one report per worker per poll, and a worker's result queue
    holds one: with Ray's default poll of 2 s, reporting every 1-s step blocks the loop half
    the time. The driver's value of this variable reaches the controller (Ray propagates it);
    it stays set in this process, for every later Ray Train run."""
    os.environ[POLL_INTERVAL_ENV] = str(config.train.report_poll_s)


def read_result(run_path: str):
    """Ray Train's Result of the run at `run_path`, without the INFO paragraph Ray logs on
    finding the run's checkpoint list (which tells a user to start a new run)."""
    import ray.train

    quieted = logging.getLogger("ray.train.v2._internal.execution.checkpoint.checkpoint_manager")
    level = quieted.level
    quieted.setLevel(logging.WARNING)
    try:
        return ray.train.Result.from_path(run_path)
    finally:
        quieted.setLevel(level)


def composer_state_to_resume(run_path: str) -> Optional[dict]:
    """The composer state of the run at `run_path`'s latest checkpoint; None when it holds no
    run or no checkpoint yet (Ray Train then starts it from step 0)."""
    if not holds_run(run_path):
        return None
    checkpoint = read_result(run_path).checkpoint
    if checkpoint is None:
        return None
    with checkpoint.filesystem.open_input_stream(f"{checkpoint.path}/{COMPOSER_STATE}") as stream:
        return json.loads(stream.read())


def fit(config: HbtConfig, prepared_dir: Path, run_path: str, callbacks: list, dev=None,
        composer_state: Optional[dict] = None, index: Optional[PoolIndex] = None):
    """Train `config` on the pool at `prepared_dir` as the Ray run at `run_path`; returns Ray Train's Result.

    The prepared pairs stream into a `TorchTrainer` running `train_func`; `run_path` is
    `STORAGE/NAME`. `dev`: the dev corpus (with `train.eval_every`); `composer_state`: where a
    resumed run's stream starts; `index`: the pool's (`check_pool`), read once."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from hbt.train.stream import build_train_datasets, train_data_config

    tc = config.train
    storage, name = run_path.rsplit("/", 1)
    trainer = TorchTrainer(
        train_func,
        train_loop_config={"hbt": config.model_dump(mode="json"), "dev": None if dev is None else ray.put(dev)},
        datasets=build_train_datasets(config, prepared_dir, tc.num_workers, composer_state, index),
        dataset_config=train_data_config(),
        scaling_config=ray.train.ScalingConfig(
            num_workers=tc.num_workers, use_gpu=config.cluster.use_gpu,
            resources_per_worker={"CPU": config.cluster.cpus_per_worker}),
        run_config=ray.train.RunConfig(
            name=name, storage_path=storage,
            failure_config=ray.train.FailureConfig(max_failures=tc.max_failures),
            checkpoint_config=_checkpoint_config(config),
            callbacks=callbacks),
    )
    # A failure raises here (Ray Train's TrainingFailedError, the workers' errors inside:
    # the CLI shows a user error among them as one line, `hbt.errors.user_error`).
    return trainer.fit()


def check_trainable(config: HbtConfig, prepared_dir: Path) -> HbtConfig:
    """What can be checked of a run before Ray starts: the strategy's package, the prepared
    pool and the model; -> the config with the model resolved (`_resolved_model`)."""
    from hbt.data.pool import shard_paths

    _check_strategy(config)
    shard_paths(prepared_dir)  # a one-line error when the prepared dir holds no pool
    return _resolved_model(config)


def check_pool(config: HbtConfig, prepared_dir: Path) -> PoolIndex:
    """The pool must fill a global batch of distinct positives: say so before Ray starts.
    -> the pool's index (its three index columns: the only read of the pool in the driver)."""
    from hbt.train.stream import build_composer

    index = PoolIndex.read(prepared_dir)
    build_composer(index, config, config.train.num_workers)
    return index


def train(config: HbtConfig, prepared_dir: Path, out_dir: Path, resume: bool = False,
          progress: Optional[Callable[[str], None]] = to_stderr) -> Path:
    """Train with `config` on `prepared_dir`'s pool (`hbt.data.pool`); returns OUT (see module docstring).

    `progress` receives one line per report while training runs (None: silent).
    """
    out = Path(out_dir).resolve()
    run_path = run_location(config, out)
    if holds_run(run_path) and not resume:
        raise HbtError(f"{run_path} already holds a training run: pass resume=True (--resume) "
                       "or choose another output directory")
    if resume and not holds_run(run_path):
        raise HbtError(f"nothing to resume: {run_path} holds no training run")
    prepared_dir = Path(prepared_dir).resolve()
    config = check_trainable(config, prepared_dir)
    if resume:
        _check_resume_config(out / RUN_CONFIG, config)
    dev = load_dev_corpus(prepared_dir) if config.train.eval_every is not None else None
    index = check_pool(config, prepared_dir)
    ensure_ray(config.cluster)
    check_cpus(config)
    check_shared(reads={"data.prepared_dir": str(prepared_dir),
                        "model.name_or_path": local_model_dir(config.model.name_or_path)},
                 writes={"the run's storage (cluster.storage_path or --out's parent)": run_path})
    set_report_poll_interval(config)
    composer_state = composer_state_to_resume(run_path) if resume else None
    if resume and composer_state is None:
        raise HbtError(f"{run_path} holds no checkpoint to resume from")

    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / RUN_CONFIG, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    metrics_path = out / METRICS_LOG
    if not resume:
        metrics_path.write_text("")
    metrics_path.touch()
    watching = (following(metrics_path, lambda line: progress(progress_line(json.loads(line), config.train.steps)))
                if progress is not None else contextlib.nullcontext())
    with watching:
        result = fit(config, prepared_dir, run_path, [MetricsFile(str(metrics_path))], dev, composer_state, index)
    if result.checkpoint is None:
        raise HbtError("training finished without a checkpoint")
    checkpoint, selection = selected_checkpoint(result, config)
    export_model(checkpoint, out / MODEL_DIR, prepared_dir, config, selection)
    log.info("model exported to %s", out / MODEL_DIR)
    return out
