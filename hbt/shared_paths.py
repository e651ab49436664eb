"""On a cluster of several nodes, the paths hbt's processes share must be one place on every node.

Training workers write checkpoints to the run's storage and read the prepared Parquet and the
model dir; a Tune trial (on any node) writes its run dir; eval's encode actors load the model.
The driver then reads what they wrote. A path on one node's local disk breaks that silently:
a checkpoint lands where the driver never looks, or a worker fails far from the cause. So
before the first worker starts, `check_shared` asks one zero-CPU task pinned to every alive
node whether it sees each input, and a marker file the driver dropped beside each output; a
node that does not is refused in one line. URIs (s3://, gs://, ...) are left to their filesystem.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Mapping

from hbt.errors import HbtError
from hbt.io import absolute_location, is_local

MARKER_PREFIX = ".hbt-shared-probe-"


def _local(paths: Mapping[str, str | None]) -> dict[str, Path]:
    """The entries that are paths on this machine (not None, not s3:// or another URI)."""
    return {name: Path(absolute_location(path)) for name, path in paths.items() if path is not None and is_local(path)}


def _existing_dir(path: Path) -> Path:
    """`path` if it is a dir, else its nearest existing ancestor (an output dir may not exist yet)."""
    while not path.is_dir():
        path = path.parent
    return path


def local_model_dir(name_or_path: str) -> str | None:
    """The model's local dir, or None for a hub name (each node fetches or caches it itself)."""
    return name_or_path if Path(name_or_path).is_dir() else None


def alive_node_ids() -> list[str]:
    import ray

    return [node["NodeID"] for node in ray.nodes() if node["Alive"]]


def unseen_on_nodes(markers: list[str], node_ids: list[str], timeout_s: float = 120.0) -> dict[str, list[str]]:
    """{node IP: the markers it does not see}, for the nodes that miss any; one task per node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0)
    def missing_here(paths: list[str]) -> tuple[str, list[str]]:
        return ray.util.get_node_ip_address(), [p for p in paths if not os.path.exists(p)]

    tasks = [missing_here.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False))
             .remote(markers) for node_id in node_ids]
    return {ip: missing for ip, missing in ray.get(tasks, timeout=timeout_s) if missing}


def check_shared(reads: Mapping[str, str | None], writes: Mapping[str, str | None]) -> None:
    """Refuse (HbtError) paths that are not one place on every node of a multi-node Ray.

    `reads` and `writes` map what a path is to the path (e.g. {"data.prepared_dir": path}): an
    input some node does not have at that path, or an output that is not one place on every
    node, is refused. None entries and URIs are skipped; a single node passes."""
    node_ids = alive_node_ids()
    reads, writes = _local(reads), _local(writes)
    if len(node_ids) < 2 or not (reads or writes):
        return
    probes = {str(path): name for name, path in reads.items()}  # an input only has to be there
    try:
        for name, path in writes.items():  # an output must be the same place: a marker proves it
            marker = _existing_dir(path) / f"{MARKER_PREFIX}{uuid.uuid4().hex}"
            try:
                marker.touch()
            except OSError as error:
                raise HbtError(f"{name} {path}: cannot write there ({error.strerror})") from None
            probes[str(marker)] = name
        unseen = unseen_on_nodes(list(probes), node_ids)
    finally:
        for probe, name in probes.items():
            if name in writes:
                Path(probe).unlink(missing_ok=True)
    if unseen:
        ip, missing = next(iter(unseen.items()))
        name = probes[missing[0]]
        if name in reads:
            raise HbtError(f"{name} {reads[name]} is missing on node {ip} of this {len(node_ids)}-node cluster: "
                           "every node reads it, so put it on storage all nodes mount at the same path")
        raise HbtError(f"{name} {writes[name]} is not shared storage: node {ip} of this {len(node_ids)}-node "
                       "cluster does not see it; on a multi-node cluster put it on storage every node mounts "
                       "at the same path (NFS, a ReadWriteMany volume), or checkpoints on s3:// / gs://")
