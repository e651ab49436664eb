"""Fixtures of the training tests run in this process."""

import os
import socket

import pytest


@pytest.fixture(scope="module")
def one_rank_group():
    """DeepSpeed needs torch.distributed: a one-process gloo group, as Ray Train would set up."""
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "1",
           "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    dist.init_process_group("gloo", rank=0, world_size=1)
    yield
    import deepspeed.comm

    if deepspeed.comm.is_initialized():
        # DeepSpeed's own teardown: it also drops the groups it cached (a world clone), which a
        # later module's DeepSpeed engine would otherwise find stale on the next gloo group.
        deepspeed.comm.destroy_process_group()
    else:
        dist.destroy_process_group()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
