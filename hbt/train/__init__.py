"""Distributed contrastive training on Ray Train.

* `hbt.train.loop.train_func` is the per-worker loop (Ray Train style: it reads a plain
  config dict only): hybrid-batch composer -> tokenize -> shared encoder -> InfoNCE with
  embeddings gathered across workers -> AdamW with linear warmup + decay; DDP via
  `ray.train.torch.prepare_model`; periodic reports and resumable checkpoints
  (model + optimizer + scheduler + composer state).
* `hbt.train.driver.train` builds the `TorchTrainer` from an `HbtConfig`, runs it, writes
  `OUT/metrics.jsonl` and exports the final model to `OUT/model`.
"""
