"""Tests of the hybrid batch composer (hbt.data.composer)."""

import json
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hbt.data.composer import Batch, ComposerConfig, HybridBatchComposer

LANGS = ["ar", "de", "en", "es", "zh"]
SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def setups(draw):
    """Random records (some missing languages) with a valid config."""
    n = draw(st.integers(8, 40))
    records = {}
    for i in range(n):
        langs = draw(st.lists(st.sampled_from(LANGS), min_size=1, max_size=len(LANGS), unique=True))
        records[f"p{i}"] = langs
    mode = draw(st.sampled_from(["xx", "xy", "hybrid"]))
    alpha = draw(st.sampled_from([0.0, 0.3, 0.5, 1.0]))
    sampling = draw(st.sampled_from(["uniform", "proportional"]))
    seed = draw(st.integers(0, 2**31))
    world_size = draw(st.sampled_from([1, 2]))
    # The largest batch size the records allow for what the mode may draw.
    per_lang = Counter(lang for langs in records.values() for lang in langs)
    multi = sum(len(v) >= 2 for v in records.values())
    caps = []
    if mode == "xx" or (mode == "hybrid" and alpha > 0):
        caps.append(min(per_lang.values()))
    if mode == "xy" or (mode == "hybrid" and alpha < 1):
        caps.append(multi)
    cap = min(caps) // world_size
    if cap < 1:  # make it feasible: every record in every language
        records = {pid: list(LANGS) for pid in records}
        cap = n // world_size
    bs = draw(st.integers(1, min(cap, 6)))
    cfg = ComposerConfig(mode=mode, alpha=alpha, batch_size=bs, seed=seed, language_sampling=sampling)
    return records, cfg, world_size


def take(c, k):
    return [c.next_batch() for _ in range(k)]


@SETTINGS
@given(setups())
def test_batch_invariants(setup):
    records, cfg, ws = setup
    ranks = [HybridBatchComposer(records, cfg, rank=r, world_size=ws) for r in range(ws)]
    for step in range(30):
        batches = [c.next_batch() for c in ranks]
        assert len({b.kind for b in batches}) == 1  # ranks agree on the kind
        seen = []
        for b in batches:
            assert b.step == step
            assert len(b.examples) == cfg.batch_size
            if cfg.mode != "hybrid":
                assert b.kind == cfg.mode
            if b.kind == "xx":
                assert len({(q, p) for _, q, p in b.examples}) == 1
                assert all(q == p for _, q, p in b.examples)
            else:
                assert all(q != p for _, q, p in b.examples)
            for pid, q, p in b.examples:
                assert q in records[pid] and p in records[pid]
            seen += [pid for pid, _, _ in b.examples]
        # No parallel_id repeats within a batch, nor across ranks of a step.
        assert len(seen) == len(set(seen))
    if ws == 2:  # xx: both ranks share the step's language too
        c0, c1 = (HybridBatchComposer(records, cfg, rank=r, world_size=2) for r in range(2))
        for b0, b1 in zip(take(c0, 20), take(c1, 20)):
            if b0.kind == "xx":
                assert b0.examples[0][1] == b1.examples[0][1]


@SETTINGS
@given(setups(), st.integers(0, 25), st.data())
def test_determinism_and_resume(setup, k, data):
    records, cfg, ws = setup
    rank = data.draw(st.integers(0, ws - 1))
    a = take(HybridBatchComposer(records, cfg, rank, ws), 40)
    # Same seed, same sequence, regardless of the mapping's order.
    shuffled = dict(reversed(list(records.items())))
    assert take(HybridBatchComposer(shuffled, cfg, rank, ws), 40) == a
    # Resume after k steps through a JSON round trip.
    c = HybridBatchComposer(records, cfg, rank, ws)
    take(c, k)
    state = json.loads(json.dumps(c.state_dict()))
    fresh = HybridBatchComposer(records, cfg, rank, ws)
    fresh.load_state_dict(state)
    assert take(fresh, 40 - k) == a[k:]
    assert take(c, 40 - k) == a[k:]


