"""The cross-worker gather carries gradients: two real processes (gloo) against one process
computing the whole-batch loss.

Every rank computes the same whole-batch loss over the gathered embeddings; all_gather's
backward sums every rank's gradient for a rank's own slice, so rank r holds `world x` the
loss's gradient through its slice, and DDP's average over ranks is the whole-batch gradient.
"""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from hbt.losses.infonce import InfoNCELoss, info_nce

pytestmark = pytest.mark.timeout(120)

WORLD, B, N, D_IN, D = 2, 3, 2, 6, 4


def inputs():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(WORLD, B * (2 + N), D_IN, generator=g, dtype=torch.float64)  # per rank: q, p, negatives
    w = torch.randn(D_IN, D, generator=g, dtype=torch.float64)
    # Rank 1's first positive is the same passage as rank 0's first (one key): masked across ranks.
    pos_keys = torch.tensor([[11, 12, 13], [11, 22, 23]])
    neg_keys = torch.tensor([[[0, 22], [0, 0], [0, 0]], [[0, 0], [13, 0], [0, 0]]])
    neg_mask = torch.tensor([[[True, True], [True, False], [True, True]], [[True, True], [True, True], [False, False]]])
    return x, w, pos_keys, neg_keys, neg_mask


def split(emb):  # (B*(2+N), D) -> q (B, D), p (B, D), negatives (B, N, D)
    return emb[:B], emb[B:2 * B], emb[2 * B:].reshape(B, N, D)


def rank_main(rank, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    x, w, pos_keys, neg_keys, neg_mask = inputs()
    w = w.clone().requires_grad_(True)
    q, p, negs = split(F.normalize(x[rank] @ w, dim=-1))
    loss = InfoNCELoss(0.1, symmetric=True, gather=True)(q, p, negs, neg_mask[rank], pos_keys[rank], neg_keys[rank])
    loss.backward()
    torch.save({"loss": loss.detach(), "grad": w.grad}, os.path.join(out_dir, f"rank{rank}.pt"))
    # Both ranks leave together: a rank tearing gloo down while its peer still talks to it
    # aborted the peer once ("terminate called without an active exception").
    dist.barrier()
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_each_ranks_gradient_is_world_times_its_share_of_the_whole_batch_loss(tmp_path):
    mp.spawn(rank_main, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]

    x, w, pos_keys, neg_keys, neg_mask = inputs()
    slices = [w.clone().requires_grad_(True) for _ in range(WORLD)]  # one leaf per rank's slice
    parts = [split(F.normalize(x[r] @ slices[r], dim=-1)) for r in range(WORLD)]
    q, p, negs = (torch.cat([part[i] for part in parts]) for i in range(3))
    whole = info_nce(q, p, negs, 0.1, True, neg_mask.reshape(WORLD * B, N), pos_keys.reshape(-1),
                     neg_keys.reshape(WORLD * B, N))
    whole.backward()

    for r in range(WORLD):
        assert ranks[r]["loss"].item() == pytest.approx(whole.item(), rel=1e-12)
        torch.testing.assert_close(ranks[r]["grad"], WORLD * slices[r].grad, rtol=1e-10, atol=1e-12)
    ddp_average = sum(rank["grad"] for rank in ranks) / WORLD
    torch.testing.assert_close(ddp_average, sum(s.grad for s in slices), rtol=1e-10, atol=1e-12)
