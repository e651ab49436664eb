"""sentence-transformers module files, so a model dir loads with `SentenceTransformer(path)`
alone (no hbt import): Transformer -> Pooling -> Normalize, with the query/passage prompts."""

from __future__ import annotations

import json
from pathlib import Path


def write_sentence_transformers_files(
    model_dir: Path, hidden_size: int, max_seq_length: int, pooling: str = "mean",
    query_prefix: str = "query: ", passage_prefix: str = "passage: ", has_pooler: bool = False,
) -> None:
    model_dir = Path(model_dir)
    (model_dir / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ], indent=2))
    bert_config = {"max_seq_length": max_seq_length, "do_lower_case": False}
    if not has_pooler:
        # the checkpoint has no pooler: don't let AutoModel add a random (unused) one
        bert_config["model_args"] = {"add_pooling_layer": False}
    (model_dir / "sentence_bert_config.json").write_text(json.dumps(bert_config, indent=2))
    (model_dir / "config_sentence_transformers.json").write_text(json.dumps({
        "prompts": {"query": query_prefix, "passage": passage_prefix},
        "default_prompt_name": None, "similarity_fn_name": "cosine"}, indent=2))
    (model_dir / "1_Pooling").mkdir(exist_ok=True)
    (model_dir / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": hidden_size, "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean", "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False, "include_prompt": True}, indent=2))
    (model_dir / "2_Normalize").mkdir(exist_ok=True)
