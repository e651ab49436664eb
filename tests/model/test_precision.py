"""`eval.precision`: int8 and bf16 encoders give float32 unit vectors close to fp32's; the
config refuses a precision the device cannot run."""

import numpy as np
import pytest

from hbt.config import ModelConfig, load_config
from hbt.errors import ConfigError
from hbt.model.encoder import Encoder
from hbt.model.tiny import tiny_bert

TEXTS = ["the cat sat on the mat", "a dog in the park", "query about cats", "passage on dogs and cats"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_bert(tmp_path_factory.mktemp("tiny") / "bert", ["the", "cat", "sat", "on", "mat", "a", "dog", "in",
                                                                "park", "query", "about", "cats", "passage", "dogs", "and"])


@pytest.mark.parametrize("precision, tolerance", [("int8", 0.05), ("bf16", 0.05)])
def test_lower_precision_stays_close_to_fp32(model_dir, precision, tolerance):
    cfg = ModelConfig(name_or_path=str(model_dir))
    reference = Encoder.from_config(cfg).for_inference("fp32").encode(TEXTS, "passage")
    encoder = Encoder.from_config(cfg).for_inference(precision)
    emb = encoder.encode(TEXTS, "passage")
    assert emb.dtype == np.float32 and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-2)
    cosine = (emb * reference).sum(axis=1)
    assert cosine.min() > 1 - tolerance
    if precision == "int8":  # the Linear layers were swapped for dynamically quantized ones
        assert any("DynamicQuantized" in type(m).__name__ or "quantized" in type(m).__module__
                   for m in encoder.model.modules())


def test_unknown_precision_is_refused(model_dir):
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        Encoder.from_config(ModelConfig(name_or_path=str(model_dir))).for_inference("fp8")


@pytest.mark.parametrize("overrides, message", [
    (["eval.precision=int8", "cluster.use_gpu=true"], "eval.precision=int8 runs on CPUs"),
    (["eval.precision=bf16"], "eval.precision=bf16 needs cluster.use_gpu=true"),
    (["eval.precision=fp16"], "eval.precision"),
])
def test_config_refuses_a_precision_the_device_cannot_run(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)
