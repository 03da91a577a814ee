"""What a run produced: :class:`RunResult` and one :class:`TaskRun` per task."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import LayerflowError, did_you_mean, safe_str

__all__ = ["TaskRun", "TaskRuns", "RunResult", "NoValueError", "TASK_STATUSES", "RUN_STATUSES"]

TASK_STATUSES = ("succeeded", "failed", "skipped", "cancelled", "cached", "reused")
RUN_STATUSES = ("succeeded", "failed", "stopped", "interrupted")


class NoValueError(LayerflowError, KeyError):
    """``run[name]`` for a task that has no value (not in the run, failed, or released)."""

    def __str__(self) -> str:  # KeyError would show the message quoted
        return str(self.args[0])


@dataclass(slots=True)
class TaskRun:
    """One task's record in a run.

    ``status`` is one of ``TASK_STATUSES`` (or ``"pending"`` in a run stopped before it was
    reached); ``error`` the exception instance; ``started_at``/``finished_at`` are seconds
    since the epoch (first attempt's start, last attempt's end); ``duration`` the seconds
    spent running, summed over attempts (retry waits excluded).
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

    @property
    def ok(self) -> bool:
        """True when the task has a value (succeeded, cached or reused)."""
        return self.status in ("succeeded", "cached", "reused")


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
        return f"<TaskRuns: {len(self)} tasks>"


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
        lines = [
            f"Run {self.run_id}{title}: {self.status} in {self.duration:.2f}s "
            f"(sequential estimate {self.sequential_estimate:.2f}s, "
            f"speedup {self.speedup:.1f}x)"
        ]
        rows = [("task", "status", "layer", "attempts", "duration", "error")]
        for t in self.tasks.values():
            err = safe_str(t.error) if t.error is not None else ""
            if len(err) > 60:
                err = err[:57] + "..."
            rows.append(
                (t.name, t.status, str(t.layer), str(t.attempts), f"{t.duration:.2f}s", err)
            )
        shown = rows if len(rows) <= 41 else rows[:41]
        widths = [max(len(r[c]) for r in shown) for c in range(6)]
        for r in shown:
            lines.append("  " + "  ".join(r[c].ljust(widths[c]) for c in range(6)).rstrip())
        if len(rows) > 41:
            lines.append(f"  ... and {len(rows) - 41} more tasks")
        counts = ", ".join(f"{n} {s}" for s, n in self.counts().items())
        lines.append(f"tasks: {counts}")
        if self.critical_path:
            lines.append("critical path: " + " -> ".join(self.critical_path))
        metrics = self.metrics
        if metrics:
            lines.append("metrics: " + ", ".join(f"{k}={v:g}" for k, v in metrics.items()))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"<RunResult {self.run_id} {self.status}: {len(self.tasks)} tasks in "
            f"{self.duration:.2f}s, speedup {self.speedup:.1f}x>"
        )


_MISSING = object()
