"""Search-space files: the shipped ones load and check; bad ones are one line, exit 2, before Ray."""

from pathlib import Path

import pytest
import yaml

from hbt.cli import main
from hbt.config import load_config
from hbt.errors import ConfigError
from hbt.tune.space import load_space

REPO = Path(__file__).resolve().parents[2]
SPACES = sorted((REPO / "tune_spaces").glob("*.yaml"))


def base(*overrides: str) -> dict:
    return load_config(None, list(overrides)).model_dump(mode="json")


def write_space(tmp_path, space: dict, **sections) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"space": space, **sections}))
    return path


def test_the_ready_spaces_are_shipped():
    assert {p.stem for p in SPACES} >= {"smoke", "alpha", "language_count", "alpha_lr"}


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.stem)
def test_every_shipped_space_checks_against_the_paper_config(path):
    space = load_space(path)
    space.check(base())  # the paper's 9 training languages
    assert space.keys and space.param_space().keys() == set(space.keys)


def test_alpha_space_is_the_papers_grid():
    grid = load_space(REPO / "tune_spaces" / "alpha.yaml").spec.space["batching.alpha"]
    assert grid.kind == "grid" and grid.values == pytest.approx([i / 10 for i in range(11)])


def test_a_trial_config_takes_its_values_and_the_sweeps_cadence(tmp_path):
    from hbt.config import TuneConfig

    space = load_space(write_space(tmp_path, {"batching.alpha": {"grid": [0.2, 0.8]}}, set={"train.steps": 7}))
    config = space.trial_config(base("train.select_checkpoint=last"), {"batching.alpha": 0.8},
                                TuneConfig(eval_every=3, metric="dev/mono_map"))
    assert config.batching.alpha == 0.8 and config.train.steps == 7
    assert (config.train.eval_every, config.train.checkpoint_every, config.train.select_metric,
            config.train.select_checkpoint) == (3, 3, "dev/mono_map", "best")  # the sweep selects on dev


BAD_SPACES = {
    "unknown key": ({"batching.alphaa": {"grid": [0.1]}}, {}, "batching.alphaa: unknown key"),
    "alpha above 1": ({"batching.alpha": {"uniform": [0.0, 1.5]}}, {}, "less than or equal to 1"),
    "alpha below 0": ({"batching.alpha": {"grid": [-0.1, 0.5]}}, {}, "greater than or equal to 0"),
    "empty grid": ({"batching.alpha": {"grid": []}}, {}, "grid is empty"),
    "too many languages": ({"data.num_languages": {"grid": [2, 12]}}, {}, "num_languages=12 exceeds the 9"),
    "bounds reversed": ({"train.lr": {"loguniform": [1e-4, 1e-5]}}, {}, "must be below high"),
    "log of zero": ({"train.lr": {"loguniform": [0, 1e-4]}}, {}, "must be above 0"),
    "no distribution": ({"batching.alpha": 0.5}, {}, "must be one of"),
    "unknown distribution": ({"batching.alpha": {"normal": [0, 1]}}, {}, "must be one of"),
    "prepare-time key": ({"data.dev_fraction": {"grid": [0.1, 0.2]}}, {}, "fixed when the data is prepared"),
    "sweep-owned key": ({"train.eval_every": {"grid": [1, 2]}}, {}, "set by the sweep itself"),
    "bad fixed value": ({"batching.alpha": {"grid": [0.5]}}, {"set": {"train.steps": 0}}, "train.steps"),
    "bad tune setting": ({"batching.alpha": {"grid": [0.5]}}, {"tune": {"scheduler": "pbt"}}, "tune.scheduler"),
    "empty space": ({}, {}, "space"),
}


@pytest.mark.parametrize("name", BAD_SPACES)
def test_a_bad_space_is_one_line_and_exit_2_before_ray_starts(name, tmp_path, capsys, monkeypatch):
    import hbt.tune.sweep

    def no_ray(cluster):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(hbt.tune.sweep, "ensure_ray", no_ray)
    space, sections, expected = BAD_SPACES[name]
    path = write_space(tmp_path, space, **sections)
    assert main(["tune", "--space", str(path), "--out", str(tmp_path / "sweep")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and expected in err and str(path) in err, err
    assert not (tmp_path / "sweep").exists()


def test_a_language_the_prepared_pool_lacks_is_refused(tmp_path):
    from hbt.config import TuneConfig
    from hbt.errors import HbtError
    from hbt.tune.sweep import _check_pool_languages

    pool = ["en", "de", "es"]
    space = load_space(write_space(tmp_path, {"data.languages": {"choice": [["en", "de"], ["en", "ru"]]}}))
    with pytest.raises(HbtError, match=r"would train on \['ru'\], which the prepared pool does not hold"):
        _check_pool_languages(space, base(), TuneConfig(), pool)
    alpha = load_space(write_space(tmp_path, {"batching.alpha": {"grid": [0.1, 0.9]}}))
    _check_pool_languages(alpha, base("data.num_languages=3"), TuneConfig(), pool)  # trains on en, de, es only
    with pytest.raises(HbtError, match="would train on"):
        _check_pool_languages(alpha, base("data.num_languages=4"), TuneConfig(), pool)
    count = load_space(write_space(tmp_path, {"data.num_languages": {"grid": [2, 3]}}))
    with pytest.raises(HbtError, match="would train on"):  # a seeded subset may take any of the 9
        _check_pool_languages(count, base("data.language_seed=0"), TuneConfig(), pool)


def test_missing_space_file_and_missing_space_flag(tmp_path, capsys):
    assert main(["tune", "--space", str(tmp_path / "nope.yaml")]) == 2
    assert "search space not found" in capsys.readouterr().err
    assert main(["tune"]) == 2
    assert "needs --space" in capsys.readouterr().err
    assert main(["tune", "--space", str(tmp_path / "x.yaml"), "--num-samples", "0"]) == 2
    assert "--num-samples: must be a whole number" in capsys.readouterr().err


def test_resume_takes_no_new_config(tmp_path, capsys):
    assert main(["tune", "--resume", str(tmp_path), "--set", "batching.alpha=0.1"]) == 2
    assert "drop --set" in capsys.readouterr().err
    assert main(["tune", "--resume", str(tmp_path), "--num-samples", "8"]) == 2
    assert "drop --num-samples" in capsys.readouterr().err
    assert main(["tune", "--resume", str(tmp_path / "none")]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_seeded_language_subsets():
    langs = ["en", "de", "es", "ru", "zh", "ar", "hi", "tr", "th"]
    first = load_config(None, ["data.num_languages=4"]).data.train_languages
    assert first == langs[:4]
    subsets = [tuple(load_config(None, ["data.num_languages=4", f"data.language_seed={s}"]).data.train_languages)
               for s in range(3)]
    assert all(len(s) == 4 and set(s) <= set(langs) for s in subsets)
    assert all(list(s) == [lang for lang in langs if lang in s] for s in subsets)  # the list's order
    assert len(set(subsets)) > 1  # seeds give other subsets
    again = load_config(None, ["data.num_languages=4", "data.language_seed=1"]).data.train_languages
    assert tuple(again) == subsets[1]


def test_config_error_names_the_space_value(tmp_path):
    space = load_space(write_space(tmp_path, {"batching.batch_size": {"randint": [0, 4]}}))
    with pytest.raises(ConfigError, match=r"space batching.batch_size: randint value 0: batching.batch_size"):
        space.check(base())
