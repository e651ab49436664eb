"""End-to-end Ray Train tests: 2 workers (DDP or DeepSpeed) on real XQuAD pairs with a tiny
random BERT (the records and the model: tests/conftest.py's `prepared` and `tiny_model`)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_runs import assert_loss_falls, check_metrics, make_config, read_metrics, step_ids

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def full_run(ray_local, prepared, tiny_model, tmp_path_factory) -> Path:
    """One uninterrupted 2-worker DDP run of 24 steps (checkpoints every 4), shared by the tests."""
    from hbt.train.driver import train

    return train(make_config(tiny_model, prepared, steps=24, checkpoint_every=4), prepared,
                 tmp_path_factory.mktemp("full") / "run")


def test_ddp_two_workers_learn_report_and_export(full_run):
    metrics = read_metrics(full_run)
    check_metrics(metrics, steps=24, grad_accum=1)
    assert_loss_falls(metrics, window=4)
    assert (full_run / "config.yaml").is_file()
    manifest = json.loads((full_run / "model" / "hbt_training.json").read_text())
    assert manifest["counts"]["train_parallel_ids"] == 16 and manifest["train_config"]["train"]["steps"] == 24


def test_export_loads_in_sentence_transformers_without_hbt(full_run):
    from hbt.config import ModelConfig
    from hbt.model.encoder import Encoder

    texts = ["where is the river", "the river flows north"]
    script = (
        "import json, sys\n"
        "from sentence_transformers import SentenceTransformer\n"
        "from transformers import AutoModel\n"
        f"path = {str(full_run / 'model')!r}\n"
        "assert AutoModel.from_pretrained(path).config.hidden_size == 32\n"
        "st = SentenceTransformer(path, device='cpu')\n"
        f"emb = st.encode({texts!r}, prompt_name='query')\n"
        "assert not any(name == 'hbt' or name.startswith('hbt.') for name in sys.modules)\n"
        "print(json.dumps(emb.tolist()))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd="/")
    assert run.returncode == 0, run.stderr[-2000:]
    st_emb = torch.tensor(json.loads(run.stdout.strip().splitlines()[-1]))
    # hbt's encoder on the same dir: the same prefix, pooling and normalisation.
    encoder = Encoder.from_config(ModelConfig(name_or_path=str(full_run / "model"), max_length=48))
    torch.testing.assert_close(st_emb, torch.from_numpy(encoder.encode(texts, "query")), atol=1e-5, rtol=1e-4)


def test_resume_from_the_cli_reproduces_batch_sequence(full_run, prepared, tiny_model, tmp_path):
    from hbt.cli import main
    from hbt.errors import HbtError
    from hbt.train.driver import train

    full = read_metrics(full_run)
    part_dir = tmp_path / "part"
    train(make_config(tiny_model, prepared, steps=8, checkpoint_every=4), prepared, part_dir)
    assert step_ids(read_metrics(part_dir)) == step_ids(full)[:8]
    with pytest.raises(HbtError, match="already holds"):
        train(make_config(tiny_model, prepared, steps=24, checkpoint_every=4), prepared, part_dir)
    # The run's own config.yaml, extended to 24 steps.
    assert main(["train", "--resume", str(part_dir), "--set", "train.steps=24"]) == 0
    resumed = read_metrics(part_dir)
    assert [m["step"] for m in resumed] == list(range(24))
    assert step_ids(resumed) == step_ids(full)


@pytest.mark.parametrize("change, key", [({"grad_accum": 2}, "train.grad_accum"),
                                         ({"hard_negatives": 1}, "train.hard_negatives")])
def test_resume_refuses_what_would_misplace_steps(full_run, prepared, tiny_model, change, key):
    from hbt.errors import HbtError
    from hbt.train.driver import train

    before = (full_run / "metrics.jsonl").read_text()
    with pytest.raises(HbtError, match=rf"--resume: {key} was .*a resumed run keeps it"):
        train(make_config(tiny_model, prepared, steps=30, checkpoint_every=4, **change), prepared, full_run,
              resume=True)
    assert (full_run / "metrics.jsonl").read_text() == before


def test_resume_needs_a_run(ray_local, prepared, tiny_model, tmp_path):
    from hbt.errors import HbtError
    from hbt.train.driver import train

    with pytest.raises(HbtError, match="nothing to resume"):
        train(make_config(tiny_model, prepared), prepared, tmp_path / "never-ran", resume=True)


def test_refuses_more_workers_than_the_local_ray_fits(ray_local, prepared, tiny_model, tmp_path):
    from hbt.errors import HbtError
    from hbt.train.driver import train

    # 3 ranks * (0.5 worker + 0.5 tokenize actor) = 3 CPUs on a 2-CPU Ray would never start.
    with pytest.raises(HbtError, match=r"needs 3 \* .* = 3 CPUs, but Ray has 2"):
        train(make_config(tiny_model, prepared, num_workers=3), prepared, tmp_path / "too-many")
    assert not (tmp_path / "too-many").exists()


@pytest.fixture(scope="module")
def deepspeed_run(ray_local, prepared, tiny_model, tmp_path_factory) -> tuple[Path, list[dict]]:
    """2 DeepSpeed ZeRO-2 workers, 2 micro-batches a step: 8 steps, then resumed to 12 steps.
    Returns the run dir and the first part's metrics."""
    from hbt.train.driver import train

    out = tmp_path_factory.mktemp("deepspeed") / "run"
    # Half as many optimizer updates as the DDP run per composer batch: a higher lr to memorise as fast.
    ds = {"strategy": "deepspeed", "zero_stage": 2, "grad_accum": 2, "checkpoint_every": 4, "lr": 1e-2}
    train(make_config(tiny_model, prepared, steps=8, **ds), prepared, out)
    first = read_metrics(out)
    return train(make_config(tiny_model, prepared, steps=12, **ds), prepared, out, resume=True), first


