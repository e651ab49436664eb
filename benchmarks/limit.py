"""How close encoding and training get to what this machine can do: the achieved fraction of
its dense matmul throughput (MFU, model FLOPs utilisation).

    peak      = GFLOP/s of dense fp32 matmuls at the encoder's own shapes (tokens x hidden @
                hidden x hidden, hidden x intermediate, intermediate x hidden), timed here
    encoding  = GFLOP/s of `Encoder.encode` on real XQuAD-R sentences, length-sorted as
                `hbt eval` encodes them, counted by the FLOPs of the padded batches it ran
    training  = GFLOP/s of hbt's own training step (`contrastive_loss` on the step's queries and
                positives packed into length-sorted chunks as `hbt train` runs them, in-batch
                InfoNCE, backward, AdamW) on the same texts, counted by the FLOPs of the real
                tokens only (each sequence at its own length); forward + backward = 3 x forward
    padded    = the figure this benchmark gave before: bare steps on queries and passages each
                padded to their side's longest, counted by the FLOPs of the padded matrices
                (padding counted as work, so it reads higher than what the step achieves)
    MFU       = achieved / peak

FLOPs are counted per layer from the model's config (`encoder_flops`): the four attention
projections, the attention scores and the weighted sum, and the two feed-forward matmuls,
2 FLOPs a multiply-add; embeddings, norms and softmax are left out (under 1% at these shapes).
tests/test_benchmarks.py checks the count against torch's FLOP counter on a real forward pass.
On a GPU (`--device cuda`) the same runs there.

    python benchmarks/limit.py --model runs/models/e5-small --json runs/bench/limit.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Optional

import torch
from bench_rounds import positive_int, report

from hbt.config import REPO_ROOT, ModelConfig, default_data_dir
from hbt.data.lareqa import read_lareqa
from hbt.model.encoder import Encoder


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=REPO_ROOT / "runs" / "models" / "e5-small")
    p.add_argument("--corpus", type=Path, default=default_data_dir() / "xquad-r")
    p.add_argument("--language", default="en")
    p.add_argument("--texts", type=positive_int, default=512, help="sentences encoded (and trained on)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="encoding batch")
    p.add_argument("--train-batch", type=positive_int, default=16, help="pairs per training step")
    p.add_argument("--train-steps", type=positive_int, default=4)
    p.add_argument("--matmul-seconds", type=float, default=2.0, help="time spent on each matmul shape")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def encoder_flops(config, batch: int, length: int) -> int:
    """Forward FLOPs of a BERT-style encoder on `batch` sequences of `length` tokens (see the
    module docstring): per layer 4 projections (h x h), scores and weighted sum (length x h
    each), 2 feed-forward matmuls (h x i)."""
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    tokens = batch * length
    per_layer = 2 * tokens * (4 * h * h + 2 * h * i) + 2 * 2 * batch * length * length * h
    return layers * per_layer


def matmul_peak(config, tokens: int, seconds: float, device: str) -> dict:
    """Sustained GFLOP/s of each encoder-shaped matmul, and the best of them."""
    h, i = config.hidden_size, config.intermediate_size
    shapes = {"tokens x h @ h x h": (tokens, h, h), "tokens x h @ h x i": (tokens, h, i),
              "tokens x i @ i x h": (tokens, i, h)}
    rates = {}
    for name, (m, k, n) in shapes.items():
        a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
        torch.matmul(a, b)  # warm-up
        reps, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            torch.matmul(a, b)
            reps += 1
        if device == "cuda":
            torch.cuda.synchronize()
        rates[name] = 2 * m * k * n * reps / (time.perf_counter() - started) / 1e9
    return {"by_shape": rates, "gflops": max(rates.values())}


def padded_batches(encoder: Encoder, texts: list[str], batch_size: int, kind: str):
    """Length-sorted batches as `hbt eval` cuts them, tokenized: (input_ids, attention_mask) each."""
    ordered = sorted(texts, key=len)
    return [encoder.tokenize(ordered[s:s + batch_size], kind) for s in range(0, len(ordered), batch_size)]


@torch.no_grad()
def encoding_rate(encoder: Encoder, batches, device: str) -> dict:
    encoder.eval()
    flops = sum(encoder_flops(encoder.model.config, *b["input_ids"].shape) for b in batches)
    started = time.perf_counter()
    for b in batches:
        encoder(b["input_ids"].to(device), b["attention_mask"].to(device))
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "gflops": flops / seconds / 1e9, "flops": flops,
            "texts": sum(len(b["input_ids"]) for b in batches)}


def padded_training_rate(encoder: Encoder, queries, passages, device: str, steps: int) -> dict:
    """Bare training steps: both sides forward, in-batch InfoNCE, backward, AdamW; padded FLOPs."""
    from hbt.losses.infonce import InfoNCELoss

    encoder.train()
    optimizer = torch.optim.AdamW([p for p in encoder.parameters() if p.requires_grad], lr=1e-5)
    loss_fn = InfoNCELoss(temperature=0.05)
    pairs = list(zip(queries, passages))[:steps + 1]  # one warm-up step, untimed
    flops, started = 0, None
    for n, (q, p) in enumerate(pairs):
        if n == 1:
            started = time.perf_counter()
        q_emb = encoder(q["input_ids"].to(device), q["attention_mask"].to(device))  # (B, H)
        p_emb = encoder(p["input_ids"].to(device), p["attention_mask"].to(device))  # (B, H)
        loss = loss_fn(q_emb, p_emb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if n >= 1:  # forward + backward = 3 x forward
            flops += 3 * sum(encoder_flops(encoder.model.config, *x["input_ids"].shape) for x in (q, p))
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "gflops": flops / seconds / 1e9, "flops": flops, "steps": len(pairs) - 1}


def hbt_step_rows(encoder: Encoder, questions: list[str], texts: list[str], size: int) -> list[dict]:
    """Steps of `size` (question, sentence) pairs tokenized as hbt's stream tokenizes them."""
    import numpy as np

    from hbt.train.batch import StepTexts, tokenize_step

    rows = []
    for s in range(0, min(len(questions), len(texts)) - size + 1, size):
        q, p = questions[s:s + size], texts[s:s + size]
        step = StepTexts([str(i) for i in range(size)], q, p, [[] for _ in q], np.zeros((size, 0), dtype=bool),
                         list(range(size)), [[] for _ in q])
        rows.append(tokenize_step(encoder.tokenizer, encoder.cfg, step))
    return rows


