"""Length-sorted chunks (hbt.train.packing): the cut, the way back to step order, and a step's
loss and gradients equal to the one padded matrix's, under DDP and DeepSpeed."""

import math
from functools import partial

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from train_runs import make_config

from hbt.train.packing import chunk_bounds, one_matrix, pack

pytestmark = pytest.mark.timeout(180)


def test_chunk_bounds_trade_padding_for_passes():
    lengths = np.array([3, 3, 4, 4, 40, 42])
    assert chunk_bounds(lengths, chunk_cost=10) == [0, 4, 6]  # queries apart from passages
    assert chunk_bounds(lengths, chunk_cost=0) == [0, 2, 4, 5, 6]  # every length its own chunk
    assert chunk_bounds(lengths, chunk_cost=1000) == [0, 6]  # a pass costs more than any padding
    assert chunk_bounds(np.array([], dtype=np.int64)) == [0]


def _computed(lengths, bounds, chunk_cost):
    return sum((b - a) * lengths[b - 1] + chunk_cost for a, b in zip(bounds[:-1], bounds[1:]))


def _row_programme(lengths, chunk_cost):
    """The reference: the same programme over every row as a cut point, O(M^2)."""
    best = [0.0] + [math.inf] * len(lengths)
    for j in range(1, len(lengths) + 1):
        best[j] = min(best[i] + (j - i) * lengths[j - 1] + chunk_cost for i in range(j))
    return best[-1]


@settings(max_examples=200, deadline=None)
@given(lengths=st.lists(st.integers(1, 40), max_size=40), chunk_cost=st.integers(0, 100))
def test_chunk_bounds_cost_as_little_as_cutting_anywhere(lengths, chunk_cost):
    """Cuts only where the length changes lose nothing against cuts between any two rows."""
    lengths = np.sort(np.array(lengths, dtype=np.int64))
    bounds = chunk_bounds(lengths, chunk_cost)
    assert bounds[0] == 0 and bounds[-1] == len(lengths) and bounds == sorted(set(bounds))
    assert _computed(lengths, bounds, chunk_cost) == _row_programme(lengths, chunk_cost)


def test_pack_chunks_are_sorted_rows_and_restore_step_order():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 30, size=40)
    token_ids = rng.integers(1, 1000, size=int(lengths.sum())).astype(np.int32)
    packed = pack(token_ids, lengths, chunk_cost=16)
    assert len(packed.input_ids) > 1
    rows = [(ids[mask.bool()].tolist()) for c_ids, c_mask in zip(packed.input_ids, packed.attention_mask)
            for ids, mask in zip(c_ids, c_mask)]
    sequences = np.split(token_ids, np.cumsum(lengths)[:-1])
    assert [rows[j] for j in packed.restore.tolist()] == [s.tolist() for s in sequences]
    assert all(bool(mask[:, -1].any()) for mask in packed.attention_mask)  # each chunk padded to its own longest
    assert packed.real_tokens == lengths.sum() == sum(int(mask.sum()) for mask in packed.attention_mask)
    assert packed.computed_tokens == sum(ids.numel() for ids in packed.input_ids)
    matrix = one_matrix(token_ids, lengths)
    assert matrix.input_ids[0].shape == (40, lengths.max()) and matrix.restore.tolist() == list(range(40))
    assert packed.computed_tokens < matrix.computed_tokens


def real_steps(prepared, tiny_model, hard_negatives: int, **train):
    """Two composer steps of 8 pairs from the shared pool, tokenized as the stream does."""
    from transformers import AutoTokenizer

    from hbt.train.batch import PairPool
    from hbt.train.stream import StepMaker

    cfg = make_config(tiny_model, prepared, hard_negatives=hard_negatives, num_workers=1, **train).model_copy(deep=True)
    cfg.batching.batch_size = 8
    maker = StepMaker(PairPool.open(prepared), cfg, world_size=1, rank=0,
                      tokenizer=AutoTokenizer.from_pretrained(tiny_model))
    return cfg, [maker.make(step) for step in range(2)]


# Every distinct length its own chunk: the most chunks, the most reordering.
LAYOUTS = {"one matrix": one_matrix, "packed": partial(pack, chunk_cost=0)}


def loss_and_grads(cfg, row, layout, model, encoder, backward, grad) -> tuple[torch.Tensor, dict]:
    from hbt.losses.infonce import InfoNCELoss
    from hbt.train.loop import contrastive_loss, row_inputs

    inputs = row_inputs(row, layout)
    loss = contrastive_loss(model, InfoNCELoss.from_config(cfg.train, gather=False), inputs)
    backward(loss)
    return loss.detach(), {name: grad(p).clone() for name, p in encoder.named_parameters() if p.requires_grad}


def assert_same(one: tuple, packed: tuple) -> None:
    torch.testing.assert_close(packed[0], one[0], rtol=1e-5, atol=1e-6)
    assert one[1].keys() == packed[1].keys()
    for name, g in one[1].items():
        # A gradient summed over every token (token types, biases) cancels terms much larger than
        # itself: float order shows at 1e-4 of the tensor's largest entry, not of each entry; the
        # attention's key bias has a zero gradient (softmax ignores it), float noise of ~1e-12.
        torch.testing.assert_close(packed[1][name], g, rtol=1e-4, atol=1e-4 * float(g.abs().max()) + 1e-9,
                                   msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("hard_negatives", [0, 2])
def test_packed_step_loss_and_gradients_equal_the_one_matrix_under_ddp(prepared, tiny_model, one_rank_group,
                                                                        hard_negatives):
    from torch.nn.parallel import DistributedDataParallel

    from hbt.train.loop import build_encoder

    cfg, steps = real_steps(prepared, tiny_model, hard_negatives)
    encoder = build_encoder(cfg).eval()  # dropout off: both layouts compute the same function
    ddp = DistributedDataParallel(encoder)
    for row in steps:
        assert len(LAYOUTS["packed"](row["token_ids"], row["lengths"]).input_ids) >= 3
        results = {}
        for name, layout in LAYOUTS.items():
            encoder.zero_grad(set_to_none=True)
            results[name] = loss_and_grads(cfg, row, layout, ddp, encoder, torch.Tensor.backward, lambda p: p.grad)
        assert_same(results["one matrix"], results["packed"])


@pytest.mark.parametrize("hard_negatives", [0, 2])
def test_packed_step_loss_and_gradients_equal_the_one_matrix_under_deepspeed(prepared, tiny_model, one_rank_group,
                                                                             hard_negatives):
    from deepspeed.utils import safe_get_full_grad

    from hbt.train.engine import DeepSpeedStrategy
    from hbt.train.loop import build_encoder

    cfg, steps = real_steps(prepared, tiny_model, hard_negatives, strategy="deepspeed", zero_stage=2)
    row = steps[1]
    results = {}
    for name, layout in LAYOUTS.items():  # a fresh engine each: ZeRO-2 keeps reduced gradients until its step
        strategy = DeepSpeedStrategy(build_encoder(cfg), cfg)
        strategy.encoder.eval()
        results[name] = loss_and_grads(cfg, row, layout, strategy.engine, strategy.encoder, strategy.engine.backward,
                                       safe_get_full_grad)
    assert_same(results["one matrix"], results["packed"])
