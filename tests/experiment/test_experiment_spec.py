"""Experiment specs: every shipped one loads at every size; a bad one is one line naming the file."""

from pathlib import Path

import pytest
import yaml

from hbt.errors import ConfigError
from hbt.experiment.spec import Experiment, base_config, load_experiment

EXPERIMENTS = Path(__file__).resolve().parents[2] / "configs" / "experiments"
SHIPPED = sorted(EXPERIMENTS.glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_experiment_loads_at_every_size(path):
    sizes = yaml.safe_load(path.read_text())["sizes"]
    assert {"cpu", "full"} <= set(sizes)
    for size in sizes:
        experiment = load_experiment(path, size)
        assert experiment.reference in experiment.spec.arms
        changes_data = any("data.imbalance" in arm.set for arm in experiment.spec.arms.values())
        assert len(experiment.pools()) == (2 if changes_data else 1), "arms that share data share one pool"
        for plan in experiment.trained():
            for key in experiment.spec.seed_keys:
                section, name = key.split(".")
                assert getattr(getattr(plan.config, section), name) == plan.seed


def test_full_size_is_the_papers_setting():
    for path in SHIPPED:
        config = load_experiment(path, "full").trained()[0].config
        assert config.batching.batch_size * config.train.num_workers == 100
        languages = 5 if path.stem == "low_resource" else 9  # low_resource holds four of the nine out
        assert config.train.lr == 3e-5 and len(config.data.languages) == languages and config.cluster.use_gpu


def test_arms_differ_only_in_what_they_set():
    table1 = load_experiment(EXPERIMENTS / "table1.yaml", "cpu")
    xx, hybrid = table1.runs["xx-s0"].config, table1.runs["hybrid-s0"].config
    assert (xx.batching.mode, hybrid.batching.mode) == ("xx", "hybrid")
    assert xx.model_copy(update={"batching": hybrid.batching}) == hybrid
    assert table1.runs["base"].seed is None and "base-s0" not in table1.runs
    assert [p.name for p in table1.trained()] == ["xx-s0", "xy-s0", "hybrid-s0"]


def test_runs_train_seed_by_seed():
    """Every arm's seed 0 before any seed 1: a stopped experiment already compares every arm."""
    mid = load_experiment(EXPERIMENTS / "table1.yaml", "mid")
    assert [p.name for p in mid.trained()] == [f"{arm}-s{seed}" for seed in (0, 1, 2) for arm in ("xx", "xy", "hybrid")]


def test_arms_that_change_prepared_data_get_their_own_pool(tmp_path):
    raw = {"description": "d", "reference": "even", "arms": {
        "even": {}, "skewed": {"set": {"data.imbalance": {"de": 0.1}}}, "two": {"set": {"data.num_languages": 2}}}}
    experiment = Experiment(tmp_path / "x.yaml", raw, "cpu", base_config(tmp_path / "x.yaml", raw, "cpu"))
    assert {pool: [p.arm for p in plans] for pool, plans in experiment.pools().items()} == {
        "common": ["even", "two"], "skewed": ["skewed"]}


BAD = [
    ({"reference": "a", "arms": {"a": {}, "b": {}}}, "description: Field required"),
    ({"description": "d", "reference": "z", "arms": {"a": {}, "b": {}}}, "reference 'z' is not one of the arms"),
    ({"description": "d", "reference": "a", "arms": {"a": {}}}, "arms: Dictionary should have at least 2 items"),
    ({"description": "d", "reference": "a", "arms": {"a": {}, "b": {"set": {"cluster.num_cpus": 1}}}},
     "arm 'b' sets cluster.num_cpus, which the experiment sets for every arm"),
    ({"description": "d", "reference": "a", "arms": {"a": {}, "b": {"set": {"batching.seed": 1}}}},
     "arm 'b' sets batching.seed"),
    ({"description": "d", "reference": "a", "arms": {"a": {}, "b": {"train": False, "set": {"train.lr": 1}}}},
     "an untrained arm (train: false) takes no `set`"),
    ({"description": "d", "reference": "a", "arms": {"a": {}, "b c": {}}}, "arm name 'b c'"),
    ({"description": "d", "reference": "a", "seeds": [1, 1], "arms": {"a": {}, "b": {}}}, "seeds repeat"),
    ({"description": "d", "reference": "a", "arms": {"a": {}, "b": {}}, "groups": {"g": ["xx"]}}, "xx"),
    ({"description": "d", "reference": "a", "arms": {"a": {}, "b": {}}, "corpora": [{"name": "c"}]},
     "give a `split` of the prepared data or a `path`"),
    ({"description": "d", "reference": "a", "arms": {"a": {}, "b": {}}, "extra": 1}, "extra: unknown key"),
]


@pytest.mark.parametrize("raw,message", BAD, ids=[m[:30] for _, m in BAD])
def test_a_bad_spec_is_one_line_naming_the_file(tmp_path, raw, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as caught:
        load_experiment(path)
    assert str(caught.value).startswith(str(path)) and message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_bad_arm_value_names_the_arm_and_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"description": "d", "reference": "a",
                                    "arms": {"a": {}, "b": {"set": {"batching.alpha": 2}}}}))
    with pytest.raises(ConfigError, match=r"bad.yaml: arm b: .*batching.alpha"):
        load_experiment(path)


