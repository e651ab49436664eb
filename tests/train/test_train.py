"""End-to-end Ray Train tests: 2 workers (DDP or DeepSpeed) on real XQuAD pairs with a tiny random BERT."""

import json
import math
import re
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, data_dir) -> Path:
    from hbt.config import load_config
    from hbt.data.prepare import prepare

    out = tmp_path_factory.mktemp("train") / "prep"
    cfg = load_config(None, [f"data.data_dir={data_dir}", "data.languages=[en,de,es]"])
    return Path(prepare(cfg.data, out))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, prepared) -> Path:
    """A tiny random BERT whose word-level vocabulary covers the training text (so few [UNK])."""
    import pyarrow.parquet as pq

    from hbt.model.tiny import tiny_bert

    table = pq.read_table(prepared / "train_pairs.parquet", columns=["question", "positive"])
    words = set()
    for column in ("question", "positive"):
        for text in table.column(column).to_pylist():
            words.update(re.findall(r"\w+", text.lower()))
    return tiny_bert(tmp_path_factory.mktemp("tiny") / "bert", sorted(words) + ["query", "passage", ":"])


def make_config(model_dir: Path, **train):
    from hbt.config import load_config

    overrides = {"steps": 6, "lr": 5e-3, "num_workers": 2, "strategy": "ddp", "checkpoint_every": 100,
                 "freeze_embeddings": False, "temperature": 0.1, **train}
    sets = [f"model.name_or_path={model_dir}", "model.max_length=48", "data.languages=[en,de,es]",
            "batching.batch_size=4", "batching.mode=hybrid", "batching.seed=3"]
    sets += [f"train.{key}={value}" for key, value in overrides.items()]
    return load_config(None, sets)


def read_metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]


def step_ids(metrics: list[dict]) -> list[list[str]]:
    return [ids for row in metrics for ids in row["batch_ids"]]


def test_contrastive_loss_splits_queries_positives_and_negatives():
    from hbt.train.loop import contrastive_loss

    seen = {}

    def loss_fn(query, positive, negatives=None, mask=None):
        seen.update(query=query, positive=positive, negatives=negatives, mask=mask)
        return query.sum()

    b, n, d = 2, 3, 4
    inputs = {"input_ids": torch.arange(b * (2 + n)), "attention_mask": torch.ones(b * (2 + n)),
              "negative_mask": torch.tensor([[True, True, False], [True, False, False]])}

    def rows(ids, mask):  # a fake encoder: (rows, D), row i all i
        return ids.float().unsqueeze(1).expand(-1, d)

    contrastive_loss(rows, loss_fn, inputs)
    assert seen["query"][:, 0].tolist() == [0, 1] and seen["positive"][:, 0].tolist() == [2, 3]
    assert seen["negatives"].shape == (b, n, d) and seen["negatives"][1, :, 0].tolist() == [7, 8, 9]
    assert seen["mask"] is inputs["negative_mask"]
    contrastive_loss(rows, loss_fn, {**inputs, "input_ids": torch.arange(2 * b), "negative_mask": torch.zeros(b, 0)})
    assert seen["negatives"] is None


def test_report_window_means_per_kind_and_throughput():
    from hbt.train.loop import ReportWindow

    window = ReportWindow()
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])  # 3 tokens
    window.add("xx", ["a"], mask, torch.tensor(2.0))
    window.add("xx", ["b"], mask, torch.tensor(4.0))
    metrics = window.metrics(step=1, lr=0.5)
    assert (metrics["loss"], metrics["loss_xx"], metrics["loss_xy"]) == (3.0, 3.0, None)
    assert metrics["kind"] == "xx" and metrics["batch_ids"] == [["a"], ["b"]] and metrics["lr"] == 0.5
    assert metrics["tokens_per_s"] == pytest.approx(3 * metrics["pairs_per_s"])


def test_progress_line():
    from hbt.train.driver import progress_line

    line = progress_line({"step": 2, "loss": 1.5, "loss_xx": None, "loss_xy": 1.5, "lr": 1e-3,
                          "pairs_per_s": 10.0, "tokens_per_s": 300.0}, total_steps=7)
    assert line.startswith("step 3/7  loss 1.5000 (xy 1.5000)") and "300 tokens/s" in line


@pytest.fixture(scope="module")
def full_run(ray_local, prepared, tiny_model, tmp_path_factory) -> Path:
    """One uninterrupted 2-worker DDP run of 7 steps (checkpoints every 2), shared by the tests."""
    from hbt.train.driver import train

    return train(make_config(tiny_model, steps=7, checkpoint_every=2), prepared, tmp_path_factory.mktemp("full") / "run")


