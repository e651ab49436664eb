"""The loop's pieces on hand-made tensors: the loss split, the report window, the progress line."""

import pytest
import torch


def test_contrastive_loss_splits_queries_positives_and_negatives():
    from hbt.train.loop import contrastive_loss
    from hbt.train.packing import Packed

    seen = {}

    def loss_fn(query, positive, negatives=None, mask=None, positive_keys=None, negative_keys=None):
        seen.update(query=query, positive=positive, negatives=negatives, mask=mask, positive_keys=positive_keys,
                    negative_keys=negative_keys)
        return query.sum()

    b, n, d = 2, 3, 4

    def packed(m):  # step rows 0..m-1 in two chunks, odd rows first: the loss must see them back in order
        chunks = [torch.arange(1, m, 2), torch.arange(0, m, 2)]
        restore = torch.cat(chunks).argsort()
        return Packed(chunks, [torch.ones_like(c) for c in chunks], restore, m, m)

    inputs = {"packed": packed(b * (2 + n)),
              "negative_mask": torch.tensor([[True, True, False], [True, False, False]]),
              "positive_key": torch.tensor([5, 6]), "negative_key": torch.tensor([[0, 6, 0], [0, 0, 0]])}

    def rows(ids, mask):  # a fake encoder over chunks: (rows, D), the row of step row i all i
        return torch.cat(ids).float().unsqueeze(1).expand(-1, d)

    contrastive_loss(rows, loss_fn, inputs)
    assert seen["query"][:, 0].tolist() == [0, 1] and seen["positive"][:, 0].tolist() == [2, 3]
    assert seen["negatives"].shape == (b, n, d) and seen["negatives"][1, :, 0].tolist() == [7, 8, 9]
    assert seen["mask"] is inputs["negative_mask"]
    assert seen["positive_keys"] is inputs["positive_key"] and seen["negative_keys"] is inputs["negative_key"]
    contrastive_loss(rows, loss_fn, {**inputs, "packed": packed(2 * b), "negative_mask": torch.zeros(b, 0),
                                     "negative_key": torch.zeros(b, 0, dtype=torch.int64)})
    assert seen["negatives"] is None and seen["positive_keys"] is inputs["positive_key"]


def test_report_window_means_per_kind_and_throughput():
    from hbt.train.loop import ReportWindow

    window = ReportWindow()
    window.add("xx", ["a"], 3, 4, torch.tensor(2.0))  # 3 real tokens of 4 computed
    window.add("xx", ["b"], 3, 6, torch.tensor(4.0))
    metrics = window.metrics(step=1, lr=0.5)
    assert (metrics["loss"], metrics["loss_xx"], metrics["loss_xy"]) == (3.0, 3.0, None)
    assert metrics["kind"] == "xx" and metrics["batch_ids"] == [["a"], ["b"]] and metrics["lr"] == 0.5
    assert metrics["tokens_per_s"] == pytest.approx(3 * metrics["pairs_per_s"])
    assert metrics["padded_fraction"] == pytest.approx(1 - 6 / 10)


class _UnreadLoss(torch.Tensor):
    """A loss that fails when read on the host: on a GPU that read waits for the step's kernels."""

    def __float__(self):
        raise AssertionError("the loss was read in a micro-step")

    def item(self):
        raise AssertionError("the loss was read in a micro-step")


def test_report_window_reads_losses_once_per_report_with_the_same_sums():
    from hbt.train.loop import ReportWindow

    window = ReportWindow()
    losses = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float32)  # not exact in binary: the sums must match
    for kind, loss in zip(["xx", "xy", "xy"], losses):
        window.add(kind, ["a"], 6, 6, loss.as_subclass(_UnreadLoss))
    metrics = window.metrics(step=2, lr=0.5)
    a, b, c = (float(v) for v in losses)  # what a per-step float(loss) summed in float64 gave
    assert (metrics["loss"], metrics["loss_xx"], metrics["loss_xy"]) == ((a + b + c) / 3, a, (b + c) / 2)


def test_progress_line():
    from hbt.train.progress import progress_line

    line = progress_line({"step": 2, "loss": 1.5, "loss_xx": None, "loss_xy": 1.5, "lr": 1e-3,
                          "pairs_per_s": 10.0, "tokens_per_s": 300.0, "padded_fraction": 0.06}, total_steps=7)
    assert line.startswith("step 3/7  loss 1.5000 (xy 1.5000)") and "dev" not in line
    assert "300 real tokens/s (6% padding)" in line
    paced = progress_line({"step": 2, "loss": 1.5, "loss_xx": None, "loss_xy": 1.5, "lr": 1e-3, "pairs_per_s": 10.0,
                           "tokens_per_s": 300.0, "padded_fraction": 0.06}, total_steps=1003, pairs_per_step=40)
    assert paced.endswith("(6% padding)  4.00 s/step  ETA 1:06:40")  # 4 s * 1000 steps left
    evaluated = progress_line({"step": 2, "loss": 1.5, "loss_xx": None, "loss_xy": 1.5, "lr": 1e-3,
                               "pairs_per_s": 10.0, "tokens_per_s": 300.0, "padded_fraction": 0.06,
                               "dev/mono_map": 0.5, "dev/cross_map": 0.25,
                               "dev/multi_map": 0.125, "dev/rank_distance": 42.0, "dev/seconds": 9.0}, total_steps=7)
    assert evaluated.endswith("dev Mo 0.5000 Cr 0.2500 Mul 0.1250 RD 42.0 (9 s)")


def test_metrics_file_replaces_redone_steps(tmp_path):
    """After a restart from a checkpoint the redone steps' lines replace the old ones."""
    import json

    from hbt.train.progress import MetricsFile, read_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 0, "loss": 9.0}) + "\n")  # a resumed run's earlier line
    callback = MetricsFile(str(path))
    for step, loss in [(1, 1.0), (2, 2.0), (3, 3.0), (2, 2.5), (3, 3.5), (4, 4.0)]:
        callback.after_report(None, [{"step": step, "loss": loss}], None)
    assert [(r["step"], r["loss"]) for r in read_metrics(path)] == [(0, 9.0), (1, 1.0), (2, 2.5), (3, 3.5), (4, 4.0)]
    path.write_text(path.read_text() + '{"step": 5, "lo')  # a line cut short by a crash
    assert [r["step"] for r in read_metrics(path)] == [0, 1, 2, 3, 4]


def test_following_shows_new_and_redone_lines_once(tmp_path):
    from hbt.train.progress import _Follower

    path = tmp_path / "metrics.jsonl"
    path.write_text("old\n")
    shown = []
    follower = _Follower(path, shown.append)
    path.write_text("old\nstep 1\nstep 2\npart")
    follower._drain()
    path.write_text("old\nstep 1\nstep 2 again\n")
    follower._drain()
    follower._drain()
    assert shown == ["step 1", "step 2", "step 2 again"]


def test_seed_dropout_draws_what_torch_manual_seed_draws_on_cpu():
    """The loop seeds only the CPU generator: the same dropout masks as `torch.manual_seed`
    (runs and their restarts reproduce the draws of before), with no per-step stack traces."""
    from hbt.train.loop import seed_dropout

    dropout = torch.nn.Dropout(0.5)
    torch.manual_seed(1234)
    expected = dropout(torch.ones(64))
    torch.manual_seed(99)
    seed_dropout(1234, torch.device("cpu"))
    assert torch.equal(dropout(torch.ones(64)), expected)
