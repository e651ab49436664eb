"""The Ray Data step stream (hbt.train.stream): every rank's rows equal the composer's slice,
tokenized exactly as `tokenize_step` does, in order, on the driver and inside a TorchTrainer."""

import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.timeout(300)

WORLD = 2


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, data_dir) -> Path:
    from hbt.config import load_config
    from hbt.data.prepare import prepare

    out = tmp_path_factory.mktemp("stream") / "prep"
    cfg = load_config(None, [f"data.data_dir={data_dir}", "data.languages=[en,de,es]"])
    return Path(prepare(cfg.data, out))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, prepared) -> Path:
    """A tiny BERT whose word vocabulary covers the training text, so token ids are not all [UNK]."""
    from hbt.data.pool import open_pool
    from hbt.model.tiny import tiny_bert

    table = open_pool(prepared, ["question", "positive"])
    words = {w for column in table.columns for text in column.to_pylist() for w in re.findall(r"\w+", text.lower())}
    return tiny_bert(tmp_path_factory.mktemp("tiny") / "bert", sorted(words) + ["query", "passage", ":"])


def make_config(model_dir: Path, **train):
    from hbt.config import load_config

    sets = [f"model.name_or_path={model_dir}", "model.max_length=48", "data.languages=[en,de,es]",
            "batching.batch_size=4", "batching.mode=hybrid", "batching.seed=3"]
    return load_config(None, sets + [f"train.{key}={value}" for key, value in train.items()])


def reference(prepared: Path, cfg, rank: int, start: int, stop: int) -> list[dict]:
    """Micro-steps [start, stop) of `rank` the plain way: the composer's global batch, the
    rank's slice of it, the pool's texts, tokenize_step."""
    from transformers import AutoTokenizer

    from hbt.train.batch import PairPool, tokenize_step
    from hbt.train.stream import build_composer

    pool = PairPool.open(prepared)
    tokenizer = AutoTokenizer.from_pretrained(cfg.model.name_or_path)
    composer = build_composer(pool.index, cfg, WORLD)
    b = cfg.batching.batch_size
    out = []
    for _ in range(stop):
        batch = composer.next_global_batch()
        if batch.step < start:
            continue
        step_keys = frozenset(int(pool.index.keys[record]) for record, _, _ in batch.examples)
        examples = batch.examples[rank * b:(rank + 1) * b]
        texts = pool.texts(examples, cfg.train.hard_negatives, batch.step, step_keys)
        out.append({"step": batch.step, "kind": batch.kind, "parallel_ids": texts.parallel_ids,
                    **tokenize_step(tokenizer, cfg.model, texts)})
    return out


def pool_of(records: dict[str, list[str]]):
    """The PairPool of made-up records, every record its own positive."""
    import pyarrow as pa

    from hbt.data.schema import TRAIN_PAIR_SCHEMA
    from hbt.train.batch import PairPool

    rows = [{"record": record, "parallel_id": pid, "lang": lang, "source": "s", "article": -1,
             "question": f"{pid} {lang}?", "positive": f"{pid} {lang}.", "context": "", "hard_negatives": [],
             "positive_key": pid, "key": record, "negative_keys": []}
            for record, pid in enumerate(sorted(records)) for lang in sorted(records[pid])]
    return PairPool.from_table(pa.Table.from_pylist(rows, schema=TRAIN_PAIR_SCHEMA))


def composer_state_after(index, cfg, steps: int) -> dict:
    from hbt.train.stream import build_composer

    composer = build_composer(index, cfg, WORLD)
    for _ in range(steps):
        composer.next_global_batch()
    return composer.state_dict()


class SplitTokenizer:
    """Whitespace tokenizer with the HF call signature tokenize_step uses."""

    def __call__(self, texts, truncation, max_length, return_attention_mask, return_token_type_ids):
        return {"input_ids": [[len(w) for w in t.split()] for t in texts]}


def test_step_maker_rows_are_each_ranks_composer_slice_from_a_saved_state():
    from hbt.config import load_config
    from hbt.data.composer import HybridBatchComposer
    from hbt.train.stream import StepMaker, composer_config

    records = {f"p{i:02d}": ["de", "en", "es"] for i in range(40)}
    pool = pool_of(records)
    cfg = load_config(None, ["batching.batch_size=3", "batching.seed=7", "data.languages=[de,en,es]"])
    state = composer_state_after(pool.index, cfg, 5)
    for rank in range(WORLD):
        maker = StepMaker(pool, cfg, WORLD, rank, SplitTokenizer(), composer_state=state)
        composer = HybridBatchComposer(records, composer_config(cfg), rank=rank, world_size=WORLD)
        batches = [composer.next_batch() for _ in range(12)][5:]
        # In order, then an earlier step again (a restarted actor, a re-executed task): replayed.
        rows = [maker.make(step) for step in range(5, 12)] + [maker.make(7)]
        assert [row["step"] for row in rows] == list(range(5, 12)) + [7]
        assert [row["kind"] for row in rows[:7]] == [b.kind for b in batches]
        assert [list(row["parallel_id"]) for row in rows[:7]] == [[pid for pid, _, _ in b.examples] for b in batches]
        assert [row["token_ids"].tolist() for row in rows[:7]][2] == rows[7]["token_ids"].tolist()
        # Each row carries the state a checkpoint taken right after it must hold.
        assert [json.loads(row["composer_state"])["step"] for row in rows] == list(range(6, 13)) + [8]
        assert json.loads(rows[6]["composer_state"]) == composer_state_after(pool.index, cfg, 12)
        with pytest.raises(ValueError, match="before the run's start state"):
            maker.make(4)


