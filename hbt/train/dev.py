"""Evaluation on the dev split while training: what picks a checkpoint (and, in a sweep, a trial).

The driver reads the prepared dev split once and hands it to the workers through the object
store (`load_dev_corpus` -> `ray.put`); every `train.eval_every` steps, and at every
checkpoint, rank 0 encodes it with the current weights (in process: all X->X, X->Y pairs and
the pooled setting, exactly as `hbt eval` scores them) and broadcasts the metrics, so every
rank reports the same numbers and the checkpoint carries them:

    dev/mono_map  dev/cross_map  dev/multi_map  dev/rank_distance  dev/multi_hit@1  dev/multi_hit@10
    dev/multi_map_trained  dev/rank_distance_trained   (pooled setting, mean over the query
    dev/multi_map_unseen   dev/rank_distance_unseen     languages trained on / never trained on)
    dev/seconds   (time the evaluation took; excluded from the step's pairs/s)

The other ranks wait at the broadcast. ZeRO-3 is refused with `train.eval_every` (config):
its weights are sharded, so rank 0 could not run a forward pass alone.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from hbt.config import GROUP_METRICS, HbtConfig
from hbt.data.lareqa import LareqaCorpus
from hbt.errors import HbtError

DEV_METRICS = {  # reported name -> (setting, metric) in `evaluate`'s settings
    "dev/mono_map": ("mono", "map"),
    "dev/cross_map": ("cross", "map"),
    "dev/multi_map": ("multi", "map"),
    "dev/rank_distance": ("multi", "rank_distance"),
    "dev/multi_hit@1": ("multi", "hit@1"),
    "dev/multi_hit@10": ("multi", "hit@10"),
}


def load_dev_corpus(prepared_dir: Path) -> LareqaCorpus:
    """The prepared dev split; a one-line error when it was prepared without one."""
    from hbt.eval.heldout import read_eval_corpus

    return read_eval_corpus(prepared_dir, split="dev").corpus


def dev_metrics(encoder, corpus: LareqaCorpus, cfg: HbtConfig) -> dict[str, float]:
    """Encode `corpus` with `encoder` in process and score it; -> the DEV_METRICS."""
    from hbt.eval.allpairs import evaluate
    from hbt.eval.encode import corpus_languages, encode_corpus

    started = time.perf_counter()
    query_emb, cand_emb = encode_corpus(encoder, corpus, cfg.eval, cfg.model.resolved_candidate_context(),
                                        progress=False, lengths=encoder.token_lengths)
    result = evaluate(query_emb, cand_emb, corpus, corpus_languages(corpus), cfg.eval.top_k,
                      cfg.eval.index_factory, shards_on_ray=False, exact_max=cfg.eval.lareqa_exact_max)
    settings = result["settings"]
    out = {name: float(settings[s][m]) for name, (s, m) in DEV_METRICS.items() if s in settings}
    out.update(group_metrics(settings["multi"], cfg.data.train_languages))
    out["dev/seconds"] = time.perf_counter() - started
    return out


def group_metrics(multi: dict, train_languages: list[str]) -> dict[str, float]:
    """Pooled mAP and rank distance over the query languages trained on and over the others
    (each a mean of per-language values; a group without a language is left out)."""
    out = {}
    for group, member in (("trained", True), ("unseen", False)):
        languages = [lang for lang in multi["map_by_lang"] if (lang in train_languages) == member]
        if languages:
            out[f"dev/multi_map_{group}"] = float(np.mean([multi["map_by_lang"][lang] for lang in languages]))
            out[f"dev/rank_distance_{group}"] = float(np.mean([multi["rank_distance_by_lang"][lang]
                                                               for lang in languages]))
    return out


def evaluate_on_rank0(encoder, corpus: LareqaCorpus | None, cfg: HbtConfig, rank: int) -> dict[str, float]:
    """`dev_metrics` computed by rank 0 and broadcast: every rank returns the same dict."""
    import math

    import torch

    from hbt.collectives import broadcast

    names = [*DEV_METRICS, *GROUP_METRICS, "dev/seconds"]
    values = torch.full((len(names),), float("nan"), dtype=torch.float64)  # (M,), NaN: not measured
    if rank == 0:
        if corpus is None:
            raise HbtError("train.eval_every: rank 0 has no dev corpus")
        measured = dev_metrics(encoder, corpus, cfg)
        values = torch.tensor([measured.get(name, float("nan")) for name in names], dtype=torch.float64)
    values = broadcast(values, src=0)  # on the process group's device, back on the CPU
    return {name: float(v) for name, v in zip(names, values.tolist()) if not math.isnan(v)}


def selection_mode(metric: str) -> str:
    """"min" for rank distance (lower is better), "max" for the mAPs."""
    return "min" if "rank_distance" in metric else "max"
