"""Torch threads from the CPUs a process may use (hbt.threads), not from the node's cores."""

import pytest

from hbt.threads import cgroup_cpu_limit, torch_threads, usable_cpus


def cgroup(tmp_path, v2=None, v1=None):
    tmp_path.mkdir(exist_ok=True)
    if v2 is not None:
        (tmp_path / "cpu.max").write_text(v2 + "\n")
    if v1 is not None:
        (tmp_path / "cpu").mkdir()
        (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(f"{v1[0]}\n")
        (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(f"{v1[1]}\n")
    return tmp_path


@pytest.mark.parametrize("v2, v1, limit", [
    ("800000 100000", None, 8.0),     # an 8-CPU pod limit (cgroup v2)
    ("150000 100000", None, 1.5),
    ("max 100000", None, None),       # no quota
    (None, (400000, 100000), 4.0),    # cgroup v1
    (None, (-1, 100000), None),
    (None, None, None),               # no cgroup files at all
])
def test_cgroup_cpu_limit(tmp_path, v2, v1, limit):
    assert cgroup_cpu_limit(cgroup(tmp_path, v2, v1)) == limit


def test_usable_cpus_is_the_affinity_bounded_by_the_quota(tmp_path, monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(96)), raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 96)
    assert usable_cpus(cgroup(tmp_path / "pod", "800000 100000")) == 8       # 96 cores, 8-CPU pod: 8
    assert usable_cpus(cgroup(tmp_path / "half", "50000 100000")) == 1       # half a CPU: at least 1
    assert usable_cpus(cgroup(tmp_path / "none", "max 100000")) == 96
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert usable_cpus(cgroup(tmp_path / "pinned", "800000 100000")) == 3    # taskset / cpuset: 3


@pytest.mark.parametrize("assigned, usable, sharing, threads", [
    (4.0, 96, 1, 4),     # a worker reserving 4 CPUs on a 96-core node: 4, not 96
    (4.0, 8, 4, 4),      # whole CPUs reserved: not divided by the node's other workers
    (16.0, 8, 1, 8),     # more reserved than the pod's quota: the quota
    (0.5, 2, 1, 2),      # fractional (a laptop's local Ray): the node's usable CPUs, shared
    (0.5, 8, 4, 2),
    (None, 8, 1, 8),     # not a Ray worker
    (None, 1, 4, 1),     # at least 1
])
def test_torch_threads(assigned, usable, sharing, threads):
    assert torch_threads(sharing, assigned=assigned, usable=usable) == threads


def test_ray_assignment_is_read_inside_an_actor(ray_local):
    import ray

    from hbt.threads import ray_assigned_cpus

    assert ray_assigned_cpus() is None  # the driver reserved nothing

    @ray.remote(num_cpus=1)
    class Probe:
        def threads(self):
            return ray_assigned_cpus(), torch_threads()

    probe = Probe.remote()
    assigned, threads = ray.get(probe.threads.remote())
    ray.kill(probe)
    assert assigned == 1.0 and threads == 1  # this machine's 2 cores; the actor reserved 1
