"""Driver of `hbt tune`: a Ray Tune sweep whose trials each train with Ray Train.

    DIR/sweep.yaml      what the sweep runs: the config tree, the space file, the tune settings
                        (`--resume DIR` reads them back)
    DIR/runs/TRIAL/     each trial's Ray Train run (checkpoints, removed once the sweep ends)
    DIR/<Tune's own>    experiment state, one dir per trial (result.json, TensorBoard events)
    DIR/trials.csv ...  the outputs of `hbt.tune.outputs` and `hbt.tune.plots`

As for `hbt train`, Tune's experiment and the trials' runs live in `STORAGE/NAME` (`STORAGE =
cluster.storage_path or DIR's parent`, `NAME = DIR's name`), so on a cluster they sit where
every node reaches them; the outputs are written to DIR on the driver.

Trials are a function trainable that fits a `TorchTrainer` (Ray Train V2 + Tune), each
reporting its dev evaluations (`hbt.tune.trial.DevReport`); ASHA (`tune.scheduler: asha`)
stops trials that trail at a rung of `steps`. Ctrl-C stops the sweep with its state saved;
`hbt tune --resume DIR` runs the trials that had not ended (a trial cut short continues from
its last checkpoint) and never reruns an ended one.
"""

from __future__ import annotations

import contextlib
import io
import math
import time
from pathlib import Path
from typing import Callable, Optional

import yaml
from ray import tune

from hbt.config import TRAINING_TIME_DATA_KEYS, HbtConfig, TuneConfig, load_config
from hbt.errors import HbtError
from hbt.io import write_text_atomic
from hbt.ray_session import cluster_address, ensure_ray
from hbt.shared_paths import check_shared, local_model_dir
from hbt.train.dev import load_dev_corpus, selection_mode
from hbt.train.driver import (
    check_cpus,
    check_pool,
    check_trainable,
    cpus_per_run,
    holds_run,
    run_location,
    set_report_poll_interval,
)
from hbt.train.progress import to_stderr
from hbt.tune.space import SearchSpace, grid_size, load_space, parse_space
from hbt.tune.trial import TRIAL_CPUS, SweepTrials, run_trial

