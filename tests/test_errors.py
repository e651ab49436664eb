"""User errors reach the user as one line, also when Ray wraps them (hbt.errors.user_error)."""

import os
import subprocess
import sys

import pytest

from hbt.errors import DataError, HbtError, user_error

pytestmark = pytest.mark.timeout(300)


class WorkerGroupError(Exception):
    """Shaped like Ray Train's: failures by rank."""

    def __init__(self, failures):
        super().__init__("Training failed due to worker errors:\n...")
        self.worker_failures = failures


def test_user_error_is_found_through_wrappers_and_chaining():
    cause = DataError("corpus.json: data[0]: missing key 'paragraphs'")
    assert user_error(cause) is cause
    assert user_error(WorkerGroupError({1: RuntimeError("other"), 0: cause})) is cause
    try:
        try:
            raise cause
        except DataError as inner:
            raise RuntimeError("while reading") from inner
    except RuntimeError as outer:
        assert user_error(outer) is cause
    assert user_error(RuntimeError("a bug")) is None
    assert user_error(WorkerGroupError({0: ValueError("a bug")})) is None


def test_an_actors_user_error_unwraps_to_its_own_message(ray_local):
    """Raised in an actor's method, an error comes back as Ray's RayTaskError (with Ray's
    traceback in its text); its cause is the user's. (An error in an actor's __init__ reaches the
    caller as text only: hbt checks what its actors load in the driver first.)"""
    import ray

    @ray.remote(num_cpus=0)
    class Fails:
        def encode(self):
            raise HbtError("cannot load model /nowhere: no such directory")

    with pytest.raises(Exception) as caught:
        ray.get(Fails.remote().encode.remote())
    assert "Traceback" in str(caught.value) or "ray::" in str(caught.value)  # what Ray shows by itself
    found = user_error(caught.value)
    assert str(found) == "cannot load model /nowhere: no such directory"


@pytest.mark.parametrize("verb", [
    ["train", "--set", "data.prepared_dir={prepared}"],
    ["eval", "--corpus", "{data}/xquad-r", "--languages", "en"],
])
def test_a_model_that_cannot_load_is_refused_before_ray_starts(verb, data_dir, tmp_path):
    """A hub name on a machine without the hub: one line, exit 2, nothing written (HF_HUB_OFFLINE
    makes the hub's refusal immediate; without it the hub's retries take ~25 s first)."""
    from hbt.config import load_config
    from hbt.data.prepare import prepare

    prepared = prepare(load_config(None, [f"data.data_dir={data_dir}", "data.languages=[en]",
                                          "data.eval_languages=[en]"]).data, tmp_path / "prep")
    argv = [a.format(prepared=prepared, data=data_dir) for a in verb]
    model = ["--set", "model.name_or_path=intfloat/multilingual-e5-small"] if verb[0] == "train" else \
        ["--model", "intfloat/multilingual-e5-small"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "hbt.cli", *argv, *model, "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "cannot load model intfloat/multilingual-e5-small" in result.stderr
    assert "Started a local Ray" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_ray_losing_a_process_is_one_line_and_exit_1(monkeypatch, capsys):
    """Not the user's input (exit 1, not 2), nor a bug in hbt (no traceback): Ray lost a process."""
    import ray.exceptions

    from hbt import cli
    from hbt.errors import ray_failure

    died = ray.exceptions.ActorDiedError()
    assert ray_failure(WorkerGroupError({0: died})).startswith("ActorDiedError: ")
    assert ray_failure(RuntimeError("a bug")) is None

    def lose_an_actor(args):
        raise RuntimeError("while encoding") from died

    monkeypatch.setitem(cli.COMMANDS, "config show", lose_an_actor)
    assert cli.main(["config", "show"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("hbt: error: Ray lost a process or node: ActorDiedError") and "\n" not in err


def test_first_line_of_an_error_or_a_text():
    from hbt.errors import first_line

    assert first_line(RuntimeError("\n  cannot load\nTraceback ...")) == "cannot load"
    assert first_line(KeyError()) == "KeyError"  # no message: the type says what happened
    assert first_line("Job failed\nwith details") == "Job failed" and first_line(None) == first_line("") == ""


@pytest.mark.parametrize("write, expected", [
    (lambda d: ("config", d / "c.yaml", "train:\n  stpes: 3\n"), "train.stpes: unknown key"),
    (lambda d: ("job", d / "j.yaml", "description: d\nsteps: [hbt train]\nstpes: 3\n"), "stpes: unknown key"),
    (lambda d: ("space", d / "s.yaml", "space: {batching.alpha: {grid: [0.1]}}\nstpes: 3\n"), "stpes: unknown key"),
    (lambda d: ("experiment", d / "e.yaml", "description: d\nreference: a\narms: {a: {}, b: {}}\nstpes: 3\n"),
     "stpes: unknown key"),
])
def test_the_same_mistake_reads_the_same_in_every_kind_of_file(tmp_path, write, expected):
    """One wording for a pydantic error (hbt.errors.validation_line) in a config, a job spec, a tune space
    and an experiment spec: `FILE: KEY: unknown key`."""
    import yaml

    from hbt.config import load_config
    from hbt.errors import ConfigError
    from hbt.experiment.spec import parse_spec
    from hbt.jobs.spec import load_spec
    from hbt.tune.space import load_space

    kind, path, text = write(tmp_path)
    path.write_text(text)
    load = {"config": lambda p: load_config([p]), "job": load_spec, "space": load_space,
            "experiment": lambda p: parse_spec(p, yaml.safe_load(p.read_text()))}[kind]
    with pytest.raises(ConfigError) as refused:
        load(path)
    assert str(refused.value) == f"{path}: {expected}"