def test_an_unknown_size_lists_the_sizes():
    with pytest.raises(ConfigError, match="no size 'huge' \\(it has cpu, mid, full, smoke\\)"):
        load_experiment(EXPERIMENTS / "table1.yaml", "huge")


def test_seeds_given_on_the_command_line_replace_the_sizes():
    experiment = load_experiment(EXPERIMENTS / "table1.yaml", "cpu", seeds=[4, 5, 6])
    assert experiment.seeds == [4, 5, 6] and "hybrid-s6" in experiment.runs
    assert experiment.raw["sizes"]["cpu"]["seeds"] == [4, 5, 6]  # what experiment.yaml stores for --resume
    with pytest.raises(ConfigError, match="seeds repeat"):
        load_experiment(EXPERIMENTS / "table1.yaml", "cpu", seeds=[1, 1])


@pytest.mark.parametrize("argv, message", [
    (["experiment"], "hbt experiment needs an experiment"),
    (["experiment", "--resume", "DIR", "--size", "full"],
     "--resume continues an experiment as it was started: drop --size"),
    (["experiment", str(EXPERIMENTS / "table1.yaml"), "--seeds", "0,x"],
     "--seeds: must be comma-separated whole numbers"),
    (["experiment", "--resume", "DIR"], "nothing to resume"),
    (["experiment", "nope.yaml"], "experiment not found: nope.yaml"),
    (["experiment", str(EXPERIMENTS / "table1.yaml"), "--size", "huge"], "no size 'huge'"),
])
def test_cli_usage_errors_are_one_line_exit_2(argv, message, tmp_path, capsys, monkeypatch):
    from hbt.cli import main

    monkeypatch.chdir(tmp_path)
    argv = [str(tmp_path / "dir") if a == "DIR" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()  # nothing written


def test_a_missing_data_dir_leaves_no_experiment_behind(tmp_path, capsys):
    from hbt.cli import main

    out = tmp_path / "exp"
    argv = ["experiment", str(EXPERIMENTS / "table1.yaml"), "--data-dir", str(tmp_path / "nowhere"), "--out", str(out)]
    assert main(argv) == 2
    assert "data directory not found" in capsys.readouterr().err
    assert not (out / "experiment.yaml").exists()  # so the same command runs once the data is there


def test_a_relative_corpus_path_is_under_the_data_dir_and_a_missing_one_stops_before_training(
        tmp_path, data_dir, capsys):
    from hbt.cli import main

    raw = {"description": "d", "reference": "a", "arms": {"a": {}, "b": {}},
           "corpora": [{"name": "test", "split": "test"}, {"name": "gone", "path": "no-such-corpus"}]}
    spec = tmp_path / "x.yaml"
    spec.write_text(yaml.safe_dump(raw))
    experiment = load_experiment(spec, "cpu", overrides=[f"data.data_dir={tmp_path}"])
    assert [experiment.corpus_dir(c) for c in experiment.corpora] == [None, tmp_path / "no-such-corpus"]
    assert [c.name for c in load_experiment(EXPERIMENTS / "language_count.yaml").corpora] == ["test", "tatoeba"]
    remote = {**raw, "corpora": [{"name": "miracl", "path": "s3://bucket/miracl-en"},
                                 {"name": "local", "path": f"file://{tmp_path}/beir"}]}
    spec.write_text(yaml.safe_dump(remote))
    uris = load_experiment(spec, "cpu", overrides=[f"data.data_dir={tmp_path}"])
    assert [uris.corpus_dir(c) for c in uris.corpora] == ["s3://bucket/miracl-en", tmp_path / "beir"]
    spec.write_text(yaml.safe_dump(raw))

    out = tmp_path / "exp"
    argv = ["experiment", str(spec), "--data-dir", str(data_dir), "--out", str(out),
            "--set", "data.languages=[en,de]", "--set", "data.eval_languages=[en,de]"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].endswith(f"corpus gone: {data_dir / 'no-such-corpus'} is not a directory")
    assert not (out / "experiment.yaml").exists()  # refused before any run trains


def test_a_corpus_uri_that_is_no_beir_dir_stops_before_training(tmp_path, monkeypatch):
    from hbt.errors import HbtError
    from hbt.eval import beir
    from hbt.experiment.run import _check_corpora

    raw = {"description": "d", "reference": "a", "arms": {"a": {}, "b": {}},
           "corpora": [{"name": "remote", "path": "s3://bucket/lareqa"}]}
    spec = tmp_path / "x.yaml"
    spec.write_text(yaml.safe_dump(raw))
    asked = []
    monkeypatch.setattr(beir, "is_beir_dir", lambda location: asked.append(location) or False)  # no bucket here
    with pytest.raises(HbtError, match=r"corpus remote: s3://bucket/lareqa is not a BEIR dir$"):
        _check_corpora(load_experiment(spec, "cpu"))
    assert asked == ["s3://bucket/lareqa"]
