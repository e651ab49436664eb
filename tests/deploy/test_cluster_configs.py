"""cluster/: the GPU cluster-launcher config against the schema that ships inside `ray`, and the
local cluster script's usage (the cluster itself: tests/deploy/test_local_cluster.py)."""

import copy
import os
import re
import shutil
import subprocess
import sys

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from hbt.config import REPO_ROOT

LAUNCHER = REPO_ROOT / "cluster" / "gpu-cluster.yaml"
LOCAL_SH = REPO_ROOT / "cluster" / "local.sh"


def launcher() -> dict:
    return yaml.safe_load(LAUNCHER.read_text())


def validated(config: dict) -> dict:
    """What `ray up` does first: fill the provider's defaults, then check against ray-schema.json."""
    config = prepare_config(copy.deepcopy(config))
    validate_config(config)
    return config


def test_launcher_config_is_valid_for_ray_up():
    config = validated(launcher())
    workers = config["available_node_types"]["gpu_worker"]
    assert config["head_node_type"] == "head" and workers["min_workers"] == 0 < workers["max_workers"]
    assert config["available_node_types"]["head"]["resources"] == {"CPU": 0}


@pytest.mark.parametrize("break_it", [
    lambda c: c.update(max_wrokers=4),  # a misspelt key
    lambda c: c.update(head_node_type="nope"),  # a head type that is not defined
    lambda c: c["available_node_types"]["gpu_worker"].update(min_workers="zero"),
])
def test_the_schema_check_catches_mistakes(break_it):
    config = launcher()
    break_it(config)
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        validated(config)


def test_every_node_starts_ray_with_token_auth_and_the_token_stays_out_of_the_repo():
    config = launcher()
    starts = config["head_start_ray_commands"][1:] + config["worker_start_ray_commands"][1:]
    assert all("RAY_AUTH_MODE=token" in command and "RAY_AUTH_TOKEN_PATH=" in command for command in starts)
    (target, source), = config["file_mounts"].items()
    assert source.startswith("~/") and target.endswith("/.ray/auth_token")  # from the user's home
    assert "--dashboard-host=127.0.0.1" in config["head_start_ray_commands"][1]  # reached by `ray dashboard`


DLAMI_PARAMETER = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"


def test_every_node_boots_a_current_gpu_ami():
    """Not `latest_dlami` (nor no ImageId): Ray fills in its own default, an Ubuntu 18.04 Deep
    Learning AMI whose driver cannot run the image's CUDA 12.8. A fixed AMI id, or AWS's SSM
    parameter of the Ubuntu 22.04 OSS-driver GPU Deep Learning AMI, resolved by EC2 at launch."""
    for name, node_type in launcher()["available_node_types"].items():
        image = node_type["node_config"].get("ImageId", "")
        assert re.fullmatch(r"ami-[0-9a-f]{8,17}", image) or image == f"resolve:ssm:{DLAMI_PARAMETER}", name


def test_the_shared_file_system_is_writable_by_the_images_user():
    """EFS's root is root's; the containers run as the image's USER, which must write /mnt/hbt."""
    users = re.findall(r"^USER (\d+)$", (REPO_ROOT / "Dockerfile").read_text(), flags=re.MULTILINE)
    commands = launcher()["initialization_commands"]
    mount = next(i for i, c in enumerate(commands) if "mount -t nfs4" in c and c.rstrip().endswith("/mnt/hbt"))
    chown = [i for i, c in enumerate(commands) if c == f"sudo chown {users[-1]}:{users[-1]} /mnt/hbt"]
    assert chown and chown[0] > mount  # on the mounted file system, not the empty mount point


def test_local_cluster_script_parses_and_refuses_a_bad_verb():
    assert subprocess.run(["bash", "-n", str(LOCAL_SH)]).returncode == 0
    result = subprocess.run(["bash", str(LOCAL_SH), "sideways"], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.strip() == "usage: cluster/local.sh up|down|status|env"


def local_sh(verb: str, state, **env) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(LOCAL_SH), verb], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "HBT_CLUSTER_DIR": str(state), **env})


def refused(result: subprocess.CompletedProcess, path) -> bool:
    return (result.returncode == 2 and result.stderr.count("\n") == 1
            and result.stderr.startswith(f"local.sh: {path} is owned by uid "))


@pytest.mark.parametrize("verb", ["up", "down", "env"])
def test_a_state_dir_open_to_others_is_refused(tmp_path, verb):
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o755)
    result = local_sh(verb, state)
    assert refused(result, state) and "with mode 755" in result.stderr, result.stderr
    assert list(state.iterdir()) == []  # no token made, nothing started


def test_a_planted_token_is_refused_not_used(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "auth_token").write_text("known-to-someone-else\n")
    (state / "auth_token").chmod(0o644)
    result = local_sh("up", state)
    assert refused(result, state / "auth_token"), result.stderr
    assert sorted(p.name for p in state.iterdir()) == ["auth_token"]  # no node started


def test_down_signals_no_process_named_in_a_dir_that_is_not_private(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o777)
    state.chmod(0o777)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (state / "head.pid").write_text(f"{bystander.pid}\n")
        assert refused(local_sh("down", state), state)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_a_state_dir_of_another_user_is_refused(tmp_path):
    """As another user sees a dir this user made: `id -u` answers that user's uid (a stand-in
    `id` first on PATH), so the dir's owner is not the one running the script."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "id").write_text(f'#!/bin/sh\n[ "$1" = -u ] && {{ echo 4242; exit 0; }}\nexec {shutil.which("id")} "$@"\n')
    (shim / "id").chmod(0o755)
    result = local_sh("env", state, PATH=f"{shim}:{os.environ['PATH']}")
    assert refused(result, state)
    assert f"owned by uid {os.getuid()} " in result.stderr and "yours (4242)" in result.stderr
    assert local_sh("env", state).returncode == 0  # the same dir, to its owner


def test_up_makes_the_state_dir_and_the_token_private(tmp_path):
    """`up` with a Python that fails at once stops at the token, before any node starts."""
    state = tmp_path / "new" / "state"
    assert local_sh("up", state, HBT_PYTHON="/bin/false").returncode == 1
    assert state.stat().st_mode & 0o777 == 0o700
    assert (state / "auth_token").stat().st_mode & 0o777 == 0o600
