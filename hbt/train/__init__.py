"""Distributed contrastive training on Ray Train.

* `hbt.train.loop.train_func` is the per-worker loop (Ray Train style: it reads a plain
  config dict only): hybrid-batch composer -> texts and tokens (`hbt.train.batch`, with
  optional hard negatives) -> shared encoder -> InfoNCE with embeddings gathered across
  workers; `train.grad_accum` composer batches per optimizer step; periodic reports
  (loss per batch kind, pairs/s, tokens/s) and resumable checkpoints.
* `hbt.train.engine` holds the strategies the loop drives through one interface: DDP
  (torch AdamW + linear warmup/decay, `prepare_model`) or a DeepSpeed engine (ZeRO 0-3,
  optional bf16), each with its own checkpoint files and the HF export `model/`.
* `hbt.train.driver.train` builds the `TorchTrainer` from an `HbtConfig`, runs it, writes
  `OUT/metrics.jsonl`, shows a progress line per report and exports the final model to
  `OUT/model`.
"""
