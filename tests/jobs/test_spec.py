"""Job specs (jobs/*.yaml) become checked `hbt` entrypoints; bad specs are one line, exit 2."""

import json
import shlex
from pathlib import Path

import pytest

from hbt.cli import main
from hbt.cli_parser import build_parser
from hbt.config import REPO_ROOT, load_config
from hbt.errors import HbtError
from hbt.jobs.spec import JobSpec, entrypoint, load_spec, runtime_env

SPECS = sorted((REPO_ROOT / "jobs").glob("*.yaml"))
WORKLOADS = {"prepare", "train", "eval", "tune", "pipeline", "smoke"}


def steps_of(command: str) -> list[list[str]]:
    return [shlex.split(step) for step in command.split(" && ")]


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_each_spec_labels_its_jobs_with_its_workload(path):
    """A submitted job carries the spec's metadata (beside hbt_job, the spec's name): its workload is that name."""
    assert load_spec(path).metadata["workload"] == path.stem
    assert set(WORKLOADS) <= {spec.stem for spec in SPECS}


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_every_step_is_a_real_hbt_command_whose_config_loads(path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)  # a job's configs are relative to the working dir it ships
    spec = load_spec(path)
    command = entrypoint(spec, "/srv/shared", None, ["train.steps=3"])
    assert "{" not in command  # every placeholder filled
    for argv in steps_of(command):
        args = build_parser().parse_args(argv[1:])
        assert argv[0] == "hbt"
        if hasattr(args, "overrides"):  # the spec's config, its --set, then the caller's --set last
            assert args.config == [Path(p) for p in spec.config] and args.overrides[-1] == "train.steps=3"
            cfg = load_config(args.config, args.overrides)
            assert cfg.train.steps == 3
            for key in ("data_dir", "prepared_dir"):
                if any(o.startswith(f"data.{key}=") for o in args.overrides):
                    assert str(getattr(cfg.data, key)).startswith("/srv/shared")
        for flag in ("out", "model", "corpus"):  # every path a step names is on the shared storage
            value = getattr(args, flag, None)
            if value is not None and "/" in str(value) and not str(value).startswith("intfloat/"):
                assert str(value).startswith("/srv/shared/"), (flag, value)
    env = runtime_env(spec, {"EXTRA": "1"})
    assert env["working_dir"] == "." and env["env_vars"]["EXTRA"] == "1"


def test_steps_hand_each_other_their_outputs(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    argvs = steps_of(entrypoint(load_spec(REPO_ROOT / "jobs/pipeline.yaml"), "/s"))
    parsed = [build_parser().parse_args(argv[1:]) for argv in argvs]
    prepare, train, base, trained, report = parsed
    assert load_config(train.config, train.overrides).data.prepared_dir == Path(str(prepare.out))
    assert trained.model == train.out / "model" and Path(base.corpus) == Path(trained.corpus) == prepare.out
    assert report.runs == [base.out, trained.out]


def test_data_dir_defaults_under_storage(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    spec = load_spec(REPO_ROOT / "jobs/prepare.yaml")
    download = steps_of(entrypoint(spec, "/s"))[0]
    assert download[:3] == ["hbt", "data", "download"] and download[-1] == "/s/data"
    assert steps_of(entrypoint(spec, "/s", "/data"))[0][-1] == "/data"


def spec_file(tmp_path, text):
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


GOOD = "description: d\nconfig: [configs/local.yaml]\nsteps:\n  - hbt train --out {storage}/t\n"


@pytest.mark.parametrize("text, fragment", [
    ("description: d\nsteps: []\n", "steps: List should have at least 1 item"),
    ("description: d\nstep: [hbt train]\nsteps: [hbt train]\n", "step: unknown key"),
    ("description: d\nsteps: [python train.py]\n", "is not an `hbt` command"),
    ("description: d\nsteps: [hbt trian]\n", "is not a valid hbt command"),
    ("description: d\nsteps:\n  - hbt train --out {storge}/t\n", "bad placeholder"),
    ("description: d\nconfig: [configs/nope.yaml]\nsteps: [hbt train]\n", "config file not found: configs/nope.yaml"),
    ("description: d\nset: [train.stpes=3]\nsteps: [hbt train]\n", "train.stpes: unknown key"),
    ("description: d\nsteps: [hbt tune --space tune_spaces/nope.yaml]\n", "nope.yaml"),
    ("description: [d\n", "not valid YAML"),
    ("description: d\nsteps: [hbt train]\nruntime_env: nope/env.yaml\n", "runtime_env file not found"),
])
def test_bad_specs_are_one_line_exit_2(tmp_path, monkeypatch, capsys, text, fragment):
    monkeypatch.chdir(REPO_ROOT)
    assert main(["submit", str(spec_file(tmp_path, text)), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hbt: error:") and fragment in err and "\n" not in err


def test_a_bad_override_from_the_caller_is_refused_before_submitting(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO_ROOT)
    code = main(["submit", str(spec_file(tmp_path, GOOD)), "--set", "batching.alpha=2", "--address",
                 "http://127.0.0.1:1"])  # no server there: the check comes first
    assert code == 2 and "batching.alpha" in capsys.readouterr().err


def test_dry_run_prints_what_ray_job_submit_takes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO_ROOT)
    assert main(["submit", str(REPO_ROOT / "jobs/train.yaml"), "--storage", "runs/shared", "--dry-run",
                 "--env", "HF_HOME=/hf", "--env", "HF_TOKEN=hf_s3cr3t"]) == 0
    out = capsys.readouterr().out
    shown = json.loads(out)
    # A relative storage path is made absolute where hbt submit runs (a cluster on this machine).
    assert f"--out {REPO_ROOT / 'runs/shared'}/runs/train" in shown["entrypoint"]
    # --env values may be secrets: named, not shown; the spec's own variables are shown.
    assert shown["runtime_env"]["env_vars"] == {"PYTHONUNBUFFERED": "1", "HF_HOME": "***", "HF_TOKEN": "***"}
    assert "s3cr3t" not in out


def test_steps_without_a_config_get_no_config_flags(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    spec = JobSpec(description="d", config=["configs/local.yaml"], set=["train.steps=2"],
                   steps=["hbt data download --out {data_dir}", "hbt report /a /b"])
    for argv in steps_of(entrypoint(spec, "/s")):
        assert "--config" not in argv and "--set" not in argv


def test_unreadable_spec_paths(tmp_path):
    with pytest.raises(HbtError, match="job spec not found"):
        load_spec(tmp_path / "nope.yaml")


def test_the_callers_configs_layer_after_the_specs(monkeypatch, capsys):
    monkeypatch.chdir(REPO_ROOT)
    assert main(["submit", "jobs/train.yaml", "--config", "configs/gpu.yaml", "--config",
                 "cluster/deepspeed/zero3.yaml", "--dry-run"]) == 0
    (train,) = steps_of(json.loads(capsys.readouterr().out)["entrypoint"])
    args = build_parser().parse_args(train[1:])
    assert [str(p) for p in args.config] == ["configs/cluster.yaml", "configs/gpu.yaml", "cluster/deepspeed/zero3.yaml"]
    cfg = load_config(args.config, args.overrides)
    assert cfg.train.zero_stage == 3 and cfg.cluster.use_gpu and cfg.cluster.storage_path == "/mnt/hbt/storage"
