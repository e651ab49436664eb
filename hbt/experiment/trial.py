"""One trained run of an experiment, as a Tune trial: `hbt train`'s fit at a fixed run path.

The run path is `RUNS/NAME` (NAME: arm and seed, e.g. `hybrid-s1`), not Tune's trial id, so
the experiment's driver finds every run where it expects it, exports its model after Tune
returns, and a run cut short continues from its last checkpoint when the experiment resumes.
"""

from __future__ import annotations

from typing import Optional


def train_run(params: dict, *, configs: dict[str, dict], prepared: dict[str, str], devs: dict[str, Optional[object]],
              runs_path: str, metrics_dir: str) -> None:
    """Tune's function trainable: `params["run"]` names the run (`tune.with_parameters` binds the
    rest); rank 0's reports go to METRICS_DIR/NAME.jsonl, as `hbt train`'s metrics.jsonl."""
    from hbt.config import HbtConfig
    from hbt.train.driver import composer_state_to_resume, fit
    from hbt.train.progress import MetricsFile

    name = params["run"]
    run_path = f"{runs_path}/{name}"
    fit(HbtConfig.model_validate(configs[name]), prepared[name], run_path, [MetricsFile(f"{metrics_dir}/{name}.jsonl")],
        devs[name], composer_state_to_resume(run_path))
