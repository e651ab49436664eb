"""InfoNCE / multiple-negatives ranking loss, sentence-transformers style: works on embeddings only.

For queries q (B, D), positives p (B, D) and optional hard negatives h:

    scores = q @ cat(p, h_flat).T / temperature        # (B, B + K)
    loss   = cross_entropy(scores, target=arange(B))

The symmetric variant also scores each positive against all queries (p @ q.T / t, target i)
and averages the two terms. Embeddings are expected to be L2-normalised (cosine similarity).

Scores, logits and softmax are computed in float32 at least (outside any autocast region),
whatever the embeddings' dtype: under bf16 (8 bits of mantissa) a cosine of 0.9 is only known
to ~0.004, which a temperature of 0.05 turns into ~0.08 of logit, the size of the differences
between a query's best candidates.

A pair may have fewer hard negatives than the batch's N (a one-sentence paragraph has none):
its padding rows are marked False in `negative_mask` (B, N) and scored -inf, so they drop out
of the softmax while every rank keeps the same tensor shapes for the all-gather.

False negatives: with `positive_keys` (B,) and `negative_keys` (B, N) (int64 ids of the
candidates' positive keys, 0 for none; `hbt.data.positives`), every candidate other than the
query's own positive whose key equals the query's positive key is scored -inf for that query:
it is the query's answer (or its translation) and must not be pushed away. The composer
already keeps such pairs out of a batch; this is the safety net, so a duplicated positive
leaves the loss unchanged.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from hbt.collectives import all_gather_cat, all_gather_cat_with_grad


def _flatten_negatives(hard_negatives: Optional[torch.Tensor], dim: int) -> Optional[torch.Tensor]:
    if hard_negatives is None:
        return None
    if hard_negatives.dim() == 3:  # (B, N, D) -> (B*N, D)
        return hard_negatives.reshape(-1, hard_negatives.shape[-1])
    if hard_negatives.dim() == 2:  # (M, D)
        return hard_negatives
    raise ValueError(f"hard_negatives must be (B, N, D) or (M, D), got shape {tuple(hard_negatives.shape)}")


def _same_positive(positive_keys: torch.Tensor, candidate_keys: torch.Tensor) -> torch.Tensor:
    """(B, C) bool: candidate c holds query i's positive key; column i (its own positive) excluded."""
    batch = positive_keys.shape[0]
    same = (positive_keys[:, None] == candidate_keys[None, :]) & (positive_keys[:, None] != 0)  # (B, C)
    own = torch.zeros_like(same)
    own[:, :batch] = torch.eye(batch, dtype=torch.bool, device=same.device)
    return same & ~own


def info_nce(
    query: torch.Tensor,
    positive: torch.Tensor,
    hard_negatives: Optional[torch.Tensor] = None,
    temperature: float = 0.05,
    symmetric: bool = False,
    negative_mask: Optional[torch.Tensor] = None,
    positive_keys: Optional[torch.Tensor] = None,
    negative_keys: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Scalar InfoNCE loss; row i of `query` must match row i of `positive`.

    query (B, D), positive (B, D), hard_negatives (B, N, D) | (M, D) | None,
    negative_mask (B, N) | (M,) bool | None: False marks a padding negative;
    positive_keys (B,) int64 | None and negative_keys (B, N) | (M,) int64 | None: see the module doc.
    """
    if query.dim() != 2 or positive.shape != query.shape:
        raise ValueError(f"query and positive must both be (B, D), "
                         f"got {tuple(query.shape)} and {tuple(positive.shape)}")
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    # autocast (DDP with bf16) would recast the matmuls to bf16: off for the loss
    with torch.autocast(query.device.type, enabled=False):
        # bf16 / fp16 embeddings -> float32; float64 stays (the exact tests compare in float64)
        dtype = torch.promote_types(query.dtype, torch.float32)
        query, positive = query.to(dtype), positive.to(dtype)  # (B, D) each
        batch = query.shape[0]
        negatives = _flatten_negatives(hard_negatives, query.shape[1])  # (K, D) | None
        negatives = None if negatives is None else negatives.to(dtype)
        candidates = positive if negatives is None else torch.cat([positive, negatives], dim=0)  # (B + K, D)
        scores = query @ candidates.T / temperature  # (B, B + K), float32 or float64
        drop = torch.zeros_like(scores, dtype=torch.bool)  # (B, B + K)
        if negatives is not None and negative_mask is not None:
            keep = torch.cat([torch.ones(batch, dtype=torch.bool, device=scores.device),
                              negative_mask.reshape(-1).to(scores.device)])  # (B + K,)
            if keep.shape[0] != scores.shape[1]:
                raise ValueError(f"negative_mask has {keep.shape[0] - batch} entries "
                                 f"for {scores.shape[1] - batch} negatives")
            drop |= ~keep[None, :]
        if positive_keys is not None:
            keys = positive_keys.reshape(-1).to(scores.device)  # (B,)
            candidate_keys = keys if negatives is None else torch.cat([
                keys, (negative_keys.reshape(-1).to(scores.device) if negative_keys is not None
                       else torch.zeros(negatives.shape[0], dtype=keys.dtype, device=keys.device))])  # (B + K,)
            if candidate_keys.shape[0] != scores.shape[1]:
                raise ValueError(f"negative_keys has {candidate_keys.shape[0] - batch} entries for "
                                 f"{scores.shape[1] - batch} negatives")
            drop |= _same_positive(keys, candidate_keys)
        scores = scores.masked_fill(drop, float("-inf"))
        target = torch.arange(batch, device=query.device)  # (B,)
        loss = F.cross_entropy(scores, target)
        if symmetric:
            back = positive @ query.T / temperature  # (B, B): passage -> query
            if positive_keys is not None:
                back = back.masked_fill(drop[:, :batch].T, float("-inf"))  # the same pairs, seen from the passage
            loss = (loss + F.cross_entropy(back, target)) / 2
        return loss


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
        negative_mask: Optional[torch.Tensor] = None, positive_keys: Optional[torch.Tensor] = None,
        negative_keys: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        if self.gather:
            # On the process group's device (hbt.collectives), back on the embeddings' device.
            query, positive = all_gather_cat_with_grad(query), all_gather_cat_with_grad(positive)  # (world*B, D)
            if hard_negatives is not None:
                hard_negatives = all_gather_cat_with_grad(hard_negatives)  # (world*B, N, D)
            if negative_mask is not None:
                # gloo has no bool all-gather: ship the mask as int64
                negative_mask = all_gather_cat(negative_mask.to(torch.int64)) > 0  # (world*B, N)
            # int64, which gloo and NCCL gather exactly (a float gather would round 64-bit ids)
            positive_keys, negative_keys = (None if keys is None else all_gather_cat(keys)
                                            for keys in (positive_keys, negative_keys))  # (world*B[, N])
        return info_nce(query, positive, hard_negatives, self.temperature, self.symmetric, negative_mask,
                        positive_keys, negative_keys)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, symmetric={self.symmetric}, gather={self.gather}"
