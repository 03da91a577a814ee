"""Events a run emits, and the observers that turn them into log lines.

Observation hangs off events, never off inline calls in the scheduler: the scheduler puts
each event on a queue (cheap, under its lock, so the order is the order things happened),
and one delivery thread hands them to every observer in that order. A run with no
observer builds no event at all.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ResultNotStored, Skip, safe_str
from .faults import guarded
from .names import counted, owner_of

__all__ = ["Event", "RunEvent", "LayerEvent", "TaskEvent", "LogObserver", "Observer"]

logger = logging.getLogger("layerflow")


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened in a run: ``kind``, the ``task`` name (or None), ``time``
    (seconds since the epoch) and the ``run_id``."""

    kind: str
    task: str | None
    time: float
    run_id: str


@dataclass(frozen=True, slots=True)
class RunEvent(Event):
    """``run_started`` / ``run_finished``: ``total`` tasks; at the end the ``status``,
    wall ``duration``, ``sequential_estimate`` and ``counts`` of task statuses."""

    total: int = 0
    status: str | None = None
    duration: float | None = None
    sequential_estimate: float | None = None
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LayerEvent(Event):
    """``layer_started`` / ``layer_finished`` for layer number ``layer``."""

    layer: int = 0
    tasks: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TaskEvent(Event):
    """``task_started``, ``task_succeeded``, ``task_failed``, ``task_retrying``,
    ``task_skipped``, ``task_cancelled``, ``task_reused`` (loaded by resume).

    ``seq`` is the task's place in the start order (1-based; 0 if it never started),
    ``total`` the number of tasks in the run, ``attempt`` the attempt number, ``duration``
    the seconds spent running so far (all attempts), ``error`` the exception, ``delay``
    the wait before a retry, ``reason`` a short explanation (why skipped or cancelled).
    """

    layer: int = 0
    seq: int = 0
    total: int = 0
    attempt: int = 0
    duration: float | None = None
    error: BaseException | None = None
    delay: float | None = None
    reason: str | None = None


Observer = Callable[[Event], Any]


class EventBus:
    """Delivers events to observers from one thread, in the order they were emitted."""

    _STOP = object()

    def __init__(
        self, observers: list[Observer], on_fault: Callable[[str, BaseException], None]
    ) -> None:
        self.observers = observers
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.put = self._queue.put
        self._thread = threading.Thread(
            target=guarded("events", self._deliver, on_fault), name="layerflow-events", daemon=True
        )
        self._thread.start()

    def _deliver(self) -> None:
        get = self._queue.get
        broken: set[int] = set()
        while True:
            event = get()
            if event is self._STOP:
                return
            for k, observer in enumerate(self.observers):
                if k in broken:
                    continue
                try:
                    observer(event)
                except BaseException:  # an observer's bug (even sys.exit) must not stop the run
                    broken.add(k)
                    logger.exception("event observer %r failed; it gets no more events", observer)

    def close(self) -> None:
        """Deliver what is queued, then stop the delivery thread."""
        self._queue.put(self._STOP)
        self._thread.join()


def _short_error(error: BaseException | None) -> str:
    if error is None:
        return ""
    text = safe_str(error).split("\n", 1)[0]  # one line: the details follow the run
    return text if len(text) <= 200 else text[:197] + "..."


#: "could not be stored either" failures shown one by one before the rest are counted
_SHOWN_NOT_STORED = 3

_FINISHED_KINDS = frozenset(
    {
        "task_succeeded",
        "task_failed",
        "task_skipped",
        "task_cancelled",
        "task_reused",
        "task_cached",
    }
)


#: a map's elements shown line by line before the rest are folded into progress lines
_SHOWN_ELEMENTS = 3
#: seconds between two progress lines of one map's folded elements
_ELEMENT_EVERY = 2.0


class _Elements:
    """One map task's elements as the progress lines see them: the few shown one by one,
    and counts of the rest by how they ended."""

    __slots__ = ("shown", "ended", "last")

    def __init__(self, now: float) -> None:
        self.shown: set[str] = set()
        self.ended: dict[str, int] = {}
        self.last = now

    def counts(self) -> str:
        done = sum(self.ended.values())
        kinds = ", ".join(f"{n} {kind.removeprefix('task_')}" for kind, n in self.ended.items())
        return f"{done} element{'s' * (done != 1)}: {kinds}"


