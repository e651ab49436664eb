"""Training strategies (hbt.train.engine) in this process: a one-rank gloo group, a tiny BERT."""

import pytest
import torch

from hbt.config import load_config
from hbt.model.encoder import Encoder
from hbt.train.engine import DDPStrategy, DeepSpeedStrategy, deepspeed_config, linear_warmup_decay

pytestmark = pytest.mark.timeout(120)


def config(model_dir, *sets):
    return load_config(None, [f"model.name_or_path={model_dir}", "model.max_length=16", "batching.batch_size=4",
                              "train.lr=1e-2", "train.freeze_embeddings=false", "train.steps=4", *sets])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from hbt.model.tiny import tiny_bert

    return tiny_bert(tmp_path_factory.mktemp("tiny") / "bert")


def loss_of(encoder, seed):
    """A fixed-input loss: pulls the embeddings of two short texts together."""
    inputs = encoder.tokenize(["a b c", f"d e {seed}"], "query")

    def loss(model):
        emb = model(inputs["input_ids"], inputs["attention_mask"])  # (2, D)
        return 1 - (emb[0] * emb[1]).sum()

    return loss


def test_deepspeed_config_carries_the_train_settings():
    cfg = load_config(None, ["batching.batch_size=8", "train.grad_accum=3", "train.num_workers=2",
                             "train.zero_stage=1", "train.bf16=true", "cluster.use_gpu=true"])
    ds = deepspeed_config(cfg)
    assert ds["train_micro_batch_size_per_gpu"] == 8
    assert ds["gradient_accumulation_steps"] == 3
    assert ds["train_batch_size"] == 8 * 3 * 2
    assert ds["zero_optimization"] == {"stage": 1}
    assert ds["bf16"] == {"enabled": True}
    assert ds["zero_allow_untested_optimizer"] is True
    assert "optimizer" not in ds  # a torch AdamW is passed in: no fused kernel to JIT-compile


def test_linear_warmup_decay():
    factor = linear_warmup_decay(2, 6)
    assert [factor(s) for s in range(7)] == [0.5, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]


def test_ddp_accumulation_averages_micro_batch_gradients(tiny):
    torch.manual_seed(0)
    cfg = config(tiny, "train.grad_accum=2")
    strategy = DDPStrategy(Encoder.from_config(cfg.model), cfg, world_size=1)
    before = {n: p.detach().clone() for n, p in strategy.encoder.named_parameters()}
    strategy.micro_step(loss_of(strategy.encoder, 1), boundary=False)
    assert strategy.encoder.model.embeddings.word_embeddings.weight.grad is not None
    assert all(torch.equal(p, before[n]) for n, p in strategy.encoder.named_parameters())  # no step yet
    strategy.micro_step(loss_of(strategy.encoder, 2), boundary=True)
    assert strategy.scheduler.last_epoch == 1
    assert all(p.grad is None for p in strategy.encoder.parameters())

    # The same step taken on the mean of the two losses at once.
    torch.manual_seed(0)
    reference = DDPStrategy(Encoder.from_config(cfg.model), config(tiny), world_size=1)
    first, second = loss_of(reference.encoder, 1), loss_of(reference.encoder, 2)
    reference.micro_step(lambda model: (first(model) + second(model)) / 2, boundary=True)
    for (name, p), q in zip(strategy.encoder.named_parameters(), reference.encoder.parameters()):
        torch.testing.assert_close(p, q, msg=name)


def test_ddp_save_and_load_round_trip(tiny, tmp_path):
    cfg = config(tiny)
    trained = DDPStrategy(Encoder.from_config(cfg.model), cfg, world_size=1)
    trained.micro_step(loss_of(trained.encoder, 1), boundary=True)
    trained.save(tmp_path, rank=0)
    fresh = DDPStrategy(Encoder.from_config(cfg.model), cfg, world_size=1)
    fresh.load(tmp_path)
    assert fresh.lr == trained.lr
    for p, q in zip(fresh.encoder.parameters(), trained.encoder.parameters()):
        torch.testing.assert_close(p, q)


def test_deepspeed_accumulates_and_resumes(tiny, tmp_path, one_rank_group):
    cfg = config(tiny, "train.strategy=deepspeed", "train.zero_stage=2", "train.grad_accum=2",
                 "train.warmup_steps=0")
    strategy = DeepSpeedStrategy(Encoder.from_config(cfg.model), cfg)
    lr0 = strategy.lr
    strategy.micro_step(loss_of(strategy.encoder, 1), boundary=False)
    assert strategy.lr == lr0 and strategy.engine.global_steps == 0
    strategy.micro_step(loss_of(strategy.encoder, 2), boundary=True)
    assert strategy.engine.global_steps == 1 and strategy.lr == pytest.approx(lr0 * 3 / 4)

    strategy.save(tmp_path, rank=0)
    assert (tmp_path / "model" / "config.json").is_file() and (tmp_path / "deepspeed" / "latest").is_file()
    resumed = DeepSpeedStrategy(Encoder.from_config(cfg.model), cfg)
    resumed.load(tmp_path)
    assert resumed.lr == strategy.lr and resumed.engine.global_steps == 1
    for p, q in zip(resumed.encoder.parameters(), strategy.encoder.parameters()):
        torch.testing.assert_close(p, q)


def test_deepspeed_zero3_exports_full_parameters(tiny, tmp_path, one_rank_group):
    from safetensors.torch import load_file

    cfg = config(tiny, "train.strategy=deepspeed", "train.zero_stage=3")
    strategy = DeepSpeedStrategy(Encoder.from_config(cfg.model), cfg)
    # Right after initialize every parameter is partitioned away (data of shape (0,)).
    assert strategy.encoder.model.embeddings.word_embeddings.weight.numel() == 0
    strategy.save(tmp_path, rank=0)
    exported, original = (load_file(path / "model.safetensors") for path in (tmp_path / "model", tiny))
    for name, tensor in exported.items():
        torch.testing.assert_close(tensor, original[name], msg=name)


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_deepspeed_checkpoints_load_weights_only(tiny, tmp_path, one_rank_group, stage):
    """Every file of a DeepSpeed checkpoint loads through torch.load(weights_only=True) (DeepSpeed's
    own loader would unpickle anything), and a file carrying any other global is refused."""
    import pickle

    sets = ["train.strategy=deepspeed", f"train.zero_stage={stage}", "train.warmup_steps=0"]
    cfg = config(tiny, *sets, *(["train.eval_every=null"] if stage == 3 else []))
    strategy = DeepSpeedStrategy(Encoder.from_config(cfg.model), cfg)
    strategy.micro_step(loss_of(strategy.encoder, 1), boundary=True)
    strategy.save(tmp_path, rank=0)
    files = sorted((tmp_path / "deepspeed").glob("*/*.pt"))
    assert any("optim_states" in f.name for f in files)
    for path in files:
        strategy.engine.checkpoint_engine.load(str(path))

    resumed = DeepSpeedStrategy(Encoder.from_config(cfg.model), cfg)
    resumed.load(tmp_path)
    assert resumed.engine.global_steps == 1

    class Payload:  # what a crafted checkpoint would smuggle in: any importable callable
        def __reduce__(self):
            return (print, ("ran",))

    optim = next(f for f in files if "optim_states" in f.name)
    torch.save({"optimizer_state_dict": Payload()}, optim)
    with pytest.raises(pickle.UnpicklingError, match="Unsupported global"):
        DeepSpeedStrategy(Encoder.from_config(cfg.model), cfg).load(tmp_path)
