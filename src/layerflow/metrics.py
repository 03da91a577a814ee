"""``lf.record``: numbers a task attaches to its own record (tokens, cost, calls, ...).

Each running task has a box (a dict) in its context: a worker thread keeps one and the
scheduler empties it after each task, a coroutine and a worker process get a fresh one per
task, a Dask task sends its box back through the scheduler's event log. ``record`` adds to
the box; the scheduler moves it to ``TaskRun.metrics``, and ``RunResult.metrics`` sums them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar

from .errors import InvalidOptionError
from .options import number

__all__ = ["record"]

#: in a process-backend worker, the one box every task's lf.record lands in (the worker runs
#: one task at a time, and reads and empties it after each)
WORKER_BOX: dict[str, float] | None = {} if os.environ.get("LAYERFLOW_PROCESS_WORKER") else None
#: the running task's box, where its lf.record numbers land (each backend sets it per task)
CURRENT_BOX: ContextVar[dict[str, float] | None] = ContextVar(
    "layerflow_metrics", default=WORKER_BOX
)


def record(**numbers: float) -> None:
    """Add numbers to the running task's ``TaskRun.metrics``, e.g. ``lf.record(tokens=1234,
    cost_usd=0.02)``; recording a name again adds to it. Outside a layerflow task (a unit
    test calling the function itself) it does nothing. Call it from the task's own thread
    or coroutine: threads the task starts itself have no box."""
    for name, value in numbers.items():
        if not number(value):
            raise InvalidOptionError(f"lf.record({name}=...) takes a finite number, got {value!r}")
    box = CURRENT_BOX.get()
    if box is None:
        return
    for name, value in numbers.items():
        box[name] = box.get(name, 0) + value


def usage(limit: str, amount: float) -> None:
    """The running task really used ``amount`` on rate limit ``limit`` (tokens, say): the
    limit's window counts that instead of the estimate the task declared in its
    ``rate_limit``, so later starts see the truth. Recorded as the metric ``limit`` too
    (``lf.record(**{limit: amount})`` is the same)."""
    if not isinstance(limit, str) or not limit:
        raise InvalidOptionError(f"lf.usage takes a rate limit's name first, got {limit!r}")
    if not number(amount, at_least=0):
        raise InvalidOptionError(f"lf.usage({limit!r}, ...) takes an amount >= 0, got {amount!r}")
    record(**{limit: amount})


def open_box() -> dict[str, float]:
    """Give the current context (a worker thread, a coroutine, a process) a fresh box."""
    box: dict[str, float] = {}
    CURRENT_BOX.set(box)
    return box


def add(into: dict[int, dict[str, float]], i: int, box: dict[str, float]) -> None:
    """Sum ``box`` into entry ``i``'s metrics (attempts add up)."""
    mine = into.get(i)
    if mine is None:
        into[i] = dict(box)
    else:
        for name, value in box.items():
            mine[name] = mine.get(name, 0) + value


def format_metrics(metrics: Mapping[str, float]) -> str:
    """``tokens=1234, cost_usd=0.02`` (empty for no metrics)."""
    return ", ".join(f"{k}={v:g}" for k, v in metrics.items())
