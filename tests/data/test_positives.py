"""Positive keys (hbt.data.positives): records answering with the same passage, in any language,
share a key; a long run on the real training articles never puts two of them in one step."""

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hbt.data.positives import NO_KEY, link_positives, number_records
from hbt.data.schema import RAW_PAIR_SCHEMA, TRAIN_PAIR_SCHEMA


def raw(rows, source="s") -> pa.Table:
    names = ["parallel_id", "lang", "positive", "hard_negatives", "positive_id"]
    full = [{"article": 0, "question": f"{r[0]}?", "context": "", **dict(zip(names, r))} for r in rows]
    table = pa.Table.from_pylist(full, schema=RAW_PAIR_SCHEMA)
    return table.append_column("source", pa.array([source] * len(rows)))


def keyed(table: pa.Table) -> pa.Table:
    return number_records(link_positives(table))


class UnionFind:
    """The reference: a union-find over parallel ids, a row at a time (hbt's code before the
    components were computed as a graph)."""

    def __init__(self):
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        root = self.parent.setdefault(x, x)
        while root != self.parent[root]:
            root = self.parent[root]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = sorted((self.find(a), self.find(b)))
        self.parent[rb] = ra  # the smaller id is the root: a component's root is its smallest id


def reference_keys(rows: list[dict]) -> tuple[dict[str, str], list[list[str | None]]]:
    """(parallel_id -> its component's smallest id, per row its hard negatives' keys or None)."""
    components, first_with = UnionFind(), {}
    for row in rows:
        identities = [("text", row["lang"], row["positive"])]
        if row["positive_id"] is not None:
            identities.append(("id", row["source"], row["positive_id"]))
        components.find(row["parallel_id"])
        for identity in identities:
            components.union(row["parallel_id"], first_with.setdefault(identity, row["parallel_id"]))
    by_text = {identity[1:]: components.find(pid) for identity, pid in first_with.items() if identity[0] == "text"}
    keys = {pid: components.find(pid) for pid in components.parent}
    return keys, [[by_text.get((row["lang"], text)) for text in row["hard_negatives"]] for row in rows]


def test_components_link_through_any_language():
    # q1 ~ q2 share the Thai sentence T, q2 ~ q3 share the English S2; q4 is alone.
    table = keyed(raw([
        ("q1", "en", "S1", ["S2", "X"], None), ("q1", "th", "T", [], None),
        ("q2", "en", "S2", ["S1"], None), ("q2", "th", "T", [], None),
        ("q3", "en", "S2", [], None), ("q3", "th", "U", ["T"], None),
        ("q4", "en", "S4", ["S1"], None),
    ]))
    assert table.schema == TRAIN_PAIR_SCHEMA
    keys = dict(zip(table.column("parallel_id").to_pylist(), table.column("positive_key").to_pylist()))
    assert keys == {"q1": "q1", "q2": "q1", "q3": "q1", "q4": "q4"}  # the smallest id names the group
    assert table.column("record").to_pylist() == [0, 0, 1, 1, 2, 2, 3]
    assert table.column("key").to_pylist() == [0, 0, 0, 0, 0, 0, 3]
    # S2 and S1 are positives of group q1 (record 0); X is nobody's; T (Thai) is group q1's too.
    assert table.column("negative_keys").to_pylist() == [[0, NO_KEY], [], [0], [], [], [0], [0]]


def test_positive_id_links_translations_with_different_texts():
    table = keyed(raw([
        ("a", "en", "the passage", [], "doc-1"), ("b", "de", "die Passage", [], "doc-1"),
        ("c", "de", "eine andere", [], "doc-2"),
    ]))
    assert table.column("positive_key").to_pylist() == ["a", "a", "c"]
    assert table.column("key").to_pylist() == [0, 0, 2]


def test_rows_sorted_by_record_then_language():
    table = keyed(raw([("b", "en", "B", [], None), ("a", "th", "A", [], None), ("b", "de", "B2", [], None),
                       ("a", "en", "A2", [], None)]))
    assert list(zip(table.column("parallel_id").to_pylist(), table.column("lang").to_pylist())) == [
        ("a", "en"), ("a", "th"), ("b", "de"), ("b", "en")]
    assert table.column("record").to_pylist() == [0, 0, 1, 1]


def test_links_survive_dropped_rows_and_keys_number_the_records_left():
    """q1 and q2 share only their Thai positive; with q1's Thai row dropped (data.imbalance) they
    still share a key, and a component whose records were all dropped keys no negative."""
    linked = link_positives(raw([
        ("q0", "en", "Z", [], None),
        ("q1", "en", "S1", [], None), ("q1", "th", "T", [], None),
        ("q2", "en", "S2", ["Z", "S1"], None), ("q2", "th", "T", [], None),
    ]))
    table = number_records(linked.filter(pa.array([False, True, False, True, True])))
    assert table.column("parallel_id").to_pylist() == ["q1", "q2", "q2"]
    assert table.column("record").to_pylist() == [0, 1, 1]
    assert table.column("key").to_pylist() == [0, 0, 0] and set(table.column("positive_key").to_pylist()) == {"q1"}
    assert table.column("negative_keys").to_pylist() == [[], [NO_KEY, 0], []]


LANGS = ["en", "de", "th"]