@SETTINGS
@given(setups())
def test_different_seed_differs(setup):
    records, cfg, ws = setup
    other = ComposerConfig(**{**cfg.__dict__, "seed": cfg.seed + 1})
    # Tiny setups can coincide by chance over a few steps, so look at many.
    a = take(HybridBatchComposer(records, cfg, 0, ws), 60)
    b = take(HybridBatchComposer(records, other, 0, ws), 60)
    if len(records) > 1 or cfg.mode != "xx":
        assert a != b


def test_state_mismatch_raises():
    records = {f"p{i}": ["en", "de"] for i in range(10)}
    c = HybridBatchComposer(records, ComposerConfig(mode="hybrid", batch_size=2, seed=0))
    state = c.state_dict()
    with pytest.raises(ValueError):
        HybridBatchComposer(records, ComposerConfig(mode="hybrid", batch_size=2, seed=1)).load_state_dict(state)
    with pytest.raises(ValueError):
        HybridBatchComposer({**records, "extra": ["en"]},
                            ComposerConfig(mode="hybrid", batch_size=2, seed=0)).load_state_dict(state)
    with pytest.raises(ValueError):
        HybridBatchComposer(records, ComposerConfig(mode="hybrid", batch_size=2, seed=0),
                            world_size=2).load_state_dict(state)
    # Another rank of the same setup may load rank 0's state (it is the same on every rank).
    cfg = ComposerConfig(mode="hybrid", batch_size=2, seed=0)
    r0, r1 = (HybridBatchComposer(records, cfg, rank=r, world_size=2) for r in range(2))
    take(r0, 3)
    take(r1, 3)
    r1b = HybridBatchComposer(records, cfg, rank=1, world_size=2)
    r1b.load_state_dict(r0.state_dict())
    assert take(r1b, 5) == take(r1, 5)


@pytest.mark.parametrize("alpha", [0.0, 0.25, 0.5, 0.8, 1.0])
def test_hybrid_fraction(alpha):
    records = {f"p{i}": ["en", "de", "fr"] for i in range(20)}
    c = HybridBatchComposer(records, ComposerConfig(mode="hybrid", alpha=alpha, batch_size=4, seed=7))
    kinds = [b.kind for b in take(c, 2000)]
    frac = kinds.count("xx") / len(kinds)
    if alpha in (0.0, 1.0):
        assert frac == alpha
    else:
        assert abs(frac - alpha) < 0.05  # ~5 standard deviations at n=2000


def test_proportional_favours_bigger_languages():
    records = {f"p{i}": ["en"] + (["sw"] if i < 10 else []) for i in range(100)}
    prop = HybridBatchComposer(records, ComposerConfig(mode="xx", batch_size=2, seed=3,
                                                       language_sampling="proportional"))
    uni = HybridBatchComposer(records, ComposerConfig(mode="xx", batch_size=2, seed=3,
                                                      language_sampling="uniform"))
    p = Counter(b.examples[0][1] for b in take(prop, 1000))
    u = Counter(b.examples[0][1] for b in take(uni, 1000))
    assert p["en"] > 5 * p["sw"]          # expected ratio 10:1
    assert 400 < u["en"] < 600            # expected 1:1


def test_epoch_sees_every_record_before_repeats():
    records = {f"p{i}": ["en", "de"] for i in range(12)}
    c = HybridBatchComposer(records, ComposerConfig(mode="xy", batch_size=4, seed=0))
    first = [pid for b in take(c, 3) for pid, _, _ in b.examples]
    assert sorted(first) == sorted(records)


def test_world_size_slices_global_batch():
    records = {f"p{i}": ["en", "de", "fr"] for i in range(30)}
    cfg = ComposerConfig(mode="hybrid", batch_size=3, seed=5)
    ranks = [HybridBatchComposer(records, cfg, rank=r, world_size=3) for r in range(3)]
    for _ in range(20):
        pids = [pid for c in ranks for pid, _, _ in c.next_batch().examples]
        assert len(pids) == 9 == len(set(pids))


