"""A training worker whose process group behaves like NCCL on a machine without a GPU.

NCCL refuses a tensor that is not on the worker's GPU. Here the "GPU" is torch's lazy device
(its TorchScript backend runs on the CPU, so tensors on it hold real values):
`hbt.collectives.collective_device` says `lazy:0`, and every torch.distributed collective
refuses a tensor on any other device, then runs the real gloo collective on CPU copies and
writes the results back. Each rank writes the collectives it ran to LOG_DIR/rank{r}.json.

Ray workers cannot import this file (tests/train is not on their path): the driver pickles it
by value (`checked_train_func` registers it).
"""

import json
import os
import sys
from collections import Counter

WRAPPED = ("all_reduce", "broadcast", "all_gather", "scatter", "gather", "reduce", "reduce_scatter", "all_to_all",
           "all_gather_into_tensor", "reduce_scatter_tensor")


class RefusedDevice(RuntimeError):
    pass


def _tensors(value):
    import torch

    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)


def _to_cpu(value):
    import torch

    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(item) for item in value)
    return value


def _checked(name, real, expected, calls: Counter):
    def collective(*args, **kwargs):
        for tensor in _tensors([*args, *kwargs.values()]):
            if tensor.device != expected:
                raise RefusedDevice(f"fake NCCL: {name} got a tensor on {tensor.device}, the process group "
                                    f"takes {expected}")
        calls[name] += 1
        cpu_args, cpu_kwargs = _to_cpu(args), {key: _to_cpu(value) for key, value in kwargs.items()}
        result = real(*cpu_args, **cpu_kwargs)
        # In-place semantics: every tensor handed in gets the collective's values back.
        for mine, done in zip(_tensors([*args, *kwargs.values()]), _tensors([*cpu_args, *cpu_kwargs.values()])):
            mine.copy_(done)
        return result

    return collective


def install() -> Counter:
    """Patch this process: the lazy device as the collective device, every collective checked;
    -> the count of each collective run (filled as they run)."""
    import torch._lazy.ts_backend
    import torch.distributed as dist

    import hbt.collectives

    torch._lazy.ts_backend.init()
    device = torch.device("lazy", 0)
    hbt.collectives.collective_device = lambda: device
    calls: Counter = Counter()
    for name in WRAPPED:
        setattr(dist, name, _checked(name, getattr(dist, name), device, calls))
    return calls


def make_checked_train_func(log_dir: str):
    """`hbt.train.loop.train_func` under the fake NCCL; counts of each collective per rank in LOG_DIR."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

    def checked_train_func(config: dict) -> None:
        import ray.train

        from hbt.train.loop import train_func

        calls = install()
        try:
            train_func(config)
        finally:
            rank = ray.train.get_context().get_world_rank()
            with open(os.path.join(log_dir, f"rank{rank}.json"), "w") as f:
                json.dump(dict(calls), f)

    return checked_train_func
