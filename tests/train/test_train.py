"""End-to-end Ray Train tests: 2 DDP workers on real XQuAD pairs with a tiny random BERT."""

import json
import re
from pathlib import Path

import pytest

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