class LogObserver:
    """Turns events into the plain progress lines of the command line::

    Starting parallel group 'variations' with 3 steps
    [2/4] Started: image_2
    [2/4] Completed: image_2 (2.7s), 3 of 4 done
    Parallel group 'variations' completed in 2.8s (vs 10.3s sequential)
    Completed 4 tasks in 2.8s (sequential estimate 10.3s, speedup 3.7x)

    ``[k/N]``: k is the task's place in the start order (as ai-content-pipeline prints it),
    the same on its started and its finished line; N is the number of tasks known so far
    (a ``map`` adds its elements once its list is known). ``groups``: a YAML
    ``parallel_group``'s steps by group name, for the group's own lines. ``final=False``
    leaves out the closing line (the command line prints its own). A map's elements get
    lines of their own for the first few (and for every failure or retry); the rest are
    counted, in a line every few seconds and on the map's own closing line.
    """

    def __init__(
        self,
        emit: Callable[[str, int], Any] | None = None,
        groups: Mapping[str, Sequence[str]] | None = None,
        *,
        final: bool = True,
    ) -> None:
        self._emit = emit or (lambda line, level: logger.log(level, "%s", line))
        self.final = final
        self.done = 0
        self._group_of = {task: g for g, tasks in (groups or {}).items() for task in tasks}
        self._groups = {g: list(tasks) for g, tasks in (groups or {}).items()}
        self._group_start: dict[str, float] = {}
        self._group_left = {g: set(tasks) for g, tasks in self._groups.items()}
        self._group_work: dict[str, float] = {}
        self._not_stored = 0  # "could not be stored either" failures: a few are shown
        self._maps: dict[str, _Elements] = {}  # map task -> its elements seen so far

    def _element_folded(self, event: TaskEvent) -> bool:
        """Whether an element's line is left out (counted instead); prints the count of
        its map's elements every few seconds."""
        task = event.task or ""
        owner = owner_of(task)
        if not owner:
            return False
        kind = event.kind
        if kind in ("task_failed", "task_retrying"):
            return False
        seen = self._maps.get(owner)
        if seen is None:
            seen = self._maps[owner] = _Elements(event.time)
        if kind in _FINISHED_KINDS:
            seen.ended[kind] = seen.ended.get(kind, 0) + 1
        if task in seen.shown:
            return False
        if len(seen.shown) < _SHOWN_ELEMENTS and kind == "task_started":
            seen.shown.add(task)
            return False
        if kind in _FINISHED_KINDS and event.time - seen.last >= _ELEMENT_EVERY:
            seen.last = event.time
            self._emit(f"{owner}: {seen.counts()} so far", logging.INFO)
        return True

    def _folded(self, event: Event) -> bool:
        """Whether this event's line is left out: once the store failed, every task that
        ends meanwhile fails the same way, so after a few the rest are only counted."""
        error = getattr(event, "error", None)
        if event.kind != "task_failed" or not isinstance(error, ResultNotStored):
            return False
        if not error.either:
            return False
        self._not_stored += 1
        return self._not_stored > _SHOWN_NOT_STORED

    def __call__(self, event: Event) -> None:
        kind = event.kind
        group = self._group_of.get(event.task or "") if isinstance(event, TaskEvent) else None
        if group is not None and kind == "task_started" and group not in self._group_start:
            self._group_start[group] = event.time
            steps = len(self._groups[group])
            self._emit(
                f"Starting parallel group {group!r} with {steps} step{'s' * (steps != 1)}",
                logging.INFO,
            )
        if kind in _FINISHED_KINDS:
            self.done += 1
        line, level = self.format(event)
        if line and (
            self._folded(event) or (isinstance(event, TaskEvent) and self._element_folded(event))
        ):
            line = None
        elif line and kind in _FINISHED_KINDS and event.task in self._maps:
            line = line.replace("every element done", self._maps[event.task].counts())
        if kind == "run_finished" and self._not_stored > _SHOWN_NOT_STORED:
            more = self._not_stored - _SHOWN_NOT_STORED
            self._emit(
                f"... and {more} more task{'s' * (more != 1)} whose results could not be "
                f"stored either; --resume runs them again",
                logging.ERROR,
            )
        if line and (self.final or kind != "run_finished"):
            if kind in _FINISHED_KINDS and isinstance(event, TaskEvent):
                line += f", {self.done} of {event.total} done"
            self._emit(line, level)
        if group is not None and kind in _FINISHED_KINDS and isinstance(event, TaskEvent):
            self._group_work[group] = self._group_work.get(group, 0.0) + (event.duration or 0.0)
            left = self._group_left[group]
            left.discard(event.task)
            if not left and group in self._group_start:
                took = event.time - self._group_start[group]
                work = self._group_work[group]
                self._emit(
                    f"Parallel group {group!r} completed in {took:.1f}s "
                    f"(vs {work:.1f}s sequential)",
                    logging.INFO,
                )

    @staticmethod
    def format(event: Event) -> tuple[str | None, int]:
        """The line for one event (None for events that print nothing) and its log level."""
        kind = event.kind
        if isinstance(event, TaskEvent):
            # a map task never starts itself (its elements do): no number of its own
            tag = f"[{event.seq}/{event.total}] " if event.seq else ""
            if kind == "task_started":
                again = f" (attempt {event.attempt})" if event.attempt > 1 else ""
                return f"{tag}Started: {event.task}{again}", logging.INFO
            if kind == "task_succeeded":
                took = f"{event.duration:.1f}s" if event.seq else "every element done"
                return f"{tag}Completed: {event.task} ({took})", logging.INFO
            if kind in ("task_reused", "task_cached"):
                how = "Reused" if kind == "task_reused" else "Cached"
                return f"{tag}{how}: {event.task}", logging.INFO
            if kind == "task_failed":
                return f"{tag}Failed: {event.task} ({_short_error(event.error)})", logging.ERROR
            if kind == "task_retrying":
                return (
                    f"{tag}Retrying: {event.task} in {event.delay or 0:.1f}s "
                    f"(attempt {event.attempt} failed: {_short_error(event.error)})",
                    logging.WARNING,
                )
            if kind == "task_skipped":  # lf.Skip says "nothing to do": no warning
                level = logging.INFO if isinstance(event.error, Skip) else logging.WARNING
                return f"{tag}Skipped: {event.task} ({event.reason})", level
            if kind == "task_cancelled":
                return f"{tag}Cancelled: {event.task} ({event.reason})", logging.WARNING
        elif isinstance(event, RunEvent) and kind == "run_finished":
            line = final_line(
                event.status or "",
                event.counts,
                event.total,
                event.duration or 0.0,
                event.sequential_estimate or 0.0,
            )
            return line, logging.INFO if event.status == "succeeded" else logging.ERROR
        return None, logging.DEBUG