def test_global_batch_is_the_ranks_slices_concatenated():
    records = {f"p{i}": ["en", "de", "fr"] for i in range(30)}
    cfg = ComposerConfig(mode="hybrid", batch_size=3, seed=5)
    ranks = [HybridBatchComposer(records, cfg, rank=r, world_size=3) for r in range(3)]
    whole = HybridBatchComposer(records, cfg, rank=0, world_size=3)
    for _ in range(20):
        parts = [c.next_batch() for c in ranks]
        batch = whole.next_global_batch()
        assert {b.step for b in parts} == {batch.step} and {b.kind for b in parts} == {batch.kind}
        assert [ex for b in parts for ex in b.examples] == batch.examples
    assert whole.state_dict() == ranks[0].state_dict()


def test_iter_continues_state():
    records = {f"p{i}": ["en", "de"] for i in range(6)}
    cfg = ComposerConfig(mode="hybrid", batch_size=2, seed=0)
    it = iter(HybridBatchComposer(records, cfg))
    got = [next(it) for _ in range(5)]
    assert all(isinstance(b, Batch) for b in got)
    assert got == take(HybridBatchComposer(records, cfg), 5)


@pytest.mark.parametrize("kwargs", [
    dict(mode="yy"), dict(alpha=-0.1), dict(alpha=1.5), dict(batch_size=0),
    dict(language_sampling="zipf"),
])
def test_bad_config_raises(kwargs):
    records = {f"p{i}": ["en", "de"] for i in range(10)}
    cfg = ComposerConfig(**{**dict(mode="hybrid", alpha=0.5, batch_size=2, seed=0), **kwargs})
    with pytest.raises(ValueError):
        HybridBatchComposer(records, cfg)


def test_too_few_records_raises():
    # "sw" has 2 records only: xx may draw it with batch_size 3.
    records = {f"p{i}": ["en"] + (["sw"] if i < 2 else []) for i in range(10)}
    with pytest.raises(ValueError, match="'sw' has only 2"):
        HybridBatchComposer(records, ComposerConfig(mode="xx", batch_size=3, seed=0))
    # Only 2 records have >= 2 languages: xy can't fill 3.
    with pytest.raises(ValueError, match=">= 2 languages"):
        HybridBatchComposer(records, ComposerConfig(mode="xy", batch_size=3, seed=0))
    # Fine for 2 per rank, but not for 2 ranks of 2.
    HybridBatchComposer(records, ComposerConfig(mode="xy", batch_size=2, seed=0))
    with pytest.raises(ValueError):
        HybridBatchComposer(records, ComposerConfig(mode="xy", batch_size=2, seed=0), world_size=2)
    # hybrid with alpha=1 never draws xy, so the xy pool isn't checked.
    HybridBatchComposer({f"p{i}": ["en"] for i in range(5)},
                        ComposerConfig(mode="hybrid", alpha=1.0, batch_size=5, seed=0))
    with pytest.raises(ValueError):
        HybridBatchComposer({f"p{i}": ["en"] for i in range(5)},
                            ComposerConfig(mode="hybrid", alpha=0.9, batch_size=5, seed=0))


# -- positive keys --------------------------------------------------------------------------------

