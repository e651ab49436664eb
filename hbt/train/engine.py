"""Training strategies behind one interface: plain DDP, or a DeepSpeed engine (ZeRO 0-3).

The loop drives either the same way. One optimizer step is `grad_accum` micro-batches:

    for i in range(grad_accum):
        loss = strategy.micro_step(loss_of, boundary=i == grad_accum - 1)

`loss_of(model)` runs the forward pass and returns the micro-batch's loss; the strategy runs
the backward pass and, at the boundary, the optimizer and LR scheduler. Gradients are
averaged over the micro-batches (each loss is divided by `grad_accum`), so an accumulated
step equals one step on the union of the micro-batches' loss terms.

Checkpoint files, inside the directory given to `save` (one per checkpoint):

    model/            rank 0: HF dir (`Encoder.save`), the export; under ZeRO-3 its
                      parameters are gathered from all ranks first
    train_state.pt    DDP, rank 0: {"optimizer", "scheduler"}
    deepspeed/        DeepSpeed, every rank its own ZeRO shards (`engine.save_checkpoint`);
                      Ray merges the ranks' directories into one checkpoint
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Protocol

import torch
from torch import nn

from hbt.config import HbtConfig
from hbt.layout import MODEL_DIR
from hbt.model.encoder import Encoder

LossOf = Callable[[nn.Module], torch.Tensor]  # model -> scalar loss of one micro-batch

CPU = torch.device("cpu")
DEEPSPEED_DIR = "deepspeed"
TRAIN_STATE = "train_state.pt"


class Strategy(Protocol):
    encoder: Encoder  # the unwrapped module
    device: torch.device  # where the inputs of `loss_of` must be

    def micro_step(self, loss_of: LossOf, boundary: bool) -> torch.Tensor: ...

    @property
    def lr(self) -> float: ...

    def save(self, directory: Path, rank: int) -> None: ...

    def load(self, directory: Path) -> None: ...


def linear_warmup_decay(warmup_steps: int, total_steps: int):
    """LR multiplier: 0 -> 1 linearly over `warmup_steps`, then 1 -> 0 linearly until `total_steps`."""

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        return max(0.0, (total_steps - step) / span)

    return factor


def _optimizer_and_schedule(encoder: Encoder, cfg: HbtConfig):
    tc = cfg.train
    params = [p for p in encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
    return optimizer, linear_warmup_decay(tc.warmup_steps, tc.steps)


def deepspeed_config(cfg: HbtConfig) -> dict:
    """The DeepSpeed config dict for `cfg` (the optimizer is passed to `deepspeed.initialize` as
    a torch AdamW, so DeepSpeed JIT-compiles no fused kernel)."""
    tc, bc = cfg.train, cfg.batching
    return {
        # e.g. 16 pairs per worker * 2 micro-batches * 4 workers = 128 pairs per optimizer step
        "train_micro_batch_size_per_gpu": bc.batch_size,
        "gradient_accumulation_steps": tc.grad_accum,
        "train_batch_size": bc.batch_size * tc.grad_accum * tc.num_workers,
        "zero_optimization": {"stage": tc.zero_stage},
        "bf16": {"enabled": tc.bf16},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": tc.steps + 1,  # DeepSpeed's own progress lines: never (the loop reports)
    }


class DDPStrategy:
    """torch AdamW + LambdaLR; DDP via Ray's `prepare_model` when there is more than one worker;
    with `train.bf16` (GPU only, checked by the driver) the forward pass runs under autocast."""

    def __init__(self, encoder: Encoder, cfg: HbtConfig, world_size: int, device: torch.device = CPU):
        self.device = device
        self.encoder = encoder.to(device)
        self.cfg = cfg
        self.grad_accum = cfg.train.grad_accum
        self.optimizer, factor = _optimizer_and_schedule(encoder, cfg)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        if world_size > 1:
            import ray.train.torch

            self.model = ray.train.torch.prepare_model(encoder, move_to_device=device)
        else:
            self.model = encoder
        self.autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if cfg.train.bf16
                         else contextlib.nullcontext())

    def micro_step(self, loss_of: LossOf, boundary: bool) -> torch.Tensor:
        # Before the boundary, DDP must not all-reduce: no_sync wraps forward and backward.
        sync = contextlib.nullcontext() if boundary or not hasattr(self.model, "no_sync") else self.model.no_sync()
        with sync:
            with self.autocast:
                loss = loss_of(self.model)
            (loss / self.grad_accum).backward()
        if boundary:
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    @property
    def lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def save(self, directory: Path, rank: int) -> None:
        if rank != 0:
            return
        self.encoder.save(directory / MODEL_DIR)
        torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()},
                   directory / TRAIN_STATE)

    def load(self, directory: Path) -> None:
        # Loaded the way the encoder loads any model dir (e.g. without a pooler head), so the keys match.
        saved = Encoder.from_config(self.cfg.model.model_copy(update={"name_or_path": str(directory / MODEL_DIR)}))
        self.encoder.model.load_state_dict(saved.model.state_dict())
        # Tensors and plain values only: a checkpoint is never a way to run code.
        state = torch.load(directory / TRAIN_STATE, map_location=self.device, weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


# DeepSpeed's own checkpoint engine unpickles with `weights_only=False`, so a crafted checkpoint
# could run code. Its checkpoints hold tensors, containers and these DeepSpeed types only.
DEEPSPEED_CHECKPOINT_TYPES = ("deepspeed.runtime.fp16.loss_scaler.LossScaler",
                              "deepspeed.runtime.zero.config.ZeroStageEnum",
                              "deepspeed.utils.tensor_fragment.fragment_address")


def _weights_only_checkpoint_engine(config_params):
    """DeepSpeed's torch checkpoint engine, loading with `torch.load(weights_only=True)` and
    DEEPSPEED_CHECKPOINT_TYPES allowed, nothing else."""
    import importlib

    from hbt.compat import deepspeed_torch_checkpoint_engine

    TorchCheckpointEngine = deepspeed_torch_checkpoint_engine()
    allowed = [getattr(importlib.import_module(module), name)
               for module, name in (path.rsplit(".", 1) for path in DEEPSPEED_CHECKPOINT_TYPES)]

    class WeightsOnlyCheckpointEngine(TorchCheckpointEngine):
        def load(self, path: str, map_location=None):
            with torch.serialization.safe_globals(allowed):
                return torch.load(path, map_location=map_location, weights_only=True)

    return WeightsOnlyCheckpointEngine(config_params)


class DeepSpeedStrategy:
    """A DeepSpeed engine on Ray's process group; on CPU it runs over gloo, compiling nothing."""

    def __init__(self, encoder: Encoder, cfg: HbtConfig):
        import deepspeed

        from hbt.compat import deepspeed_compatible_ops, set_checkpoint_engine

        # The shared-memory collective is a C++ JIT build (~40 s on CPU); gloo is enough.
        deepspeed_compatible_ops()["deepspeed_shm_comm"] = False
        self.encoder = encoder
        self.zero_stage = cfg.train.zero_stage
        optimizer, factor = _optimizer_and_schedule(encoder, cfg)
        # The scheduler is built on DeepSpeed's wrapped optimizer, whose param groups it steps.
        self.engine, _, _, _ = deepspeed.initialize(
            model=encoder, optimizer=optimizer, config=deepspeed_config(cfg),
            lr_scheduler=lambda wrapped: torch.optim.lr_scheduler.LambdaLR(wrapped, factor))
        set_checkpoint_engine(self.engine, _weights_only_checkpoint_engine(self.engine._config))
        self.device = self.engine.device

    def micro_step(self, loss_of: LossOf, boundary: bool) -> torch.Tensor:
        # The engine counts micro-batches itself: it scales the loss by 1/grad_accum and only
        # reduces gradients and steps at its accumulation boundary, which matches `boundary`.
        loss = loss_of(self.engine)
        self.engine.backward(loss)
        self.engine.step()
        return loss.detach().float()

    @property
    def lr(self) -> float:
        return float(self.engine.get_lr()[0])

    def _full_parameters(self):
        if self.zero_stage < 3:
            return contextlib.nullcontext()
        import deepspeed

        # ZeRO-3 keeps a shard of every parameter per rank; a collective, so every rank enters.
        return deepspeed.zero.GatheredParameters(list(self.encoder.parameters()), modifier_rank=None)

    def save(self, directory: Path, rank: int) -> None:
        with self._full_parameters():
            if rank == 0:
                self.encoder.save(directory / MODEL_DIR)
        self.engine.save_checkpoint(str(directory / DEEPSPEED_DIR))

    def load(self, directory: Path) -> None:
        path, _ = self.engine.load_checkpoint(str(directory / DEEPSPEED_DIR))
        if path is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint in {directory / DEEPSPEED_DIR}")


def build_strategy(encoder: Encoder, cfg: HbtConfig, world_size: int, device: torch.device = CPU) -> Strategy:
    """The strategy `cfg.train.strategy` names, wrapping `encoder` (its trainable parameters).
    DeepSpeed picks its device itself (its accelerator: CUDA, else CPU)."""
    if cfg.train.strategy == "deepspeed":
        return DeepSpeedStrategy(encoder, cfg)
    return DDPStrategy(encoder, cfg, world_size, device)
