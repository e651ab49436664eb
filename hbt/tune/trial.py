"""One trial of a sweep: train as `hbt train` does, inside a Tune trial, and report its dev
evaluations to Tune.

The trial's Ray Train run lives at `RUNS/TRIAL_ID` (RUNS: the sweep's `runs/`, in its storage),
so a trial restarted by `hbt tune --resume` continues its run from the last checkpoint, with
the composer state that checkpoint holds, exactly as `hbt train --resume` would. Trials do
not export a model: a sweep's product is the choice (`best.yaml`), trained again with
`hbt train`.
"""

from __future__ import annotations

from ray.tune.integration.ray_train import TuneReportCallback

from hbt.config import TuneConfig
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


def run_trial(params: dict, *, base: dict, space: SearchSpace, settings: TuneConfig, prepared_dir: str,
              runs_path: str, dev) -> None:
    """Tune's function trainable (`tune.with_parameters` binds everything but `params`)."""
    from ray import tune

    from hbt.train.driver import composer_state_to_resume, fit

    config = space.trial_config(base, params, settings)
    run_path = f"{runs_path}/{tune.get_context().get_trial_id()}"
    fit(config, prepared_dir, run_path, [DevReport()], dev, composer_state_to_resume(run_path))
