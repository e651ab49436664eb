"""Join or start the Ray that every verb runs on.

`cluster.address` None: a local in-process Ray sized by the config (the laptop / CI case:
explicit CPUs, a small object store). Otherwise join that cluster ("auto" inside `ray job
submit`, or ray://host:10001). The dashboard stays on: Ray Train V2's cleanup (and Tune
over Train) needs the state API it serves.
"""

from __future__ import annotations

from hbt.config import ClusterConfig


def ensure_ray(cluster: ClusterConfig) -> None:
    """Initialise Ray once per process; a Ray already up (a job, a test fixture) is kept."""
    import ray

    if ray.is_initialized():
        return
    if cluster.address is None:
        ray.init(num_cpus=cluster.num_cpus, object_store_memory=cluster.object_store_memory,
                 include_dashboard=True, log_to_driver=False)
    else:
        ray.init(address=cluster.address)
