"""Faiss indexes for evaluation: one shard per candidate language, exact pooled top-k.

See :mod:`hbt.index.shards` for building shards, searching them in process or in
Ray actors, and merging per-shard top-k lists into the exact global top-k.
"""
