"""A Ray Job as data: `jobs/NAME.yaml` names the `hbt` steps a job runs and how Ray runs them.

    description: what the job does (one line)
    config: [configs/cluster.yaml]         # --config of every step that takes one (layered)
    set: [data.prepared_dir={storage}/prepared]   # --set of every such step
    steps:                                 # `hbt` command lines, run in order (&&)
      - hbt data prepare --data-dir {data_dir} --out {storage}/prepared
    runtime_env: cluster/runtime_env.yaml  # a file, or the mapping itself
    entrypoint_num_cpus: 0                 # the driver coordinates; workers hold the CPUs
    metadata: {workload: prepare}

`{storage}` is the storage every node mounts (`hbt submit --storage`, default /mnt/hbt) and
`{data_dir}` the raw data (`--data-dir`, default {storage}/data). `entrypoint()` fills them,
adds the spec's and the caller's config and overrides to each step, checks that every step is
a real `hbt` command whose config loads, and joins the steps into the job's shell entrypoint.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hbt.cli_parser import UsageError, build_parser
from hbt.errors import ConfigError, HbtError, validation_line

DEFAULT_STORAGE = "/mnt/hbt"


class JobSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str
    config: list[str] = Field(default_factory=list, description="--config files of every config-taking step")
    set: list[str] = Field(default_factory=list, description="--set overrides of every config-taking step")
    steps: list[str] = Field(min_length=1, description="`hbt ...` command lines, run in order")
    runtime_env: Union[str, dict[str, Any]] = Field(default_factory=dict)
    entrypoint_num_cpus: float = Field(0, ge=0)
    entrypoint_memory: Optional[int] = Field(None, ge=0)
    metadata: dict[str, str] = Field(default_factory=dict)


def load_spec(path: Path) -> JobSpec:
    path = Path(path)
    if not path.is_file():
        raise HbtError(f"job spec not found: {path}")
    try:
        return JobSpec.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    except yaml.YAMLError:
        raise ConfigError(f"{path}: not valid YAML") from None
    except ValidationError as error:
        raise ConfigError(validation_line(error, str(path))) from None


def runtime_env(spec: JobSpec, env_vars: dict[str, str]) -> dict:
    """The spec's runtime env (read from its file if it names one), plus `env_vars`."""
    env = spec.runtime_env
    if isinstance(env, str):
        if not Path(env).is_file():
            raise HbtError(f"runtime_env file not found: {env}")
        env = yaml.safe_load(Path(env).read_text(encoding="utf-8")) or {}
    env = dict(env)
    if env_vars:
        env["env_vars"] = {**env.get("env_vars", {}), **env_vars}
    return env


def _parsed(argv: list[str], line: str) -> argparse.Namespace:
    if not argv or argv[0] != "hbt":
        raise HbtError(f"job step {line!r} is not an `hbt` command")
    try:
        return build_parser().parse_args(argv[1:])
    except UsageError as error:
        raise HbtError(f"job step {line!r} is not a valid hbt command: {error}") from None


def _filled(text: str, places: dict[str, str], line: str) -> str:
    try:
        return text.format(**places)
    except (KeyError, ValueError, IndexError) as error:
        known = ", ".join("{" + name + "}" for name in places)
        raise HbtError(f"job step {line!r}: bad placeholder in {text!r} ({error}; known: {known})") from None


def step_argv(line: str, spec: JobSpec, places: dict[str, str], configs: list[str], overrides: list[str]) -> list[str]:
    """One step as the argv the job runs: placeholders filled, the spec's --config (then the
    caller's `configs`) and the spec's --set (then the caller's `overrides`) added when the verb
    takes a config; checked to parse and, for config-taking verbs, to load."""
    from hbt.config import load_config

    argv = [_filled(part, places, line) for part in shlex.split(line)]
    args = _parsed(argv, line)
    if hasattr(args, "overrides"):  # a verb with --config/--set/--data-dir
        argv += [arg for path in [*spec.config, *configs] for arg in ("--config", path)]
        assignments = [_filled(assignment, places, line) for assignment in spec.set] + overrides
        argv += [arg for assignment in assignments for arg in ("--set", assignment)]
        args = _parsed(argv, line)
        load_config(args.config, args.overrides)
        if getattr(args, "space", None) is not None:
            from hbt.tune.space import load_space

            load_space(args.space)
    return argv


def entrypoint(spec: JobSpec, storage: str = DEFAULT_STORAGE, data_dir: Optional[str] = None,
               overrides: list[str] = (), configs: list[str] = ()) -> str:
    """The job's shell entrypoint: its steps, checked, joined with `&&`."""
    places = {"storage": storage.rstrip("/") or "/", "data_dir": data_dir or f"{storage.rstrip('/')}/data"}
    return " && ".join(shlex.join(step_argv(line, spec, places, list(configs), list(overrides)))
                       for line in spec.steps)
