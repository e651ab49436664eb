"""Sharded faiss search: exact merge vs brute force and one flat index; Ray actor shards."""

import re

import faiss
import numpy as np
import pytest
import ray

from hbt.index.shards import (
    PAD_SCORE,
    IndexShard,
    NamedShards,
    ShardActor,
    build_index,
    merge_topk,
    search_actor_shards,
    search_shards,
    start_shard_actors,
)

D_DIM, K = 16, 10
SIZES = (37, 5, 22)  # unequal; the middle shard is smaller than K


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((sum(SIZES), D_DIM)).astype(np.float32)
    xq = rng.standard_normal((7, D_DIM)).astype(np.float32)
    # global ids: a random permutation so shard rows are not contiguous ids
    ids = rng.permutation(len(xb)).astype(np.int64) + 1000
    bounds = np.cumsum((0,) + SIZES)
    parts = [(xb[a:b], ids[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    return xb, ids, xq, parts


def brute_force(xb, ids, xq, k):
    scores = xq.astype(np.float64) @ xb.astype(np.float64).T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), ids[order]


def test_merge_matches_brute_force_and_flat(data):
    xb, ids, xq, parts = data
    shards = [IndexShard.from_vectors(x, i) for x, i in parts]
    assert [s.ntotal for s in shards] == list(SIZES)
    D, I = search_shards(shards, xq, K)
    assert D.shape == I.shape == (len(xq), K) and D.dtype == np.float32 and I.dtype == np.int64

    Dref, Iref = brute_force(xb, ids, xq, K)
    np.testing.assert_array_equal(I, Iref)
    np.testing.assert_allclose(D, Dref, rtol=1e-5, atol=1e-5)

    flat = build_index(xb)
    Df, If = flat.search(xq, K)
    np.testing.assert_array_equal(I, ids[If])
    np.testing.assert_allclose(D, Df, rtol=1e-5, atol=1e-5)


def test_small_shard_pads_and_merge_is_order_independent(data):
    xb, ids, xq, parts = data
    small = IndexShard.from_vectors(*parts[1])
    Ds, Is = small.search(xq, K)
    assert (Is[:, :5] >= 1000).all() and (Is[:, 5:] == -1).all() and (Ds[:, 5:] == PAD_SCORE).all()
    results = [IndexShard.from_vectors(x, i).search(xq, K) for x, i in parts]
    D1, I1 = merge_topk(results, K)
    D2, I2 = merge_topk(results[::-1], K)
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_array_equal(D1, D2)


def test_k_larger_than_total_pads_like_faiss(data):
    xb, ids, xq, parts = data
    n, k = len(xb), len(xb) + 6
    shards = [IndexShard.from_vectors(x, i) for x, i in parts]
    D, I = search_shards(shards, xq, k)
    assert D.shape == I.shape == (len(xq), k)
    Dref, Iref = brute_force(xb, ids, xq, n)
    np.testing.assert_array_equal(I[:, :n], Iref)
    np.testing.assert_allclose(D[:, :n], Dref, rtol=1e-5, atol=1e-5)
    assert (I[:, n:] == -1).all() and (D[:, n:] == PAD_SCORE).all()
    # same padding as one faiss flat index over all rows
    Df, If = build_index(xb).search(xq, k)
    np.testing.assert_array_equal(If[:, n:], I[:, n:])
    np.testing.assert_array_equal(Df[:, n:], D[:, n:])


def test_non_float32_input_is_converted(data):
    xb, ids, xq, parts = data
    shards = [IndexShard.from_vectors(x.astype(np.float64), i) for x, i in parts]
    D64, I64 = search_shards(shards, xq.astype(np.float64), K)
    D32, I32 = search_shards(shards, xq, K)
    np.testing.assert_array_equal(I64, I32)
    np.testing.assert_allclose(D64, D32, rtol=1e-6)
    Dint, Iint = search_shards(shards, np.ones((2, D_DIM), dtype=np.int32), K)
    assert Dint.dtype == np.float32 and Iint.shape == (2, K)


@pytest.mark.parametrize(
    "xq, k, match",
    [
        (np.zeros((3, D_DIM + 1), np.float32), K, "dimension 17, index expects 16"),
        (np.zeros(D_DIM, np.float32), K, "must be 2-D"),
        (np.zeros((3, D_DIM), np.complex64), K, "real numeric dtype"),
        (np.zeros((3, D_DIM), bool), K, "real numeric dtype"),
        (np.array([["a"] * D_DIM]), K, "real numeric dtype"),
        (np.zeros((3, D_DIM), np.float32), 0, "k must be a positive integer"),
    ],
)
def test_bad_input_raises_one_line_value_error(data, xq, k, match):
    shard = IndexShard.from_vectors(*data[3][0])
    with pytest.raises(ValueError, match=match) as exc:
        search_shards([shard], xq, k)
    assert "\n" not in str(exc.value)


def test_bad_shard_construction():
    xb = np.zeros((4, D_DIM), np.float32)
    with pytest.raises(ValueError, match="got 3 ids for an index of 4 rows"):
        IndexShard(build_index(xb), np.arange(3))
    with pytest.raises(ValueError, match="at least one shard"):
        search_shards([], xb, 1)
    with pytest.raises(ValueError, match="2-D"):
        build_index(np.zeros(D_DIM, np.float32))


def test_trained_factory_builds():
    rng = np.random.default_rng(1)
    xb = rng.standard_normal((256, D_DIM)).astype(np.float32)
    index = build_index(xb, "IVF4,Flat")
    assert index.is_trained and index.ntotal == 256 and index.metric_type == faiss.METRIC_INNER_PRODUCT


@pytest.mark.timeout(120)
def test_ray_actor_shards(data, ray_local):
    xb, ids, xq, _ = data
    half = len(xb) // 2 + 3  # unequal halves
    actors = [
        ShardActor.options(num_cpus=0.5).remote([(xb[:half], ids[:half])]),
        ShardActor.options(num_cpus=0.5).remote([(xb[half:], ids[half:])]),
    ]
    assert ray.get([a.ntotal.remote() for a in actors]) == [half, len(xb) - half]
    D, I = search_actor_shards(actors, xq, K)
    Dref, Iref = brute_force(xb, ids, xq, K)
    np.testing.assert_array_equal(I, Iref)
    np.testing.assert_allclose(D, Dref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="expects 16"):
        search_actor_shards(actors, np.zeros((2, D_DIM + 1), np.float32), K)


def _searched_and_killed(actors, xq):
    try:
        return search_actor_shards(actors, xq, K)
    finally:
        for actor in actors:
            ray.kill(actor)


def _assert_brute_force(xb, ids, xq, D, I):
    Dref, Iref = brute_force(xb, ids, xq, K)
    np.testing.assert_array_equal(I, Iref)
    np.testing.assert_allclose(D, Dref, rtol=1e-5, atol=1e-5)


@pytest.mark.timeout(120)
def test_more_actor_shards_than_cpus(data, ray_local):
    # 12 shards (more than XQuAD-R's 11 languages) on a 2-CPU Ray: all must run at once.
    xb, ids, xq, _ = data
    bounds = np.linspace(0, len(xb), 13).astype(int)
    actors = [ShardActor.remote([(xb[a:b], ids[a:b])]) for a, b in zip(bounds[:-1], bounds[1:])]
    _assert_brute_force(xb, ids, xq, *_searched_and_killed(actors, xq))


@pytest.mark.timeout(120)
def test_one_shard_actor_per_node_holds_every_shard(data, ray_local):
    """On a one-node Ray, the shards go to one actor (one process to start), merged as any split."""
    xb, ids, xq, _ = data
    bounds = np.linspace(0, len(xb), 12).astype(int)
    actors = start_shard_actors([(xb[a:b], ids[a:b]) for a, b in zip(bounds[:-1], bounds[1:])])
    assert len(actors) == 1 and ray.get(actors[0].ntotal.remote()) == len(xb)
    _assert_brute_force(xb, ids, xq, *_searched_and_killed(actors, xq))


@pytest.mark.timeout(120)
def test_shard_actors_with_vectors_in_the_object_store_log_no_error(ray_local, capfd):
    """Vectors past Ray's inline limit (100 KiB) go through the object store: a restartable actor
    built from them makes Ray print an error-level core_worker line; a successful eval prints none."""
    rng = np.random.default_rng(0)
    parts = [(rng.standard_normal((400, 384)).astype(np.float32), np.arange(400) + 400 * i) for i in range(2)]
    xb, ids = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    _assert_brute_force(xb, ids, xb[:3], *_searched_and_killed(start_shard_actors(parts), xb[:3]))
    errors = [line for line in capfd.readouterr().err.splitlines() if re.search(r"^\[[^]]* E \d+ \d+\]", line)]
    assert errors == []


def test_shards_run_on_cpus_and_take_no_gpu(data, monkeypatch):
    """The decision of docs/evaluation.md ("faiss on the CPU"): shard actors ask Ray for no GPU,
    an index is never moved to a GPU even where faiss sees some, and hbt requires faiss-cpu."""
    from pathlib import Path

    import tomllib

    assert ShardActor._default_options["num_gpus"] == 0 and ShardActor._default_options["num_cpus"] == 0

    def every_gpu(*args, **kwargs):
        raise AssertionError("an index moved to the node's GPUs")

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 4)  # a faiss-gpu build on a 4-GPU node
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", every_gpu)
    xb, ids, xq, _ = data
    _assert_brute_force(xb, ids, xq, *IndexShard.from_vectors(xb, ids).search(xq, K))

    root = Path(__file__).resolve().parents[2]
    gpu_calls = [path for path in (root / "hbt").rglob("*.py")
                 if any(word in path.read_text() for word in ("index_cpu_to_", "GpuResources", "get_num_gpus"))]
    assert gpu_calls == []
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    assert "faiss-cpu" in {r.split(">")[0].split("=")[0] for r in requirements}
    assert not any(r.startswith("faiss-gpu") for r in requirements)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("actors", [0, 1, 2])
def test_named_shards_search_all_or_some_like_one_flat_index_over_them(data, actors, request, monkeypatch):
    """Five named shards, in process or dealt round-robin to 1 or 2 actors (as
    `start_shard_actors` deals them over 1 or 2 nodes): searching all of them, or any subset,
    returns a flat index's top-k over exactly those rows."""
    from hbt.index import shards as module

    if actors:
        request.getfixturevalue("ray_local")
        monkeypatch.setattr(module, "start_shard_actors", lambda parts, factory: [
            ShardActor.options(num_cpus=0).remote(list(parts[i::actors]), factory) for i in range(actors)])
    xb, _, xq, _ = data
    bounds = np.linspace(0, len(xb), 6).astype(int)
    names = ["ar", "de", "en", "hi", "zh"]
    parts = {n: (xb[a:b], np.arange(a, b)) for n, a, b in zip(names, bounds[:-1], bounds[1:])}
    shards = NamedShards(parts, "Flat", on_ray=bool(actors))
    try:
        assert len(shards.actors) == actors
        for subset in (names, ["de"], ["ar", "zh"], ["hi", "en", "de"]):
            rows = np.concatenate([parts[n][1] for n in subset])
            D, I = shards.search(xq, K, None if subset == names else subset)
            ref_D, ref_I = IndexShard.from_vectors(xb[rows], rows).search(xq, K)
            assert np.array_equal(I, ref_I) and np.allclose(D, ref_D)
    finally:
        shards.close()
    assert shards.actors == []


@pytest.mark.timeout(120)
def test_a_killed_file_shard_actor_restarts_from_its_files_and_its_search_is_retried(data, ray_local, tmp_path):
    """The actor is killed while its search is submitted (as a node's OOM killer would): Ray
    restarts it, it rebuilds its indexes from the same shard files, and the search returns what
    one search over all the rows returns, then and after."""
    import os

    from hbt.index.shards import start_file_shard_actors

    xb, _, xq, _ = data
    bounds = np.cumsum((0,) + SIZES)
    files = []
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        np.save(tmp_path / f"shard-{i}.npy", xb[a:b])
        files.append((str(tmp_path / f"shard-{i}.npy"), int(a)))
    [actor] = start_file_shard_actors(files, "Flat", nprobe=1, ef_search=16, train_sample=1000)
    try:
        first_pid = ray.get(actor.__ray_call__.remote(lambda self: os.getpid()))
        searching = actor.search.remote(xq, K)
        ray.kill(actor, no_restart=False)  # dies as a crash does: restartable
        rows = np.arange(len(xb))
        _assert_brute_force(xb, rows, xq, *ray.get(searching))
        _assert_brute_force(xb, rows, xq, *ray.get(actor.search.remote(xq, K)))
        assert ray.get(actor.__ray_call__.remote(lambda self: os.getpid())) != first_pid  # it was restarted
    finally:
        ray.kill(actor)