def test_deepspeed_learns_and_exports(deepspeed_run):
    from transformers import AutoModel

    out, first = deepspeed_run
    check_metrics(first, steps=8, grad_accum=2)
    assert_loss_falls(read_metrics(out), window=3)
    # Every rank saved its ZeRO shard; Ray merged them into one checkpoint beside rank 0's files.
    shards = {path.name for path in out.glob("checkpoint_*/deepspeed/*/*optim_states.pt")}
    assert {"zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"} <= shards
    assert AutoModel.from_pretrained(out / "model").config.hidden_size == 32


def test_deepspeed_resume_reproduces_batch_sequence(deepspeed_run, full_run):
    # The batch order is the composer's alone: with 2 micro-batches a step, DeepSpeed's 12 steps
    # (8, then 4 resumed) consume the uninterrupted DDP run's 24 composer batches.
    out, first = deepspeed_run
    resumed = read_metrics(out)
    check_metrics(resumed, steps=12, grad_accum=2)
    assert resumed[:8] == first
    assert step_ids(resumed) == step_ids(read_metrics(full_run))


def test_ddp_grad_accum_with_hard_negatives(ray_local, prepared, tiny_model, full_run, tmp_path):
    from hbt.train.driver import train

    metrics = read_metrics(train(make_config(tiny_model, prepared, steps=2, grad_accum=2, hard_negatives=2),
                                 prepared, tmp_path / "accum"))
    check_metrics(metrics, steps=2, grad_accum=2)
    assert step_ids(metrics) == step_ids(read_metrics(full_run))[:4]


