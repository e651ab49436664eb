"""Errors a user can fix: the CLI prints them as one line and exits 2."""

from __future__ import annotations

import sys
from typing import Callable, Iterator, Optional


class HbtError(Exception):
    """A usage or data error; its message is the one line the user sees."""


class ConfigError(HbtError):
    """A config key, type or value is wrong."""


class DataError(HbtError):
    """An input file is missing, malformed, or inconsistent."""


class RunFailed(Exception):
    """Something ran and failed for a reason that is not the user's input (a job, an
    experiment's run): the CLI prints its one line and exits 1."""


def _wrapped(error: BaseException) -> Iterator[BaseException]:
    """The exceptions `error` carries: Ray's (a task or actor error's `cause`, a Ray Train
    worker group's `worker_failures`, its controller's `controller_failure`), then Python's
    chaining (`raise ... from`, an exception raised while handling another)."""
    for attribute in ("cause", "controller_failure"):
        inner = getattr(error, attribute, None)
        if isinstance(inner, BaseException):
            yield inner
    failures = getattr(error, "worker_failures", None)
    if isinstance(failures, dict):
        yield from (f for _, f in sorted(failures.items()) if isinstance(f, BaseException))
    if error.__cause__ is not None:
        yield error.__cause__
    if error.__context__ is not None and not error.__suppress_context__:  # `raise ... from None` hides it
        yield error.__context__


def _find(error: BaseException, wanted: Callable[[BaseException], bool], seen: set) -> Optional[BaseException]:
    """The innermost exception behind `error` (itself included) for which `wanted` holds."""
    if id(error) in seen:
        return None
    seen.add(id(error))
    for inner in _wrapped(error):
        found = _find(inner, wanted, seen)
        if found is not None:
            return found
    return error if wanted(error) else None


def user_error(error: BaseException) -> Optional[HbtError]:
    """The innermost `HbtError` behind `error`, or None when a failure has no user-fixable cause.

    Ray re-raises an error from a worker or an actor wrapped (a `RayTaskError` that is also an
    instance of the original class, with Ray's traceback in its message; Ray Train's
    `WorkerGroupError`), so the cause the user can act on is looked for inside.
    """
    return _find(error, lambda e: isinstance(e, HbtError) and not hasattr(e, "cause"), set())


# Ray's own failures: a process, an object or a node lost (not a bug in hbt, nor bad input).
RAY_FAILURES = ("RayActorError", "NodeDiedError", "ObjectLostError", "OutOfMemoryError", "WorkerCrashedError",
                "RaySystemError", "ObjectStoreFullError")


def ray_failure(error: BaseException) -> Optional[str]:
    """One line for a failure of Ray itself behind `error` (a worker, actor or node lost), else None."""
    exceptions = sys.modules.get("ray.exceptions")
    if exceptions is None:
        return None
    kinds = tuple(getattr(exceptions, name) for name in RAY_FAILURES if hasattr(exceptions, name))
    found = _find(error, lambda e: isinstance(e, kinds), set())
    if found is None:
        return None
    lines = [line.strip() for line in str(found).splitlines() if line.strip()]
    why = next((line for line in lines[1:] if "because" in line), "")
    return " ".join(part for part in (f"{type(found).__name__}:", lines[0] if lines else "", why) if part)
