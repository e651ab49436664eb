"""One trial of a sweep or of an experiment: train as `hbt train` does, inside a Tune trial.

`run_trial` is the one trainable; what differs between a sweep's trials and an experiment's runs
(the config, the run path, where reports go) is a `TrialRun` made by `SweepTrials` here or
`hbt.experiment.trial.ExperimentRuns`. A sweep's trial reports its dev evaluations to Tune.

The trial's Ray Train run lives at `RUNS/TRIAL_ID` (RUNS: the sweep's `runs/`, in its storage),
so a trial restarted by `hbt tune --resume` continues its run from the last checkpoint, with
the composer state that checkpoint holds, exactly as `hbt train --resume` would. Trials do
not export a model: a sweep's product is the choice (`best.yaml`), trained again with
`hbt train`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from ray.tune.integration.ray_train import TuneReportCallback

from hbt.config import HbtConfig, TuneConfig
from hbt.tune.space import SearchSpace

# The trial actor only waits on its TorchTrainer; Tune refuses a zero-CPU request.
TRIAL_CPUS = 0.01
TRIAL_METRICS = ("loss", "lr", "dev/seconds")  # forwarded beside every dev/* metric


class DevReport(TuneReportCallback):
    """Forward to Tune only the reports that carry a dev evaluation, as `steps` (optimizer
    steps done, ASHA's time axis), the dev metrics and TRIAL_METRICS; the batch ids and
    checkpoint paths stay with Ray Train."""

    def after_report(self, run_context, metrics, checkpoint):
        report = metrics[0]
        if not any(name.startswith("dev/") for name in report):
            return
        kept = {name: value for name, value in report.items() if name.startswith("dev/") or name in TRIAL_METRICS}
        super().after_report(run_context, [{"steps": report["step"] + 1, **kept}], None)


@dataclass(frozen=True)
class TrialRun:
    """What one trial trains: its config and prepared pool, its Ray Train run path, its report
    callbacks, and its dev corpus (None: no dev evaluation)."""

    config: HbtConfig
    prepared_dir: str
    run_path: str
    callbacks: list
    dev: Optional[Any]


@dataclass(frozen=True)
class SweepTrials:
    """A sweep's trials: the config of the space's sample, the run at RUNS/TRIAL_ID, dev reports to Tune."""

    base: dict
    space: SearchSpace
    settings: TuneConfig
    prepared_dir: str
    runs_path: str
    dev: Optional[Any]

    def __call__(self, params: dict, trial_id: str) -> TrialRun:
        return TrialRun(self.space.trial_config(self.base, params, self.settings), self.prepared_dir,
                        f"{self.runs_path}/{trial_id}", [DevReport()], self.dev)


def run_trial(params: dict, *, trials: Callable[[dict, str], TrialRun]) -> None:
    """Tune's function trainable (`tune.with_parameters` binds `trials`): `hbt train`'s fit of
    `trials(params, trial_id)`, continued from the run's last checkpoint when it has one (a
    trial restarted by a resumed sweep or experiment)."""
    from ray import tune

    from hbt.train.driver import composer_state_to_resume, fit

    run = trials(params, tune.get_context().get_trial_id())
    fit(run.config, run.prepared_dir, run.run_path, run.callbacks, run.dev, composer_state_to_resume(run.run_path))