@st.composite
def pools(draw):
    """Records in 1-3 languages whose positives come from a small set of texts (shared within and
    across languages), some with a positive_id from a small set, hard negatives drawn from the same
    texts (so often another record's positive) and from texts no record has, ids of two sources."""
    num_records = draw(st.integers(1, 25))
    texts = [f"t{i}" for i in range(draw(st.integers(1, 12)))]
    rows = []
    for record in range(num_records):
        source = draw(st.sampled_from(["s", "u"]))
        pid = f"{source}:{draw(st.sampled_from('abc'))}{record}"  # sorted ids: not in the records' order
        for lang in draw(st.lists(st.sampled_from(LANGS), min_size=1, max_size=3, unique=True)):
            rows.append({"parallel_id": pid, "lang": lang,
                         "positive": draw(st.sampled_from(texts)), "source": source,
                         "positive_id": draw(st.one_of(st.none(), st.sampled_from(["p0", "p1", "p2", "p3"]))),
                         "hard_negatives": draw(st.lists(st.sampled_from(texts + ["nobody's"]), max_size=3))})
    order = draw(st.permutations(range(len(rows))))
    return [rows[i] for i in order]


def pool_table(rows: list[dict]) -> pa.Table:
    full = [{"article": -1, "question": "q", "context": "", **row} for row in rows]
    table = pa.Table.from_pylist([{k: v for k, v in r.items() if k != "source"} for r in full], schema=RAW_PAIR_SCHEMA)
    return table.append_column("source", pa.array([r["source"] for r in rows], pa.string()))


@settings(max_examples=150, deadline=None)
@given(pools())
def test_keys_match_a_row_at_a_time_union_find(rows):
    table = keyed(pool_table(rows))
    keys, negative_keys = reference_keys(rows)
    ids = sorted(keys)
    record = {pid: i for i, pid in enumerate(ids)}
    expected = sorted(((record[r["parallel_id"]], r["lang"]), r["parallel_id"], keys[r["parallel_id"]],
                       [NO_KEY if k is None else record[k] for k in negatives])
                      for r, negatives in zip(rows, negative_keys))
    got = list(zip(zip(table.column("record").to_pylist(), table.column("lang").to_pylist()),
                   table.column("parallel_id").to_pylist(), table.column("positive_key").to_pylist(),
                   table.column("negative_keys").to_pylist()))
    assert got == expected
    assert table.column("key").to_pylist() == [record[k] for _, _, k, _ in expected]


@pytest.fixture(scope="module")
def real_pool(data_dir):
    """The default training pool: XQuAD's training articles in the paper's 9 languages."""
    from hbt.config import load_config
    from hbt.data.sources import read_training_pool
    from hbt.data.splits import split_articles

    data = load_config(None, [f"data.data_dir={data_dir}"]).data
    split = split_articles(48, data.heldout_fraction, data.split_seed, data.dev_fraction)
    pool, _ = read_training_pool(data, split.train_articles)
    return number_records(pool)


def test_real_keys_cover_every_shared_answer_sentence(real_pool, data_dir):
    """Independently of the union-find: two training records whose XQuAD-R relevant candidate
    is the same sentence, in any training language, have the same key."""
    from hbt.data.lareqa import read_lareqa

    langs = sorted(set(real_pool.column("lang").to_pylist()))
    corpus = read_lareqa(data_dir / "xquad-r", langs)
    keys = dict(zip(real_pool.column("parallel_id").to_pylist(), real_pool.column("positive_key").to_pylist()))
    answered_by = {}
    for qid, cid in zip(corpus.qrels.column("query_id").to_pylist(), corpus.qrels.column("candidate_id").to_pylist()):
        if f"xquad:{qid}" in keys:
            answered_by.setdefault(cid, set()).add(keys[f"xquad:{qid}"])
    shared = [ks for ks in answered_by.values()]
    assert all(len(ks) == 1 for ks in shared)
    groups = len(set(keys.values()))
    print(f"{len(keys)} training records, {groups} distinct positive keys")
    assert groups < len(keys)  # XQuAD questions do share answer sentences


@pytest.mark.parametrize("mode", ["xx", "xy", "hybrid"])
def test_long_run_global_batch_100_has_no_shared_positive(real_pool, mode):
    """Every step of a long run (global batch 100 = 50 pairs x 2 workers) on the real training
    articles: no two examples share a positive key, and no hard negative is the positive of a
    record in the step."""
    from hbt.config import load_config
    from hbt.train.batch import PairPool
    from hbt.train.stream import build_composer

    cfg = load_config(None, [f"batching.mode={mode}", "batching.batch_size=50", "train.hard_negatives=3"])
    pool = PairPool.from_table(real_pool)
    keys = dict(zip(real_pool.column("parallel_id").to_pylist(), real_pool.column("key").to_pylist()))
    composer = build_composer(pool.index, cfg, world_size=2)
    kinds = set()
    for _ in range(300):
        batch = composer.next_global_batch()
        step_keys = pool.index.keys[[record for record, _, _ in batch.examples]].tolist()
        assert len(batch.examples) == 100 and len(set(step_keys)) == 100, batch.step
        kinds.add(batch.kind)
        for rank in range(2):
            texts = pool.texts(batch.examples[rank * 50:(rank + 1) * 50], 3, batch.step, frozenset(step_keys))
            assert [keys[pid] for pid in texts.parallel_ids] == texts.positive_keys
            chosen = {k for row in texts.negative_keys for k in row if k != NO_KEY}
            assert not chosen & set(step_keys)
    assert kinds == ({"xx", "xy"} if mode == "hybrid" else {mode})
