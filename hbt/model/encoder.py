"""The bi-encoder: one HF `AutoModel` shared by queries and passages, pooled and L2-normalised.

Queries and passages differ only by the configured text prefix (E5 style: "query: " /
"passage: "); the weights are the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Literal, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hbt.config import ModelConfig
from hbt.errors import HbtError, first_line

Kind = Literal["query", "passage"]


def pool(last_hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool token states (B, T, H) with mask (B, T) into (B, H).

    "mean": average over positions where the mask is 1 (padding excluded);
    "cls": the first position's state.
    """
    if mode == "cls":
        return last_hidden[:, 0]  # (B, H)
    if mode == "mean":
        mask = attention_mask.unsqueeze(-1).to(last_hidden.dtype)  # (B, T, 1)
        summed = (last_hidden * mask).sum(dim=1)  # (B, H)
        counts = mask.sum(dim=1).clamp(min=1e-9)  # (B, 1)
        return summed / counts  # (B, H)
    raise ValueError(f"unknown pooling mode {mode!r} (expected 'mean' or 'cls')")


def _looks_local(name_or_path: str) -> bool:
    """A path-like name (absolute, ./, ../, ~, or more than one '/') rather than a hub id 'org/name'."""
    return (
        name_or_path.startswith(("/", "./", "../", "~", "."))
        or name_or_path.count("/") > 1
        or "\\" in name_or_path
    )


def _load_without_pooler(auto_model, name: str):
    """The encoder pools token states itself: BERT-like models load without their pooler head
    (else AutoModel adds a random one for checkpoints that have none, and DDP waits for its
    gradients). Architectures without that option load as they are."""
    try:
        return auto_model.from_pretrained(name, add_pooling_layer=False)
    except TypeError:
        return auto_model.from_pretrained(name)


def resolve_model_name(name_or_path: str) -> str:
    """An existing local model dir as an absolute path (workers and actors may run in another
    cwd), a hub id as it is; a path-like name that names no directory is a one-line error."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise HbtError(f"model path {name_or_path} is a file, expected a model directory")
        if not (path / "config.json").is_file():
            raise HbtError(f"{name_or_path} is not a model directory (no config.json)")
        return str(path.resolve())
    if _looks_local(name_or_path) or (path.parent != Path(".") and path.parent.is_dir()):
        raise HbtError(f"model directory not found: {name_or_path}")
    return name_or_path


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
# A tokenizer's own files: without one, transformers builds an empty vocabulary silently.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "sentencepiece.bpe.model", "spiece.model", "tokenizer.model",
                   "vocab.json")


def check_model(name_or_path: str) -> str:
    """Check that the model at `name_or_path` can load; returns its resolved name, else HbtError.

    Run before any Ray worker or actor would load it: refuses a dir without config, weights or
    tokenizer, or a hub name this machine cannot fetch (no hub). Reads the config and the
    tokenizer only (not the weights)."""
    import logging

    from transformers import AutoConfig, AutoTokenizer

    name = resolve_model_name(name_or_path)
    path = Path(name)
    if path.is_dir() and not any((path / f).is_file() for f in WEIGHT_FILES):
        raise HbtError(f"{name} is not a model directory (no {' / '.join(WEIGHT_FILES[::2])})")
    if path.is_dir() and not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise HbtError(f"{name} has no tokenizer (none of {', '.join(TOKENIZER_FILES)})")
    # Without a hub, huggingface_hub logs each of its retries: the error below says it once.
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)
    try:
        _loaded(name, lambda n: (AutoConfig.from_pretrained(n), AutoTokenizer.from_pretrained(n)))
    finally:
        hub_log.setLevel(level)
    return name


def embedding_dim(name_or_path: str) -> int:
    """The width of a model's embeddings (its hidden size), from its config alone."""
    from transformers import AutoConfig

    return int(AutoConfig.from_pretrained(name_or_path).hidden_size)


def text_prefix(model_cfg: ModelConfig, kind: Kind) -> str:
    if kind == "query":
        return model_cfg.query_prefix
    if kind == "passage":
        return model_cfg.passage_prefix
    raise ValueError(f"kind must be 'query' or 'passage', got {kind!r}")


def token_counter(tokenizer, model_cfg: ModelConfig) -> Callable[[Sequence[str], Kind], list[int]]:
    """(texts, kind) -> the tokens each text takes in a batch (prefix, special tokens and
    truncation included): the length a batch of them is padded to."""

    def count(texts: Sequence[str], kind: Kind) -> list[int]:
        prefix = text_prefix(model_cfg, kind)
        encoded = tokenizer([prefix + text for text in texts], truncation=True, max_length=model_cfg.max_length,
                            return_length=True, return_attention_mask=False, return_token_type_ids=False)
        return list(encoded["length"])

    return count


def _loaded(name: str, load: Callable[[str], object]):
    """`load(name)`, its OSError or ValueError as one line naming the model."""
    try:
        return load(name)
    except (OSError, ValueError) as error:
        raise HbtError(f"cannot load model {name}: {first_line(error)}") from None


