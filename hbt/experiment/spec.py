"""An experiment as data: `configs/experiments/NAME.yaml` names the arms to compare, the seeds
each arm trains with, and the corpora every trained model is evaluated on.

    description: what the experiment asks
    config: [configs/local.yaml]          # config layers under every arm (then --config)
    set: {train.steps: 20}                # overrides of every arm (then --set)
    sizes:                                # variants, picked with --size (default: cpu)
      cpu: {seeds: [0, 1]}                #   each: more `config` layers and `set` overrides,
                                          #   and its own `seeds` or `corpora` if given
      full: {config: [configs/cluster.yaml, configs/gpu.yaml], set: {train.steps: 2000}}
    seeds: [0, 1, 2]                      # every trained arm runs once per seed ...
    seed_keys: [batching.seed]            # ... set into these config keys
    reference: xx                         # the arm every other arm is compared with
    arms:                                 # name -> what it changes (applied after `set`)
      base: {train: false}                #   the base model, evaluated untrained (once)
      xx: {set: {batching.mode: xx}}
      hybrid: {set: {batching.mode: hybrid, batching.alpha: 0.5}}
    corpora:                              # what every model is evaluated on (default: test and
      - {name: test, split: test}         #   tatoeba): a split of the experiment's prepared data
      - {name: mlqa-r, path: mlqa-r}      #   or a dir: LAReQA ({lang}.json), BEIR or Tatoeba (a
                                          #   relative path not found here: under data.data_dir)
    groups: {unseen: [el, vi]}            # also compare on these query languages alone

Every arm x seed config is built and validated here, before anything runs: an unknown key, a
bad value or an arm that sets what the experiment owns is one line naming the file and arm.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hbt.config import REPO_ROOT, TRAINING_TIME_DATA_KEYS, HbtConfig, load_config, read_yaml_mapping
from hbt.errors import ConfigError, validation_line
from hbt.io import is_local
from hbt.languages import check_languages


def _languages(codes: list[str]) -> list[str]:
    try:  # a ValueError: pydantic names the field
        return check_languages(codes)
    except ConfigError as error:
        raise ValueError(str(error)) from None


# The experiment decides these for every arm: where the data is, how Ray and evaluation run.
OWNED_PREFIXES = ("data.prepared_dir", "cluster.", "eval.", "tune.")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _distinct(seeds: Optional[list[int]]) -> Optional[list[int]]:
    if seeds is not None and len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds repeat: {seeds}")
    return seeds


class ArmSpec(_Strict):
    train: bool = Field(True, description="false: the base model, evaluated as it is")
    set: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _untrained_sets_nothing(self) -> "ArmSpec":
        if not self.train and self.set:
            raise ValueError("an untrained arm (train: false) takes no `set`: it is the base model")
        return self


class CorpusSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    split: Optional[Literal["dev", "test"]] = None
    path: Optional[str] = None  # a local dir, or a BEIR dir's URI (s3://bucket/corpus: `hbt eval --corpus`)
    languages: Optional[list[str]] = None

    @model_validator(mode="after")
    def _split_or_path(self) -> "CorpusSpec":
        if (self.split is None) == (self.path is None):
            raise ValueError(f"corpus {self.name!r}: give a `split` of the prepared data or a `path`, not both")
        if self.languages is not None:
            _languages(self.languages)
        return self


# In domain, the prepared test split; out of domain, Tatoeba's bitext (DATA_DIR/tatoeba-laser).
DEFAULT_CORPORA = (CorpusSpec(name="test", split="test"), CorpusSpec(name="tatoeba", path="tatoeba-laser"))


class SizeSpec(_Strict):
    config: list[str] = Field(default_factory=list)
    set: dict[str, Any] = Field(default_factory=dict)
    seeds: Optional[list[int]] = Field(None, min_length=1, description="instead of the experiment's seeds")
    corpora: Optional[list[CorpusSpec]] = Field(None, min_length=1, description="instead of the experiment's corpora")

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: Optional[list[int]]) -> Optional[list[int]]:
        return _distinct(seeds)


class ExperimentSpec(_Strict):
    description: str
    config: list[str] = Field(default_factory=list)
    set: dict[str, Any] = Field(default_factory=dict)
    sizes: dict[str, SizeSpec] = Field(default_factory=lambda: {"cpu": SizeSpec()})
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    seed_keys: list[str] = Field(default_factory=lambda: ["batching.seed"], min_length=1)
    reference: str
    arms: dict[str, ArmSpec] = Field(min_length=2)
    corpora: list[CorpusSpec] = Field(default_factory=lambda: list(DEFAULT_CORPORA), min_length=1)
    groups: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("arms")
    @classmethod
    def _arm_names(cls, arms: dict[str, ArmSpec]) -> dict[str, ArmSpec]:
        for name in arms:
            if not name.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"arm name {name!r}: letters, digits, '-' and '_' only")
        return arms

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        return _distinct(seeds)

    @field_validator("groups")
    @classmethod
    def _group_languages(cls, groups: dict[str, list[str]]) -> dict[str, list[str]]:
        for languages in groups.values():
            _languages(languages)
        return groups

    @model_validator(mode="after")
    def _consistent(self) -> "ExperimentSpec":
        if self.reference not in self.arms:
            raise ValueError(f"reference {self.reference!r} is not one of the arms {sorted(self.arms)}")
        for corpora in [self.corpora, *(size.corpora for size in self.sizes.values() if size.corpora)]:
            names = [c.name for c in corpora]
            if len(set(names)) != len(names):
                raise ValueError(f"corpus names repeat: {names}")
        for arm, spec in self.arms.items():
            for key in spec.set:
                if key.startswith(OWNED_PREFIXES) or key in self.seed_keys:
                    raise ValueError(f"arm {arm!r} sets {key}, which the experiment sets for every arm")
        return self


def _layer_path(path: str) -> Path:
    """A config layer named in a spec: as given (from the working dir), else from the repository."""
    given = Path(path)
    return given if given.is_absolute() or given.exists() else REPO_ROOT / given


def _overrides(mapping: dict[str, Any]) -> list[str]:
    return [f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"
            for key, value in mapping.items()]


@dataclass(frozen=True)
class RunPlan:
    """One run of an arm: trained with one seed, or (an untrained arm) the base model once."""

    arm: str
    seed: Optional[int]
    config: HbtConfig

    @property
    def name(self) -> str:
        return self.arm if self.seed is None else f"{self.arm}-s{self.seed}"


class Experiment:
    """A spec at one size over a base config (the spec's, the size's and the caller's layers)."""

    def __init__(self, path: Path, raw: dict, size: str, base: dict):
        self.path, self.raw, self.size, self.base = Path(path), raw, size, base
        self.spec = parse_spec(path, raw)
        self.seeds = self.spec.sizes[size].seeds or self.spec.seeds
        self.corpora = self.spec.sizes[size].corpora or self.spec.corpora
        self.runs = {plan.name: plan for arm, spec in self.spec.arms.items()
                     for plan in (self._plan(arm, seed) for seed in (self.seeds if spec.train else [None]))}

    def _plan(self, arm: str, seed: Optional[int]) -> RunPlan:
        spec = self.spec.arms[arm]
        seeds = [] if seed is None else [f"{key}={seed}" for key in self.spec.seed_keys]
        try:
            return RunPlan(arm, seed, load_config(None, [*_overrides(spec.set), *seeds], base=self.base))
        except ConfigError as error:
            raise ConfigError(f"{self.path}: arm {arm}: {error}") from None

    @property
    def reference(self) -> str:
        return self.spec.reference

    def corpus_dir(self, corpus: CorpusSpec) -> Optional[Path | str]:
        """A corpus's dir (None: a split of the prepared data): a remote URI as it is; a local
        `path` as given when absolute or found from the working dir, else under the
        experiment's `data.data_dir`."""
        if corpus.path is None or not is_local(corpus.path):
            return corpus.path
        path = Path(corpus.path.removeprefix("file://"))
        if path.is_absolute() or path.exists():
            return path
        return Path(self.base["data"]["data_dir"]) / path

    def trained(self) -> list[RunPlan]:
        """The trained runs, seed by seed (every arm's seed 0 first): an experiment stopped
        part way through already compares every arm on its finished seeds."""
        trained = [plan for plan in self.runs.values() if plan.seed is not None]
        return sorted(trained, key=lambda plan: self.seeds.index(plan.seed))

    def runs_of(self, arm: str) -> list[RunPlan]:
        return [plan for plan in self.runs.values() if plan.arm == arm]

    def pools(self) -> dict[str, list[RunPlan]]:
        """Prepared-data pool -> the runs that use it. Runs share a pool unless their data configs
        differ in a key fixed at preparation; the reference arm's pool is `common`, any other is
        named after its first arm."""
        names = {yaml.safe_dump(pool_data(self.runs_of(self.reference)[0].config), sort_keys=True): "common"}
        pools: dict[str, list[RunPlan]] = {}
        for plan in self.runs.values():
            key = yaml.safe_dump(pool_data(plan.config), sort_keys=True)
            pools.setdefault(names.setdefault(key, plan.arm), []).append(plan)
        return pools


def parse_spec(path: Path, raw: dict) -> ExperimentSpec:
    try:
        return ExperimentSpec.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(validation_line(error, str(path))) from None


def base_config(path: Path, raw: dict, size: str, config_paths=(), overrides=()) -> dict:
    """The config under every arm: the spec's layers, the size's, the caller's; then the spec's
    and the size's `set`, then the caller's overrides."""
    spec = parse_spec(path, raw)
    if size not in spec.sizes:
        raise ConfigError(f"{path}: no size {size!r} (it has {', '.join(spec.sizes)})")
    sized = spec.sizes[size]
    layers = [_layer_path(p) for p in [*spec.config, *sized.config]] + [Path(p) for p in config_paths]
    return load_config(layers, [*_overrides({**spec.set, **sized.set}), *overrides]).model_dump(mode="json")


def pool_data(config: HbtConfig) -> dict:
    """The part of a run's data config its prepared pool depends on."""
    data = config.data.model_dump(mode="json")
    for key in (*TRAINING_TIME_DATA_KEYS, "data.prepared_dir"):
        data.pop(key.removeprefix("data."))
    return data


def load_experiment(path: Path, size: str = "cpu", config_paths=(), overrides=(),
                    seeds: Optional[list[int]] = None) -> Experiment:
    """The experiment at `path` and `size` (`seeds`: instead of the size's, written into the
    spec as run, so `--resume` keeps them)."""
    raw = read_yaml_mapping(Path(path), "experiment")
    base = base_config(path, raw, size, config_paths, overrides)  # checks the size exists
    if seeds is not None:
        raw.setdefault("sizes", {}).setdefault(size, {})["seeds"] = seeds
    return Experiment(path, raw, size, base)
