import math

import pytest
import torch
import torch.nn.functional as F

from hbt.collectives import all_gather_cat_with_grad
from hbt.config import TrainConfig
from hbt.losses.infonce import InfoNCELoss, info_nce


def reference(q, p, negs, t, symmetric=False):
    """Direct reference: explicit logits matrix + cross_entropy, rows as Python loops."""
    cands = [p[j] for j in range(p.shape[0])]
    if negs is not None:
        flat = negs.reshape(-1, negs.shape[-1])
        cands += [flat[j] for j in range(flat.shape[0])]
    logits = torch.stack([torch.stack([torch.dot(q[i], c) / t for c in cands]) for i in range(q.shape[0])])
    target = torch.arange(q.shape[0])
    loss = F.cross_entropy(logits, target)
    if symmetric:
        back = torch.stack([torch.stack([torch.dot(p[i], q[j]) / t for j in range(q.shape[0])])
                            for i in range(p.shape[0])])
        loss = (loss + F.cross_entropy(back, target)) / 2
    return loss


def unit(x):
    return F.normalize(x, dim=-1)


@pytest.mark.parametrize("t", [1.0, 0.5, 0.05])
def test_orthogonal_2x2_exact(t):
    eye = torch.eye(2, dtype=torch.float64)  # float64: exact even at t=0.05 (loss ~2e-9)
    expected = math.log(1 + math.exp(-1 / t))
    assert info_nce(eye, eye, None, t).item() == pytest.approx(expected, rel=1e-6, abs=1e-9)
    # q == p: the passage->query term is the same matrix, so symmetric is unchanged
    assert info_nce(eye, eye, None, t, symmetric=True).item() == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_hand_made_hard_negative_exact():
    t = 0.5
    q = torch.tensor([[1.0, 0.0]])
    p = torch.tensor([[1.0, 0.0]])
    # a hard negative identical to the positive: logits [2, 2] -> log 2
    assert info_nce(q, p, torch.tensor([[[1.0, 0.0]]]), t).item() == pytest.approx(math.log(2))
    # an orthogonal one: logits [2, 0] -> log(1 + e^-2)
    assert info_nce(q, p, torch.tensor([[0.0, 1.0]]), t).item() == pytest.approx(math.log(1 + math.exp(-2)))


def test_symmetric_exact_asymmetric_case():
    t = 1.0
    q = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # q->p: both rows have logits [1, 0]; targets 0 and 1 -> log(1+e^-1) and log(1+e^1)
    fwd = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(1))) / 2
    # p->q: row0 logits [1, 1] -> log 2; row1 logits [0, 0] -> log 2
    back = math.log(2)
    assert info_nce(q, p, None, t).item() == pytest.approx(fwd)
    assert info_nce(q, p, None, t, symmetric=True).item() == pytest.approx((fwd + back) / 2)


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("neg_shape", [None, (4, 3), (6,)])
def test_matches_reference(symmetric, neg_shape):
    g = torch.Generator().manual_seed(0)
    q, p = unit(torch.randn(4, 8, generator=g)), unit(torch.randn(4, 8, generator=g))
    negs = None if neg_shape is None else unit(torch.randn(*neg_shape, 8, generator=g))
    got = info_nce(q, p, negs, 0.07, symmetric)
    want = reference(q, p, negs, 0.07, symmetric)
    assert torch.allclose(got, want, atol=1e-5)
    assert got.dim() == 0


def test_hard_negatives_never_lower_the_loss():
    g = torch.Generator().manual_seed(1)
    q, p = unit(torch.randn(5, 8, generator=g)), unit(torch.randn(5, 8, generator=g))
    base = info_nce(q, p, None, 0.1)
    negs = unit(torch.randn(5, 2, 8, generator=g))
    assert info_nce(q, p, negs, 0.1) > base
    # (B,N,D) and the flattened (B*N,D) are the same candidate set
    assert torch.allclose(info_nce(q, p, negs, 0.1), info_nce(q, p, negs.reshape(10, 8), 0.1))


def test_gradients_flow_to_all_inputs():
    g = torch.Generator().manual_seed(2)
    q = torch.randn(3, 4, generator=g, requires_grad=True)
    p = torch.randn(3, 4, generator=g, requires_grad=True)
    h = torch.randn(3, 2, 4, generator=g, requires_grad=True)
    info_nce(unit(q), unit(p), unit(h), 0.05, symmetric=True).backward()
    for x in (q, p, h):
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_bad_shapes_rejected():
    with pytest.raises(ValueError):
        info_nce(torch.zeros(2, 3), torch.zeros(3, 3), None, 0.1)
    with pytest.raises(ValueError):
        info_nce(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3), 0.1)


def test_gather_with_grad_identity_without_process_group():
    x = torch.randn(3, 4, requires_grad=True)
    y = all_gather_cat_with_grad(x)
    assert y is x
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones(3, 4))


def test_module_matches_function_and_config():
    g = torch.Generator().manual_seed(3)
    q, p = unit(torch.randn(4, 8, generator=g)), unit(torch.randn(4, 8, generator=g))
    loss = InfoNCELoss.from_config(TrainConfig(temperature=0.2, symmetric_loss=True), gather=True)
    assert (loss.temperature, loss.symmetric, loss.gather) == (0.2, True, True)
    assert torch.allclose(loss(q, p), info_nce(q, p, None, 0.2, symmetric=True))
    with pytest.raises(ValueError):
        InfoNCELoss(temperature=0.0)


