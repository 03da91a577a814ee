"""Every error layerflow raises, all under :class:`LayerflowError`.

Errors subclass a builtin where one fits (``CycleError`` is a ``ValueError``) and carry
their data as attributes, so callers can react to them without parsing messages.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .result import RunResult

__all__ = [
    "LayerflowError",
    "InvalidOptionError",
    "DuplicateTaskError",
    "MissingDependencyError",
    "MissingInputError",
    "CycleError",
    "TaskFailed",
    "TaskTimeout",
    "RunInterrupted",
    "closest",
    "safe_str",
]


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate most like ``name``, or None when nothing is close."""
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


def did_you_mean(name: str, candidates: Iterable[str], what: str = "") -> str:
    """`` Did you mean 'x'?`` or an empty string."""
    match = closest(name, candidates)
    if match is None:
        return ""
    return f" Did you mean {what}{match!r}?"


def safe_str(error: BaseException) -> str:
    """``"Type: message"`` for an exception, even one whose ``__str__`` raises."""
    try:
        text = str(error)
    except Exception:
        text = f"<{type(error).__name__} whose message cannot be shown>"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class LayerflowError(Exception):
    """Base class of every error layerflow raises on its own account."""


class _NoRetry(LayerflowError):
    """Marker base: errors a retry would only repeat (never retried)."""


class Cancelled(_NoRetry):
    """Raised by a task that layerflow stopped while it ran (fail-fast): it ends as
    ``"cancelled"``, not as a failure of its own."""


class InvalidOptionError(LayerflowError, ValueError, TypeError):
    """A task or run option has a value layerflow cannot use."""


class DuplicateTaskError(LayerflowError, ValueError):
    """Two tasks of one flow have the same name."""

    def __init__(self, message: str, name: str) -> None:
        super().__init__(message)
        self.name = name


class MissingDependencyError(LayerflowError, ValueError):
    """A task names an upstream task (or flow input) that does not exist.

    ``task`` is the task that asked, ``missing`` the name it asked for, ``suggestion`` the
    closest existing name (or None). When several problems were found at once, all of them
    are in ``problems``.
    """

    def __init__(
        self, message: str, task: str | None, missing: str, suggestion: str | None = None
    ) -> None:
        super().__init__(message)
        self.task = task
        self.missing = missing
        self.suggestion = suggestion
        self.problems: list[LayerflowError] = [self]


class MissingInputError(MissingDependencyError):
    """A task needs a flow input that ``run`` was not given."""


class CycleError(LayerflowError, ValueError):
    """The graph has a cycle; ``cycle`` lists its names, first and last the same."""

    def __init__(self, message: str, cycle: list[str]) -> None:
        super().__init__(message)
        self.cycle = cycle
        self.problems: list[LayerflowError] = [self]


class TaskTimeout(LayerflowError, TimeoutError):
    """A task (or the whole run) ran past its ``timeout``."""

    def __init__(self, message: str, task: str | None = None, timeout: float | None = None):
        super().__init__(message)
        self.task = task
        self.timeout = timeout


class TaskFailed(LayerflowError):
    """A task failed and the run stopped (``fail_fast=True``).

    ``task`` names it, ``result`` is the partial :class:`RunResult` (every finished value
    kept), and ``__cause__`` is the task's own exception.
    """

    def __init__(self, message: str, task: str | None, result: RunResult) -> None:
        super().__init__(message)
        self.task = task
        self.result = result


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the run; ``result`` holds what finished (status ``"interrupted"``).

    A ``KeyboardInterrupt``, so code that does not know layerflow still stops as usual.
    """

    def __init__(self, message: str, result: RunResult) -> None:
        super().__init__(message)
        self.result = result


def raise_all(problems: list[Any], flow_name: str | None) -> None:
    """Raise the problems found by validation at once, as one error.

    One problem is raised as itself. Several are raised as the first one's type with every
    message listed (Hamilton's "3 errors encountered"), all kept in ``.problems``.
    """
    if not problems:
        return
    first = problems[0]
    if len(problems) == 1:
        raise first
    where = f" in flow {flow_name!r}" if flow_name else ""
    lines = "\n".join(f"  - {p}" for p in problems)
    first.args = (f"{len(problems)} problems{where}:\n{lines}",)
    first.problems = list(problems)
    raise first
