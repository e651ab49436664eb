"""Every internal of Ray and DeepSpeed that hbt patches, reached through here.

Each is checked to exist before it is used; a release that moved it fails with one line
naming the versions hbt supports (pyproject.toml's bounds), rather than with an
AttributeError deep in a worker, or worse, a patch that silently no longer applies.

    ray._private.ray_constants.ENABLE_RAY_CLUSTER    local Ray on loopback (hbt.ray_session,
    ray._private.services.resolve_ip_for_localhost    cluster/ray_start_loopback.py)
    deepspeed.ops.__compatible_ops__                  no JIT build of the shm collective
    deepspeed's TorchCheckpointEngine, engine.checkpoint_engine   weights-only checkpoint loads
                                                                  (hbt.train.engine)
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

from hbt.errors import HbtError

# Keep in step with pyproject.toml's dependencies.
SUPPORTED = {"ray": ">=2.52,<2.61", "deepspeed": ">=0.15,<0.20"}


class UnsupportedVersion(HbtError):
    """An installed package lacks an internal hbt relies on."""


def _unsupported(package: str, what: str) -> UnsupportedVersion:
    try:
        installed = version(package)
    except PackageNotFoundError:
        installed = "?"
    return UnsupportedVersion(f"{package} {installed} has no {what}, which hbt patches: hbt supports "
                              f"{package}{SUPPORTED[package]} (pip install '{package}{SUPPORTED[package]}')")


def _internal(package: str, module: str, attribute: str):
    """`module`, checked to have `attribute`."""
    try:
        found = importlib.import_module(module)
    except ImportError:
        raise _unsupported(package, f"module {module}") from None
    if not hasattr(found, attribute):
        raise _unsupported(package, f"{module}.{attribute}")
    return found


def ray_constants():
    """`ray._private.ray_constants`, with ENABLE_RAY_CLUSTER (set to bind a local Ray to loopback)."""
    return _internal("ray", "ray._private.ray_constants", "ENABLE_RAY_CLUSTER")


def ray_services():
    """`ray._private.services`, with resolve_ip_for_localhost (kept from rewriting 127.0.0.1)."""
    return _internal("ray", "ray._private.services", "resolve_ip_for_localhost")


def deepspeed_compatible_ops() -> dict:
    """`deepspeed.ops.__compatible_ops__`: op name -> whether DeepSpeed may build it."""
    return _internal("deepspeed", "deepspeed.ops", "__compatible_ops__").__compatible_ops__


def deepspeed_torch_checkpoint_engine() -> type:
    """DeepSpeed's torch checkpoint engine class (hbt subclasses it to load weights only)."""
    module = "deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine"
    return _internal("deepspeed", module, "TorchCheckpointEngine").TorchCheckpointEngine


def set_checkpoint_engine(engine, checkpoint_engine) -> None:
    """Replace a DeepSpeed engine's checkpoint engine; refused if the engine has none to replace
    (then setting it would change nothing, and loads would unpickle anything)."""
    if not hasattr(engine, "checkpoint_engine"):
        raise _unsupported("deepspeed", "DeepSpeedEngine.checkpoint_engine")
    engine.checkpoint_engine = checkpoint_engine
