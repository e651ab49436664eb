"""A local Ray listens on the loopback interface only: a laptop's Ray is not open to its network."""

import json
import subprocess
import sys

import pytest

SCRIPT = """
import ipaddress, json, os
import psutil, ray
from hbt.config import ClusterConfig
from hbt.ray_session import ensure_ray

ensure_ray(ClusterConfig())
ray.get(ray.remote(lambda: 1).remote())  # a worker process too
family = [psutil.Process()] + psutil.Process().children(recursive=True)
listening = []
for process in family:
    try:
        connections = process.net_connections(kind="inet")
    except psutil.NoSuchProcess:
        continue
    for c in connections:
        if c.status == psutil.CONN_LISTEN:
            host = c.laddr.ip.removeprefix("::ffff:")
            listening.append([process.name(), host, c.laddr.port, ipaddress.ip_address(host).is_loopback])
ray.shutdown()
print(json.dumps(listening))
"""


@pytest.mark.timeout(180)
def test_local_ray_binds_every_port_to_loopback():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=170)
    assert result.returncode == 0, result.stderr[-2000:]
    listening = json.loads(result.stdout.strip().splitlines()[-1])
    names = {name for name, *_ in listening}
    assert {"gcs_server", "raylet"} <= names and len(listening) >= 8, listening
    assert [entry for entry in listening if not entry[3]] == []


def test_a_ray_job_joins_its_cluster_through_ray_address(monkeypatch):
    from hbt.config import ClusterConfig
    from hbt.ray_session import cluster_address

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert cluster_address(ClusterConfig()) is None  # a laptop: a local Ray of its own
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # what Ray sets for a job's entrypoint
    assert cluster_address(ClusterConfig()) == "10.0.0.1:6379"
    assert cluster_address(ClusterConfig(address="ray://head:10001")) == "ray://head:10001"


def test_a_local_ray_runs_training_without_a_preemption_watcher(monkeypatch):
    """One node that nobody drains: Ray Train's watcher actor is switched off, unless the user
    chose otherwise."""
    import os

    import ray
    import ray._private.ray_constants as ray_constants

    from hbt.config import ClusterConfig
    from hbt.ray_session import LOCAL_ONLY_ENV, PREEMPTION_WATCHER_ENV, ensure_ray

    started = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **options: started.append(options))
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", ray_constants.ENABLE_RAY_CLUSTER)
    monkeypatch.setenv(LOCAL_ONLY_ENV, os.environ.get(LOCAL_ONLY_ENV, "0"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv(PREEMPTION_WATCHER_ENV, raising=False)
    ensure_ray(ClusterConfig())
    assert started[-1]["address"] == "local" and os.environ[PREEMPTION_WATCHER_ENV] == "0"
    monkeypatch.setenv(PREEMPTION_WATCHER_ENV, "1")
    ensure_ray(ClusterConfig())
    assert os.environ[PREEMPTION_WATCHER_ENV] == "1"
    monkeypatch.delenv(PREEMPTION_WATCHER_ENV)
    ensure_ray(ClusterConfig(address="10.0.0.1:6379"))  # a cluster's nodes may be drained: Ray's default
    assert PREEMPTION_WATCHER_ENV not in os.environ and started[-1]["address"] == "10.0.0.1:6379"
