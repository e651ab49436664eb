"""`eval.precision=int8` / `int8-accurate` on CPUs: the encoder's transformer exported to ONNX,
its weights quantized to int8 per output channel, run by ONNX Runtime.

Why ONNX Runtime and not torch's dynamic quantization: measured on e5-small (benchmarks/
eval_precision.py, benchmarks/README.md), torch's per-tensor int8 Linear layers were 1.42x
faster and lost 0.10 cross-lingual mAP; here 1.68x and 0.02, since per-channel weights keep each
output column's own scale, and a 7-bit weight range (`reduce_range`) halved the cross-lingual
loss of 8 bits. Activations are quantized per batch (dynamic quantization: no calibration data).

`int8-accurate` keeps both feed-forward MatMuls of every layer (hidden -> intermediate ->
hidden) in fp32 and quantizes the attention's: measured on e5-small, the FFN's int8 error is most
of int8's mAP loss (every |delta mAP| <= 0.005 against up to -0.021), at a smaller speed-up.

The export and quantization take about 30 s for e5-small, so the int8 file is cached, keyed by
a digest of every weight, the model config, the precision, these settings and the library versions:
`$HBT_CACHE_DIR/onnx-int8/`, else `~/.cache/hbt/onnx-int8/` (one file per model, written
atomically). Where the cache cannot be written (a read-only home in a pod), the file is made in
a temporary directory each time. Nothing is written next to the model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

OPSET = 17
QUANTIZATION = {"per_channel": True, "reduce_range": True}  # int8 weights per output column, 7-bit range
INT8_PRECISIONS = ("int8", "int8-accurate")  # eval.precision values run here


class _LastHiddenState(nn.Module):
    """The transformer with plain tensor inputs and output, as the exporter wants it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)


def ffn_matmuls(graph, intermediate_size: int) -> list[str]:
    """Names of the MatMul nodes of `graph` (an ONNX GraphProto) whose constant weight is a
    feed-forward one: (hidden, intermediate) or (intermediate, hidden), found by shape, not by
    the exporter's node names."""
    shapes = {init.name: list(init.dims) for init in graph.initializer}
    return [node.name for node in graph.node
            if node.op_type == "MatMul" and intermediate_size in shapes.get(node.input[1], ())]


def export_int8(model: nn.Module, out_dir: Path, precision: str = "int8") -> Path:
    """`model` (an HF transformer) -> an int8 ONNX file in `out_dir` (fp32 export, then every
    MatMul's constant weight quantized per output channel; with `int8-accurate`, all but the
    feed-forward ones)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32, int8 = out_dir / "model.onnx", out_dir / "model.int8.onnx"
    dummy = torch.ones(2, 8, dtype=torch.long)  # (B, T); both axes dynamic below
    dynamic = {0: "batch", 1: "tokens"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(_LastHiddenState(model).eval(), (dummy, dummy), str(fp32), dynamo=False,
                          input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                          dynamic_axes={"input_ids": dynamic, "attention_mask": dynamic, "last_hidden_state": dynamic},
                          opset_version=OPSET)
    kept_fp32 = ffn_matmuls(onnx.load(str(fp32)).graph, model.config.intermediate_size) \
        if precision == "int8-accurate" else []
    logging.disable(logging.WARNING)  # its advice to pre-process: that step's shape inference fails on BERT graphs
    try:
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, nodes_to_exclude=kept_fp32, **QUANTIZATION)
    finally:
        logging.disable(logging.NOTSET)
    fp32.unlink()
    return int8


def cache_dir() -> Path:
    return Path(os.environ.get("HBT_CACHE_DIR") or Path.home() / ".cache" / "hbt") / "onnx-int8"


def model_digest(model: nn.Module, precision: str = "int8") -> str:
    """What the int8 file depends on: every weight's bytes, the config, the precision, the
    export and quantization settings, the torch and ONNX Runtime versions."""
    import onnxruntime

    digest = hashlib.sha256(json.dumps([model.config.to_json_string(), precision, OPSET, QUANTIZATION, "QInt8",
                                        torch.__version__, onnxruntime.__version__]).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy())  # the buffer itself, no copy
    return digest.hexdigest()[:32]


def int8_model_bytes(model: nn.Module, precision: str = "int8") -> bytes:
    """The `precision` ONNX file of `model`: from the cache, else exported (and cached when it can be)."""
    cached = cache_dir() / f"{model_digest(model, precision)}.onnx"
    if cached.is_file():
        return cached.read_bytes()
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        work = tempfile.TemporaryDirectory(prefix=".export-", dir=cached.parent)  # same filesystem as the cache
    except OSError:  # the cache cannot be written: export to a temporary directory, keep nothing
        cached, work = None, tempfile.TemporaryDirectory(prefix="hbt-int8-")
    with work as tmp:
        exported = export_int8(model, Path(tmp), precision)
        data = exported.read_bytes()
        if cached is not None:
            os.replace(exported, cached)  # atomic: a concurrent reader sees no file or all of it
    return data


class OnnxInt8Model(nn.Module):
    """Stands in for the HF transformer inside `Encoder`: same call, same `.config`, same
    `last_hidden_state` (a float32 CPU tensor), computed by an ONNX Runtime session."""

    def __init__(self, model: nn.Module, threads: int, precision: str = "int8"):
        super().__init__()
        import onnxruntime as ort

        self.config = model.config
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(int8_model_bytes(model, precision), options,
                                            providers=["CPUExecutionProvider"])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        feeds = {"input_ids": input_ids.numpy().astype(np.int64),
                 "attention_mask": attention_mask.numpy().astype(np.int64)}
        (hidden,) = self.session.run(["last_hidden_state"], feeds)  # (B, T, H) float32
        return SimpleNamespace(last_hidden_state=torch.from_numpy(hidden))
