"""The per-worker training loop, `train_func(config: dict)`, run by Ray Train's TorchTrainer.

The loop reads only its config dict:

    {"hbt": HbtConfig.model_dump(mode="json"), "prepared_dir": "/abs/path/to/prepared"}

Per step: the `HybridBatchComposer` (the single source of batch order, so a resumed run
replays exactly the sequence an uninterrupted one would) yields this rank's examples
`(parallel_id, query_lang, passage_lang)`; each example's question in `query_lang` and
positive in `passage_lang` are looked up in `prepared_dir/train_pairs.parquet`; queries and
passages go through the encoder in one forward pass; InfoNCE gathers embeddings from all
workers so every query sees the whole global batch as negatives.

Checkpoint layout (written by rank 0, every `train.checkpoint_every` steps and at the end):

    model/              HF dir (`Encoder.save`): loadable with AutoModel / Encoder.from_config
    train_state.pt      {"optimizer", "scheduler", "step"}
    composer.json       HybridBatchComposer.state_dict()

Reported metrics (rank 0's are the ones Ray keeps): step (0-based index of the last step
done), loss, kind, lr, pairs_per_s (global pairs / wall time of the step), and
batch_ids: one list of rank 0's parallel_ids per step since the previous report.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

TRAIN_PAIRS = "train_pairs.parquet"


def load_pairs(prepared_dir: Path, languages: list[str] | None = None):
    """(records, lookup) from the prepared training table: records maps parallel_id -> languages
    (the composer's input); lookup maps (parallel_id, lang) -> (question, positive)."""
    import pyarrow.parquet as pq

    from hbt.data.composer import records_from_table

    path = Path(prepared_dir) / TRAIN_PAIRS
    table = pq.read_table(path, columns=["parallel_id", "lang", "question", "positive"])
    if languages:
        import pyarrow as pa
        import pyarrow.compute as pc

        table = table.filter(pc.is_in(table.column("lang"), value_set=pa.array(list(languages))))
    lookup = {
        (pid, lang): (question, positive)
        for pid, lang, question, positive in zip(
            table.column("parallel_id").to_pylist(),
            table.column("lang").to_pylist(),
            table.column("question").to_pylist(),
            table.column("positive").to_pylist(),
        )
    }
    return records_from_table(table), lookup


def linear_warmup_decay(warmup_steps: int, total_steps: int):
    """LR multiplier: 0 -> 1 linearly over `warmup_steps`, then 1 -> 0 linearly until `total_steps`."""

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        return max(0.0, (total_steps - step) / span)

    return factor


def pair_inputs(encoder, questions: list[str], positives: list[str]) -> dict[str, torch.Tensor]:
    """Tokenize queries and passages (each with its prefix) into one (2B, T) batch:
    rows [0, B) are queries, rows [B, 2B) their positives (right-padded to a common T)."""
    q = encoder.tokenize(questions, "query")
    p = encoder.tokenize(positives, "passage")
    length = max(q["input_ids"].shape[1], p["input_ids"].shape[1])
    pad_id = encoder.tokenizer.pad_token_id or 0

    def padded(t: torch.Tensor, value: int) -> torch.Tensor:
        return F.pad(t, (0, length - t.shape[1]), value=value)

    return {
        "input_ids": torch.cat([padded(q["input_ids"], pad_id), padded(p["input_ids"], pad_id)]),
        "attention_mask": torch.cat([padded(q["attention_mask"], 0), padded(p["attention_mask"], 0)]),
    }


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


def _save_checkpoint(directory: Path, encoder, optimizer, scheduler, composer, step: int) -> None:
    encoder.save(directory / "model")
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step},
               directory / "train_state.pt")
    (directory / "composer.json").write_text(json.dumps(composer.state_dict()))


def _load_checkpoint(directory: Path, encoder, optimizer, scheduler, composer) -> None:
    from transformers import AutoModel

    saved = AutoModel.from_pretrained(str(directory / "model"))
    encoder.model.load_state_dict(saved.state_dict())
    state = torch.load(directory / "train_state.pt", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    composer.load_state_dict(json.loads((directory / "composer.json").read_text()))


def train_func(config: dict) -> None:
    """Ray Train per-worker loop; see the module docstring for the config dict."""
    import ray.train
    import ray.train.torch

    from hbt.config import HbtConfig
    from hbt.data.composer import ComposerConfig, HybridBatchComposer
    from hbt.losses.infonce import InfoNCELoss
    from hbt.model.encoder import Encoder

    cfg = HbtConfig.model_validate(config["hbt"])
    tc, bc = cfg.train, cfg.batching
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(bc.seed + rank)

    records, lookup = load_pairs(Path(config["prepared_dir"]), cfg.data.train_languages)
    composer = HybridBatchComposer(
        records,
        ComposerConfig(mode=bc.mode, alpha=bc.alpha, batch_size=bc.batch_size, seed=bc.seed,
                       language_sampling=bc.language_sampling),
        rank=rank, world_size=world)

    encoder = Encoder.from_config(cfg.model)
    if tc.freeze_embeddings:
        encoder.freeze_word_embeddings()
    pooler = getattr(encoder.model, "pooler", None)
    if isinstance(pooler, torch.nn.Module):
        # The HF pooler head is not used (the encoder pools last_hidden_state itself); frozen,
        # DDP does not wait for gradients that never come.
        pooler.requires_grad_(False)
    params = [p for p in encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup_decay(tc.warmup_steps, tc.steps))

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            _load_checkpoint(Path(directory), encoder, optimizer, scheduler, composer)

    model = ray.train.torch.prepare_model(encoder) if world > 1 else encoder
    loss_fn = InfoNCELoss.from_config(tc, gather=world > 1)
    model.train()

    pending_ids: list[list[str]] = []
    while composer.step < tc.steps:
        started = time.perf_counter()
        batch = composer.next_batch()
        pairs = [(lookup[(pid, q_lang)][0], lookup[(pid, p_lang)][1]) for pid, q_lang, p_lang in batch.examples]
        inputs = pair_inputs(encoder, [q for q, _ in pairs], [p for _, p in pairs])
        emb = model(inputs["input_ids"], inputs["attention_mask"])  # (2B, H)
        n = len(pairs)
        loss = loss_fn(emb[:n], emb[n:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        lr = scheduler.get_last_lr()[0]
        scheduler.step()
        elapsed = time.perf_counter() - started
        pending_ids.append([pid for pid, _, _ in batch.examples])

        done = composer.step  # steps completed
        last = done >= tc.steps
        want_checkpoint = done % tc.checkpoint_every == 0 or last
        if not (done % tc.report_every == 0 or want_checkpoint):
            continue
        metrics = {
            "step": batch.step,
            "loss": float(loss.detach()),
            "kind": batch.kind,
            "lr": float(lr),
            "pairs_per_s": n * world / max(elapsed, 1e-9),
            "batch_ids": pending_ids,
        }
        pending_ids = []
        if want_checkpoint:
            with tempfile.TemporaryDirectory() as tmp:
                ckpt = None
                if rank == 0:
                    _save_checkpoint(Path(tmp), _unwrap(model), optimizer, scheduler, composer, done)
                    ckpt = ray.train.Checkpoint.from_directory(tmp)
                ray.train.report(metrics, checkpoint=ckpt)
        else:
            ray.train.report(metrics)
