"""A step's sequences as length-sorted chunks, each padded to its own longest sequence.

The stream carries a step's tokens ragged (`hbt.train.batch`): the M = B * (2 + N) sequences'
ids end to end and each one's length, in step order. One matrix padded to the step's longest
sequence (up to `model.max_length`) would make the encoder compute mostly padding: a 20-token
query padded to a 128-token passage. `pack` sorts the sequences by length and cuts the sorted
run into chunks, each padded to its own longest; the encoder runs the chunks one after the
other in one forward call, and `restore` puts the embeddings back in step order before the
loss. Attention and pooling mask out padding, so every sequence's embedding is the one the
single matrix gives, up to float summation order (tests/train/test_packing.py).

Where to cut: the fewest computed tokens (a chunk computes rows x its longest) plus
CHUNK_COST_TOKENS per chunk, the fixed cost of one more pass through the layers counted in
tokens. On ascending lengths the best cut is a small dynamic programme (`chunk_bounds`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# One more chunk costs about as much as this many more tokens in a chunk: its own pass through
# every layer (12 for e5-small), smaller matmuls. 64 keeps a 16-pair step to a handful of chunks
# and its padding near 5% (benchmarks/train_speed.py prints both); a GPU, where a pass has a
# larger fixed cost, would rather use variable-length attention (docs/training.md).
CHUNK_COST_TOKENS = 64


@dataclass
class Packed:
    """A step's sequences as the encoder computes them: chunks, and the way back to step order."""

    input_ids: list[torch.Tensor]       # per chunk (m_c, T_c) int64, sum of m_c = M
    attention_mask: list[torch.Tensor]  # per chunk (m_c, T_c) int64
    restore: torch.Tensor               # (M,) int64: step row i is row restore[i] of the chunks' rows
    real_tokens: int                    # sum of the lengths
    computed_tokens: int                # sum of m_c * T_c: real tokens and padding

    def to(self, device: torch.device) -> "Packed":
        return Packed([ids.to(device) for ids in self.input_ids], [mask.to(device) for mask in self.attention_mask],
                      self.restore.to(device), self.real_tokens, self.computed_tokens)


def chunk_bounds(lengths: np.ndarray, chunk_cost: int = CHUNK_COST_TOKENS) -> list[int]:
    """Cut points [0, ..., M] of ascending `lengths` (M,) into chunks that minimise computed
    tokens + `chunk_cost` per chunk.

    Only where the length changes is a cut worth making: a cut between two rows of length L
    can move right by one row (the chunk before still pads to L, the one after no longer pays
    its own longest >= L for that row) until it reaches a longer row or the chunk after empties.
    So the programme runs over the U distinct lengths (U <= max_length), not the M rows:
    O(U^2), whatever the batch (a step of 16,000 sequences: U ~300, not M^2 = 2.6e8)."""
    values, counts = np.unique(np.asarray(lengths, dtype=np.int64), return_counts=True)  # (U,), (U,)
    ends = np.concatenate([[0], np.cumsum(counts)])  # (U + 1,): ends[g] = rows before group g
    u = len(values)
    best = np.zeros(u + 1)                   # best[g]: cost of groups [0, g)
    start = np.zeros(u + 1, dtype=np.int64)  # start[g]: the group where the last chunk of [0, g) begins
    for g in range(1, u + 1):
        # Last chunk: groups [h, g), ends[g] - ends[h] rows padded to values[g - 1], the longest.
        cost = best[:g] + (ends[g] - ends[:g]) * values[g - 1] + chunk_cost  # (g,) over h
        start[g] = np.argmin(cost)
        best[g] = cost[start[g]]
    cuts = [u]
    while cuts[-1] > 0:
        cuts.append(int(start[cuts[-1]]))
    return [int(ends[g]) for g in cuts[::-1]]


def padded(token_ids: np.ndarray, offsets: np.ndarray, lengths: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The sequences at `offsets` (m,) of `lengths` (m,) in `token_ids` (S,), padded to the
    longest of them -> input_ids, attention_mask (m, T) int64. The padding id is 0: attention
    and pooling never read it."""
    width = int(lengths.max()) if len(lengths) else 0
    mask = np.arange(width) < lengths[:, None]  # (m, T)
    ids = np.zeros(mask.shape, dtype=np.int64)  # (m, T)
    ids[mask] = token_ids[(offsets[:, None] + np.arange(width))[mask]]
    return torch.from_numpy(ids), torch.from_numpy(mask.astype(np.int64))


def _offsets(lengths: np.ndarray) -> np.ndarray:
    return np.cumsum(lengths) - lengths  # (M,) where each sequence starts in token_ids


def pack(token_ids: np.ndarray, lengths: np.ndarray, chunk_cost: int = CHUNK_COST_TOKENS) -> Packed:
    """A step's `token_ids` (S,) and `lengths` (M,) as length-sorted chunks (module doc)."""
    token_ids, lengths = np.asarray(token_ids), np.asarray(lengths, dtype=np.int64)
    offsets = _offsets(lengths)
    order = np.argsort(lengths, kind="stable")  # (M,) step rows by length
    bounds = chunk_bounds(lengths[order], chunk_cost)
    chunks = [padded(token_ids, offsets[rows], lengths[rows])
              for rows in (order[a:b] for a, b in zip(bounds[:-1], bounds[1:]))]
    restore = np.empty_like(order)
    restore[order] = np.arange(len(order))
    return Packed([ids for ids, _ in chunks], [mask for _, mask in chunks], torch.from_numpy(restore),
                  int(lengths.sum()), sum(ids.numel() for ids, _ in chunks))


def one_matrix(token_ids: np.ndarray, lengths: np.ndarray) -> Packed:
    """Every sequence in one matrix padded to the step's longest, in step order: how a step
    was encoded before packing (benchmarks/train_speed.py and the equivalence tests only)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    ids, mask = padded(np.asarray(token_ids), _offsets(lengths), lengths)
    return Packed([ids], [mask], torch.arange(len(lengths)), int(lengths.sum()), ids.numel())
