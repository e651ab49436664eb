"""Driver of `hbt experiment`: prepare, train every arm x seed on Ray, evaluate, report.

    DIR/experiment.yaml       the experiment as started: spec, size, base config (`--resume DIR`)
    DIR/prepared/POOL/        the prepared data (one pool, unless arms change how it is prepared)
    DIR/runs/ARM-sSEED/       each run's Ray Train run, while it lasts (removed once exported)
    DIR/tune/                 Tune's state of the trials
    DIR/metrics/ARM-sSEED.jsonl  each run's reports (loss, lr, pairs/s per step; dev metrics every
                              `train.eval_every` steps: the curves), as `hbt train`'s
    DIR/models/ARM-sSEED/     each trained model (all or nothing)
    DIR/eval/CORPUS/RUN/      `hbt eval`'s outputs for every run (an untrained arm: RUN = ARM)
    DIR/report.md, report.json, curves.png, comparison_CORPUS.png, heatmaps/CORPUS_ARM.png

Every trained run gets the same data, steps and seed list; the runs are the trials of one Tune
grid, so they run side by side where the CPUs allow (on a laptop: one at a time). Each stage
skips what an earlier, interrupted invocation finished: a prepared pool, an exported model, an
evaluation. A run cut short continues from its last checkpoint, as `hbt train --resume` does.
As for `hbt train`, the runs live in `STORAGE/DIR_NAME` (`cluster.storage_path`, else DIR's
parent), so on a cluster they sit where every node reaches them.
"""

from __future__ import annotations

import contextlib
import json
import time
from functools import partial
from pathlib import Path
from typing import Callable, Optional

import yaml

from hbt.config import HbtConfig, load_config
from hbt.errors import HbtError, RunFailed, user_error
from hbt.experiment.spec import Experiment, RunPlan, load_experiment
from hbt.io import write_text_atomic
from hbt.layout import MANIFEST, RESULTS
from hbt.train.progress import following, progress_line, to_stderr

STATE = "experiment.yaml"


class ExperimentInterrupted(KeyboardInterrupt):
    """Ctrl-C ended the experiment early; `hbt experiment --resume DIR` continues it."""


def _write_state(out: Path, experiment: Experiment) -> None:
    state = {"spec_file": str(experiment.path), "size": experiment.size, "spec": experiment.raw,
             "config": experiment.base}
    write_text_atomic(out / STATE, yaml.safe_dump(state, sort_keys=False))


def _read_state(out: Path) -> Experiment:
    path = out / STATE
    if not path.is_file():
        raise HbtError(f"nothing to resume: {path} not found (not a `hbt experiment` output dir?)")
    state = yaml.safe_load(path.read_text(encoding="utf-8"))
    return Experiment(Path(state["spec_file"]), state["spec"], state["size"], state["config"])


def _prepare_pools(experiment: Experiment, out: Path, progress) -> dict[str, Path]:
    """Run name -> its prepared dir; a pool an earlier invocation prepared is kept."""
    from hbt.data.prepare import prepare

    prepared = {}
    for pool, plans in experiment.pools().items():
        target = out / "prepared" / pool
        if not (target / MANIFEST).is_file():
            progress(f"preparing the data of {', '.join(sorted({p.arm for p in plans}))} in {target}")
            prepare(plans[0].config.data, target)
        prepared.update({plan.name: target for plan in plans})
    return prepared


def _checked_configs(experiment: Experiment, prepared: dict[str, Path]) -> dict[str, HbtConfig]:
    """Every run's config on its pool, its model checked to load, its pool to fill a batch."""
    from hbt.train.driver import check_pool, check_trainable

    configs = {}
    for plan in experiment.runs.values():
        config = load_config(None, [f"data.prepared_dir={prepared[plan.name]}"],
                             base=plan.config.model_dump(mode="json"))
        if plan.seed is not None:
            config = check_trainable(config, prepared[plan.name])
            check_pool(config, prepared[plan.name])
        configs[plan.name] = config
    return configs


