"""cluster/: the GPU cluster-launcher config against the schema that ships inside `ray`, and the
local cluster script's usage (the cluster itself: tests/deploy/test_local_cluster.py)."""

import copy
import subprocess

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


def test_local_cluster_script_parses_and_refuses_a_bad_verb():
    assert subprocess.run(["bash", "-n", str(LOCAL_SH)]).returncode == 0
    result = subprocess.run(["bash", str(LOCAL_SH), "sideways"], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.strip() == "usage: cluster/local.sh up|down|status|env"
