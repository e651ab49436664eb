"""InfoNCE / multiple-negatives ranking loss, sentence-transformers style: works on embeddings only.

For queries q (B, D), positives p (B, D) and optional hard negatives h:

    scores = q @ cat(p, h_flat).T / temperature        # (B, B + K)
    loss   = cross_entropy(scores, target=arange(B))

The symmetric variant also scores each positive against all queries (p @ q.T / t, target i)
and averages the two terms. Embeddings are expected to be L2-normalised (cosine similarity).

A pair may have fewer hard negatives than the batch's N (a one-sentence paragraph has none):
its padding rows are marked False in `negative_mask` (B, N) and scored -inf, so they drop out
of the softmax while every rank keeps the same tensor shapes for the all-gather.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def _flatten_negatives(hard_negatives: Optional[torch.Tensor], dim: int) -> Optional[torch.Tensor]:
    if hard_negatives is None:
        return None
    if hard_negatives.dim() == 3:  # (B, N, D) -> (B*N, D)
        return hard_negatives.reshape(-1, hard_negatives.shape[-1])
    if hard_negatives.dim() == 2:  # (M, D)
        return hard_negatives
    raise ValueError(f"hard_negatives must be (B, N, D) or (M, D), got shape {tuple(hard_negatives.shape)}")


def info_nce(
    query: torch.Tensor,
    positive: torch.Tensor,
    hard_negatives: Optional[torch.Tensor] = None,
    temperature: float = 0.05,
    symmetric: bool = False,
    negative_mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Scalar InfoNCE loss; row i of `query` must match row i of `positive`.

    query (B, D), positive (B, D), hard_negatives (B, N, D) | (M, D) | None,
    negative_mask (B, N) | (M,) bool | None: False marks a padding negative.
    """
    if query.dim() != 2 or positive.shape != query.shape:
        raise ValueError(f"query and positive must both be (B, D), got {tuple(query.shape)} and {tuple(positive.shape)}")
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    batch = query.shape[0]
    negatives = _flatten_negatives(hard_negatives, query.shape[1])  # (K, D) | None
    candidates = positive if negatives is None else torch.cat([positive, negatives], dim=0)  # (B + K, D)
    scores = query @ candidates.T / temperature  # (B, B + K)
    if negatives is not None and negative_mask is not None:
        keep = torch.cat([torch.ones(batch, dtype=torch.bool, device=scores.device),
                          negative_mask.reshape(-1).to(scores.device)])  # (B + K,)
        if keep.shape[0] != scores.shape[1]:
            raise ValueError(f"negative_mask has {keep.shape[0] - batch} entries for {scores.shape[1] - batch} negatives")
        scores = scores.masked_fill(~keep, float("-inf"))
    target = torch.arange(batch, device=query.device)  # (B,)
    loss = F.cross_entropy(scores, target)
    if symmetric:
        back = positive @ query.T / temperature  # (B, B): passage -> query
        loss = (loss + F.cross_entropy(back, target)) / 2
    return loss


def gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    """Concatenate `t` (B, ...) from all ranks along dim 0 -> (world*B, ...), keeping the local gradient.

    Identity when torch.distributed is unavailable, uninitialised, or world_size == 1.
    All ranks must pass the same shape.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return t
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(t), dim=0)


class InfoNCELoss(nn.Module):
    """`info_nce` with fixed temperature/symmetric flags; `gather=True` all-gathers embeddings
    across ranks first so every rank's queries see every rank's passages as negatives."""

    def __init__(self, temperature: float = 0.05, symmetric: bool = False, gather: bool = False):
        super().__init__()
        if temperature <= 0:
            raise ValueError("temperature must be > 0")
        self.temperature = float(temperature)
        self.symmetric = bool(symmetric)
        self.gather = bool(gather)

    @classmethod
    def from_config(cls, train_cfg, gather: bool = False) -> "InfoNCELoss":
        """From a `hbt.config.TrainConfig` (temperature, symmetric_loss)."""
        return cls(train_cfg.temperature, train_cfg.symmetric_loss, gather)

    def forward(
        self, query: torch.Tensor, positive: torch.Tensor, hard_negatives: Optional[torch.Tensor] = None,
        negative_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        if self.gather:
            query, positive = gather_with_grad(query), gather_with_grad(positive)  # (world*B, D)
            if hard_negatives is not None:
                hard_negatives = gather_with_grad(hard_negatives)
            if negative_mask is not None:
                # gloo has no bool all-gather: ship the mask as floats
                negative_mask = gather_with_grad(negative_mask.to(query.dtype)) > 0.5  # (world*B, N)
        return info_nce(query, positive, hard_negatives, self.temperature, self.symmetric, negative_mask)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, symmetric={self.symmetric}, gather={self.gather}"
