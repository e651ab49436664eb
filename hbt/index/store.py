"""Embedding shards on disk, written once and trusted only when whole.

    DIR/manifest.json       {"key": what the embeddings depend on, "dim": d,
                             "shards": {"0": {"count", "sha256", "source"}, ...}}
    DIR/shard-00000.npy     float32 (count, d), rows in corpus order
    DIR/.shard-00001.partial.npy   a shard being written (never read back)

A shard is written into its `.partial.npy` file (memory-mapped: the encode actors write their
rows into it directly, so no embedding passes through the driver), then fsynced, digested,
renamed to `shard-NNNNN.npy` and listed in the manifest with its row count, its sha256 and the
digest of the texts it came from (`source`). A rerun trusts a listed shard only if its file has
that count and that sha256 and its texts digest the same: an interrupted encoding resumes after
its last finished shard, and a half-written or changed shard is encoded again. A manifest with
another key (another model, precision, shard size) starts the directory over.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from hbt.io import sha256_file, write_json_atomic

MANIFEST = "manifest.json"
FORMAT = 1


class EmbeddingStore:
    """The shard files of one encoded corpus under `root` (a local or shared-storage path)."""

    def __init__(self, root: Path, key: dict, dim: int):
        self.root, self.dim = Path(root), dim
        self.key = {"format": FORMAT, **key}
        self.root.mkdir(parents=True, exist_ok=True)
        manifest = self._read_manifest()
        if manifest.get("key") != self.key or manifest.get("dim") != dim:
            manifest = {"key": self.key, "dim": dim, "shards": {}}
            for old in self.root.glob("shard-*.npy"):
                old.unlink()
        self.shards: dict[str, dict] = manifest["shards"]
        for partial in self.root.glob(".shard-*.partial.npy"):
            partial.unlink()  # a shard an interrupted run was writing: never trusted, written again

    def _read_manifest(self) -> dict:
        try:
            manifest = json.loads((self.root / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return manifest if isinstance(manifest, dict) and isinstance(manifest.get("shards"), dict) else {}

    def path(self, shard: int) -> Path:
        return self.root / f"shard-{shard:05d}.npy"

    def partial_path(self, shard: int) -> Path:
        return self.root / f".shard-{shard:05d}.partial.npy"

    def trusted(self, shard: int, count: int, source: str) -> bool:
        """Whether shard `shard` is finished: listed with this count and source, its file whole."""
        entry = self.shards.get(str(shard))
        path = self.path(shard)
        if not entry or entry.get("count") != count or entry.get("source") != source or not path.is_file():
            return False
        try:
            shape = np.load(path, mmap_mode="r").shape
        except (OSError, ValueError):
            return False
        return shape == (count, self.dim) and sha256_file(path) == entry.get("sha256")

    def begin(self, shard: int, count: int) -> Path:
        """A zeroed (count, dim) float32 `.npy` for the writers of `shard` to fill in place."""
        partial = self.partial_path(shard)
        np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=(count, self.dim)).flush()
        return partial

    def finish(self, shard: int, count: int, source: str) -> None:
        """The filled partial file made shard `shard`: fsynced, digested, renamed, listed."""
        partial = self.partial_path(shard)
        with open(partial, "rb+") as written:
            os.fsync(written.fileno())
        digest = sha256_file(partial)
        os.replace(partial, self.path(shard))
        self.shards[str(shard)] = {"count": count, "sha256": digest, "source": source}
        write_json_atomic(self.root / MANIFEST, {"key": self.key, "dim": self.dim, "shards": self.shards})
