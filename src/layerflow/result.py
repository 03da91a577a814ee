"""What a run produced: :class:`RunResult`, with one :class:`TaskRun` per task (the records
are in ``records.py``; this module re-exports them)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .errors import (
    NoValueError,  # noqa: F401 (re-exported)
    did_you_mean,
    safe_str,
)
from .events import timing_text
from .metrics import format_metrics
from .names import counted, duration, owner_of
from .records import (
    RUN_STATUSES,
    TASK_STATUSES,
    Attempt,
    TaskRun,
    TaskRuns,
    Timeline,
    Wait,
    assign_lanes,
    budget_line,
    timeline,
)

__all__ = [
    "TaskRun",
    "TaskRuns",
    "RunResult",
    "Attempt",
    "Wait",
    "NoValueError",
    "TASK_STATUSES",
    "RUN_STATUSES",
    "assign_lanes",
    "budget_line",
    "format_metrics",
    "timeline",
]


class RunResult:
    """The outcome of ``flow.run``: values, per-task records, and timing."""

    def __init__(
        self,
        *,
        run_id: str,
        flow_name: str | None,
        status: str,
        tasks: Mapping[str, TaskRun],
        order: list[str],
        layers: list[list[str]] | Callable[[], list[list[str]]],
        critical_path: list[str] | Callable[[], list[str]],
        started_at: float,
        finished_at: float,
        released: frozenset[str] = frozenset(),
        timeline: Timeline | Callable[[], Timeline] | None = None,
        edges: list[tuple[str, str]] | Callable[[], list[tuple[str, str]]] | None = None,
        predicted: float | Callable[[], float] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self.run_id = run_id
        self.flow_name = flow_name
        self.status = status
        self.tasks = tasks
        self.order = order
        self._layers = layers
        self._critical_path = critical_path
        self.started_at = started_at
        self.finished_at = finished_at
        self._released = released
        self._timeline = timeline or ([], [])
        self._edges = edges or []
        self._predicted = predicted
        #: the group each task is shown under in reports, by name (a Dask key's group);
        #: empty when no task has a ``label``
        self.labels: Mapping[str, str] = labels or {}
        #: why a ``"stopped"`` run stopped (a budget, a checkpoint), else None
        self.stop_reason: str | None = None
        #: per budget of the run: ``{"budget": ceiling, "spent": what this run recorded}``
        self.budget: dict[str, dict[str, float]] = {}
        #: CPU seconds of the tasks that took longer than 5 ms on threads or in worker
        #: processes, by name (``cpu_threads``: which of them ran on threads)
        self.cpu: dict[str, float] = {}
        self.cpu_threads: frozenset[str] = frozenset()
        self._bound: Callable[[], str] | None = None  # set by the run: see bound_by
        self._details: Callable[[], dict[str, str]] | dict[str, str] = {}  # see details

    @property
    def critical_path(self) -> list[str]:
        """The longest chain of dependent tasks by their measured durations."""
        if callable(self._critical_path):
            self._critical_path = self._critical_path()
        return self._critical_path

    @property
    def layers(self) -> list[list[str]]:
        """Task names by layer, as in ``plan.layers``."""
        if callable(self._layers):
            self._layers = self._layers()
        return self._layers

    @property
    def attempts(self) -> list[Attempt]:
        """Every attempt of every task, in order of start, each with its worker lane."""
        if callable(self._timeline):
            self._timeline = self._timeline()
        return self._timeline[0]

    @property
    def waits(self) -> list[Wait]:
        """The times tasks were held back: by a resource pool, a rate limit, or a retry
        delay, in order of start."""
        if callable(self._timeline):
            self._timeline = self._timeline()
        return self._timeline[1]

    @property
    def edges(self) -> list[tuple[str, str]]:
        """Every dependency as an (upstream, downstream) pair of task names."""
        if callable(self._edges):
            self._edges = self._edges()
        return self._edges

    @property
    def predicted(self) -> float | None:
        """The wall time predicted at the start from past runs of the flow (median task
        durations simulated under the run's workers and limits), in seconds; None when the
        store had no history for it."""
        if callable(self._predicted):
            self._predicted = self._predicted()
        return self._predicted

    @property
    def details(self) -> dict[str, str]:
        """What each task is, for people, by name: its description and what it calls (a
        YAML step's command, a step function with its params, a function and its file and
        line); empty for a run loaded from the store."""
        if callable(self._details):
            try:
                self._details = self._details()
            except Exception:  # a nicety of the report: never its failure
                self._details = {}
        return self._details

    @property
    def bound_by(self) -> str | None:
        """What bound the run's wall time, by the planner's simulation of its measured
        durations under its limits: ``"critical path"``, ``"workers"``, ``"pool NAME"``,
        ``"rate limit NAME"``, ``"layers"`` or two of them joined by ``+``; ``None`` for a
        run loaded from the store or one the simulation cannot model."""
        if callable(self._bound):
            try:
                self._bound = self._bound()  # type: ignore[assignment]
            except Exception:  # an explanation is a nicety: never a failure of the report
                self._bound = None
        return self._bound  # type: ignore[return-value]

    def cpu_note(self) -> str | None:
        """The CPU time of the run's long tasks (on threads and in worker processes), and
        a warning when thread tasks were CPU-bound Python that the GIL ran one at a time
        (so the speedup counts waiting as work): ``None`` without long tasks."""
        if not self.cpu or self.duration <= 0:
            return None
        busy = sum(self.tasks[n].duration for n in self.cpu if n in self.tasks)
        used = sum(self.cpu.values())
        line = (
            f"CPU: {duration(used)} in {counted(len(self.cpu), 'task')} "
            f"({duration(used / len(self.cpu))} each), {used / busy:.0%} of their time"
            if busy > 0
            else f"CPU: {duration(used)}"
        )
        threads = [self.cpu[n] for n in self.cpu_threads if n in self.cpu]
        cores = sum(threads) / self.duration  # CPUs the thread tasks kept busy on average
        if threads and self.speedup >= 1.5 and self.duration >= 0.2 and 0.75 <= cores < 1.4:
            line += (
                f". Warning: the thread tasks together kept about one CPU busy ({cores:.0%} of "
                f"the run), so they ran one at a time: threads do not run Python in parallel "
                f"(the GIL), and the speedup of {self.speedup:.1f}x counts that waiting as "
                f"work. Try backend='process' (--backend process)"
            )
        return line

    def prediction_note(self) -> str | None:
        """How far the prediction was from what happened, for people, e.g. "predicted 5.1s
        from past runs; took 5.3s (4% slower)"; None without a prediction."""
        predicted = self.predicted
        if predicted is None:
            return None
        took = self.duration
        line = f"predicted {predicted:.2f}s from past runs; took {took:.2f}s"
        if self.status != "succeeded":
            return f"predicted {predicted:.2f}s from past runs; {self.status} after {took:.2f}s"
        if predicted <= 0:
            return line
        off = (took - predicted) / predicted
        if abs(off) < 0.005:
            return line + " (as predicted)"
        return line + f" ({abs(off):.0%} {'slower' if off > 0 else 'faster'})"

    def to_chrome_trace(self, path: str | os.PathLike[str]) -> Path:
        """Write the run in Chrome's trace event format (open it in Perfetto or
        chrome://tracing): a lane per worker slot, an event per attempt, and the waits for
        limits and retries as their own events. Returns the path written."""
        from .report import write_chrome_trace

        return write_chrome_trace(self, path)

    def to_html(self, path: str | os.PathLike[str]) -> Path:
        """Write a self-contained HTML report (works offline): summary, timeline, the graph
        by layers and a sortable table of tasks. Returns the path written."""
        from .report import write_html

        return write_html(self, path)

    @property
    def ok(self) -> bool:
        """True when every task succeeded."""
        return self.status == "succeeded"

    @property
    def duration(self) -> float:
        """Wall-clock seconds from start to end."""
        return self.finished_at - self.started_at

    @property
    def sequential_estimate(self) -> float:
        """Seconds the tasks would have taken one after another (sum of their durations)."""
        return sum(t.duration for t in self.tasks.values())

    @property
    def speedup(self) -> float:
        """``sequential_estimate / duration`` (1.0 for a run that did no measurable work)."""
        wall = self.duration
        work = self.sequential_estimate
        return work / wall if wall > 0 and work > 0 else 1.0

    @property
    def metrics(self) -> dict[str, float]:
        """Every task's ``metrics``, summed by name."""
        total: dict[str, float] = {}
        for t in self.tasks.values():
            for k, v in t.metrics.items():
                total[k] = total.get(k, 0) + v
        return total

    def counts(self) -> dict[str, int]:
        """How many tasks ended in each status."""
        out: dict[str, int] = {}
        for t in self.tasks.values():
            out[t.status] = out.get(t.status, 0) + 1
        return out

    def __getitem__(self, name: str) -> Any:
        t = self.tasks.get(name)
        if t is None:
            raise NoValueError(
                f"no task {name!r} in this run.{did_you_mean(name, self.tasks)}"
                if self.tasks
                else f"no task {name!r} in this run (it ran no task)"
            )
        if name in self._released:
            raise NoValueError(
                f"the value of {name!r} was released once every task that used it had "
                f"finished; name it in outputs=[...] to keep it"
            )
        if not t.ok:
            why = f": {safe_str(t.error)}" if t.error is not None else ""
            how = "failed" if t.status == "failed" else f"was {t.status}"
            raise NoValueError(f"task {name!r} has no value: it {how}{why}")
        return t.value

    def get(self, name: str, default: Any = None) -> Any:
        """The value of ``name``, or ``default`` when it has none."""
        try:
            return self[name]
        except NoValueError:
            return default

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name, _MISSING) is not _MISSING

    def __iter__(self) -> Iterator[str]:
        return iter(self.tasks)

    @property
    def values(self) -> dict[str, Any]:
        """Every available value by task name."""
        return {name: self[name] for name in self.tasks if name in self}

    def summary(self) -> str:
        """A readable table of the run: status, timing, speedup and one row per task."""
        title = f" of flow {self.flow_name!r}" if self.flow_name else ""
        timing = timing_text(self.status, self.duration, self.sequential_estimate)
        lines = [f"Run {self.run_id}{title}: {self.status} {timing}"]
        for note in (self.prediction_note(), self.cpu_note()):
            if note is not None:
                lines.append(note)
        rows: list[tuple[str, ...]] = [("task", "status", "layer", "attempts", "duration", "error")]
        for t, elements in _grouped(self.tasks):
            rows.append(_row(t))
            if not elements:
                continue
            # a map's elements: counts by status, then the ones that did not succeed
            by_status: dict[str, int] = {}
            for e in elements:
                by_status[e.status] = by_status.get(e.status, 0) + 1
            counts = ", ".join(f"{n} {s}" for s, n in by_status.items())
            summary = f"{counted(len(elements), 'element')}: {counts}"
            rows.append((f"  {t.name}[...]", "", "", "", "", summary))
            odd = [e for e in elements if e.status in ("failed", "skipped", "cancelled")]
            for e in odd[:_ODD_SHOWN]:
                name, *rest = _row(e)
                rows.append((f"  {name}", *rest))
            if len(odd) > _ODD_SHOWN:
                rows.append((f"  ... and {len(odd) - _ODD_SHOWN} more", "", "", "", "", ""))
        shown = rows if len(rows) <= 41 else rows[:41]
        widths = [max(len(r[c]) for r in shown) for c in range(6)]
        for r in shown:
            lines.append("  " + "  ".join(r[c].ljust(widths[c]) for c in range(6)).rstrip())
        if len(rows) > 41:
            lines.append(f"  ... and {counted(len(rows) - 41, 'more task')}")
        counts = ", ".join(f"{n} {s}" for s, n in self.counts().items())
        lines.append(f"tasks: {counts}")
        if self.budget:
            lines.append("budget: " + budget_line(self.budget))
        if self.stop_reason:
            lines.append(f"stopped: {self.stop_reason}")
        if self.critical_path:
            lines.append("critical path: " + " -> ".join(self.critical_path))
        metrics = self.metrics
        if metrics:
            line = "metrics: " + format_metrics(metrics)
            failed: dict[str, float] = {}
            for t in self.tasks.values():
                if t.status == "failed":
                    for k, v in t.metrics.items():
                        failed[k] = failed.get(k, 0) + v
            if failed:
                line += f" (of which in failed tasks: {format_metrics(failed)})"
            lines.append(line)
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        """How a notebook shows the run: the report's summary cards, timeline and graph,
        inline (no script, no request; big runs drawn in part, as the report says)."""
        from .notebook import run_html

        return run_html(self)

    def __repr__(self) -> str:
        timing = timing_text(self.status, self.duration, self.sequential_estimate)
        return (
            f"<RunResult {self.run_id} {self.status}: {counted(len(self.tasks), 'task')} {timing}>"
        )


#: a map's elements that did not succeed, shown one by one in the summary (the rest counted)
_ODD_SHOWN = 5


def _grouped(tasks: Mapping[str, TaskRun]) -> Iterator[tuple[TaskRun, list[TaskRun]]]:
    """Each task with its map elements (``name[k]``, listed right after it)."""
    current: TaskRun | None = None
    elements: list[TaskRun] = []
    for name, t in tasks.items():
        if current is not None and owner_of(name) == current.name:
            elements.append(t)
            continue
        if current is not None:
            yield current, elements
        current, elements = t, []
    if current is not None:
        yield current, elements


def _row(t: TaskRun) -> tuple[str, str, str, str, str, str]:
    err = safe_str(t.error) if t.error is not None else ""
    if len(err) > 60:
        err = err[:57] + "..."
    return (t.name, t.status, str(t.layer), str(t.attempts), f"{t.duration:.2f}s", err)


_MISSING = object()