SWEEP_STATE = "sweep.yaml"
RUNS = "runs"


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C ended the sweep before every trial did; its state is saved for `--resume`."""


def default_concurrency(config: HbtConfig, settings: TuneConfig) -> Optional[int]:
    """`tune.max_concurrent`, else on a local Ray as many trials as its CPUs hold at once (a
    cluster: as many as it fits, Tune's default)."""
    if settings.max_concurrent is not None or cluster_address(config.cluster) is not None:
        return settings.max_concurrent
    return max(1, math.floor((config.cluster.num_cpus or 1) / (cpus_per_run(config) + TRIAL_CPUS) + 1e-9))


class ProgressLines(tune.Callback):
    """One line per trial result and per ended trial, on stderr."""

    def __init__(self, metric: str, keys: list[str]):
        self.metric, self.keys = metric, keys

    def _params(self, trial) -> str:
        def shown(value) -> str:
            return f"{value:.4g}" if isinstance(value, float) else str(value)

        return "  ".join(f"{key}={shown(trial.config.get(key))}" for key in self.keys)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        value = result.get(self.metric)
        shown = f"{value:.4f}" if isinstance(value, float) else "-"
        to_stderr(f"trial {trial.trial_id}  step {result.get('steps')}  {self.metric} {shown}  ({self._params(trial)})")

    def on_trial_complete(self, iteration, trials, trial, **info):
        to_stderr(f"trial {trial.trial_id}  ended")

    def on_trial_error(self, iteration, trials, trial, **info):
        to_stderr(f"trial {trial.trial_id}  failed (see trials.csv)")


def fit_quietly(tuner):
    """`tuner.fit()` without the start-up table and result-path lines Tune prints on stdout
    whatever its verbosity: hbt reports progress on stderr, and stdout keeps the verb's result."""
    with contextlib.redirect_stdout(io.StringIO()):
        return tuner.fit()


def _max_steps(space: SearchSpace, base: dict, settings: TuneConfig) -> int:
    """The longest trial's steps (ASHA's max_t): the base config's, or the largest in the space."""
    steps = space.spec.space.get("train.steps")
    fixed = space.trial_config(base, {}, settings).train.steps
    return max([fixed, *steps.extremes()]) if steps is not None else fixed


def _scheduler(settings: TuneConfig, max_t: int):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if settings.scheduler == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(time_attr="steps", max_t=max_t, grace_period=settings.grace_period or settings.eval_every,
                         reduction_factor=settings.reduction_factor)


def _check_pool_languages(space: SearchSpace, base: dict, settings: TuneConfig, pool_languages: list[str]) -> None:
    """Every trial trains on languages the prepared pool holds: the base config's training
    languages, or, when the space varies them, any of the `data.languages` it may choose from."""
    varied = set(TRAINING_TIME_DATA_KEYS) & (set(space.spec.space) | set(space.spec.set))
    if not varied:
        needed = [space.trial_config(base, {}, settings).data.train_languages]
    else:
        listed = space.spec.space.get("data.languages")
        needed = listed.extremes() if listed is not None else [
            space.trial_config(base, {}, settings).data.languages]
    for languages in needed:
        missing = sorted(set(languages) - set(pool_languages))
        if missing:
            raise HbtError(f"{space.path}: trials would train on {missing}, which the prepared pool does not "
                           f"hold (it has {pool_languages}): prepare with them")


def _trainable(space: SearchSpace, base: dict, settings: TuneConfig, prepared_dir: Path, sweep_path: str, dev):
    bound = tune.with_parameters(run_trial, trials=SweepTrials(base, space, settings, str(prepared_dir),
                                                               f"{sweep_path}/{RUNS}", dev))
    return tune.with_resources(bound, {"cpu": TRIAL_CPUS})


def _remove_checkpoints(run_path: str) -> None:
    """Remove the checkpoint dirs of the Ray run at `run_path` (once its product is exported or
    the sweep has ended: a sweep of e5-small trials holds GBs of them)."""
    import pyarrow.fs

    fs, root = pyarrow.fs.FileSystem.from_uri(run_path)
    if fs.get_file_info(root).type == pyarrow.fs.FileType.NotFound:
        return
    for entry in fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=False)):
        if entry.type == pyarrow.fs.FileType.Directory and entry.base_name.startswith("checkpoint_"):
            fs.delete_dir(entry.path)


def _remove_trial_checkpoints(sweep_path: str) -> None:
    """Every trial has ended: their checkpoints serve no resume any more (the sweep's product
    is `best.yaml`)."""
    import pyarrow.fs

    fs, root = pyarrow.fs.FileSystem.from_uri(f"{sweep_path}/{RUNS}")
    if fs.get_file_info(root).type == pyarrow.fs.FileType.NotFound:
        return
    for info in fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=False)):
        if info.type == pyarrow.fs.FileType.Directory:
            _remove_checkpoints(f"{sweep_path}/{RUNS}/{info.base_name}")


def _write_state(out: Path, base: dict, space: SearchSpace, settings: TuneConfig) -> None:
    state = {"config": base, "space_file": str(space.path), "space": space.raw,
             "tune": settings.model_dump(mode="json")}
    write_text_atomic(out / SWEEP_STATE, yaml.safe_dump(state, sort_keys=False))


def _read_state(out: Path) -> tuple[dict, SearchSpace, TuneConfig]:
    path = out / SWEEP_STATE
    if not path.is_file():
        raise HbtError(f"nothing to resume: {path} not found (not a `hbt tune` output dir?)")
    state = yaml.safe_load(path.read_text(encoding="utf-8"))
    space = parse_space(Path(state["space_file"]), state["space"])
    return state["config"], space, TuneConfig.model_validate(state["tune"])