def test_ddp_two_workers_reports_and_exports(full_run):
    from transformers import AutoModel

    metrics = read_metrics(full_run)
    assert [m["step"] for m in metrics] == list(range(7))
    assert {m["kind"] for m in metrics} <= {"xx", "xy"}
    assert all(m["pairs_per_s"] > 0 and len(m["batch_ids"]) == 1 and len(m["batch_ids"][0]) == 4 for m in metrics)
    model = AutoModel.from_pretrained(full_run / "model")
    assert model.config.hidden_size == 32


def test_resume_reproduces_batch_sequence(full_run, prepared, tiny_model, tmp_path):
    from hbt.errors import HbtError
    from hbt.train.driver import train

    full = read_metrics(full_run)
    part_dir = tmp_path / "part"
    train(make_config(tiny_model, steps=4, checkpoint_every=2), prepared, part_dir)
    first = read_metrics(part_dir)
    assert step_ids(first) == step_ids(full)[:4]
    with pytest.raises(HbtError, match="already holds"):
        train(make_config(tiny_model, steps=7, checkpoint_every=2), prepared, part_dir)
    resumed = read_metrics(train(make_config(tiny_model, steps=7, checkpoint_every=2), prepared, part_dir, resume=True))
    assert [m["step"] for m in resumed] == list(range(7))
    assert step_ids(resumed) == step_ids(full)


@pytest.mark.slow
def test_loss_falls_over_a_longer_run(ray_local, prepared, tiny_model, tmp_path):
    # 7 steps of 4 pairs sit at chance level (ln 8); a longer run must clearly learn.
    from hbt.train.driver import train

    losses = [m["loss"] for m in read_metrics(train(make_config(tiny_model, steps=40, checkpoint_every=100), prepared, tmp_path / "long"))]
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < first - 0.05, losses


def check_metrics(metrics: list[dict], steps: int, grad_accum: int) -> None:
    assert [m["step"] for m in metrics] == list(range(steps))
    for m in metrics:
        assert math.isfinite(m["loss"]) and m["pairs_per_s"] > 0 and m["tokens_per_s"] > m["pairs_per_s"]
        assert [len(ids) for ids in m["batch_ids"]] == [4] * grad_accum  # grad_accum composer batches a step
        kinds = [k for k in ("xx", "xy") if m[f"loss_{k}"] is not None]
        assert m["kind"] in kinds and all(math.isfinite(m[f"loss_{k}"]) for k in kinds)


@pytest.fixture(scope="module")
def deepspeed_run(ray_local, prepared, tiny_model, tmp_path_factory) -> tuple[Path, list[dict]]:
    """2 DeepSpeed ZeRO-2 workers, 2 micro-batches a step: 2 steps, then resumed to 3 steps.
    Returns the run dir and the first part's metrics."""
    from hbt.train.driver import train

    out = tmp_path_factory.mktemp("deepspeed") / "run"
    ds = {"strategy": "deepspeed", "zero_stage": 2, "grad_accum": 2, "checkpoint_every": 2}
    train(make_config(tiny_model, steps=2, **ds), prepared, out)
    first = read_metrics(out)
    return train(make_config(tiny_model, steps=3, **ds), prepared, out, resume=True), first


def test_deepspeed_reports_and_exports(deepspeed_run):
    from transformers import AutoModel

    out, first = deepspeed_run
    check_metrics(first, steps=2, grad_accum=2)
    # Every rank saved its ZeRO shard; Ray merged them into one checkpoint beside rank 0's files.
    shards = {path.name for path in out.glob("checkpoint_*/deepspeed/*/*optim_states.pt")}
    assert {"zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"} <= shards
    assert AutoModel.from_pretrained(out / "model").config.hidden_size == 32


def test_deepspeed_resume_reproduces_batch_sequence(deepspeed_run, full_run):
    # The batch order is the composer's alone: with 2 micro-batches a step, DeepSpeed's 3 steps
    # (2, then 1 resumed) consume the uninterrupted DDP run's first 6 composer batches.
    out, first = deepspeed_run
    resumed = read_metrics(out)
    check_metrics(resumed, steps=3, grad_accum=2)
    assert resumed[:2] == first
    assert step_ids(resumed) == step_ids(read_metrics(full_run))[:6]


def test_ddp_grad_accum_with_hard_negatives(ray_local, prepared, tiny_model, full_run, tmp_path):
    from hbt.train.driver import train

    metrics = read_metrics(train(make_config(tiny_model, steps=2, grad_accum=2, hard_negatives=2),
                                 prepared, tmp_path / "accum"))
    check_metrics(metrics, steps=2, grad_accum=2)
    assert step_ids(metrics) == step_ids(read_metrics(full_run))[:4]
