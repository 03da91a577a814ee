"""Every error layerflow raises, all under :class:`LayerflowError`.

Errors subclass a builtin where one fits (``CycleError`` is a ``ValueError``) and carry
their data as attributes, so callers can react to them without parsing messages.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from typing import Any

__all__ = [
    "LayerflowError",
    "NoRetry",
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
    "RateLimited",
    "PipelineError",
    "CommandFailed",
    "GroupTimeout",
    "StoreError",
    "RecordedError",
    "MissingOnWorker",
    "WorkerDied",
    "UnpicklableError",
    "RemoteError",
    "ParallelMapError",
    "ReportError",
    "NoValueError",
    "MapError",
    "Skip",
    "ResultNotStored",
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


class NoRetry(LayerflowError):
    """Marker base: errors a retry would only repeat (never retried, whatever a task's
    ``retry_on`` says)."""


class Cancelled(NoRetry):
    """Raised by a task that layerflow stopped while it ran (fail-fast): it ends as
    ``"cancelled"``, not as a failure of its own."""


class InternalError(LayerflowError):
    """A thread of layerflow's own failed; the run was stopped (see ``faults.py``)."""


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


# ``result`` below is a RunResult, typed Any: this module sits below every other one


class TaskFailed(LayerflowError):
    """A task failed and the run stopped (``fail_fast=True``).

    ``task`` names it, ``result`` is the partial :class:`RunResult` (every finished value
    kept), and ``__cause__`` is the task's own exception.
    """

    def __init__(
        self, message: str, task: str | None, result: Any
    ) -> None:  # a RunResult: errors sit below it
        super().__init__(message)
        self.task = task
        self.result = result


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the run; ``result`` holds what finished (status ``"interrupted"``).

    A ``KeyboardInterrupt``, so code that does not know layerflow still stops as usual.
    """

    def __init__(self, message: str, result: Any) -> None:
        super().__init__(message)
        self.result = result


# --- errors of particular parts, all here so that every part can raise and catch them ---


class MapError(NoRetry, TypeError):
    """A ``map`` task cannot be fanned out: what it maps over is not a list, or the lists
    it zips have different lengths."""


class Skip(Exception):  # noqa: N818 (raised to say "skip", not an error)
    """Raise it in a task to end that task ``"skipped"``: not a failure (the run still
    succeeds), what depends on it is skipped too, and a skipped element of a ``map`` is left
    out of the list its consumers receive (a mapped task that skips is a filter)."""

    def __init__(self, reason: str = "skipped") -> None:
        super().__init__(reason)
        self.reason = reason


class RateLimited(NoRetry):
    """Raise it in a task to push back (an HTTP 429, say): the task's rate limits pause for
    ``retry_after`` seconds and the task is tried again without spending one of its
    ``retries``."""

    def __init__(self, message: str = "rate limited", *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        if not isinstance(retry_after, (int, float)) or not 0 <= retry_after < math.inf:
            raise InvalidOptionError(f"retry_after must be seconds >= 0, got {retry_after!r}")
        self.retry_after = float(retry_after)


class PipelineError(LayerflowError, ValueError):
    """A pipeline file is invalid. ``problems`` lists every ``(file, line, message)``."""

    def __init__(self, problems: list[tuple[str, int | None, str]]) -> None:
        self.problems = problems
        super().__init__(_problems_text(problems))


def _problems_text(problems: list[tuple[str, int | None, str]]) -> str:
    lines = [f"{f}:{line}: {msg}" if line else f"{f}: {msg}" for f, line, msg in problems]
    head = "" if len(lines) == 1 else f"{len(lines)} problems in the pipeline:\n"
    return head + "\n".join(lines)


# (problems: (file, line, message) as every PipelineError's, where a MissingInputError's own
# are errors; a caller tells them apart by the class it catches)
class PipelineInputError(PipelineError, MissingInputError):  # type: ignore[misc]
    """A pipeline's input has no value: a ``PipelineError`` with the file and line that use
    it, and the ``MissingInputError`` that ``Flow.run`` raises for the same mistake
    (``task``: the first step that needs it, ``missing``: the input's name)."""

    def __init__(self, problems: list[tuple[str, int | None, str]], task: str, missing: str):
        MissingInputError.__init__(self, _problems_text(problems), task, missing)
        self.problems = problems  # (file, line, message), as every PipelineError's


class CommandFailed(LayerflowError):
    """A ``run:`` step exited non-zero: ``returncode`` and the tail of ``stderr``."""

    def __init__(self, message: str, returncode: int, stderr: str) -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stderr = stderr


class GroupTimeout(TaskTimeout, NoRetry):
    """A ``parallel_group``'s time ran out (not retried: the group's time is spent)."""


class StoreError(LayerflowError):
    """The store cannot be used (permissions, a broken database, an unknown run).

    ``path`` is the store file or folder at fault (None when the message says it), ``kind``
    what is wrong when layerflow knows: ``"full"``, ``"damaged"``, ``"empty"``,
    ``"read-only"``, ``"locked"`` or ``"io"``. ``result`` is the run's :class:`RunResult`
    when the run ended but the store could not record its end.
    """

    result: Any = None

    def __init__(self, message: str, *, path: Any = None, kind: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.kind = kind


class ResultNotStored(NoRetry, StoreError):
    """A task finished but the store could not make its result durable (disk full, a
    broken database): the task fails, since a task is done only once its result is stored.
    Not retried: the store, not the task, is at fault."""

    @property
    def either(self) -> bool:
        """Said briefly: an earlier task's result could not be stored either, and that
        task's error (this one's ``__cause__``) says why and what to do."""
        return isinstance(self.__cause__, ResultNotStored)


class RecordedError(Exception):
    """A task's error as the store recorded it: its text, and ``traceback`` (the user's
    frames, as text) when one was recorded; the exception itself is gone."""

    def __init__(self, text: str, traceback: str | None = None) -> None:
        super().__init__(text)
        self.traceback = traceback

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class MissingOnWorker(NoRetry):
    """A Dask worker cannot import a module the task's code needs (``module``): not retried,
    since another attempt on the same workers fails the same way."""

    def __init__(self, message: str, module: str | None = None) -> None:
        super().__init__(message)
        self.module = module

    def __reduce__(self) -> Any:  # raised on a worker, unpickled here: keep the module
        return (type(self), (str(self), self.module))


class WorkerDied(LayerflowError):
    """The worker process running a task died; ``exitcode`` says how (negative: a signal)."""

    def __init__(self, message: str, exitcode: int | None) -> None:
        super().__init__(message)
        self.exitcode = exitcode

    def __reduce__(self) -> tuple[Any, ...]:  # (raised on a Dask worker, read here)
        return type(self), (str(self), self.exitcode)


class UnpicklableError(NoRetry, TypeError):
    """A task's function, an argument, or its result cannot be sent between processes."""


class RemoteError(LayerflowError):
    """A task raised an exception in a worker process that could not be sent back as is."""


class ParallelMapError(LayerflowError):
    """Some items failed (``fail_fast=False``): ``errors`` maps each failed index to its
    exception; ``results`` holds the other results in input order (None where failed)."""

    def __init__(self, message: str, errors: dict[int, BaseException], results: list[Any]):
        super().__init__(message)
        self.errors = errors
        self.results = results


class ReportError(LayerflowError):
    """A trace or report cannot be written where it was asked for."""


class NoValueError(LayerflowError, KeyError):
    """``run[name]`` for a task that has no value (not in the run, failed, or released)."""

    def __str__(self) -> str:  # KeyError would show the message quoted
        return str(self.args[0])


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
