"""Search spaces as data: a `tune_spaces/*.yaml` file, checked against the config schema.

    description: what the sweep asks                      # optional
    tune: {scheduler: asha, num_samples: 4}               # optional: overrides of the config's tune section
    set: {train.steps: 20}                                # optional: fixed overrides for every trial
    space:                                                # config key (as for --set) -> distribution
      batching.alpha: {grid: [0.0, 0.5, 1.0]}             #   every value, each num_samples times
      train.lr: {loguniform: [1.0e-5, 1.0e-4]}            #   and/or random draws: choice: [..],
      data.num_languages: {choice: [2, 4]}                #   uniform: [lo, hi], randint: [lo, hi)

Every value a distribution can give (each grid and choice value, each bound) is applied to the
config and validated as `--set` would be, so an unknown key, an out-of-range bound (alpha
outside [0, 1], a language count above the listed languages) or an empty grid is one line
before Ray starts. Keys fixed when the data is prepared (`data.*` but the training languages)
or by the sweep itself (`cluster.*`, `tune.*`, the trials' evaluation cadence) are refused:
every trial trains on one prepared dir, on one Ray.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import Field, ValidationError, field_validator, model_validator

from hbt.config import TRAINING_TIME_DATA_KEYS, HbtConfig, Section, TuneConfig, load_config, read_yaml_mapping
from hbt.errors import ConfigError, validation_line

DISTRIBUTIONS = ("grid", "choice", "uniform", "loguniform", "randint")
# Set by the sweep for every trial (`trial_config`).
SWEEP_OWNED_KEYS = ("train.eval_every", "train.checkpoint_every", "train.select_metric", "train.select_checkpoint")


class Distribution(Section):
    """One of the DISTRIBUTIONS, e.g. `{grid: [0.0, 0.5]}` or `{uniform: [0.0, 1.0]}`."""

    kind: Literal[DISTRIBUTIONS]
    values: list[Any]

    @model_validator(mode="before")
    @classmethod
    def _from_mapping(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and len(raw) == 1 and next(iter(raw)) in DISTRIBUTIONS:
            kind, values = next(iter(raw.items()))
            return {"kind": kind, "values": values}
        raise ValueError(f"must be one of {{{', '.join(f'{d}: [...]' for d in DISTRIBUTIONS)}}}, got {raw!r}")

    @model_validator(mode="after")
    def _bounds(self) -> "Distribution":
        if self.kind in ("grid", "choice"):
            if not self.values:
                raise ValueError(f"{self.kind} is empty")
            return self
        if len(self.values) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                            for v in self.values):
            raise ValueError(f"{self.kind} takes [low, high], got {self.values!r}")
        low, high = self.values
        if not low < high:
            raise ValueError(f"{self.kind}: low {low} must be below high {high}")
        if self.kind == "loguniform" and low <= 0:
            raise ValueError(f"loguniform: low {low} must be above 0")
        if self.kind == "randint" and not (float(low).is_integer() and float(high).is_integer()):
            raise ValueError(f"randint takes integer bounds, got {self.values!r}")
        return self

    def extremes(self) -> list[Any]:
        """Every value the distribution can give that could be refused: all listed values, or the
        bounds (randint's high is exclusive)."""
        if self.kind in ("grid", "choice"):
            return list(self.values)
        low, high = self.values
        return [int(low), int(high) - 1] if self.kind == "randint" else [low, high]

    def to_tune(self):
        from ray import tune

        if self.kind == "grid":
            return tune.grid_search(list(self.values))
        if self.kind == "choice":
            return tune.choice(list(self.values))
        low, high = self.values
        if self.kind == "randint":
            return tune.randint(int(low), int(high))
        return (tune.uniform if self.kind == "uniform" else tune.loguniform)(low, high)


class SpaceFile(Section):
    description: str = ""
    tune: dict[str, Any] = Field(default_factory=dict)
    set: dict[str, Any] = Field(default_factory=dict)
    space: dict[str, Distribution] = Field(min_length=1)

    @field_validator("set", "space")
    @classmethod
    def _sweepable_keys(cls, entries: dict) -> dict:
        for key in entries:
            section = key.split(".", 1)[0]
            if section in ("cluster", "tune") or key in SWEEP_OWNED_KEYS:
                raise ValueError(f"{key}: set by the sweep itself (use the space file's `tune:` section or the config)")
            if section == "data" and key not in TRAINING_TIME_DATA_KEYS:
                raise ValueError(f"{key}: fixed when the data is prepared (`hbt data prepare`); a sweep trains on "
                                 f"one prepared dir and may vary only {', '.join(TRAINING_TIME_DATA_KEYS)}")
        return entries


def _assignment(key: str, value: Any) -> str:
    return f"{key}={json.dumps(value)}"


class SearchSpace:
    """A checked space file: its distributions, its fixed overrides and its tune settings."""

    def __init__(self, path: Path, spec: SpaceFile, raw: dict):
        self.path, self.spec, self.raw = Path(path), spec, raw

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def keys(self) -> list[str]:
        return list(self.spec.space)

    def overrides(self, params: Optional[dict] = None) -> list[str]:
        """`--set` assignments of the fixed keys, then of a trial's sampled `params`."""
        return [_assignment(k, v) for k, v in {**self.spec.set, **(params or {})}.items()]

    def tune_settings(self, base: TuneConfig, num_samples: Optional[int] = None,
                      max_concurrent: Optional[int] = None) -> TuneConfig:
        """The config's tune section, with the space file's `tune:` and the command line on top."""
        merged = {**base.model_dump(), **self.spec.tune}
        if num_samples is not None:
            merged["num_samples"] = num_samples
        if max_concurrent is not None:
            merged["max_concurrent"] = max_concurrent
        try:
            return TuneConfig.model_validate(merged)
        except ValidationError as error:
            raise ConfigError(validation_line(error, str(self.path), prefix="tune.")) from None

    def param_space(self) -> dict:
        return {key: dist.to_tune() for key, dist in self.spec.space.items()}

    def check(self, base: dict) -> None:
        """Validate every extreme value of every distribution against the config (`base`: the
        sweep's config tree), one key at a time on top of the fixed overrides."""
        fixed = self.overrides()
        try:
            load_config(None, fixed, base=base)
        except ConfigError as error:
            raise ConfigError(f"{self.path}: set: {_after_source(error)}") from None
        for key, dist in self.spec.space.items():
            for value in dist.extremes():
                try:
                    load_config(None, [*fixed, _assignment(key, value)], base=base)
                except ConfigError as error:
                    raise ConfigError(f"{self.path}: space {key}: {dist.kind} value {value!r}: "
                                      f"{_after_source(error)}") from None

    def trial_config(self, base: dict, params: dict, tune: TuneConfig) -> HbtConfig:
        """A trial's config: `base` + the fixed overrides + its `params`, evaluated on dev every
        `tune.eval_every` steps (each evaluation a checkpoint) and selected by `tune.metric`."""
        owned = [f"train.eval_every={tune.eval_every}", f"train.checkpoint_every={tune.eval_every}",
                 f"train.select_metric={tune.metric}", "train.select_checkpoint=best"]
        return load_config(None, [*self.overrides(params), *owned], base=base)


def _after_source(error: ConfigError) -> str:
    """`config: batching.alpha: ...` -> `batching.alpha: ...`."""
    return str(error).removeprefix("config: ")


def load_space(path: Path) -> SearchSpace:
    """Read and check the structure of a space file (values are checked by `SearchSpace.check`)."""
    path = Path(path)
    return parse_space(path, read_yaml_mapping(path, "search space"))


def parse_space(path: Path, raw) -> SearchSpace:
    """A space file's parsed YAML (`raw`) -> SearchSpace; `path` names it in errors."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping with a `space:` section")
    try:
        return SearchSpace(path, SpaceFile.model_validate(raw), raw)
    except ValidationError as error:
        raise ConfigError(validation_line(error, str(path), hidden=DISTRIBUTIONS)) from None


def grid_size(space: SearchSpace) -> int:
    """Trials per sample: the product of the grid sizes (1 without a grid)."""
    return math.prod(len(d.values) for d in space.spec.space.values() if d.kind == "grid")