def _check_corpora(experiment: Experiment) -> None:
    """A corpus dir that is not there is said before any run trains, not after."""
    from hbt.eval.beir import is_beir_dir

    for corpus in experiment.corpora:
        path = experiment.corpus_dir(corpus)
        if isinstance(path, str) and not is_beir_dir(path):  # a URI: read as a BEIR dir only
            raise HbtError(f"{experiment.path}: corpus {corpus.name}: {path} is not a BEIR dir")
        if isinstance(path, Path) and not path.is_dir():
            raise HbtError(f"{experiment.path}: corpus {corpus.name}: {path} is not a directory")


def _finished(run_path: str, steps: int) -> bool:
    """Whether the Ray run at `run_path` reached its last step (its final checkpoint)."""
    from hbt.train.driver import holds_run, read_result

    if not holds_run(run_path):
        return False
    result = read_result(run_path)
    return result.checkpoint is not None and (result.metrics or {}).get("step", -1) + 1 >= steps


def _run_progress(progress, total: int):
    """A Tune callback: one line as each run starts and ends."""
    from ray import tune

    class RunProgress(tune.Callback):
        ended = 0

        def on_trial_start(self, iteration, trials, trial, **info):
            progress(f"training {trial.config['run']}")

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.ended += 1
            progress(f"trained {trial.config['run']} ({self.ended} of {total})")

        def on_trial_error(self, iteration, trials, trial, **info):
            progress(f"run {trial.config['run']} failed")

    return RunProgress()


def _report_line(progress, name: str, config: HbtConfig, line: str) -> None:
    from hbt.train.driver import pairs_per_step

    progress(f"{name}: {progress_line(json.loads(line), config.train.steps, pairs_per_step(config))}")


def _train(plans: list[RunPlan], configs: dict[str, HbtConfig], prepared: dict[str, Path], runs_path: str,
           tune_path: str, metrics_dir: Path, base: HbtConfig, progress) -> None:
    """The runs as the trials of one Tune grid (each a TorchTrainer, `hbt.experiment.trial`)."""
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    from hbt.experiment.trial import ExperimentRuns
    from hbt.train.dev import load_dev_corpus
    from hbt.tune.sweep import default_concurrency, fit_quietly
    from hbt.tune.trial import TRIAL_CPUS, run_trial

    devs = {}
    for plan in plans:
        dev_needed = configs[plan.name].train.eval_every is not None
        devs[plan.name] = load_dev_corpus(prepared[plan.name]) if dev_needed else None
    runs = ExperimentRuns(configs={p.name: configs[p.name].model_dump(mode="json") for p in plans},
                          prepared={p.name: str(prepared[p.name]) for p in plans}, devs=devs, runs_path=runs_path,
                          metrics_dir=str(metrics_dir))
    bound = tune.with_parameters(run_trial, trials=runs)
    storage, name = tune_path.rsplit("/", 1)
    tuner = tune.Tuner(
        tune.with_resources(bound, {"cpu": TRIAL_CPUS}),
        param_space={"run": tune.grid_search([plan.name for plan in plans])},
        tune_config=tune.TuneConfig(search_alg=BasicVariantGenerator(
            max_concurrent=default_concurrency(base, base.tune) or 0)),
        run_config=tune.RunConfig(name=name, storage_path=storage, verbose=0,
                                  callbacks=[_run_progress(progress, len(plans))]))
    progress(f"{len(plans)} run(s) to train: {', '.join(plan.name for plan in plans)}")
    with contextlib.ExitStack() as watching:
        for plan in plans:  # each run's reports as `hbt train` shows them, the run named first
            watching.enter_context(following(metrics_dir / f"{plan.name}.jsonl", partial(
                _report_line, progress, plan.name, configs[plan.name])))
        results = fit_quietly(tuner)
    for result in results:
        if result.error is None:
            continue
        name, cause = result.config["run"], user_error(result.error)
        if cause is not None:  # the run's input: exit 2
            raise HbtError(f"run {name}: {cause}") from None
        raise RunFailed(f"run {name} failed: {str(result.error).strip().splitlines()[-1]} (Tune's log above; "
                        f"`hbt experiment --resume` retries it)") from result.error