def test_dev_evaluation_picks_the_exported_checkpoint(ray_local, data_dir, tiny_model, tmp_path, monkeypatch):
    """With train.eval_every, rank 0 scores the dev split at steps 2 and 4 (both checkpointed)
    and the export is the checkpoint with the best dev multi mAP: its weights are that
    checkpoint's, byte for byte, and re-scoring them on the dev split gives the reported figure.

    The workers' process group refuses, as NCCL does on GPUs, every tensor that is not on its
    device (tests/train/fake_nccl.py): the InfoNCE gathers (with hard negatives: their mask
    and keys too), the reports' sums and the dev metrics' broadcast must all be moved there.

    The dev split is kept to the languages the tiny model's vocabulary covers: in the others
    every word is [UNK], so many texts embed identically and the tied scores make mAP flip
    with the last bit of the arithmetic (batch size, threads)."""
    from hbt.config import load_config
    from hbt.data.prepare import prepare
    from hbt.model.encoder import Encoder
    from hbt.train.dev import dev_metrics, load_dev_corpus
    from hbt.train.driver import train

    prepared = prepare(load_config(None, [f"data.data_dir={data_dir}", "data.languages=[en,de,es]",
                                          "data.max_train_records=16", "data.eval_languages=[en,de,es]"]).data,
                       tmp_path / "prep")
    from fake_nccl import make_checked_train_func

    import hbt.train.driver

    calls = tmp_path / "collectives"
    calls.mkdir()
    monkeypatch.setattr(hbt.train.driver, "train_func", make_checked_train_func(str(calls)))
    out = train(make_config(tiny_model, prepared, steps=4, checkpoint_every=4, eval_every=2, hard_negatives=1),
                prepared, tmp_path / "dev")
    for rank in (0, 1):
        ran = json.loads((calls / f"rank{rank}.json").read_text())
        # 4 steps: forward gathers (query, positive, negatives, mask, 2 key sets), their backward
        # (scatters), 4 reports' sums, 2 dev broadcasts
        assert ran["all_gather"] >= 4 * 6 and ran["scatter"] > 0, ran
        assert ran["all_reduce"] == 4 and ran["broadcast"] == 2, ran
    metrics = read_metrics(out)
    evaluated = [m for m in metrics if "dev/multi_map" in m]
    assert [m["step"] for m in evaluated] == [1, 3]
    assert all(0 < m["dev/multi_map"] <= 1 and m["dev/rank_distance"] >= 0 and m["dev/seconds"] > 0 for m in evaluated)
    manifest = json.loads((out / "model" / "hbt_training.json").read_text())
    best = max(evaluated, key=lambda m: m["dev/multi_map"])
    exported = manifest["exported_checkpoint"]
    assert exported["step"] == best["step"] and exported["selected_by"] == "max dev/multi_map"
    assert exported["dev/multi_map"] == best["dev/multi_map"]
    assert manifest["train_config"]["model"]["candidate_context"] is False

    # Each checkpoint's composer.json says how many batches it holds: step s -> s + 1.
    weights = {json.loads((c / "composer.json").read_text())["step"] - 1:
               (c / "model" / "model.safetensors").read_bytes() for c in out.glob("checkpoint_*") if c.is_dir()}
    assert sorted(weights) == [1, 3]
    exported_weights = (out / "model" / "model.safetensors").read_bytes()
    other = 4 - best["step"]  # the checkpoint not chosen: 3 or 1
    assert exported_weights == weights[best["step"]] != weights[other]

    # Re-scored in this process with the worker's one torch thread: the same numbers.
    cfg = load_config(None, ["model.max_length=48"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rescored = dev_metrics(Encoder.from_config(cfg.model.model_copy(update={"name_or_path": str(out / "model")})),
                               load_dev_corpus(prepared), cfg)
    finally:
        torch.set_num_threads(threads)
    for key in ("dev/mono_map", "dev/cross_map", "dev/multi_map", "dev/rank_distance"):
        assert rescored[key] == pytest.approx(best[key], rel=1e-4), key


def test_dev_evaluation_needs_a_dev_split(prepared, tiny_model, tmp_path):
    import shutil

    from hbt.errors import HbtError
    from hbt.train.driver import train

    no_dev = tmp_path / "no-dev"
    shutil.copytree(prepared, no_dev)
    shutil.rmtree(no_dev / "dev")
    with pytest.raises(HbtError, match="no dev split"):
        train(make_config(tiny_model, no_dev, eval_every=2), no_dev, tmp_path / "run")
    assert not (tmp_path / "run").exists()