def tune_sweep(config: Optional[HbtConfig], space_path: Optional[Path], out_dir: Path, resume: bool = False,
               num_samples: Optional[int] = None, max_concurrent: Optional[int] = None,
               progress: Callable[[str], None] = to_stderr) -> Path:
    """Run the sweep of `space_path` over `config` into `out_dir`; returns `out_dir`.

    `num_samples`, `max_concurrent` override the config's and the space's `tune` settings. With
    `resume`, the sweep in `out_dir` continues as it was started (the other arguments unused)."""
    from ray.tune.search import BasicVariantGenerator

    from hbt.data.prepare import load_manifest
    from hbt.tune.outputs import best_row, summary_markdown, trial_rows, write_best, write_tables
    from hbt.tune.plots import write_plots

    started = time.perf_counter()
    out = Path(out_dir).resolve()
    if resume:  # the sweep as it was started: Tune restores its samples and its search state
        base, space, settings = _read_state(out)
        config = load_config(None, [], base=base)
    else:
        space = load_space(space_path)
        settings = space.tune_settings(config.tune, num_samples, max_concurrent)
        space.check(config.model_dump(mode="json"))  # the space first: it needs nothing on disk
    sweep_path = run_location(config, out)
    if resume and not tune.Tuner.can_restore(sweep_path):
        raise HbtError(f"nothing to resume: {sweep_path} holds no sweep")
    if not resume and (tune.Tuner.can_restore(sweep_path) or holds_run(sweep_path)):
        raise HbtError(f"{sweep_path} already holds a sweep: continue it with --resume {out_dir} "
                       "or choose another output directory")
    prepared_dir = Path(config.data.prepared_dir).resolve()
    if not resume:
        config = check_trainable(config, prepared_dir)
        check_pool(config, prepared_dir)
        base = config.model_dump(mode="json")
    _check_pool_languages(space, base, settings, load_manifest(prepared_dir)["train_languages"])
    dev = load_dev_corpus(prepared_dir)
    set_report_poll_interval(config)
    ensure_ray(config.cluster)
    check_cpus(config)
    check_shared(reads={"data.prepared_dir": str(prepared_dir),
                        "model.name_or_path": local_model_dir(config.model.name_or_path)},
                 writes={"the sweep dir (--out)": str(out), "the sweep's storage (cluster.storage_path)": sweep_path})
    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        _write_state(out, base, space, settings)

    trainable = _trainable(space, base, settings, prepared_dir, sweep_path, dev)
    if resume:
        tuner = tune.Tuner.restore(sweep_path, trainable, resume_unfinished=True, resume_errored=False)
    else:
        tuner = tune.Tuner(
            trainable, param_space=space.param_space(),
            tune_config=tune.TuneConfig(
                metric=settings.metric, mode=selection_mode(settings.metric),
                scheduler=_scheduler(settings, _max_steps(space, base, settings)),
                # Tune ignores max_concurrent_trials beside a search generator: it goes to the generator.
                search_alg=BasicVariantGenerator(random_state=settings.search_seed,
                                                 max_concurrent=default_concurrency(config, settings) or 0),
                num_samples=settings.num_samples),
            run_config=tune.RunConfig(name=out.name, storage_path=sweep_path.rsplit("/", 1)[0], verbose=0,
                                      callbacks=[ProgressLines(settings.metric, space.keys)]))
    grid = fit_quietly(tuner)
    # Tune returns after Ctrl-C too: then a trial has not ended, or not all have been created.
    expected = grid_size(space) * settings.num_samples
    unfinished = [r for r in grid if r.error is None and not (r.metrics or {}).get("done")]
    if unfinished or len(grid) < expected:
        raise SweepInterrupted(f"{expected - len(grid) + len(unfinished)} of {expected} trials had not ended")

    rows = trial_rows(grid, space, base, settings)
    best = best_row(rows, settings)
    write_tables(out, rows)
    if best is not None:
        write_best(out, best, space, base, settings)
    plots = write_plots(out, rows, settings.metric)
    write_text_atomic(out / "summary.md", summary_markdown(rows, space, settings, best, plots,
                                                          time.perf_counter() - started))
    _remove_trial_checkpoints(sweep_path)
    if all(row["status"] == "error" for row in rows):
        raise HbtError(f"every trial failed; the first: {rows[0]['stop_reason']}")
    progress(f"{len(rows)} trials; best: {best['trial_id'] if best else 'none completed'}")
    return out

