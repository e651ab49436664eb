"""Join or start the Ray that every verb runs on.

`cluster.address`, else `$RAY_ADDRESS` (which Ray sets for the entrypoint of a Ray job, on a
cluster or under KubeRay): join that cluster, so one config runs on a laptop and in a job.
Neither: a local in-process Ray sized by the config (the laptop / CI case: explicit CPUs, a
small object store), every port bound to the loopback interface. The dashboard stays on:
Ray Train V2's cleanup (and Tune over Train) needs the state API it serves.
"""

from __future__ import annotations

import os
from typing import Optional

from hbt.config import ClusterConfig

# Ray binds its GCS, raylet, workers and agents to the node's IP on all interfaces unless it
# believes it runs on a laptop OS (where clusters are off by default): then every server uses
# 127.0.0.1. Ray reads the switch once, at import, and its child processes from the
# environment, so both are set (`ray start` honours the same variable).
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _bind_to_loopback() -> None:
    from hbt.compat import ray_constants

    os.environ[LOCAL_ONLY_ENV] = "0"
    ray_constants().ENABLE_RAY_CLUSTER = False


# Ray Train starts a preemption-watcher actor for every run (and Tune trial) to log nodes being
# drained; a local Ray is one node that nobody drains, and the actor is one more process start
# (a few seconds of a 2-core machine) per run. Ray Train reads the switch from the environment
# of the process that calls `fit`, and local Ray's workers inherit this process's.
PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"


def cluster_address(cluster: ClusterConfig) -> Optional[str]:
    """The Ray cluster to join, or None for a local Ray of this process's own."""
    return cluster.address or os.environ.get("RAY_ADDRESS") or None


def ensure_ray(cluster: ClusterConfig) -> None:
    """Initialise Ray once per process; a Ray already up (a job, a test fixture) is kept."""
    import ray

    if ray.is_initialized():
        return
    address = cluster_address(cluster)
    if address is None:
        _bind_to_loopback()
        os.environ.setdefault(PREEMPTION_WATCHER_ENV, "0")
        ray.init(address="local", num_cpus=cluster.num_cpus, object_store_memory=cluster.object_store_memory,
                 include_dashboard=True, log_to_driver=False)
    else:  # Ray's own logs stay in its log files and dashboard, as on a local Ray
        ray.init(address=address, log_to_driver=False)
