"""One trained run of an experiment, as a Tune trial: `hbt train`'s fit at a fixed run path.

The run path is `RUNS/NAME` (NAME: arm and seed, e.g. `hybrid-s1`), not Tune's trial id, so
the experiment's driver finds every run where it expects it, exports its model after Tune
returns, and a run cut short continues from its last checkpoint when the experiment resumes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from hbt.config import HbtConfig
from hbt.train.progress import MetricsFile
from hbt.tune.trial import TrialRun


@dataclass(frozen=True)
class ExperimentRuns:
    """An experiment's runs for `hbt.tune.trial.run_trial`: `params["run"]` names the run; rank 0's
    reports go to METRICS_DIR/NAME.jsonl, as `hbt train`'s metrics.jsonl."""

    configs: dict[str, dict]
    prepared: dict[str, str]
    devs: dict[str, Optional[object]]
    runs_path: str
    metrics_dir: str

    def __call__(self, params: dict, trial_id: str) -> TrialRun:
        name = params["run"]
        return TrialRun(HbtConfig.model_validate(self.configs[name]), self.prepared[name], f"{self.runs_path}/{name}",
                        [MetricsFile(f"{self.metrics_dir}/{name}.jsonl")], self.devs[name])