def _export_models(plans: list[RunPlan], configs: dict[str, HbtConfig], prepared: dict[str, Path], runs_path: str,
                   models: Path) -> None:
    """Each finished run's model (by `hbt train`'s rule) to MODELS/NAME; then its Ray run goes
    (its checkpoints are GBs with e5-small, and the model is what the experiment keeps)."""
    import pyarrow.fs

    from hbt.train.driver import export_model, read_result, selected_checkpoint

    for plan in plans:
        run_path = f"{runs_path}/{plan.name}"
        checkpoint, selection = selected_checkpoint(read_result(run_path), configs[plan.name])
        export_model(checkpoint, models / plan.name, prepared[plan.name], configs[plan.name], selection)
        fs, path = pyarrow.fs.FileSystem.from_uri(run_path)
        fs.delete_dir(path)


def _evaluate(experiment: Experiment, configs: dict[str, HbtConfig], prepared: dict[str, Path], out: Path,
              progress) -> None:
    """Every run on every corpus, each to DIR/eval/CORPUS/RUN; an existing result is kept."""
    from hbt.eval.run import run_eval

    for corpus in experiment.corpora:
        for name, config in configs.items():
            target = out / "eval" / corpus.name / name
            if (target / RESULTS).is_file():
                continue
            model = config.model.name_or_path if experiment.runs[name].seed is None else out / "models" / name
            progress(f"evaluating {name} on {corpus.name}")
            run_eval(model, experiment.corpus_dir(corpus) or prepared[name], target, corpus.languages, config,
                     on_ray=True, split=corpus.split)


def run_experiment(spec_path: Optional[Path], out_dir: Path, size: str = "cpu", config_paths=(), overrides=(),
                   resume: bool = False, seeds: Optional[list[int]] = None,
                   progress: Callable[[str], None] = to_stderr) -> Path:
    """Run the experiment of `spec_path` into `out_dir` (`seeds`: instead of the size's), or
    with `resume` continue the one there as it was started; -> DIR."""
    from hbt.experiment.report import write_report
    from hbt.ray_session import ensure_ray
    from hbt.shared_paths import check_shared
    from hbt.train.driver import check_cpus, run_location, set_report_poll_interval

    started = time.perf_counter()
    out = Path(out_dir).resolve()
    if resume:
        experiment = _read_state(out)
    else:
        experiment = load_experiment(spec_path, size, config_paths, overrides, seeds)
        if (out / STATE).is_file():
            raise HbtError(f"{out} already holds an experiment: continue it with --resume {out_dir} "
                           "or choose another output directory")
    base = HbtConfig.model_validate(experiment.base)
    out.mkdir(parents=True, exist_ok=True)
    prepared = _prepare_pools(experiment, out, progress)
    _check_corpora(experiment)
    configs = _checked_configs(experiment, prepared)
    if not resume:  # only once its data and models are known good: a bad input leaves no experiment
        _write_state(out, experiment)

    models = out / "models"
    pending = [plan for plan in experiment.trained() if not (models / plan.name).is_dir()]
    ensure_ray(base.cluster)
    if pending:
        check_cpus(base)
        set_report_poll_interval(base)
        location = run_location(base, out)
        check_shared(reads={"the prepared data": str(out / "prepared")},
                     writes={"the experiment's storage (cluster.storage_path)": location,
                             "the experiment dir (--out), for each run's metrics": str(out)})
        runs_path = f"{location}/runs"
        to_train = [p for p in pending if not _finished(f"{runs_path}/{p.name}", configs[p.name].train.steps)]
        if to_train:
            (out / "metrics").mkdir(exist_ok=True)
            _train(to_train, configs, prepared, runs_path, f"{location}/tune", out / "metrics", base, progress)
        unfinished = [p.name for p in to_train if not _finished(f"{runs_path}/{p.name}", configs[p.name].train.steps)]
        if unfinished:
            raise ExperimentInterrupted(f"{len(unfinished)} run(s) had not finished: {', '.join(unfinished)}")
        _export_models(pending, configs, prepared, runs_path, models)
    _evaluate(experiment, configs, prepared, out, progress)
    write_report(experiment, out, time.perf_counter() - started)
    progress(f"report: {out / 'report.md'}")
    return out
