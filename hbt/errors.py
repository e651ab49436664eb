"""Errors a user can fix: the CLI prints them as one line and exits 2."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Callable, Collection, Iterator, Mapping, Optional, Union

if TYPE_CHECKING:
    from pydantic import ValidationError


class HbtError(Exception):
    """A usage or data error; its message is the one line the user sees."""


class ConfigError(HbtError):
    """A config key, type or value is wrong."""


class DataError(HbtError):
    """An input file is missing, malformed, or inconsistent."""


class RunFailed(Exception):
    """Something ran and failed for a reason that is not the user's input (a job, an
    experiment's run): the CLI prints its one line and exits 1."""


def first_line(error: Union[BaseException, str, None]) -> str:
    """The first non-blank line of an error's message (or of a text), stripped.

    An exception with no message gives its type's name; a text with none gives ''.
    """
    text = "" if error is None else str(error)
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line or (type(error).__name__ if isinstance(error, BaseException) else "")


def validation_line(error: "ValidationError", source: str, *, prefix: str = "",
                    moved: Mapping[str, str] = {}, hidden: Collection[str] = ()) -> str:
    """A pydantic `ValidationError` as one line: `SOURCE: KEY.PATH: MESSAGE (+N more)`.

    Args: `source` names the file (or "--set"); `prefix` is put before the key path (a section
    validated on its own, e.g. "tune."); `moved` maps a key that moved to its new place;
    `hidden` are location parts that are pydantic's, not the user's (a union's tag).
    The same mistake reads the same in a config, a job spec, a tune space and an experiment spec.
    """
    first = error.errors()[0]
    where = prefix + ".".join(str(part) for part in first["loc"] if part not in hidden) or "<root>"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = f"moved to {moved[where]}" if where in moved else "unknown key"
    more = f" (+{error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{source}: {where}: {message}{more}"


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
    first = first_line(str(found))
    why = next((line.strip() for line in str(found).splitlines() if "because" in line and line.strip() != first), "")
    return " ".join(part for part in (f"{type(found).__name__}:", first, why) if part)