def hbt_training_rate(encoder: Encoder, rows: list[dict], device: str, steps: int) -> dict:
    """hbt's training step on packed chunks (`hbt.train.loop.contrastive_loss`), FLOPs of the
    real tokens only."""
    from hbt.losses.infonce import InfoNCELoss
    from hbt.train.loop import MASKS_AND_KEYS, contrastive_loss, row_inputs

    encoder.train()
    optimizer = torch.optim.AdamW([p for p in encoder.parameters() if p.requires_grad], lr=1e-5)
    loss_fn = InfoNCELoss(temperature=0.05)
    flops, real, computed, started = 0, 0, 0, None
    for n, row in enumerate(rows[:steps + 1]):  # one warm-up step, untimed
        if n == 1:
            started = time.perf_counter()
        inputs = row_inputs(row)
        packed = inputs["packed"].to(torch.device(device))
        loss = contrastive_loss(encoder, loss_fn, {"packed": packed,
                                                   **{k: inputs[k].to(device) for k in MASKS_AND_KEYS}})
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if n >= 1:  # forward + backward = 3 x forward, each sequence at its own length
            flops += 3 * sum(encoder_flops(encoder.model.config, 1, int(length)) for length in row["lengths"])
            real, computed = real + packed.real_tokens, computed + packed.computed_tokens
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "gflops": flops / seconds / 1e9, "flops": flops, "steps": min(len(rows) - 1, steps),
            "real_fraction": real / computed}


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    corpus = read_lareqa(args.corpus, [args.language])
    texts = corpus.candidates.column("sentence").to_pylist()[:args.texts]
    questions = corpus.queries.column("text").to_pylist()[:args.texts]
    encoder = Encoder.from_config(ModelConfig(name_or_path=str(args.model))).to(args.device)
    batches = padded_batches(encoder, texts, args.batch_size, "passage")
    typical_tokens = max(b["input_ids"].numel() for b in batches)
    peak = matmul_peak(encoder.model.config, typical_tokens, args.matmul_seconds, args.device)
    encoding = encoding_rate(encoder, batches, args.device)
    size = args.train_batch
    queries = [encoder.tokenize(questions[s:s + size], "query") for s in range(0, len(questions), size)]
    passages = [encoder.tokenize(texts[s:s + size], "passage") for s in range(0, len(texts), size)]
    padded = padded_training_rate(encoder, queries, passages, args.device, args.train_steps)
    training = hbt_training_rate(encoder, hbt_step_rows(encoder, questions, texts, size), args.device,
                                 args.train_steps)
    return {"model": str(args.model), "device": args.device, "threads": args.threads,
            "peak": peak, "encoding": encoding, "training": training, "training_padded": padded,
            "mfu": {"encoding": encoding["gflops"] / peak["gflops"], "training": training["gflops"] / peak["gflops"],
                    "training_padded": padded["gflops"] / peak["gflops"]}}


def format_table(r: dict) -> str:
    lines = [f"model {r['model']}  device {r['device']}  torch threads {r['threads']}", "",
             f"{'dense fp32 matmul at the encoder shapes':<48}{'GFLOP/s':>10}"]
    lines += [f"  {name:<46}{rate:>10.1f}" for name, rate in r["peak"]["by_shape"].items()]
    lines += [f"{'peak (the best shape)':<48}{r['peak']['gflops']:>10.1f}", "",
              f"{'':<48}{'GFLOP/s':>10}{'of peak':>10}",
              f"{'encoding (' + str(r['encoding']['texts']) + ' texts, length-sorted)':<48}"
              f"{r['encoding']['gflops']:>10.1f}{r['mfu']['encoding']:>10.1%}",
              f"{'training: hbt step, real tokens (' + str(r['training']['steps']) + ' steps)':<48}"
              f"{r['training']['gflops']:>10.1f}{r['mfu']['training']:>10.1%}",
              f"{'training: padded (' + str(r['training_padded']['steps']) + ' steps, as before)':<48}"
              f"{r['training_padded']['gflops']:>10.1f}{r['mfu']['training_padded']:>10.1%}",
              f"  hbt step: {r['training']['real_fraction']:.1%} of the tokens it computed were real"]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> dict:
    return report(parse_args(argv), run, format_table)


if __name__ == "__main__":
    main(sys.argv[1:])
