"""Every torch.distributed collective hbt calls itself, on the device its process group takes.

Ray Train's process group is NCCL with `cluster.use_gpu` and gloo without; NCCL refuses a
CPU tensor ("Tensors must be CUDA and dense"), so a report's sums or the dev metrics built on
the CPU would crash a GPU run at its first report. Each helper moves its tensor to
`collective_device()`, runs the collective there and gives the result back on the tensor's
own device (a no-op move when they agree). Every helper is the identity without a process
group or with one rank.

DDP's gradient all-reduce and DeepSpeed's collectives are their own: they use the model's
device, which is the strategy's.
"""

from __future__ import annotations

import torch


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def collective_device() -> torch.device:
    """The device the process group's backend takes tensors on: NCCL the current CUDA device
    (Ray Train sets it to the worker's GPU), gloo the CPU."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """`t` summed over all ranks (a new tensor on `t`'s device; `t` itself is left alone)."""
    import torch.distributed as dist

    if not _distributed():
        return t.clone()
    buffer = t.to(collective_device(), copy=True)
    dist.all_reduce(buffer)
    return buffer.to(t.device)


def broadcast(t: torch.Tensor, src: int) -> torch.Tensor:
    """Rank `src`'s `t` on every rank (same shape and dtype on every rank)."""
    import torch.distributed as dist

    if not _distributed():
        return t
    buffer = t.to(collective_device(), copy=True)
    dist.broadcast(buffer, src=src)
    return buffer.to(t.device)


def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """(B, ...) from every rank, concatenated along dim 0 -> (world*B, ...); no gradient."""
    import torch.distributed as dist

    if not _distributed():
        return t
    local = t.to(collective_device()).contiguous()
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, local)
    return torch.cat(parts, dim=0).to(t.device)


def all_gather_cat_with_grad(t: torch.Tensor) -> torch.Tensor:
    """`all_gather_cat` keeping the gradient: the backward pass sums every rank's gradient
    for this rank's slice (`torch.distributed.nn.functional.all_gather`)."""
    if not _distributed():
        return t
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(t.to(collective_device())), dim=0).to(t.device)
