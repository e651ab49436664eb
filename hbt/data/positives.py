"""Positive keys: which training records answer with the same passage.

A batch must not hold two records whose positives are the same passage: each query would
meet the other's positive, its own answer, as a negative. In XQuAD about half of the
questions share their answer sentence with another question of the paragraph (three in
four in Thai, whose paragraphs are few, long sentences), and in an X-Y batch the colliding
positive is the *translation* of the query's own answer.

A passage is identified, per language, by its text (identical texts are the same passage
to the encoder) and, where a source gives one, by its `positive_id` (shared by the
passage's translations). Two records are linked when their positives share an identity in
any language; a record's **positive key** names its connected component, so it is the
same for all the record's languages and for every record that could be the other's false
negative in any language pairing:

    q1 (en: S1, th: T)   q2 (en: S2, th: T)   q3 (en: S2, th: U)
    -> q1 ~ q2 (Thai T), q2 ~ q3 (English S2): one key for all three

The key is the smallest parallel_id of the component. A hard negative's key is the key of
the records whose positive it is (same language and text), else "": the loop masks it for
exactly those queries (`hbt.losses.infonce`), and the stream never picks it for a batch
that holds them (`hbt.train.batch`).
"""

from __future__ import annotations

import hashlib

import pyarrow as pa

from hbt.data.schema import TRAIN_PAIR_SCHEMA


class _Components:
    """Union-find over parallel ids."""

    def __init__(self):
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        parent = self.parent
        root = parent.setdefault(x, x)
        while root != parent[root]:
            root = parent[root]
        while x != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # The smaller id becomes the root, so a component's root is its smallest id.
            lo, hi = (ra, rb) if ra < rb else (rb, ra)
            self.parent[hi] = lo


def assign_positive_keys(table: pa.Table) -> pa.Table:
    """`table` (the raw pair columns, `source`, prefixed `parallel_id`) -> TRAIN_PAIR_SCHEMA rows
    with `positive_key` and `negative_keys` (see the module doc)."""
    pids = table.column("parallel_id").to_pylist()
    langs = table.column("lang").to_pylist()
    positives = table.column("positive").to_pylist()
    sources = table.column("source").to_pylist()
    positive_ids = table.column("positive_id").to_pylist()

    components = _Components()
    first_with: dict[tuple, str] = {}  # passage identity -> first record holding it as positive
    for pid, lang, text, source, positive_id in zip(pids, langs, positives, sources, positive_ids):
        identities = [("text", lang, text)]
        if positive_id is not None:
            identities.append(("id", source, positive_id))
        components.find(pid)
        for identity in identities:
            other = first_with.setdefault(identity, pid)
            components.union(pid, other)

    keys = [components.find(pid) for pid in pids]
    by_text = {identity[1:]: components.find(pid) for identity, pid in first_with.items() if identity[0] == "text"}
    negative_keys = [[by_text.get((lang, text), "") for text in negatives or ()]
                     for lang, negatives in zip(langs, table.column("hard_negatives").to_pylist())]
    columns = {name: table.column(name) for name in TRAIN_PAIR_SCHEMA.names if name in table.column_names}
    columns["positive_key"] = pa.array(keys, pa.string())
    columns["negative_keys"] = pa.array(negative_keys, pa.list_(pa.string()))
    return pa.table([columns[name] for name in TRAIN_PAIR_SCHEMA.names], schema=TRAIN_PAIR_SCHEMA)


def key_id(key: str) -> int:
    """A positive key as a nonzero int64 for tensors (0: no key): 8 bytes of its BLAKE2b hash.
    Two distinct keys of one batch collide with probability ~ 1e-16."""
    if not key:
        return 0
    value = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little", signed=True)
    return value or 1