@st.composite
def keyed_setups(draw):
    """Random records with colliding positive keys and a batch size the keys allow."""
    n = draw(st.integers(8, 40))
    records = {f"p{i}": draw(st.lists(st.sampled_from(LANGS), min_size=2, max_size=len(LANGS), unique=True))
               for i in range(n)}
    num_keys = draw(st.integers(2, n))
    keys = {pid: f"k{draw(st.integers(0, num_keys - 1))}" for pid in records}
    mode = draw(st.sampled_from(["xx", "xy", "hybrid"]))
    world_size = draw(st.sampled_from([1, 2]))
    pools = [{keys[p] for p, langs in records.items() if lang in langs} for lang in LANGS]
    distinct = [len(pool) for pool in pools if pool] + [len(set(keys.values()))]
    cap = min(distinct) // world_size
    if cap < 1:
        keys = {pid: pid for pid in records}  # make it feasible
        cap = 1
    cfg = ComposerConfig(mode=mode, alpha=0.5, batch_size=draw(st.integers(1, min(cap, 5))),
                         seed=draw(st.integers(0, 2**31)))
    return records, keys, cfg, world_size


@SETTINGS
@given(keyed_setups())
def test_no_two_examples_of_a_step_share_a_positive_key(setup):
    records, keys, cfg, ws = setup
    whole = HybridBatchComposer(records, cfg, world_size=ws, positive_keys=keys)
    for _ in range(40):
        batch = whole.next_global_batch()
        step_keys = [keys[pid] for pid, _, _ in batch.examples]
        assert len(batch.examples) == cfg.batch_size * ws
        assert len(step_keys) == len(set(step_keys))


@SETTINGS
@given(keyed_setups(), st.integers(0, 20))
def test_keyed_resume_continues_the_sequence(setup, k):
    records, keys, cfg, ws = setup
    a = take(HybridBatchComposer(records, cfg, 0, ws, positive_keys=keys), 30)
    c = HybridBatchComposer(records, cfg, 0, ws, positive_keys=keys)
    take(c, k)
    fresh = HybridBatchComposer(records, cfg, 0, ws, positive_keys=keys)
    fresh.load_state_dict(json.loads(json.dumps(c.state_dict())))
    assert take(fresh, 30 - k) == a[k:]
    # Keys renamed (same grouping) draw the same batches, so the state carries over ...
    renamed = {pid: f"{key}'" for pid, key in keys.items()}
    same = HybridBatchComposer(records, cfg, 0, ws, positive_keys=renamed)
    same.load_state_dict(c.state_dict())
    assert take(same, 30 - k) == a[k:]
    # ... but a state saved with another grouping is refused (one record's positive split off).
    shared = [pid for pid in sorted(keys) if list(keys.values()).count(keys[pid]) > 1]
    if shared:
        regrouped = {**keys, shared[0]: "a key of its own"}
        with pytest.raises(ValueError, match="different config"):
            HybridBatchComposer(records, cfg, 0, ws, positive_keys=regrouped).load_state_dict(c.state_dict())


def test_pack_distinct_fills_batches_in_order_and_drops_the_rest():
    from hbt.data.composer import pack_distinct

    keys = {"a": "k", "b": "k", "c": "m", "d": "n", "e": "k"}
    assert pack_distinct(list("abcde"), keys, 2) == ["a", "c", "b", "d"]  # "e" left alone in an open batch
    unique = {x: x for x in "abcde"}
    assert pack_distinct(list("abcde"), unique, 2) == list("abcd")  # distinct keys: the order itself


def test_pool_without_enough_distinct_positives_is_refused():
    records = {f"p{i}": ["en", "de"] for i in range(10)}
    keys = {pid: f"k{i % 3}" for i, pid in enumerate(sorted(records))}  # 3 distinct positives
    HybridBatchComposer(records, ComposerConfig(mode="xy", batch_size=3, seed=0), positive_keys=keys)
    with pytest.raises(ValueError, match=r"need 4 records \(batch_size\*world_size=2\*2\) with distinct "
                                         r"positives, but the xy pool .* has 3 distinct positives among 10"):
        HybridBatchComposer(records, ComposerConfig(mode="xy", batch_size=2, seed=0), world_size=2,
                            positive_keys=keys)
    with pytest.raises(ValueError, match="language 'de' has 3 distinct positives"):
        HybridBatchComposer(records, ComposerConfig(mode="xx", batch_size=4, seed=0), positive_keys=keys)
