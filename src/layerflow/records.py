"""The records a run keeps of each task: :class:`TaskRun` per task, :class:`Attempt` per
attempt, :class:`Wait` per wait for a pool, a rate window or a retry, and the timeline that
lays attempts out in worker lanes. :class:`~layerflow.result.RunResult` holds them; the
report and the live page draw them.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .errors import (
    Cancelled,
    NoValueError,  # noqa: F401 (re-exported)
    Skip,
    TaskTimeout,
    safe_str,
)
from .names import counted
from .pushback import classify

__all__ = [
    "Attempt",
    "RUN_STATUSES",
    "TASK_STATUSES",
    "TaskRun",
    "TaskRuns",
    "Timeline",
    "Wait",
    "assign_lanes",
    "budget_line",
    "outcome_of",
    "timeline",
]

TASK_STATUSES = ("succeeded", "failed", "skipped", "cancelled", "cached", "reused")
RUN_STATUSES = ("succeeded", "failed", "stopped", "interrupted")


@dataclass(slots=True)
class TaskRun:
    """One task's record in a run.

    ``status`` is one of ``TASK_STATUSES`` (or ``"pending"`` in a run stopped before it was
    reached); ``error`` the exception instance; ``started_at``/``finished_at`` are seconds
    since the epoch (first attempt's start, last attempt's end); ``duration`` the seconds
    spent running, summed over attempts (retry waits excluded). ``logs`` is what it
    printed and logged ("" if nothing): with more than one attempt, each attempt's output
    after a line ``── attempt N ──``; a ``logging`` record as ``LEVEL logger: message``;
    the last megabyte only, a line saying how much was cut where it was cut.
    """

    name: str
    status: str
    value: Any = None
    error: BaseException | None = None
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    duration: float = 0.0
    layer: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    logs: str = ""

    @property
    def ok(self) -> bool:
        """True when the task has a value (succeeded, cached or reused)."""
        return self.status in ("succeeded", "cached", "reused")


class Attempt(NamedTuple):
    """One attempt of one task, as the trace and the report draw it.

    ``started_at``/``finished_at`` are seconds since the epoch; ``outcome`` is
    ``"succeeded"``, ``"cached"``, ``"failed"``, ``"skipped"`` (``lf.Skip``), ``"timed_out"``,
    ``"rate_limited"`` (pushed
    back by ``lf.RateLimited`` or an HTTP 429/503) or ``"cancelled"``; ``error`` the error's
    text; ``lane`` the worker slot it ran in (0-based: the lowest slot free when it started).
    """

    task: str
    attempt: int
    started_at: float
    finished_at: float
    outcome: str
    error: str | None
    lane: int


class Wait(NamedTuple):
    """A time a task spent ready but held back: ``kind`` is ``"pool"`` (no free unit of a
    resource pool), ``"rate_limit"`` (no room in a rate window) or ``"retry"`` (the delay
    before its next attempt); ``reason`` says which, for people; ``lane`` is its own lane
    among the waits (waits hold no worker slot)."""

    task: str
    kind: str
    reason: str
    started_at: float
    finished_at: float
    lane: int


def assign_lanes(spans: Sequence[tuple[float, float]]) -> list[int]:
    """A lane per ``(start, end)`` span: the lowest lane whose last span ended by the time
    this one starts (greedy interval assignment, in order of start). No two spans of one
    lane overlap, and there are as many lanes as spans ever ran at once."""
    lanes = [0] * len(spans)
    busy: list[tuple[float, int]] = []  # (end, lane) of the spans still running
    free: list[int] = []
    count = 0
    for k in sorted(range(len(spans)), key=spans.__getitem__):
        start, end = spans[k]
        while busy and busy[0][0] <= start:
            heapq.heappush(free, heapq.heappop(busy)[1])
        if free:
            lane = heapq.heappop(free)
        else:
            lane, count = count, count + 1
        lanes[k] = lane
        heapq.heappush(busy, (end, lane))
    return lanes


def budget_line(budget: Mapping[str, Mapping[str, float]]) -> str:
    """``cost 4.98 of 5 spent, tokens 120000 of 2e+06 spent``."""
    return ", ".join(f"{k} {v['spent']:g} of {v['budget']:g} spent" for k, v in budget.items())


def outcome_of(error: BaseException | None) -> str:
    """How an attempt that did not succeed ended, told by its error (none: cancelled)."""
    if error is None or isinstance(error, (Cancelled, KeyboardInterrupt)):
        return "cancelled"
    if isinstance(error, TaskTimeout):
        return "timed_out"
    if isinstance(error, Skip):  # it decided to skip: no failure
        return "skipped"
    return "rate_limited" if classify(error) is not None else "failed"


def _limit_reason(kind: str, what: Any) -> str:
    names = ", ".join(repr(k) for k in what) if isinstance(what, Mapping) else repr(what)
    return f"pool {names}" if kind == "pool" else f"rate limit {names}"


def timeline(
    names: Sequence[str],
    statuses: Sequence[str],
    tries: Sequence[int],
    first_start: Sequence[float],
    last_end: Sequence[float],
    busy: Sequence[float],
    failed: Iterable[tuple[int, int, float, float, BaseException | None]],
    waits: Iterable[tuple[int, str, Any, float, float]],
    parked: Mapping[int, tuple[str, Any, float]],
    offset: float,
    end: float,
) -> tuple[list[Attempt], list[Wait]]:
    """A run's attempts and waits from the scheduler's raw records (entry indices and
    ``perf_counter`` times): named, in epoch seconds, in lanes, ordered by start.

    Only attempts that did not succeed are recorded one by one (``failed``); a task's
    successful last attempt ends at ``last_end`` and lasted what its ``busy`` time has
    beyond the others. Limit waits are recorded when a ready task is parked and when it is
    admitted (one still parked at the end waited until ``end``); retry waits are the gaps
    between a task's attempts, up to where a limit wait took over."""
    spans: list[tuple[int, int, float, float, str, BaseException | None]] = []
    spent = [0.0] * len(names)
    counted = [0] * len(names)
    for i, a, t0, t1, error in failed:
        spans.append((i, a, t0, t1, outcome_of(error), error))
        spent[i] += t1 - t0
        counted[i] += 1
    for i, a in enumerate(tries):
        if a > counted[i] and first_start[i] > 0 and statuses[i] in ("succeeded", "cached"):
            t1 = last_end[i]
            t0 = first_start[i] if a == 1 else t1 - max(0.0, busy[i] - spent[i])
            spans.append((i, a, t0, t1, statuses[i], None))
    spans.sort(key=lambda s: (s[2], s[3]))
    lanes = assign_lanes([(s[2], s[3]) for s in spans])
    attempts = [
        Attempt(
            names[i],
            a,
            t0 + offset,
            t1 + offset,
            outcome,
            safe_str(error) if error is not None else None,
            lane,
        )
        for (i, a, t0, t1, outcome, error), lane in zip(spans, lanes, strict=True)
    ]
    held = [(i, kind, what, t0, t1) for i, kind, what, t0, t1 in waits]
    held.extend((i, kind, what, t0, end) for i, (kind, what, t0) in parked.items())
    limit_starts: dict[int, list[float]] = {}
    for i, _, _, t0, _ in held:
        limit_starts.setdefault(i, []).append(t0)
    raw: list[tuple[int, str, str, float, float]] = [
        (i, kind, _limit_reason(kind, what), t0, t1) for i, kind, what, t0, t1 in held
    ]
    last: dict[int, tuple[int, float, str]] = {}  # entry -> its latest attempt so far
    for i, a, t0, t1, outcome, _ in sorted(spans, key=lambda s: (s[0], s[1])):
        before = last.get(i)
        last[i] = (a, t1, outcome)
        if before is None or before[0] >= a:
            continue
        gap_end = min([t for t in limit_starts.get(i, ()) if before[1] <= t <= t0] or [t0])
        if gap_end > before[1]:
            why = (
                "pushed back (rate limited)"
                if before[2] == "rate_limited"
                else f"retry after attempt {before[0]} {before[2].replace('_', ' ')}"
            )
            raw.append((i, "retry", why, before[1], gap_end))
    raw.sort(key=lambda w: (w[3], w[4]))
    wait_lanes = assign_lanes([(w[3], w[4]) for w in raw])
    out = [
        Wait(names[i], kind, reason, t0 + offset, t1 + offset, lane)
        for (i, kind, reason, t0, t1), lane in zip(raw, wait_lanes, strict=True)
    ]
    return attempts, out


Timeline = tuple[list[Attempt], list[Wait]]


class TaskRuns(Mapping[str, TaskRun]):
    """``run.tasks``: every task's :class:`TaskRun` by name, in run order, each built on
    first access (a 100,000-task run does not pay for records nobody reads)."""

    def __init__(self, names: list[str], make: Callable[[int], TaskRun]) -> None:
        self._names = names
        self._index = {name: k for k, name in enumerate(names)}
        self._make = make
        self._made: dict[int, TaskRun] = {}

    def __getitem__(self, name: str) -> TaskRun:
        k = self._index[name]
        made = self._made.get(k)
        if made is None:
            made = self._made[k] = self._make(k)
        return made

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __repr__(self) -> str:
        return f"<TaskRuns: {counted(len(self), 'task')}>"
