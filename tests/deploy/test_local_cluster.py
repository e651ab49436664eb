"""A real two-node Ray on this machine (cluster/local.sh): a smoke prepare + train + eval job goes
through `hbt submit` to its job server, and its model and results land on the storage path."""

import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

from hbt.config import REPO_ROOT

LOCAL_SH = REPO_ROOT / "cluster" / "local.sh"
RAY_VARIABLES = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def free_ports(count: int) -> int:
    """The first of `count` consecutive free TCP ports."""
    for start in range(20000, 30000, 7):
        try:
            for port in range(start, start + count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
            return start
        except OSError:
            continue
    pytest.fail("no free ports", pytrace=False)


def cluster_processes(state: Path) -> list[psutil.Process]:
    """The live processes of the cluster's two node sessions (`ray start --block` in setsid)."""
    sessions = {int((state / f"{node}.pid").read_text()) for node in ("head", "worker")
                if (state / f"{node}.pid").is_file()}
    found = []
    for process in psutil.process_iter(["pid", "status"]):
        try:
            if os.getsid(process.pid) in sessions and process.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (ProcessLookupError, psutil.Error):
            continue
    return found


def listening(processes) -> list[tuple[str, str, int]]:
    sockets = []
    for process in processes:
        try:
            for c in process.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN:
                    sockets.append((process.name(), c.laddr.ip.removeprefix("::ffff:"), c.laddr.port))
        except psutil.Error:
            continue
    return sockets


def run(args, env, timeout=600):
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_smoke_job_on_a_two_node_local_cluster(tiny_model, data_dir):
    state = Path(tempfile.mkdtemp(prefix="hbtc-", dir="/tmp"))  # short: Ray's socket paths stay < 108 bytes
    storage = state / "storage"
    gcs_port = free_ports(5)  # GCS; GCS+1..3 (local.sh: client server, worker's and head's agents); dashboard
    env = {k: v for k, v in os.environ.items() if k not in RAY_VARIABLES}
    env.update(HBT_CLUSTER_DIR=str(state), HBT_RAY_PORT=str(gcs_port), HBT_PYTHON=sys.executable,
               HBT_DASHBOARD_PORT=str(gcs_port + 4))
    try:
        up = run(["bash", str(LOCAL_SH), "up"], env, timeout=240)
        assert up.returncode == 0, up.stderr[-2000:] + (state / "head.log").read_text()[-2000:]
        assert run(["bash", str(LOCAL_SH), "up"], env).returncode == 2  # one cluster per state dir

        processes = cluster_processes(state)
        names = {p.name() for p in processes}
        assert sum(name == "raylet" for name in names) >= 1 and "gcs_server" in names
        sockets = listening(processes)
        assert len(sockets) >= 10 and [s for s in sockets if not ipaddress.ip_address(s[1]).is_loopback] == []

        exported = run(["bash", str(LOCAL_SH), "env"], env).stdout.split()[1:]
        client = {**env, **dict(assignment.split("=", 1) for assignment in exported)}
        assert (Path(client["RAY_AUTH_TOKEN_PATH"]).stat().st_mode & 0o077) == 0  # the token is the user's only

        no_token = {k: v for k, v in client.items() if not k.startswith("RAY_AUTH")} | {"HOME": str(state)}
        refused = run([sys.executable, "-m", "hbt.cli", "jobs", "list"], no_token)
        assert refused.returncode == 2 and "wants Ray's auth token" in refused.stderr

        submitted = run([sys.executable, "-m", "hbt.cli", "submit", "jobs/smoke.yaml", "--storage", str(storage),
                         "--data-dir", str(data_dir), "--set", f"model.name_or_path={tiny_model}", "--follow"],
                        client)
        assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
        job_id = submitted.stderr.split("submitted ", 1)[1].split()[0]
        assert "SUCCEEDED" in submitted.stderr and "step 4/4" in submitted.stdout
        status = run([sys.executable, "-m", "hbt.cli", "jobs", "status", job_id], client)
        assert status.stdout.split("\t")[1] == "SUCCEEDED"

        # The plain Ray CLI path of docs/cluster.md: the runtime env ships configs/, hbt is on PATH.
        plain = run([sys.executable, "-m", "ray.scripts.scripts", "job", "submit", "--runtime-env",
                     "cluster/runtime_env.yaml", "--", "hbt", "config", "show", "--config", "configs/cluster.yaml"],
                    client, timeout=300)
        assert plain.returncode == 0 and "storage_path: /mnt/hbt/storage" in plain.stdout, plain.stderr[-2000:]

        # The driver's outputs and the workers' checkpoints, on the storage path.
        assert (storage / "runs/train/model/config.json").is_file()
        assert any((storage / "checkpoints/train").glob("checkpoint_*"))
        results = json.loads((storage / "runs/eval/results.json").read_text())
        assert set(results["languages"]) == {"en", "de"} and 0.0 <= results["settings"]["multi"]["map"] <= 1.0
    finally:
        down = run(["bash", str(LOCAL_SH), "down"], env, timeout=120)
        left = cluster_processes(state)
        shutil.rmtree(state, ignore_errors=True)
    assert down.returncode == 0 and left == []
