from pathlib import Path

import numpy as np
import pytest
import torch

from hbt.config import ModelConfig
from hbt.errors import HbtError
from hbt.model.encoder import Encoder, pool
from hbt.model.tiny import tiny_bert


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return tiny_bert(tmp_path_factory.mktemp("tiny") / "bert")


@pytest.fixture(scope="module")
def encoder(tiny_dir) -> Encoder:
    return Encoder.from_config(ModelConfig(name_or_path=str(tiny_dir), max_length=16))


def test_pool_mean_excludes_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]],
                           [[5.0, 6.0], [-7.0, 8.0], [9.0, 10.0]]])  # (B=2, T=3, H=2)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert torch.allclose(pool(hidden, mask, "mean"), torch.tensor([[2.0, 3.0], [7 / 3, 8.0]]))
    assert torch.equal(pool(hidden, mask, "cls"), torch.tensor([[1.0, 2.0], [5.0, 6.0]]))
    with pytest.raises(ValueError):
        pool(hidden, mask, "max")


def test_forward_unit_norm_and_shape(encoder):
    batch = encoder.tokenize(["kalo mimi", "nupe rasi tove zeba", "hello"], "query")
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    out = encoder(**batch)
    assert out.shape == (3, 32)
    assert torch.allclose(out.norm(dim=-1), torch.ones(3), atol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_encode_numpy_unit_norm_and_batching(tiny_dir, pooling):
    enc = Encoder.from_config(ModelConfig(name_or_path=str(tiny_dir), pooling=pooling))
    enc.train()
    texts = ["kalo", "mimi nupe", "rasi tove zeba", "hello world"]
    a = enc.encode(texts, "passage", batch_size=3)
    b = enc.encode(texts, "passage", batch_size=1)
    assert enc.training  # mode restored
    assert a.shape == (4, 32) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(a, b, atol=1e-5)  # padding does not change embeddings
    assert enc.encode([], "query").shape == (0, 32)


def test_prefix_applied_and_only_difference(encoder):
    tok = encoder.tokenizer
    q = encoder.tokenize(["kalo mimi"], "query")["input_ids"][0].tolist()
    p = encoder.tokenize(["kalo mimi"], "passage")["input_ids"][0].tolist()
    body = tok("kalo mimi", add_special_tokens=False)["input_ids"]
    q_prefix = tok("query: ", add_special_tokens=False)["input_ids"]
    p_prefix = tok("passage: ", add_special_tokens=False)["input_ids"]
    cls, sep = tok.cls_token_id, tok.sep_token_id
    assert q == [cls] + q_prefix + body + [sep]
    assert p == [cls] + p_prefix + body + [sep]
    assert q_prefix != p_prefix
    qe, pe = encoder.encode(["kalo mimi"], "query"), encoder.encode(["kalo mimi"], "passage")
    assert not np.allclose(qe, pe)
    # with identical prefixes the two kinds are the same function
    same = Encoder(encoder.model, tok, ModelConfig(name_or_path="x", query_prefix="", passage_prefix=""))
    np.testing.assert_allclose(same.encode(["kalo"], "query"), same.encode(["kalo"], "passage"))
    with pytest.raises(ValueError):
        encoder.tokenize(["x"], "document")


def test_truncates_to_max_length(encoder):
    batch = encoder.tokenize(["kalo " * 100], "passage")
    assert batch["input_ids"].shape[1] == 16


def test_gradients_and_freeze(tiny_dir):
    enc = Encoder.from_config(ModelConfig(name_or_path=str(tiny_dir)))
    enc.freeze_word_embeddings()
    word = enc.model.get_input_embeddings().weight
    assert not word.requires_grad
    batch = enc.tokenize(["kalo mimi", "nupe"], "query")
    enc(**batch).sum().backward()
    assert word.grad is None
    grads = [p.grad for p in enc.parameters() if p.requires_grad]
    assert grads and any(g is not None and g.abs().sum() > 0 for g in grads)


def test_save_load_round_trip(encoder, tmp_path):
    out = encoder.save(tmp_path / "saved")
    again = Encoder.from_config(ModelConfig(name_or_path=str(out), max_length=16))
    texts = ["kalo mimi", "hello world"]
    np.testing.assert_allclose(encoder.encode(texts, "query"), again.encode(texts, "query"), atol=1e-6)


def test_missing_local_path_is_one_line_error(tmp_path):
    with pytest.raises(HbtError) as info:
        Encoder.from_config(ModelConfig(name_or_path=str(tmp_path / "nope")))
    assert "\n" not in str(info.value) and "nope" in str(info.value)
    with pytest.raises(HbtError):
        Encoder.from_config(ModelConfig(name_or_path="./does/not/exist"))


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_saved_encoder_loads_in_sentence_transformers_with_same_embeddings(tiny_dir, tmp_path, pooling):
    from sentence_transformers import SentenceTransformer

    cfg = ModelConfig(name_or_path=str(tiny_dir), max_length=16, pooling=pooling,
                      query_prefix="query: ", passage_prefix="passage: ")
    enc = Encoder.from_config(cfg)
    assert getattr(enc.model, "pooler", None) is None  # loaded without the unused pooler head
    saved = enc.save(tmp_path / "export")
    st = SentenceTransformer(str(saved), device="cpu")
    texts = ["kalo mimi", "nupe rasi tove zeba"]
    ours = enc.encode(texts, "query")
    theirs = st.encode(texts, prompt_name="query", convert_to_numpy=True)
    np.testing.assert_allclose(theirs, ours, atol=1e-5)
    assert st.max_seq_length == 16


def test_a_bf16_module_exports_float32(tiny_dir, tmp_path):
    """DeepSpeed's bf16 casts the module to bfloat16: the export is float32 all the same, and
    says so (AutoModel's dtype="auto" reads config.json), while the module stays bf16."""
    import json

    from safetensors.torch import load_file
    from transformers import AutoModel

    encoder = Encoder.from_config(ModelConfig(name_or_path=str(tiny_dir), max_length=16))
    encoder.model.to(torch.bfloat16)
    out = encoder.save(tmp_path / "saved")
    assert {t.dtype for t in load_file(out / "model.safetensors").values() if t.is_floating_point()} == {torch.float32}
    assert json.loads((out / "config.json").read_text())["dtype"] == "float32"
    assert AutoModel.from_pretrained(out, dtype="auto").dtype == torch.float32
    assert next(encoder.model.parameters()).dtype == torch.bfloat16
