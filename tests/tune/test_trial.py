"""The one trainable of sweeps and experiments (hbt.tune.trial.run_trial): what each kind of trial fits."""

from pathlib import Path
from types import SimpleNamespace

from hbt.config import load_config
from hbt.experiment.trial import ExperimentRuns
from hbt.train.progress import MetricsFile
from hbt.tune import trial
from hbt.tune.space import load_space

REPO_ROOT = Path(__file__).resolve().parents[2]


def fitted_by(monkeypatch) -> list:
    """The arguments each `fit` call of `run_trial` got (no Ray: fit, the resume state and Tune's
    trial id stand in)."""
    calls = []
    monkeypatch.setattr("hbt.train.driver.fit", lambda *args: calls.append(args))
    monkeypatch.setattr("hbt.train.driver.composer_state_to_resume", lambda path: f"state at {path}")
    monkeypatch.setattr("ray.tune.get_context", lambda: SimpleNamespace(get_trial_id=lambda: "trial_1"))
    return calls


def test_an_experiment_run_fits_its_own_config_at_its_name_and_writes_its_metrics(monkeypatch, tmp_path):
    calls = fitted_by(monkeypatch)
    config = load_config(None, ["train.steps=3"])
    runs = ExperimentRuns({"hybrid-s0": config.model_dump(mode="json")}, {"hybrid-s0": "/prepared"},
                          {"hybrid-s0": None}, "/runs", str(tmp_path))
    trial.run_trial({"run": "hybrid-s0"}, trials=runs)
    ((fitted, prepared, run_path, callbacks, dev, state),) = calls
    assert (fitted, prepared, run_path, dev) == (config, "/prepared", "/runs/hybrid-s0", None)
    assert state == "state at /runs/hybrid-s0"  # a run cut short continues where it was
    assert [type(callback) for callback in callbacks] == [MetricsFile]


class DevReportStandIn:
    """trial.DevReport, which only a running Tune trial can make."""


def test_a_sweep_trial_fits_its_sample_at_its_trial_id_and_reports_dev_to_tune(monkeypatch):
    calls = fitted_by(monkeypatch)
    monkeypatch.setattr(trial, "DevReport", DevReportStandIn)
    config = load_config(None)
    space = load_space(REPO_ROOT / "tune_spaces" / "smoke.yaml")
    params = {key: dist.extremes()[0] for key, dist in space.spec.space.items()}
    trials = trial.SweepTrials(config.model_dump(mode="json"), space, config.tune, "/prepared", "/sweep/runs", None)
    trial.run_trial(params, trials=trials)
    ((fitted, prepared, run_path, callbacks, dev, state),) = calls
    assert fitted == space.trial_config(config.model_dump(mode="json"), params, config.tune)
    assert (prepared, run_path, state) == ("/prepared", "/sweep/runs/trial_1", "state at /sweep/runs/trial_1")
    assert [type(callback) for callback in callbacks] == [DevReportStandIn]
