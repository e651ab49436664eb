"""Config loading, overrides and one-line validation errors."""

import pytest

from hbt.config import REPO_ROOT, load_config
from hbt.errors import ConfigError


def test_overrides_parse_yaml_values():
    config = load_config(None, ["batching.alpha=0.3", "data.languages=[en,de,zh]", "train.steps=7"])
    assert config.batching.alpha == 0.3
    assert config.data.languages == ["en", "de", "zh"]
    assert config.train.steps == 7


def test_language_count_takes_first_n():
    config = load_config(None, ["data.languages=[en,de,zh,ar]", "data.num_languages=2"])
    assert config.data.train_languages == ["en", "de"]
    assert load_config(None, ["data.languages=[en,de]"]).data.train_languages == ["en", "de"]


def test_yaml_file_then_override(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("batching:\n  mode: xy\n  alpha: 0.9\n")
    config = load_config(path, ["batching.alpha=0.1"])
    assert (config.batching.mode, config.batching.alpha) == ("xy", 0.1)


def test_shipped_local_config_is_valid():
    from hbt.config import REPO_ROOT

    config = load_config(REPO_ROOT / "configs" / "local.yaml")
    assert config.batching.mode == "hybrid"


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("batching.alpha=1.5", "batching.alpha"),
        ("batching.alpha=-0.1", "batching.alpha"),
        ("batching.mode=zz", "batching.mode"),
        ("data.languages=[en,xx]", "unknown language code 'xx'"),
        ("data.languages=[en,en]", "repeats"),
        ("data.languages=[]", "at least one language"),
        ("data.num_languages=20", "exceeds"),
        ("data.num_languages=0", "data.num_languages"),
        ("data.imbalance={de: 0}", "data.imbalance"),
        ("data.imbalance={qq: 0.5}", "unknown language code"),
        ("train.steps=abc", "train.steps"),
        ("eval.top_k=5", "eval.top_k"),
        ("eval.candidate_context=true", "eval.candidate_context: moved to model.candidate_context"),
        ("train.select_metric=dev/loss", "train.select_metric"),
        ("train.eval_every=0", "train.eval_every"),
        ("data.dev_fraction=1.0", "data.dev_fraction"),
        ("train.nosuchkey=1", "unknown key"),
        ("nosection.key=1", "unknown key"),
        ("batching=3", "batching"),
        ("noequals", "section.key=value"),
        ("=3", "section.key=value"),
        ("batching.alpha=[", "not valid YAML"),
        ("batching.alpha.deeper=1", "batching.alpha"),
    ],
)
def test_bad_values_give_one_line(override, fragment):
    with pytest.raises(ConfigError) as caught:
        load_config(None, [override])
    message = str(caught.value)
    assert fragment in message
    assert "\n" not in message


@pytest.mark.parametrize("text, fragment", [("a: [1", "not valid YAML at line"), ("- 1\n- 2\n", "must be a mapping")])
def test_bad_files_give_one_line(tmp_path, text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        load_config(path)


def test_missing_file():
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("does/not/exist.yaml")


def test_override_below_a_value_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("batching:\n  alpha: 0.5\n")
    with pytest.raises(ConfigError, match="'alpha' is not a section"):
        load_config(path, ["batching.alpha.deeper=1"])


def test_dev_evaluation_with_zero3_is_refused():
    with pytest.raises(ConfigError, match="train.eval_every needs ZeRO stage <= 2"):
        load_config(None, ["train.eval_every=5", "train.strategy=deepspeed", "train.zero_stage=3"])


def test_config_files_layer_key_by_key(tmp_path):
    base, top = tmp_path / "base.yaml", tmp_path / "top.yaml"
    base.write_text("train: {steps: 5, lr: 0.001}\ndata: {languages: [en, de, zh]}\n")
    top.write_text("train: {steps: 7}\ndata: {languages: [en]}\n")
    cfg = load_config([base, top], ["train.lr=0.002"])
    # A section merges (lr kept from the base), a list is replaced whole, --set goes last.
    assert (cfg.train.steps, cfg.train.lr, cfg.data.languages) == (7, 0.002, ["en"])
    assert load_config([top, base]).train.steps == 5


def test_a_bad_layer_is_named(tmp_path):
    base, top = tmp_path / "base.yaml", tmp_path / "top.yaml"
    base.write_text("train: {steps: 5}\n")
    top.write_text("train: {stpes: 7}\n")
    with pytest.raises(ConfigError, match=r"base.yaml \+ .*top.yaml: train.stpes: unknown key"):
        load_config([base, top])


@pytest.mark.parametrize("layers, stage", [
    (["configs/cluster.yaml"], 2),
    (["configs/cluster.yaml", "configs/gpu.yaml"], 2),
    *[(["configs/cluster.yaml", "configs/gpu.yaml", f"cluster/deepspeed/zero{n}.yaml"], n) for n in (1, 2, 3)],
])
def test_shipped_cluster_layers_load(layers, stage):
    cfg = load_config([REPO_ROOT / layer for layer in layers])
    assert cfg.train.zero_stage == stage
    if "configs/gpu.yaml" in layers:
        assert cfg.cluster.use_gpu and cfg.train.bf16 and cfg.train.strategy == "deepspeed"
        assert cfg.batching.batch_size * cfg.train.num_workers == 100  # the paper's batch


@pytest.mark.parametrize("text, key", [
    ("train:\n  steps: '7'\n", "train.steps"),  # a quoted number stays a string
    ("train:\n  steps: 7.5\n", "train.steps"),
    ("train:\n  steps: true\n", "train.steps"),
    ("train:\n  symmetric_loss: 'yes'\n", "train.symmetric_loss"),
    ("train:\n  symmetric_loss: 1\n", "train.symmetric_loss"),
    ("batching:\n  alpha: '0.3'\n", "batching.alpha"),
])
def test_values_are_not_coerced_across_types(tmp_path, text, key):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"c.yaml: {key}: Input should be a valid"):
        load_config([path])


def test_set_parses_scalars_and_paths_stay_text(tmp_path):
    """`--set` values are YAML: numbers, booleans (YAML's yes too) and lists arrive typed; paths are text."""
    config = load_config(None, ["train.steps=7", "train.symmetric_loss=yes", "batching.alpha=1",
                                f"data.data_dir={tmp_path}", "data.languages=[en,de]"])
    assert config.train.steps == 7 and config.train.symmetric_loss is True
    assert config.batching.alpha == 1.0 and isinstance(config.batching.alpha, float)  # an int is a number
    assert config.data.data_dir == tmp_path and config.data.languages == ["en", "de"]
    assert load_config(None, base=config.model_dump(mode="json")) == config  # the Ray boundary's round trip
