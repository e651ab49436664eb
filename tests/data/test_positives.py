"""Positive keys (hbt.data.positives): records answering with the same passage, in any language,
share a key; a long run on the real training articles never puts two of them in one step."""

import pyarrow as pa
import pytest

from hbt.data.positives import assign_positive_keys, key_id
from hbt.data.schema import RAW_PAIR_SCHEMA, TRAIN_PAIR_SCHEMA


def raw(rows) -> pa.Table:
    names = ["parallel_id", "lang", "positive", "hard_negatives", "positive_id"]
    full = [{"article": 0, "question": f"{r[0]}?", "context": "", **dict(zip(names, r))} for r in rows]
    table = pa.Table.from_pylist(full, schema=RAW_PAIR_SCHEMA)
    return table.append_column("source", pa.array(["s"] * len(rows)))


def test_components_link_through_any_language():
    # q1 ~ q2 share the Thai sentence T, q2 ~ q3 share the English S2; q4 is alone.
    table = assign_positive_keys(raw([
        ("q1", "en", "S1", ["S2", "X"], None), ("q1", "th", "T", [], None),
        ("q2", "en", "S2", ["S1"], None), ("q2", "th", "T", [], None),
        ("q3", "en", "S2", [], None), ("q3", "th", "U", ["T"], None),
        ("q4", "en", "S4", ["S1"], None),
    ]))
    assert table.schema == TRAIN_PAIR_SCHEMA
    keys = dict(zip(table.column("parallel_id").to_pylist(), table.column("positive_key").to_pylist()))
    assert keys == {"q1": "q1", "q2": "q1", "q3": "q1", "q4": "q4"}  # the smallest id names the group
    negative_keys = table.column("negative_keys").to_pylist()
    # S2 and S1 are positives of group q1; X is nobody's; T (Thai) is group q1's too.
    assert negative_keys == [["q1", ""], [], ["q1"], [], [], ["q1"], ["q1"]]


def test_positive_id_links_translations_with_different_texts():
    table = assign_positive_keys(raw([
        ("a", "en", "the passage", [], "doc-1"), ("b", "de", "die Passage", [], "doc-1"),
        ("c", "de", "eine andere", [], "doc-2"),
    ]))
    assert table.column("positive_key").to_pylist() == ["a", "a", "c"]


def test_key_id_is_nonzero_stable_int64():
    assert key_id("") == 0
    assert key_id("xquad:56be") == key_id("xquad:56be") != 0
    assert key_id("a") != key_id("b")
    assert -2**63 <= key_id("anything") < 2**63


@pytest.fixture(scope="module")
def real_pool(data_dir):
    """The default training pool: XQuAD's training articles in the paper's 9 languages."""
    from hbt.config import load_config
    from hbt.data.sources import read_training_pool
    from hbt.data.splits import split_articles

    data = load_config(None, [f"data.data_dir={data_dir}"]).data
    split = split_articles(48, data.heldout_fraction, data.split_seed, data.dev_fraction)
    pool, _ = read_training_pool(data, split.train_articles)
    return pool


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
    from hbt.train.batch import PairTexts
    from hbt.train.stream import plan_micro_steps

    cfg = load_config(None, [f"batching.mode={mode}", "batching.batch_size=50", "train.hard_negatives=3"])
    pairs = PairTexts(real_pool)
    keys = pairs.positive_keys()
    plans = plan_micro_steps(pairs, cfg, world_size=2, stop=300)
    assert [len(plan) for plan in plans] == [300, 300]
    kinds = set()
    for rank0, rank1 in zip(*plans):
        pids = rank0["parallel_id"] + rank1["parallel_id"]
        step_keys = [keys[pid] for pid in pids]
        assert len(pids) == 100 and len(set(step_keys)) == 100, rank0["step"]
        assert sorted(set(step_keys)) == rank0["step_keys"] == rank1["step_keys"]
        kinds.add(rank0["kind"])
        for plan in (rank0, rank1):
            examples = list(zip(plan["parallel_id"], plan["query_lang"], plan["passage_lang"]))
            texts = pairs.texts(examples, 3, plan["step"], frozenset(plan["step_keys"]))
            chosen = {k for row in texts.negative_keys for k in row if k}
            assert not chosen & set(step_keys)
    assert kinds == ({"xx", "xy"} if mode == "hybrid" else {mode})
