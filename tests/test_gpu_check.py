"""benchmarks/gpu_check.py (`make gpu-check`) on a machine without CUDA: its plan, and its exit."""

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from hbt.config import load_config

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


def test_dry_run_plans_ddp_and_deepspeed_bf16_on_the_gpu(tmp_path):
    run = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(tmp_path)], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    commands = dict(line.split(": ", 1) for line in run.stdout.splitlines())
    assert {"prepare", "train:ddp", "eval:ddp", "train:deepspeed-zero2-bf16",
            "eval:deepspeed-zero2-bf16"} <= set(commands)

    def config(name):
        argv = shlex.split(commands[name])
        assert argv[1:3] == ["-m", "hbt.cli"]
        return load_config([argv[i + 1] for i, a in enumerate(argv) if a == "--config"],
                           [argv[i + 1] for i, a in enumerate(argv) if a == "--set"])

    ddp, ds = config("train:ddp"), config("train:deepspeed-zero2-bf16")
    assert (ddp.train.strategy, ddp.train.steps, ddp.cluster.use_gpu) == ("ddp", 20, True)
    assert (ds.train.strategy, ds.train.zero_stage, ds.train.bf16, ds.train.steps) == ("deepspeed", 2, True, 20)
    assert config("eval:ddp").cluster.use_gpu and f"--out {tmp_path}/ddp/eval" in commands["eval:ddp"]


def test_without_cuda_it_exits_2_with_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.fail("this test expects a machine without CUDA (it would start the real check)")
    run = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.startswith("no CUDA device: ") and run.stderr.count("\n") == 1
    assert not any(tmp_path.iterdir())  # nothing ran