def test_datasets_refuse_a_state_from_another_setup(tmp_path):
    from hbt.config import load_config
    from hbt.data.composer import ComposerConfigError
    from hbt.train.stream import build_train_datasets

    pool = pool_of({f"p{i}": ["de", "en", "es"] for i in range(40)})
    state = composer_state_after(pool.index, load_config(None, ["batching.batch_size=3"]), 2)
    with pytest.raises(ComposerConfigError, match="different config"):
        build_train_datasets(load_config(None, ["batching.batch_size=4"]), tmp_path, WORLD,
                             composer_state=state, index=pool.index)


def test_iter_steps_refuses_out_of_order_rows():
    from hbt.train.stream import iter_steps

    class Shard:
        def iter_batches(self, batch_size, batch_format):
            for step in (4, 6):
                yield {"step": np.array([step]), "kind": np.array(["xx"]), "composer_state": np.array(["{}"]),
                       "parallel_id": np.array([["a"]]),
                       "token_ids": np.ones((1, 6), dtype=np.int32), "lengths": np.full((1, 2), 3, dtype=np.int32),
                       "negative_mask": np.zeros((1, 1, 0), dtype=bool),
                       "positive_key": np.ones((1, 1), dtype=np.int64), "negative_key": np.zeros((1, 1, 0))}

    steps = iter_steps(Shard())
    assert next(steps).step == 4
    with pytest.raises(RuntimeError, match="step 6 arrived after step 4"):
        next(steps)


def test_driver_reads_each_ranks_exact_steps_on_resume_with_negatives(ray_local, prepared, tiny_model):
    from hbt.train.batch import PoolIndex
    from hbt.train.stream import build_train_datasets, dataset_name, iter_steps

    # 4 optimizer steps of 2 micro-steps; resumed after optimizer step 1: micro-steps [2, 8).
    cfg = make_config(tiny_model, steps=4, grad_accum=2, hard_negatives=2)
    state = composer_state_after(PoolIndex.read(prepared), cfg, 2)
    datasets = build_train_datasets(cfg, prepared, WORLD, composer_state=state)
    assert sorted(datasets) == [dataset_name(r) for r in range(WORLD)]
    with ThreadPoolExecutor(WORLD) as pool:  # both ranks at once, as in training
        streams = list(pool.map(lambda rank: list(iter_steps(datasets[dataset_name(rank)])), range(WORLD)))
    for rank, got in enumerate(streams):
        want = reference(prepared, cfg, rank, start=2, stop=8)
        assert [(s.step, s.kind, s.parallel_ids) for s in got] == [(w["step"], w["kind"],
                                                                    w["parallel_ids"]) for w in want]
        for step, ref in zip(got, want):
            assert step.lengths.shape == (4 * (2 + 2),) and step.token_ids.shape == (ref["lengths"].sum(),)
            assert np.array_equal(step.token_ids, ref["token_ids"]) and np.array_equal(step.lengths, ref["lengths"])
            assert np.array_equal(step.negative_mask.numpy(), ref["negative_mask"])
            assert np.array_equal(step.positive_key.numpy(), ref["positive_key"])
            assert np.array_equal(step.negative_key.numpy(), ref["negative_key"])
    # Some hard negatives are real text and some padding: both paths are exercised.
    assert 0 < sum(int(ref["negative_mask"].sum()) for ref in want) < 4 * 2 * len(want)


def test_train_workers_each_stream_their_own_slice(ray_local, prepared, tiny_model, tmp_path):
    import ray.train
    from ray.train.torch import TorchTrainer

    from hbt.train.stream import build_train_datasets, train_data_config

    def read_steps(config):
        import ray.train

        from hbt.train.stream import dataset_name, iter_steps

        rank = ray.train.get_context().get_world_rank()
        seen = [{"step": s.step, "kind": s.kind, "parallel_ids": s.parallel_ids, "token_ids": s.token_ids.tolist(),
                 "lengths": s.lengths.tolist(),
                 "negatives": list(s.negative_mask.shape)}
                for s in iter_steps(ray.train.get_dataset_shard(dataset_name(rank)))]
        Path(config["out"], f"rank{rank}.json").write_text(json.dumps(seen))

    cfg = make_config(tiny_model, steps=3)
    trainer = TorchTrainer(
        read_steps, train_loop_config={"out": str(tmp_path)},
        datasets=build_train_datasets(cfg, prepared, WORLD),
        dataset_config=train_data_config(),
        scaling_config=ray.train.ScalingConfig(num_workers=WORLD, resources_per_worker={"CPU": 0.5}),
        run_config=ray.train.RunConfig(name="stream", storage_path=str(tmp_path / "ray")))
    assert trainer.fit().error is None
    for rank in range(WORLD):
        seen = json.loads((tmp_path / f"rank{rank}.json").read_text())
        want = reference(prepared, cfg, rank, start=0, stop=3)
        assert [(s["step"], s["kind"], s["parallel_ids"]) for s in seen] == [(w["step"], w["kind"],
                                                                              w["parallel_ids"]) for w in want]
        assert [s["token_ids"] for s in seen] == [w["token_ids"].tolist() for w in want]
        assert [s["lengths"] for s in seen] == [w["lengths"].tolist() for w in want]
        assert all(s["negatives"] == [4, 0] for s in seen)  # no hard negatives: an empty (B, 0) mask
