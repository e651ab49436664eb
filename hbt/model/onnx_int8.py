"""`eval.precision=int8` on CPUs: the encoder's transformer exported to ONNX, its weights
quantized to int8 per output channel, run by ONNX Runtime.

Why ONNX Runtime and not torch's dynamic quantization: measured on e5-small (benchmarks/
eval_precision.py, benchmarks/README.md), torch's per-tensor int8 Linear layers lost up to 0.10
mAP, while per-channel weights keep each output row's own scale. Activations are quantized
per batch (dynamic quantization: no calibration data). The export and quantization take seconds, once per encode actor, in a
temporary directory; nothing is written next to the model.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

OPSET = 17


class _LastHiddenState(nn.Module):
    """The transformer with plain tensor inputs and output, as the exporter wants it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)


def export_int8(model: nn.Module, out_dir: Path) -> Path:
    """`model` (an HF transformer) -> an int8 ONNX file in `out_dir` (fp32 export, then every
    MatMul's constant weight quantized per output channel)."""
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
    logging.disable(logging.WARNING)  # its advice to pre-process: that step's shape inference fails on BERT graphs
    try:
        quantize_dynamic(str(fp32), str(int8), per_channel=True, reduce_range=True, weight_type=QuantType.QInt8)
    finally:
        logging.disable(logging.NOTSET)
    fp32.unlink()
    return int8


class OnnxInt8Model(nn.Module):
    """Stands in for the HF transformer inside `Encoder`: same call, same `.config`, same
    `last_hidden_state` (a float32 CPU tensor), computed by an ONNX Runtime session."""

    def __init__(self, model: nn.Module, threads: int):
        super().__init__()
        import onnxruntime as ort

        self.config = model.config
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        with tempfile.TemporaryDirectory(prefix="hbt-int8-") as tmp:
            path = export_int8(model, Path(tmp))
            # The session reads the file once; the temp dir can go right after.
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        feeds = {"input_ids": input_ids.numpy().astype(np.int64), "attention_mask": attention_mask.numpy().astype(np.int64)}
        (hidden,) = self.session.run(["last_hidden_state"], feeds)  # (B, T, H) float32
        return SimpleNamespace(last_hidden_state=torch.from_numpy(hidden))
