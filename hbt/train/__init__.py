"""Distributed contrastive training on Ray Train.

* `hbt.train.batch`: one step's texts (question, positive, hard negatives) and tokens (unpadded).
* `hbt.train.packing`: a step's sequences as length-sorted chunks padded to their own length.
* `hbt.train.stream`: the Ray Data path: the driver's composer plan, tokenize actors, one
  ordered stream per rank.
* `hbt.train.engine`: the strategies the loop drives through one interface: DDP (torch AdamW
  + linear warmup/decay, `prepare_model`) or a DeepSpeed engine (ZeRO 0-3, bf16 on GPUs).
* `hbt.train.loop.train_func`: the per-worker loop (reads a plain config dict and its shard):
  encoder -> InfoNCE over gathered embeddings, `train.grad_accum` micro-batches per step,
  reports and resumable checkpoints (model, optimizer, composer state).
* `hbt.train.progress`: `metrics.jsonl` and the progress lines.
* `hbt.train.driver.train`: the `TorchTrainer` from an `HbtConfig`: resume, checks, export.
"""