#: below this, a run's speedup is mostly noise: it is not shown
SHORTEST_COMPARED = 0.05


def timing_text(status: str, duration: float, sequential: float) -> str:
    """``in 2.8s (sequential estimate 10.3s, speedup 3.7x)``; a failed, stopped or
    interrupted run, or one too short to compare, gets no speedup, and says why."""
    if status != "succeeded":
        return f"in {duration:.1f}s (no speedup: the run {status})"
    if duration < SHORTEST_COMPARED:
        return f"in {duration * 1000:.0f} ms (too short for a speedup to mean anything)"
    speedup = sequential / duration if duration > 0 and sequential > 0 else 1.0
    return f"in {duration:.1f}s (sequential estimate {sequential:.1f}s, speedup {speedup:.1f}x)"


def final_line(
    status: str, counts: dict[str, int], total: int, duration: float, sequential: float
) -> str:
    """``Completed 4 tasks in 2.8s (sequential estimate 10.3s, speedup 3.7x)``, or what
    went wrong; reused and cached tasks count as completed."""
    tail = timing_text(status, duration, sequential)
    finished = ("succeeded", "reused", "cached")
    done = sum(counts.get(s, 0) for s in finished)
    if status == "succeeded":
        again = ", ".join(
            f"{counts[s]} {s}" for s in ("reused", "cached", "skipped") if counts.get(s)
        )
        return f"Completed {counted(done, 'task')} {tail}" + (f" ({again})" if again else "")
    others = ", ".join(f"{n} {s}" for s, n in counts.items() if s not in finished and n)
    return f"Run {status}: {done} of {counted(total, 'task')} completed ({others}) {tail}"
