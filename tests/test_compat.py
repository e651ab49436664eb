"""The Ray and DeepSpeed internals hbt patches (hbt.compat): each, when a release drops it,
fails with one line naming the versions hbt supports."""

import importlib
import re
from pathlib import Path

import pytest
import tomllib

from hbt import compat
from hbt.errors import HbtError

GUARDED = [  # (accessor, module, attribute, package)
    (compat.ray_constants, "ray._private.ray_constants", "ENABLE_RAY_CLUSTER", "ray"),
    (compat.ray_services, "ray._private.services", "resolve_ip_for_localhost", "ray"),
    (compat.deepspeed_compatible_ops, "deepspeed.ops", "__compatible_ops__", "deepspeed"),
    (compat.deepspeed_torch_checkpoint_engine, "deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine",
     "TorchCheckpointEngine", "deepspeed"),
]


def assert_one_line_naming_the_range(error: HbtError, package: str, missing: str) -> None:
    message = str(error)
    assert "\n" not in message and missing in message
    assert f"hbt supports {package}{compat.SUPPORTED[package]}" in message


@pytest.mark.parametrize("accessor, module, attribute, package", GUARDED, ids=[g[2] for g in GUARDED])
def test_a_missing_internal_is_one_line_naming_the_supported_range(monkeypatch, accessor, module, attribute,
                                                                    package):
    assert accessor() is not None  # the installed versions have it
    found = importlib.import_module(module)
    monkeypatch.delattr(found, attribute, raising=False)

    def nothing_more(name):  # deepspeed.ops makes __compatible_ops__ on first access
        raise AttributeError(name)

    monkeypatch.setattr(found, "__getattr__", nothing_more, raising=False)
    with pytest.raises(HbtError) as info:
        accessor()
    assert_one_line_naming_the_range(info.value, package, f"{module}.{attribute}")


def test_a_missing_module_and_a_missing_engine_attribute(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray._private.services", None)  # import fails
    with pytest.raises(HbtError) as info:
        compat.ray_services()
    assert_one_line_naming_the_range(info.value, "ray", "module ray._private.services")

    class Engine:  # a DeepSpeed engine without the attribute hbt replaces
        pass

    with pytest.raises(HbtError) as info:
        compat.set_checkpoint_engine(Engine(), object())
    assert_one_line_naming_the_range(info.value, "deepspeed", "checkpoint_engine")


def test_the_ranges_are_pyprojects_and_hold_the_installed_versions():
    from importlib.metadata import version

    from packaging.requirements import Requirement

    pyproject = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    requirements = {r.name: r for r in map(Requirement, pyproject["project"]["dependencies"])}
    for package, supported in compat.SUPPORTED.items():
        assert str(requirements[package].specifier) == ",".join(sorted(supported.split(","))), package
    for package, requirement in requirements.items():
        if requirement.specifier:
            assert requirement.specifier.contains(re.sub(r"\+.*", "", version(package))), package
        assert any(spec.operator == "<" for spec in requirement.specifier) or package not in (
            "ray", "deepspeed", "torch", "transformers"), package
