"""A real sweep on Ray Tune (tiny model, the smoke space), interrupted and resumed as a user
would: ASHA stops trials early, the outputs are whole, and the resumed sweep reruns no ended trial."""

import csv
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from hbt.config import load_config

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]

SMOKE = Path(__file__).resolve().parents[2] / "tune_spaces" / "smoke.yaml"
PLOTS = ("metric_vs_alpha.png", "tradeoff_vs_alpha.png", "language_count.png", "pareto_mono_multi.png")


def sweep_config(tiny_model: Path, prepared: Path):
    return load_config(None, [
        f"model.name_or_path={tiny_model}", "model.max_length=48", "data.languages=[en,de,es]",
        f"data.prepared_dir={prepared}", "batching.batch_size=4", "batching.seed=3", "train.lr=5e-3",
        "train.num_workers=1", "train.freeze_embeddings=false", "train.temperature=0.1"])


def read_trials(out: Path) -> list[dict]:
    with open(out / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


class StderrLines:
    """Collect a child's stderr lines in a thread; `wait_for` blocks until `count` lines match."""

    def __init__(self, process: subprocess.Popen):
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self.thread.start()

    def _read(self, process):
        for line in process.stderr:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()

    def wait_for(self, predicate, timeout: float, count: int = 1) -> list[str]:
        def matching():
            found = [line for line in self.lines if predicate(line)]
            return found if len(found) >= count else None

        with self.changed:
            found = self.changed.wait_for(matching, timeout)
        if not found:
            raise TimeoutError("no such lines; got:\n" + "\n".join(self.lines[-30:]))
        return found


@dataclass
class InterruptedSweep:
    out: Path
    exit_code: int                 # of the first `hbt tune`, Ctrl-C'd
    interrupted_lines: list[str]   # its stderr
    ended: list[str]               # trial ids that had ended before Ctrl-C
    ended_results: dict[Path, bytes]  # their result.json files as they were then
    resumed: subprocess.CompletedProcess  # `hbt tune --resume OUT`


@pytest.fixture(scope="module")
def smoke_sweep(prepared, tiny_model, tmp_path_factory) -> InterruptedSweep:
    """The smoke sweep as a user runs it: `hbt tune`, Ctrl-C (SIGINT) once two trials have ended
    (ASHA has judged one at a rung), then `hbt tune --resume` to the end. One sweep serves
    every test here: the interruption and the outputs of the resumed sweep."""
    tmp = tmp_path_factory.mktemp("tune")
    config_path = tmp / "config.yaml"
    config_path.write_text(yaml.safe_dump(sweep_config(tiny_model, prepared).model_dump(mode="json")))
    out = tmp / "smoke"
    command = [sys.executable, "-m", "hbt.cli", "tune"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    driver = subprocess.Popen([*command, "--config", str(config_path), "--space", str(SMOKE), "--out", str(out)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        stderr = StderrLines(driver)
        ended = stderr.wait_for(lambda line: line.startswith("trial ") and line.endswith(" ended"), 600, count=2)
        driver.send_signal(signal.SIGINT)
        exit_code = driver.wait(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
    stderr.thread.join(timeout=10)
    ended_ids = [line.split()[1] for line in ended]
    results = {}
    for trial in ended_ids:
        [trial_dir] = [d for d in out.iterdir() if trial in d.name]
        results[trial_dir / "result.json"] = (trial_dir / "result.json").read_bytes()
    resumed = subprocess.run([*command, "--resume", str(out)], capture_output=True, text=True, timeout=800, env=env)
    return InterruptedSweep(out, exit_code, stderr.lines, ended_ids, results, resumed)


def test_an_interrupted_sweep_resumes_without_rerunning_its_ended_trials(smoke_sweep):
    """Ctrl-C once trials have ended: exit 130, state saved; `--resume` runs the rest, and the
    ended trials are neither rerun nor touched."""
    sweep = smoke_sweep
    assert sweep.exit_code == 130, "\n".join(sweep.interrupted_lines[-30:])
    assert "hbt tune --resume" in sweep.interrupted_lines[-1]
    assert sweep.resumed.returncode == 0, sweep.resumed.stderr[-3000:]
    for result, before in sweep.ended_results.items():
        assert result.read_bytes() == before, result
    shown = [line for line in sweep.resumed.stderr.splitlines() if line.startswith("trial ")]
    assert shown and not any(line.split()[1] in sweep.ended for line in shown), shown


def test_asha_stops_a_trailing_trial_and_every_output_is_written(smoke_sweep):
    out = smoke_sweep.out
    trials = read_trials(out)
    assert len(trials) == 4
    statuses = [t["status"] for t in trials]
    assert "error" not in statuses, trials
    stopped = [t for t in trials if t["status"] == "stopped"]
    assert stopped, "ASHA stopped no trial"
    assert all(int(t["steps_done"]) < 4 and t["stop_reason"].startswith("asha at step") for t in stopped)
    assert all(int(t["steps_done"]) == 4 for t in trials if t["status"] == "completed")
    assert {t["n_train_languages"] for t in trials} <= {"2", "3"}
    for name in PLOTS:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name

    import pandas as pd

    assert len(pd.read_parquet(out / "trials.parquet")) == 4
    best = max((t for t in trials if t["status"] == "completed"), key=lambda t: float(t["dev/multi_map"]))
    chosen = load_config(out / "best.yaml")  # a config `hbt train --config` takes as it is
    assert chosen.batching.alpha == pytest.approx(float(best["batching.alpha"]))
    assert chosen.data.num_languages == int(best["data.num_languages"]) and chosen.train.steps == 4
    summary = (out / "summary.md").read_text()
    assert all(t["trial_id"] in summary for t in trials) and "best: " + best["trial_id"] in summary


def test_a_sweep_keeps_tensorboard_logs_and_drops_its_checkpoints(smoke_sweep):
    out, lines = smoke_sweep.out, smoke_sweep.resumed.stderr.splitlines()
    assert len({path.parent for path in out.glob("*/events.out.tfevents.*")}) == 4  # Tune's own logs, per trial
    assert len(list((out / "runs").iterdir())) == 4  # each trial's Ray Train run
    assert not [path for path in (out / "runs").glob("*/checkpoint_*") if path.is_dir()]
    assert lines and lines[-1].startswith("4 trials; best: ")


def test_a_finished_sweep_is_not_run_over(smoke_sweep, prepared, tiny_model):
    from hbt.errors import HbtError
    from hbt.tune.sweep import tune_sweep

    out = smoke_sweep.out
    with pytest.raises(HbtError, match="already holds a sweep: continue it with --resume"):
        tune_sweep(sweep_config(tiny_model, prepared), SMOKE, out)