def load_tokenizer(name_or_path: str):
    """The tokenizer alone (for counting tokens where the model is not needed)."""
    from transformers import AutoTokenizer

    return _loaded(resolve_model_name(name_or_path), AutoTokenizer.from_pretrained)


class Encoder(nn.Module):
    """Shared-weight text encoder producing unit-norm embeddings."""

    def __init__(self, model: nn.Module, tokenizer, model_cfg: ModelConfig):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.cfg = model_cfg

    @classmethod
    def from_config(cls, model_cfg: ModelConfig) -> "Encoder":
        """Load `model_cfg.name_or_path` (a local HF dir, or a hub name) with AutoModel/AutoTokenizer."""
        from transformers import AutoModel

        tokenizer = load_tokenizer(model_cfg.name_or_path)
        model = _loaded(resolve_model_name(model_cfg.name_or_path), lambda name: _load_without_pooler(AutoModel, name))
        return cls(model, tokenizer, model_cfg)

    def for_inference(self, precision: str) -> "Encoder":
        """Set this encoder up to encode at `precision` (fp32, int8, bf16); returns it.

        fp32 as it is; int8 run by ONNX Runtime with int8 weights per output channel and
        activations quantized per batch (CPU only; `hbt.model.onnx_int8`), on torch's thread
        count; bf16 with bfloat16 weights (GPU only). Embeddings come out as float32 either way."""
        if precision == "int8":
            from hbt.model.onnx_int8 import OnnxInt8Model

            self.model = OnnxInt8Model(self.model, torch.get_num_threads())
        elif precision == "bf16":
            self.model = self.model.to(torch.bfloat16)
        elif precision != "fp32":
            raise ValueError(f"unknown precision {precision!r} (expected fp32, int8 or bf16)")
        return self.eval()

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def prefix(self, kind: Kind) -> str:
        return text_prefix(self.cfg, kind)

    def token_lengths(self, texts: Sequence[str], kind: Kind) -> list[int]:
        return token_counter(self.tokenizer, self.cfg)(texts, kind)

    def tokenize(self, texts: Sequence[str], kind: Kind) -> dict[str, torch.Tensor]:
        """Prefix and tokenize: returns input_ids / attention_mask of shape (B, T), T <= max_length."""
        prefix = self.prefix(kind)
        batch = self.tokenizer(
            [prefix + text for text in texts],
            padding=True,
            truncation=True,
            max_length=self.cfg.max_length,
            return_tensors="pt",
        )
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) ids and mask -> (B, H) L2-normalised embeddings."""
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        hidden = out.last_hidden_state  # (B, T, H)
        pooled = pool(hidden, attention_mask, self.cfg.pooling)  # (B, H)
        return F.normalize(pooled, p=2, dim=-1)  # (B, H), unit norm

    @torch.no_grad()
    def encode(self, texts: Sequence[str], kind: Kind, batch_size: int = 64,
               on_batch: Optional[Callable[[int], None]] = None) -> np.ndarray:
        """Embed `texts` in eval mode without gradients -> float32 array (len(texts), H).
        `on_batch(n)` is called after each batch of n texts (progress reporting)."""
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        was_training = self.training
        self.eval()
        device = next(self.parameters(), torch.empty(0)).device  # int8: no torch parameters, CPU
        chunks = []
        try:
            for start in range(0, len(texts), batch_size):
                batch = self.tokenize(list(texts[start : start + batch_size]), kind)
                emb = self(batch["input_ids"].to(device), batch["attention_mask"].to(device))  # (b, H)
                chunks.append(emb.float().cpu().numpy())
                if on_batch is not None:
                    on_batch(len(emb))
        finally:
            self.train(was_training)
        if not chunks:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(chunks, axis=0)  # (N, H)

    def freeze_word_embeddings(self) -> None:
        """Stop gradients to the input word-embedding matrix (position/type embeddings stay trainable)."""
        self.model.get_input_embeddings().weight.requires_grad_(False)

    def save(self, out_dir: Path) -> Path:
        """Write model + tokenizer as a HF dir loadable by `Encoder.from_config`, `AutoModel`
        and `SentenceTransformer` (module files with this encoder's pooling and prefixes).

        The weights are always written in float32: DeepSpeed's bf16 casts the module itself
        to bfloat16 (its fp32 master weights live in the optimizer), and an export in bf16
        would load as bf16 wherever `dtype="auto"`. The module is not cast in place: DeepSpeed's
        flat buffers alias its parameters."""
        from hbt.model.st_files import write_sentence_transformers_files

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        state = {name: tensor.float() if tensor.is_floating_point() else tensor
                 for name, tensor in self.model.state_dict().items()}
        self.model.save_pretrained(out_dir, state_dict=state)
        if self.model.dtype != torch.float32:  # save_pretrained wrote the module's dtype to config.json
            self.model.config.dtype = torch.float32
            self.model.config.save_pretrained(out_dir)
        self.tokenizer.save_pretrained(out_dir)
        write_sentence_transformers_files(
            out_dir, self.dim, self.cfg.max_length, self.cfg.pooling, self.cfg.query_prefix,
            self.cfg.passage_prefix, has_pooler=getattr(self.model, "pooler", None) is not None)
        return out_dir
