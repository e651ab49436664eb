"""`eval.precision`: int8, int8-accurate and bf16 encoders give float32 unit vectors close to fp32's; the
config refuses a precision the device cannot run."""

import numpy as np
import pytest
import torch

from hbt.config import ModelConfig, load_config
from hbt.errors import ConfigError
from hbt.model import onnx_int8
from hbt.model.encoder import Encoder
from hbt.model.onnx_int8 import OnnxInt8Model, export_int8, ffn_matmuls, int8_model_bytes, model_digest
from hbt.model.tiny import tiny_bert

TEXTS = ["the cat sat on the mat", "a dog in the park", "query about cats", "passage on dogs and cats"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_bert(tmp_path_factory.mktemp("tiny") / "bert", ["the", "cat", "sat", "on", "mat", "a", "dog", "in",
                                                                "park", "query", "about", "cats", "passage", "dogs",
                                                                "and"])


@pytest.mark.parametrize("precision, tolerance", [("int8", 0.05), ("int8-accurate", 0.05), ("bf16", 0.05)])
def test_lower_precision_stays_close_to_fp32(model_dir, precision, tolerance):
    cfg = ModelConfig(name_or_path=str(model_dir))
    reference = Encoder.from_config(cfg).for_inference("fp32").encode(TEXTS, "passage")
    encoder = Encoder.from_config(cfg).for_inference(precision)
    emb = encoder.encode(TEXTS, "passage")
    assert emb.dtype == np.float32 and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-2)
    cosine = (emb * reference).sum(axis=1)
    assert cosine.min() > 1 - tolerance
    if precision.startswith("int8"):  # the transformer runs in ONNX Runtime
        assert isinstance(encoder.model, OnnxInt8Model) and not list(encoder.parameters())


def test_int8_export_quantizes_every_weight_matmul(model_dir, tmp_path):
    """Every MatMul with a constant weight became an integer one, its weight int8 per channel."""
    import onnx

    model = Encoder.from_config(ModelConfig(name_or_path=str(model_dir))).model
    graph = onnx.load(str(export_int8(model, tmp_path))).graph
    ops = [node.op_type for node in graph.node]
    weights = {init.name: init for init in graph.initializer}
    float_weight_matmuls = [n for n in graph.node if n.op_type == "MatMul" and n.input[1] in weights]
    assert ops.count("MatMulInteger") == sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert not float_weight_matmuls
    # Per channel: each weight's zero point has one entry per output column.
    for node in (n for n in graph.node if n.op_type == "MatMulInteger"):
        assert list(weights[node.input[3]].dims) == [weights[node.input[1]].dims[1]]


def test_int8_accurate_keeps_both_feed_forward_matmuls_of_every_layer_fp32(model_dir, tmp_path):
    """int8-accurate: the 2 FFN MatMuls of each layer keep their float weight (hidden x
    intermediate, intermediate x hidden); every other weight MatMul is integer."""
    import onnx

    model = Encoder.from_config(ModelConfig(name_or_path=str(model_dir))).model
    graph = onnx.load(str(export_int8(model, tmp_path, "int8-accurate"))).graph
    weights = {init.name: init for init in graph.initializer}
    float_weight_matmuls = [n for n in graph.node if n.op_type == "MatMul" and n.input[1] in weights]
    hidden, intermediate = model.config.hidden_size, model.config.intermediate_size
    assert sorted(tuple(weights[n.input[1]].dims) for n in float_weight_matmuls) == \
        sorted([(hidden, intermediate), (intermediate, hidden)] * model.config.num_hidden_layers)
    assert all(weights[n.input[1]].data_type == onnx.TensorProto.FLOAT for n in float_weight_matmuls)
    assert ffn_matmuls(graph, intermediate) == [n.name for n in float_weight_matmuls]
    linears = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert [n.op_type for n in graph.node].count("MatMulInteger") == linears - 2 * model.config.num_hidden_layers


def test_int8_file_is_cached_by_the_weights(model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HBT_CACHE_DIR", str(tmp_path / "cache"))
    model = Encoder.from_config(ModelConfig(name_or_path=str(model_dir))).model
    first = int8_model_bytes(model)
    digest = model_digest(model)
    assert [p.name for p in (tmp_path / "cache" / "onnx-int8").iterdir()] == [f"{digest}.onnx"]  # no work dir left
    monkeypatch.setattr(onnx_int8, "export_int8", lambda *args: pytest.fail("exported again"))
    assert int8_model_bytes(model) == first  # from the cache
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert model_digest(model) != digest  # other weights: another file
    assert model_digest(model, "int8-accurate") != model_digest(model)  # another precision: another file


def test_int8_without_a_writable_cache_exports_and_keeps_nothing(model_dir, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("HBT_CACHE_DIR", str(blocker))
    model = Encoder.from_config(ModelConfig(name_or_path=str(model_dir))).model
    assert int8_model_bytes(model)[:4] and blocker.read_text() == ""


def test_unknown_precision_is_refused(model_dir):
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        Encoder.from_config(ModelConfig(name_or_path=str(model_dir))).for_inference("fp8")


@pytest.mark.parametrize("overrides, message", [
    (["eval.precision=int8", "cluster.use_gpu=true"], "eval.precision=int8 runs on CPUs"),
    (["eval.precision=int8-accurate", "cluster.use_gpu=true"], "eval.precision=int8-accurate runs on CPUs"),
    (["eval.precision=bf16"], "eval.precision=bf16 needs cluster.use_gpu=true"),
    (["eval.precision=fp16"], "eval.precision"),
])
def test_config_refuses_a_precision_the_device_cannot_run(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_config_accepts_int8_accurate_on_cpus():
    assert load_config(None, ["eval.precision=int8-accurate"]).eval.precision == "int8-accurate"