def test_masked_negatives_equal_dropping_them():
    torch.manual_seed(0)
    q, p = unit(torch.randn(3, 8, dtype=torch.float64)), unit(torch.randn(3, 8, dtype=torch.float64))
    negs = unit(torch.randn(3, 2, 8, dtype=torch.float64))  # (B, N, D)
    mask = torch.tensor([[True, False], [True, True], [False, False]])
    kept = negs[mask]  # (3, D): the valid negatives only
    expected = reference(q, p, kept, 0.1)
    assert info_nce(q, p, negs, 0.1, negative_mask=mask).item() == pytest.approx(expected.item(), rel=1e-12)
    loss = InfoNCELoss(0.1)(q, p, negs, mask)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
    with pytest.raises(ValueError, match="negative_mask"):
        info_nce(q, p, negs, 0.1, negative_mask=mask[:, :1])


@pytest.mark.parametrize("symmetric", [False, True])
def test_duplicate_positive_as_hard_negative_leaves_the_loss_unchanged(symmetric):
    """A copy of the query's positive added to the batch as a hard negative, carrying the
    query's positive key: the loss is exactly the loss without it."""
    torch.manual_seed(4)
    q, p = unit(torch.randn(1, 8, dtype=torch.float64)), unit(torch.randn(1, 8, dtype=torch.float64))
    keys = torch.tensor([11])
    negs = unit(torch.randn(1, 2, 8, dtype=torch.float64))  # (B=1, N=2, D)
    base = info_nce(q, p, negs, 0.1, symmetric, positive_keys=keys, negative_keys=torch.tensor([[0, 0]]))
    assert base.item() == pytest.approx(info_nce(q, p, negs, 0.1, symmetric).item(), rel=1e-12)  # no key matches
    dup = torch.cat([negs, p.reshape(1, 1, 8)], dim=1)  # (1, 3, D): the positive again
    masked = info_nce(q, p, dup, 0.1, symmetric, positive_keys=keys, negative_keys=torch.tensor([[0, 0, 11]]))
    assert masked.item() == pytest.approx(base.item(), rel=1e-12)
    # Without its key the copy is a negative scored like the positive: the loss rises.
    assert info_nce(q, p, dup, 0.1, symmetric).item() > base.item() + 1e-3


def test_duplicate_is_masked_only_for_the_query_it_answers():
    """In a batch of 3, query 0's positive copied among the hard negatives: masked for query 0,
    an ordinary negative for queries 1 and 2."""
    torch.manual_seed(7)
    q, p = unit(torch.randn(3, 8, dtype=torch.float64)), unit(torch.randn(3, 8, dtype=torch.float64))
    dup = p[0].reshape(1, 1, 8).expand(3, 1, 8)  # (B, 1, D): one candidate per pair, all p0
    got = info_nce(q, p, dup, 0.1, positive_keys=torch.tensor([11, 22, 33]),
                   negative_keys=torch.tensor([[11], [11], [11]]))
    logits = q @ torch.cat([p, dup.reshape(3, 8)]).T / 0.1  # (3, 6)
    rows = [logits[0, :3], logits[1], logits[2]]
    want = sum(-torch.log_softmax(r, 0)[i] for i, r in enumerate(rows)) / 3
    assert got.item() == pytest.approx(want.item(), rel=1e-12)


def test_in_batch_duplicate_positive_is_masked_for_the_other_query():
    """Pairs 0 and 1 share a positive key: for query 0, column 1 is masked and vice versa."""
    torch.manual_seed(5)
    q, p = unit(torch.randn(3, 8, dtype=torch.float64)), unit(torch.randn(3, 8, dtype=torch.float64))
    keys = torch.tensor([7, 7, 9])
    got = info_nce(q, p, None, 0.1, positive_keys=keys)
    logits = q @ p.T / 0.1
    rows = [logits[0, [0, 2]], logits[1, [1, 2]], logits[2]]
    targets = [0, 0, 2]
    want = sum(-torch.log_softmax(r, 0)[t] for r, t in zip(rows, targets)) / 3
    assert got.item() == pytest.approx(want.item(), rel=1e-12)


def test_key_zero_never_masks():
    torch.manual_seed(6)
    q, p = unit(torch.randn(2, 4, dtype=torch.float64)), unit(torch.randn(2, 4, dtype=torch.float64))
    negs = unit(torch.randn(2, 1, 4, dtype=torch.float64))
    zero = torch.zeros(2, dtype=torch.int64)
    assert info_nce(q, p, negs, 0.1, positive_keys=zero, negative_keys=torch.zeros(2, 1, dtype=torch.int64)).item() \
        == pytest.approx(info_nce(q, p, negs, 0.1).item(), rel=1e-12)


def test_bf16_embeddings_score_in_float32(monkeypatch):
    """DeepSpeed bf16 hands the loss bf16 embeddings (DDP's autocast bf16 matmuls): the scores,
    logits and softmax are float32, equal to the loss of the same embeddings upcast."""
    g = torch.Generator().manual_seed(5)
    q, p = (unit(torch.randn(6, 16, generator=g)).bfloat16() for _ in range(2))
    negs = unit(torch.randn(6, 2, 16, generator=g)).bfloat16()
    mask = torch.tensor([[True, False]] * 6)
    logits = []
    cross_entropy = F.cross_entropy
    monkeypatch.setattr(F, "cross_entropy",
                        lambda scores, target: logits.append(scores) or cross_entropy(scores, target))

    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = info_nce(q, p, negs, 0.05, True, mask)
    assert [s.dtype for s in logits] == [torch.float32, torch.float32] and loss.dtype == torch.float32
    expected = info_nce(q.float(), p.float(), negs.float(), 0.05, True, mask)
    assert loss.item() == expected.item()
