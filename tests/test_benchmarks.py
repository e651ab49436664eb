"""The benchmarks run end to end on a tiny model (their numbers are not checked: the machine is noisy)."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from hbt.model.st_files import write_sentence_transformers_files
from hbt.model.tiny import tiny_bert

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load_benchmark(name: str):
    """benchmarks/ is a folder of scripts, not a package: load one by path (registered in
    sys.modules first, which its dataclasses need), with benchmarks/ on sys.path for their
    shared helpers, as when a script runs as `python benchmarks/NAME.py`."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"benchmarks.{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # a whole benchmark run
@pytest.mark.timeout(600)
def test_eval_allpairs_benchmark_gives_every_contender_the_same_work(tmp_path, data_dir):
    model = tiny_bert(tmp_path / "tiny")
    write_sentence_transformers_files(model, hidden_size=32, max_seq_length=128, has_pooler=True)
    out = tmp_path / "bench.json"
    result = load_benchmark("eval_allpairs").main([
        "--model", str(model), "--corpus", str(data_dir / "xquad-r"), "--languages", "en,de",
        "--max-articles", "1", "--batch-size", "8", "--threads", "1", "--pair-sample", "2", "--rounds", "1",
        "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result, default=str))
    # The minimum and hbt's encode actors were given the same texts, batch size and max_length ...
    given = result["given"]
    assert given["minimum"] == given["hbt_eval"] and given["minimum"]["texts"] == result["texts"] > 0
    assert given["minimum"]["batch_size"] == [8] and given["minimum"]["max_length"] == [result["max_length"]]
    # ... and their embeddings score alike; per-pair's mAPs are hbt's on the pairs it timed.
    assert result["map"]["minimum"] == pytest.approx(result["map"]["hbt_eval"], abs=1e-3)
    assert set(result["map"]["hbt_eval"]) == {"mono", "cross", "multi"}
    assert len(result["per_pair_map"]) == 2
    for row in result["per_pair_map"]:
        assert row["per_pair"] == pytest.approx(row["hbt_eval"], abs=1e-3), row
    for name, rounds in result["seconds"].items():  # ratios from total time over every round
        assert len(rounds) == 1 and result["total_s"][name] == pytest.approx(sum(rounds))
    total = result["total_s"]
    assert result["ratios"]["a"] == pytest.approx(total["hbt_eval"] / total["minimum"])
    assert 0 < sum(result["hbt_eval_encode_s"]) < total["hbt_eval"]  # encoding is part of hbt eval
    assert result["per_pair_all_s"] == pytest.approx(total["per_pair"] * 4 / 2)
    assert result["ratios"]["s"] == pytest.approx(
        (total["hbt_eval"] / result["texts"]) / (total["hbt_eval_2"] / result["texts_first_two"]))
    assert result["per_pair_extrapolated"] and (result["pairs_timed"], result["pairs"]) == (2, 4)


@pytest.mark.slow  # a whole benchmark run
def test_eval_precision_benchmark_compares_the_same_work(tmp_path, data_dir):
    model = tiny_bert(tmp_path / "tiny")
    out = tmp_path / "bench.json"
    result = load_benchmark("eval_precision").main([
        "--model", str(model), "--corpus", str(data_dir / "xquad-r"), "--languages", "en,de", "--max-articles", "1",
        "--rounds", "2", "--set", "eval.batch_size=8", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    fp32 = result["workload"]["fp32"]
    assert fp32["texts"] > 0 and fp32["batch_size"] == [8]
    assert result["workload"] == {p: fp32 for p in ("fp32", "int8", "int8-accurate")}  # what each encoder was given
    for precision in ("int8", "int8-accurate"):
        assert set(result["map"][precision]) == set(result["delta"][precision]) == {"mono", "cross", "multi"}
        assert result["speedup"][precision] == pytest.approx(result["total_s"]["fp32"] / result["total_s"][precision])
    for precision, rounds in result["seconds"].items():
        assert len(rounds) == 2 and result["total_s"][precision] == pytest.approx(sum(rounds))


def test_limit_counts_the_encoders_flops_as_torch_does(tmp_path):
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModel

    limit = load_benchmark("limit")
    # eager attention: its two matmuls are plain bmm, which the counter sees (CPU SDPA kernels it may not)
    model = AutoModel.from_pretrained(tiny_bert(tmp_path / "tiny"), add_pooling_layer=False,
                                      attn_implementation="eager")
    batch, length = 3, 17
    ids = torch.randint(5, 20, (batch, length))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    assert limit.encoder_flops(model.config, batch, length) == counter.get_total_flops()


@pytest.mark.slow  # a whole benchmark run
def test_limit_benchmark_runs(tmp_path, data_dir):
    out = tmp_path / "limit.json"
    result = load_benchmark("limit").main([
        "--model", str(tiny_bert(tmp_path / "tiny")), "--corpus", str(data_dir / "xquad-r"), "--texts", "64",
        "--batch-size", "16", "--train-batch", "8", "--train-steps", "2", "--matmul-seconds", "0.2",
        "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["encoding"]["texts"] == 64 and result["training"]["steps"] == 2
    for part in ("encoding", "training", "training_padded"):
        assert result["mfu"][part] == pytest.approx(result[part]["gflops"] / result["peak"]["gflops"])
        assert 0 < result["mfu"][part] < 10
    assert 0 < result["training"]["real_fraction"] <= 1


def test_train_speed_benchmark_runs(tmp_path, prepared, tiny_model):
    out = tmp_path / "speed.json"
    result = load_benchmark("train_speed").main([
        "--config", str(BENCHMARKS.parent / "configs" / "local.yaml"), "--model", str(tiny_model),
        "--prepared", str(prepared), "--set", "data.languages=[en,de,es]", "--set", "batching.batch_size=4",
        "--set", "model.max_length=48", "--steps", "2", "--warmup", "1", "--rounds", "1",
        "--fraction-steps", "3", "--fraction-batches", "4", "8", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    totals = {name: sum(map(sum, rounds)) for name, rounds in result["step_seconds"].items()}
    assert result["ratio"] == pytest.approx(totals["one_matrix"] / totals["packed"])
    # the same steps either way, dropout off: the same losses to float order
    assert len(result["losses"]["packed"]) == 3 and result["loss_max_rel_diff"] <= 1e-4
    assert sum(result["tokens"]["packed"]) < sum(result["tokens"]["one_matrix"])
    for fraction in result["real_fraction"].values():
        assert fraction["one_matrix"] < fraction["packed"] <= 1


@pytest.mark.slow  # a whole benchmark run
@pytest.mark.timeout(300)
def test_train_overhead_benchmark_runs(ray_local, tmp_path, data_dir):
    model = tiny_bert(tmp_path / "tiny")
    out = tmp_path / "bench.json"
    result = load_benchmark("train_overhead").main([
        "--config", str(BENCHMARKS.parent / "configs" / "local.yaml"), "--model", str(model),
        "--set", f"data.prepared_dir={tmp_path / 'none'}",  # nothing prepared: the benchmark prepares its own
        "--set", f"data.data_dir={data_dir}", "--set", "data.languages=[en,de]",
        "--set", "batching.batch_size=4", "--set", "model.max_length=32",
        "--steps", "3", "--warmup", "1", "--rounds", "1", "--json", str(out),
    ])  # one round: the rounds' rotation is test_rotating_rounds_rotates_the_order_and_keeps_each_result's
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["steps"] == 3 and result["batch_size"] == 4 and result["timed_tokens_per_round"] > 0
    for contender in ("bare", "bare_in_train", "hbt"):
        rounds = result["step_seconds"][contender]
        assert len(rounds) == 1 and all(len(steps) == 3 and min(steps) > 0 for steps in rounds)
    assert len(result["round_ratios"]) == 1
    # the ratio is of total times over every timed step, not of medians that hide slow steps
    totals = {name: sum(map(sum, rounds)) for name, rounds in result["step_seconds"].items()}
    assert result["ratio"] == pytest.approx(totals["bare"] / totals["hbt"])
    assert result["steps_per_s"]["hbt"] == pytest.approx(3 / totals["hbt"])
    for key in ("ratio", "ratio_vs_bare_in_train", "ratio_bare_in_train_vs_bare"):
        assert math.isfinite(result[key]) and result[key] > 0


@pytest.mark.timeout(600)
def test_step_overhead_benchmark_runs(ray_local, tmp_path, prepared, tiny_model, capsys):
    out = tmp_path / "bench.json"
    result = load_benchmark("step_overhead").main([
        "--config", str(BENCHMARKS.parent / "configs" / "local.yaml"), "--model", str(tiny_model),
        "--prepared", str(prepared), "--set", "data.languages=[en,de,es]", "--set", "batching.batch_size=4",
        "--set", "model.max_length=32", "--steps", "4", "--warmup", "1", "--rounds", "1", "--report-every", "2",
        "--paper-model", str(tiny_model), "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    bare, hbt = result["step_seconds"]["bare"], result["step_seconds"]["hbt_report_every_2"]
    assert len(bare) == len(hbt) == 1 and len(bare[0]) == len(hbt[0]) == 4 and min(bare[0] + hbt[0]) > 0
    assert result["torch_threads"] == 1  # both contenders: the default --torch-threads
    # the mean overhead is of total times, per timed step
    assert result["overhead"]["hbt_report_every_2"]["mean_ms"] == pytest.approx(1e3 * (sum(hbt[0]) - sum(bare[0])) / 4)
    assert result["on_paper"]["gpus"]["H100"]["step_ms"] < result["on_paper"]["gpus"]["A100"]["step_ms"]
    printed = capsys.readouterr().out
    assert "hbt_report_every_2" in printed and "overhead mean (ms)" in printed and "H100: step" in printed


def test_rotating_rounds_rotates_the_order_and_keeps_each_result():
    load_benchmark("train_overhead")  # puts benchmarks/ on sys.path
    from bench_rounds import rotating_rounds

    calls = []

    def contender(name):
        def run():
            calls.append(name)
            return f"{name}{sum(c == name for c in calls)}"
        return run

    results = rotating_rounds({name: contender(name) for name in "abc"}, rounds=4)
    assert calls == list("abc" "bca" "cab" "abc")
    assert results == {"a": ["a1", "a2", "a3", "a4"], "b": ["b1", "b2", "b3", "b4"], "c": ["c1", "c2", "c3", "c4"]}


@pytest.mark.parametrize("name, args", [("train_overhead", ["--rounds", "0"]), ("train_overhead", ["--steps", "0"]),
                                        ("eval_allpairs", ["--rounds", "0"]),
                                        ("eval_allpairs", ["--pair-sample", "0"])])
def test_counts_below_one_are_usage_errors(name, args, capsys):
    with pytest.raises(SystemExit) as exit_:
        load_benchmark(name).main(args)
    assert exit_.value.code == 2
    assert "must be at least 1, got 0" in capsys.readouterr().err


def test_bad_input_is_one_line_and_exit_2(tmp_path, data_dir, capsys):
    """A language the corpus lacks: the benchmark says so in one line, as the verbs do."""
    with pytest.raises(SystemExit) as exit_:
        load_benchmark("eval_precision").main([
            "--model", str(tmp_path / "unused"), "--corpus", str(data_dir / "xquad-r"), "--languages", "en,xx"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_eval_memory_benchmark_measures_the_same_texts_at_each_scale(tmp_path, data_dir):
    model = tiny_bert(tmp_path / "tiny")
    write_sentence_transformers_files(model, hidden_size=32, max_seq_length=128, has_pooler=True)
    out = tmp_path / "memory.json"
    rows = load_benchmark("eval_memory").main([
        "--model", str(model), "--corpus", str(data_dir / "xquad-r"), "--languages", "en",
        "--scales", "1,2", "--index-factory", "IVF8,Flat", "--interval", "0.1", "--json", str(out)])
    assert json.loads(out.read_text())["rows"] == rows
    one, two = rows
    # The 2x corpus is the 1x corpus twice over: exactly twice the questions and candidates.
    assert (two["questions"], two["candidates"]) == (2 * one["questions"], 2 * one["candidates"])
    for row in rows:  # the sampler saw the driver's tree and the encode actors in it (the shard
        # actors of one small language may live for less than a sample: see the test below)
        assert row["peak_pss_mb"] > row["peak_encode_mb"] > 0 and row["seconds"] > 0
        assert 0.0 <= row["multi_map"] <= 1.0


def test_eval_memory_passes_its_overrides_to_every_hbt_eval():
    benchmark = load_benchmark("eval_memory")
    args = benchmark.parse_args(["--model", "m", "--set", "eval.lareqa_exact_max=1", "--set", "eval.top_k=50"])
    command = benchmark.eval_command(args.model, Path("c"), ["en"], Path("o"), args)
    assert " ".join(command).endswith("--set eval.lareqa_exact_max=1 --set eval.top_k=50")


@pytest.mark.timeout(120)
def test_tree_memory_sums_every_descendant_and_tells_roles_apart():
    """A child process titled like a shard actor, holding 200 MB it has written to, is counted
    in the tree's total and as the largest shard actor."""
    import os
    import subprocess
    import time

    import psutil

    tree_memory = load_benchmark("eval_memory").TreeMemory
    hold = ("import sys, time; x = bytearray(200 * 2**20); x[::4096] = b'x' * len(x[::4096]); "
            "print('ready', flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", hold, "ray::ShardActor"], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        with tree_memory(os.getpid(), interval=0.05) as memory:
            time.sleep(0.5)
        own = psutil.Process().memory_full_info().pss
    finally:
        child.kill()
        child.wait()
    shard = memory.peak_by_role["shard"]
    assert shard > 190 * 2**20 and memory.peak_by_role["encode"] == 0
    assert memory.peak_total >= shard + own * 0.5


def test_pairs_pool_is_valid_deterministic_and_the_same_in_shards(tmp_path):
    """The synthetic mMARCO-shaped pool reads as `pairs`, is the same for the same seed (one
    file or shards), and has its shape: every language per record, ~10% shared positives,
    0-3 hard negatives, mMARCO's lengths."""
    import collections

    import pyarrow.compute as pc

    from hbt.data.pairs import read_pairs

    make = load_benchmark("make_pairs_pool")
    records, languages = 1200, ["en", "de", "zh"]  # over one generation chunk
    make.CHUNK_RECORDS = 500
    one = make.write_pool(tmp_path / "one.jsonl", records, languages, seed=3)
    make.write_pool(tmp_path / "again.jsonl", records, languages, seed=3)
    shards = make.write_pool(tmp_path / "shards", records, languages, seed=3, shards=4)
    other = make.write_pool(tmp_path / "other.jsonl", records, languages, seed=4)
    data = (tmp_path / "one.jsonl").read_bytes()
    assert data == (tmp_path / "again.jsonl").read_bytes() != (tmp_path / "other.jsonl").read_bytes()
    parts = sorted((tmp_path / "shards").iterdir())
    assert [p.name for p in parts] == [f"part-{k:05d}.jsonl" for k in range(4)]
    assert b"".join(p.read_bytes() for p in parts) == data
    assert one["rows"] == shards["rows"] == other["rows"] == records * 3 and one["bytes"] == len(data)
    assert not list(tmp_path.glob("*.partial"))

    table = read_pairs(tmp_path / "one.jsonl")
    assert table.num_rows == records * 3
    assert collections.Counter(table.column("lang").to_pylist()) == {lang: records for lang in languages}
    en = table.filter(pc.equal(table.column("lang"), "en"))
    uses = collections.Counter(en.column("positive_id").to_pylist())
    assert sum(n for n in uses.values() if n > 1) == pytest.approx(0.1 * records, abs=3)  # shared in pairs
    positives = collections.defaultdict(set)  # a shared passage is one text per language
    for row in table.select(["lang", "positive_id", "positive"]).to_pylist():
        positives[row["lang"], row["positive_id"]].add(row["positive"])
    assert max(map(len, positives.values())) == 1
    assert set(pc.list_value_length(table.column("hard_negatives")).to_pylist()) == {0, 1, 2, 3}
    assert 40 <= pc.mean(pc.utf8_length(en.column("question"))).as_py() <= 80
    assert 250 <= pc.mean(pc.utf8_length(en.column("positive"))).as_py() <= 400


@pytest.mark.slow  # three local Rays (two `hbt train` runs and the stream's): 3.5 min on a busy 2-core machine
@pytest.mark.timeout(600)
def test_data_scale_benchmark_smoke(tmp_path):
    """`data_scale.py --smoke`: every figure is measured and printed, the tokenize actor found."""
    import contextlib
    import io

    out = tmp_path / "scale.json"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = load_benchmark("data_scale").main(["--smoke", "--work", str(tmp_path / "work"), "--json", str(out)])
    text = printed.getvalue()
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    small, large = result["sizes"]
    assert (small["rows"], large["rows"]) == (1000, 2000)
    for row in result["sizes"]:
        assert row["prepare"]["aborted"] is None and row["train"]["aborted"] is None
        assert row["prepare"]["rows_per_s"] == pytest.approx(row["rows"] / row["prepare"]["seconds"])
        ray = row["prepare_ray"]
        assert ray["aborted"] is None and ray["same_pool"] is True
        assert 0 < ray["peak_task_mb"] and 0 < ray["peak_driver_mb"] < ray["peak_total_mb"] and ray["cpu_seconds"] > 0
        train = row["train"]
        assert 0 < train["first_step_s"] < train["seconds"]
        assert 0 < train["peak_tokenize_mb"] and 0 < train["peak_driver_mb"] < train["peak_total_mb"]
        assert train["tokenize_titles"]  # the pattern still names the actor's process
    stream = result["stream"]
    assert stream["stream_steps"] == 3 and stream["trainer_steps"] == 1
    assert stream["ratio"] == pytest.approx(stream["stream_steps_per_s"] / stream["trainer_steps_per_s"])
    goals = result["goals"]
    assert set(goals) == set(load_benchmark("data_scale").GOALS)
    assert goals["driver_pss"]["ratio"] == pytest.approx(
        large["train"]["peak_driver_mb"] / small["train"]["peak_driver_mb"])
    for label in ("prepare: us/row", "prepare: rows/s", "prepare: peak PSS", "prepare --ray: rows/s",
                  "prepare --ray: largest task peak PSS", "train: first step",
                  "train: driver peak PSS", "train: tokenize actor peak PSS", "train: all processes peak PSS",
                  "(a) stream", "(b) trainer", "(a) / (b)"):
        assert label in text, label
    assert sum(line.startswith(("PASS", "FAIL")) for line in text.splitlines()) == len(goals)
