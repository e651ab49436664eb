"""Faults injected into a training run: a Ray Train worker killed (SIGKILL) mid-run, and the
driver itself killed, then resumed. Either way the run ends as the uninterrupted run of the
same seed does: the same (step, parallel_ids) sequence, at most one checkpoint interval
redone, the same learning rates and the same final weights (dropout draws are seeded per
step, so a redone step draws what it drew the first time)."""

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import torch
import yaml
from safetensors.torch import load_file
from train_runs import make_config, read_metrics, step_ids

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]

STEPS, EVERY = 16, 4


def config(tiny_model, prepared, **train):
    return make_config(tiny_model, prepared, steps=STEPS, checkpoint_every=EVERY, **train)


@pytest.fixture(scope="module")
def uninterrupted(ray_local, prepared, tiny_model, tmp_path_factory) -> Path:
    from hbt.train.driver import train

    return train(config(tiny_model, prepared), prepared, tmp_path_factory.mktemp("faults") / "reference",
                 progress=None)


def wait_for_step(run: Path, step: int, timeout: float = 300) -> None:
    """Block until RUN/metrics.jsonl reports `step` (0-based) or later."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (run / "metrics.jsonl").is_file() and any(m["step"] >= step for m in read_metrics(run)):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{run} never reached step {step}")


def assert_same_run(run: Path, reference: Path) -> None:
    got, want = read_metrics(run), read_metrics(reference)
    assert [m["step"] for m in got] == list(range(STEPS))  # every step once: redone lines replaced
    assert step_ids(got) == step_ids(want)
    assert [m["lr"] for m in got] == [m["lr"] for m in want]
    weights, expected = (load_file(d / "model" / "model.safetensors") for d in (run, reference))
    assert weights.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(weights[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)


def ray_processes(title: str) -> list[psutil.Process]:
    """This test session's Ray processes whose title names `title` (Ray titles a worker process
    `ray::CLASS.method` after its actor)."""
    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            if title in " ".join(process.cmdline()):
                found.append(process)
        except psutil.NoSuchProcess:
            continue
    return found


def wait_for_processes(title: str, count: int, timeout: float = 300) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(found := ray_processes(title)) >= count:
            return found
        time.sleep(0.05)
    raise TimeoutError(f"never {count} processes titled {title}: {ray_processes(title)}")


def train_killing(title: str, prepared, tiny_model, run: Path, after_step: int | None = None) -> list[str]:
    """Train with `train.max_failures=1`, SIGKILL one of the two `title` processes (one per
    rank) once `after_step` is reported (None: as soon as both exist), and return the progress
    lines of the whole run."""
    from hbt.train.driver import train

    lines: list[str] = []
    outcome: dict = {}

    def fit():
        try:
            outcome["out"] = train(config(tiny_model, prepared, max_failures=1), prepared, run, progress=lines.append)
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            outcome["error"] = error

    trainer = threading.Thread(target=fit)
    trainer.start()
    if after_step is not None:
        wait_for_step(run, after_step)
    victims = wait_for_processes(title, 2)
    assert len(victims) == 2, victims  # one per rank
    victims[-1].send_signal(signal.SIGKILL)
    trainer.join(timeout=500)
    assert "error" not in outcome, outcome.get("error")
    return lines


def test_a_killed_worker_restarts_from_the_last_checkpoint(ray_local, prepared, tiny_model, uninterrupted, tmp_path):
    lines = train_killing("RayTrainWorker", prepared, tiny_model, tmp_path / "killed-worker",
                          after_step=EVERY + 1)  # a checkpoint (after step EVERY - 1) is behind the run
    assert_same_run(tmp_path / "killed-worker", uninterrupted)
    redone = len(lines) - STEPS
    assert 1 <= redone <= EVERY, lines


def test_a_killed_tokenize_actor_leaves_the_run_unchanged(ray_local, prepared, tiny_model, uninterrupted, tmp_path):
    """A rank's tokenize actor (Ray Data's actor pool) dies: Ray Data restarts it and retries its
    batch, or Ray Train restarts the run; either way the same run comes out. Killed as soon as
    both ranks' actors exist: a tiny model's 16 steps are tokenized in about a second, and an
    actor with its stream done exits."""
    lines = train_killing("TokenizeSteps", prepared, tiny_model, tmp_path / "killed-tokenizer")
    assert_same_run(tmp_path / "killed-tokenizer", uninterrupted)
    assert len(lines) - STEPS <= EVERY, lines


def test_a_killed_driver_resumes_where_its_checkpoint_left(prepared, tiny_model, uninterrupted, tmp_path):
    """`hbt train` SIGKILLed after a checkpoint; `hbt train --resume RUN` finishes the run."""
    run = tmp_path / "killed-driver"
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(config(tiny_model, prepared).model_dump(mode="json")))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    driver = subprocess.Popen([sys.executable, "-m", "hbt.cli", "train", "--config", str(cfg_path), "--out", str(run)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        wait_for_step(run, EVERY + 1)
        # The driver and, at the same instant, every process of its local Ray: left alone, Ray's
        # workers notice their owner's death only a moment later and may train (and checkpoint)
        # a few more steps, so where the run stopped would be a race.
        tree = psutil.Process(driver.pid).children(recursive=True)
        driver.send_signal(signal.SIGKILL)
        for process in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        driver.wait(timeout=60)
        psutil.wait_procs(tree, timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
    killed_at = max(m["step"] for m in read_metrics(run))
    assert killed_at < STEPS - 1, "the run finished before the kill"
    resumed = subprocess.run([sys.executable, "-m", "hbt.cli", "train", "--resume", str(run)],
                             capture_output=True, text=True, timeout=500, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(run, uninterrupted)
    shown = [line for line in resumed.stderr.splitlines() if line.startswith("step ")]
    assert STEPS - (killed_at + 1) <= len(shown) <= STEPS - (killed_at + 1) + EVERY, shown
