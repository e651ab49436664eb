"""How many torch threads a training worker or an encode actor runs.

`os.cpu_count()` is the node's cores, not this process's: in an 8-CPU pod on a 96-core node
it says 96, and 96 threads on 8 CPUs of quota thrash. A process may use the CPUs of its
affinity mask, bounded by its cgroup's CPU quota (what a Kubernetes CPU limit sets); of those,
a Ray worker or actor that reserved whole CPUs takes what it reserved. A fractional
reservation (`cluster.cpus_per_worker: 0.5` on a laptop) reserves no core of its own: the
processes on the node share its usable CPUs instead.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> Optional[float]:
    """CPUs of this container's cgroup quota (v2 `cpu.max`, else v1 `cpu.cfs_quota_us` /
    `cpu.cfs_period_us`); None when there is no quota."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]  # "max 100000" or "800000 100000"
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())  # -1: no quota
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def usable_cpus(root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may run on: its affinity mask, bounded by its cgroup quota (at least 1)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = cgroup_cpu_limit(root)
    if limit is not None:
        cpus = min(cpus, math.ceil(limit))
    return max(1, cpus)


def ray_assigned_cpus() -> Optional[float]:
    """CPUs Ray reserved for this worker or actor; None outside a Ray worker process."""
    import ray

    if not ray.is_initialized():
        return None
    context = ray.get_runtime_context()
    if context.worker.mode != ray.WORKER_MODE:  # the driver: Ray reserved nothing for it
        return None
    return context.get_assigned_resources().get("CPU")


def torch_threads(sharing: int = 1, assigned: Optional[float] = None, usable: Optional[int] = None) -> int:
    """Threads for this process: the whole CPUs Ray reserved for it, bounded by `usable_cpus`;
    without a whole-CPU reservation, its share of the usable CPUs among `sharing` processes
    (e.g. the node's training workers). At least 1. `assigned` / `usable`: measured when None."""
    usable = usable_cpus() if usable is None else usable
    assigned = ray_assigned_cpus() if assigned is None else assigned
    if assigned is not None and assigned >= 1:
        return max(1, min(usable, int(assigned)))
    return max(1, usable // max(1, sharing))
