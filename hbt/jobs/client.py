"""A Ray cluster's job server, through Ray's Jobs SDK (`JobSubmissionClient`): submit a job
spec, follow its logs, ask its status, stop it.

The address is `--address`, else `$RAY_API_SERVER_ADDRESS` / `$RAY_ADDRESS` (as `ray job`
reads them), else the local dashboard (`cluster/local.sh up`). Ray's token authentication
stays on: the token comes from `$RAY_AUTH_TOKEN`, the file `$RAY_AUTH_TOKEN_PATH` or
`~/.ray/auth_token`, never from a file in the repository.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import sys
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Callable, Optional

from hbt.errors import HbtError, first_line
from hbt.jobs.spec import JobSpec, runtime_env

LOCAL_ADDRESS = "http://127.0.0.1:8265"
ENDED = ("SUCCEEDED", "FAILED", "STOPPED")
AUTH_MODE = "RAY_AUTH_MODE"


def job_server(address: Optional[str]) -> str:
    return address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS") or LOCAL_ADDRESS


def _use_token_if_any() -> None:
    """Send Ray's token when one is configured: a Ray client sends none unless told to."""
    if os.environ.get(AUTH_MODE) is not None:
        return
    token_file = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    if os.environ.get("RAY_AUTH_TOKEN") or Path(token_file).is_file():
        os.environ[AUTH_MODE] = "token"


def _token_in_the_clear(address: str) -> bool:
    """Whether a token sent to `address` crosses a network unencrypted: not https, not loopback."""
    scheme, _, rest = address.rpartition("://")
    host = urllib.parse.urlsplit(f"//{rest}").hostname or ""
    if scheme == "https" or host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        return True


def _server_error(error: Exception, address: str) -> HbtError:
    text = str(error)
    if "status code 401" in text or "Authentication required" in text:
        return HbtError(f"the job server at {address} wants Ray's auth token: set RAY_AUTH_TOKEN or "
                        "RAY_AUTH_TOKEN_PATH (cluster/local.sh env prints them for the local cluster)")
    if "status code 403" in text or "Authentication failed" in text:
        return HbtError(f"the job server at {address} refused the token in RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH")
    return HbtError(f"job server {address}: {first_line(error)}")


class Jobs:
    """The job server at one address; every failure to talk to it is one HbtError line."""

    def __init__(self, address: Optional[str] = None):
        self.address = job_server(address)
        # Ray's SDK lets these variables override the address it is given: an explicit
        # --address wins here, as a flag should.
        os.environ["RAY_API_SERVER_ADDRESS"] = self.address
        _use_token_if_any()
        if os.environ.get(AUTH_MODE) == "token" and _token_in_the_clear(self.address):
            # Ray sends the token in a header of every request: over plain HTTP anyone on the way reads it.
            print(f"hbt: warning: Ray's auth token goes to {self.address} unencrypted: reach the job server "
                  "through a tunnel on this machine (`ray dashboard CLUSTER.yaml`, `kubectl port-forward "
                  "svc/CLUSTER-head-svc 8265`: --address http://127.0.0.1:8265) or over https://", file=sys.stderr)
        self._client = self._call(self._connect)
        # After the import, which sets the SDK logger's level: its "WebSocket closed" is noise.
        logging.getLogger("ray.dashboard.modules.job.sdk").setLevel(logging.WARNING)

    def _connect(self):
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.address)

    def _call(self, fn: Callable, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HbtError:
            raise
        except Exception as error:  # noqa: BLE001 - the SDK's failures (HTTP, auth, connection) are one line
            raise _server_error(error, self.address) from None

    def submit(self, spec: JobSpec, entrypoint: str, name: str, env_vars: dict[str, str]) -> str:
        submission_id = f"hbt-{name}-{uuid.uuid4().hex[:8]}"
        return self._call(self._client.submit_job, entrypoint=entrypoint, submission_id=submission_id,
                          runtime_env=runtime_env(spec, env_vars), entrypoint_num_cpus=spec.entrypoint_num_cpus,
                          entrypoint_memory=spec.entrypoint_memory,
                          metadata={"hbt_job": name, **spec.metadata})

    def status(self, job_id: str) -> str:
        return str(self._call(self._client.get_job_status, job_id).value)

    def info(self, job_id: str):
        return self._call(self._client.get_job_info, job_id)

    def list(self, drivers: bool = False) -> list:
        """The submitted jobs; with `drivers`, also Ray's DRIVER entries: every process that joins
        the cluster with ray.init is one, each `hbt` step of a submitted job included."""
        from ray.job_submission import JobType

        return [job for job in self._call(self._client.list_jobs) if drivers or job.type == JobType.SUBMISSION]

    def logs(self, job_id: str) -> str:
        return self._call(self._client.get_job_logs, job_id)

    def stop(self, job_id: str) -> bool:
        return self._call(self._client.stop_job, job_id)

    def follow(self, job_id: str, write: Callable[[str], None]) -> str:
        """Stream the job's logs through `write` until it ends; returns its final status."""
        async def tail() -> None:
            async for chunk in self._client.tail_job_logs(job_id):
                write(chunk)

        self._call(asyncio.run, tail())
        return self.wait(job_id)

    def wait(self, job_id: str, timeout_s: float = 60.0, poll_s: float = 0.5) -> str:
        """The job's status once it has ended (the log stream may close a moment before)."""
        deadline = time.monotonic() + timeout_s
        while (status := self.status(job_id)) not in ENDED and time.monotonic() < deadline:
            time.sleep(poll_s)
        return status
