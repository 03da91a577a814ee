"""Recording: what the run looked like, for the ``RunResult`` and progress displays."""

from __future__ import annotations

import time
from collections.abc import Sequence
from itertools import islice
from typing import TYPE_CHECKING, Any

from ..progress import Progress
from ..result import RunResult, TaskRun, TaskRuns, timeline
from .state import (
    _RUNNING,
    _STATUS_NAMES,
    _SUCCEEDED,
)

if TYPE_CHECKING:  # State, with what every part declares (parts.py)
    from .state import State
else:  # for the type checker only
    State = object


class Recording(State):
    """Recording: what the run looked like, for the ``RunResult`` and progress displays."""

    def _init_recording(self) -> None:
        """``started`` (entries in start order), ``spans`` (a plain tuple per attempt that did
        not succeed: a succeeded one is known from the per-entry records), ``metrics``
        (``lf.record``'s numbers by entry), ``final_counts`` (entries that ended, by status),
        ``live`` (a live progress display reading ``snapshot``), ``_scan_from``."""
        self.started: list[int] = []
        self.spans: list[tuple[int, int, float, float, BaseException | None]] = []
        self.metrics: dict[int, dict[str, float]] = {}
        self.final_counts = [0] * len(_STATUS_NAMES)
        self.live: Progress | None = None
        self._scan_from = 0  # snapshot(): tasks before it in ``started`` have all ended

    def snapshot(self, running: int = 10) -> dict[str, Any]:
        """What a progress display shows, read without the lock (a display may be a
        moment behind): ``counts`` by final status, ``running_count``, the ``running``
        tasks that started first as (name, epoch start of this attempt, attempt, attempts
        allowed), ``waiting``: up to ``running`` tasks held by a pool or a rate limit as
        (name, "pool" or "rate_limit", the limit's name, epoch since), ``waiting_count``,
        ``total`` and ``elapsed``."""
        status = self.status
        final = self.final_counts
        counts = {_STATUS_NAMES[c]: final[c] for c in range(_SUCCEEDED, len(final))}
        started = self.started
        # the earliest-started tasks still running: past a pointer over the finished
        # prefix, which moves a bounded step per refresh (a refresh holds the GIL that the
        # workers need: on a 100k-task run it must stay at a millisecond or so)
        window = 4096
        n = len(started)
        k = self._scan_from
        stop = min(n, k + window)
        while k < stop and status[started[k]] >= _SUCCEEDED:
            k += 1
        self._scan_from = k
        offset = self.wall0 - self.perf0
        shown: list[tuple[str, float, int, int]] = []
        near = range(k, min(n, k + window))
        latest = range(max(k + window, n - window), n)  # if the pointer lags behind
        for span in (near, latest):
            for j in span:
                i = started[j]
                if status[i] == _RUNNING:
                    tries = self.attempts[i]
                    allowed = self.spec[i].retries + 1
                    shown.append((self.names[i], self.last_end[i] + offset, tries, allowed))
                    if len(shown) >= running:
                        break
            if len(shown) >= running:
                break
        held = self.parked_since  # the admission policy's own dict: it changes meanwhile
        try:  # the first few only: 100k tasks behind one pool must not cost a refresh
            parked = list(islice(held.items(), running))
        except RuntimeError:  # it changed while being read: the next refresh shows it
            parked = []
        waiting = [
            (self.names[i], kind, str(name), since + offset) for i, (kind, name, since) in parked
        ]
        return {
            "counts": counts,
            "running_count": self.running,
            "running": shown,
            "waiting": waiting,
            "waiting_count": len(held),
            "total": len(self.names),
            "elapsed": time.perf_counter() - self.perf0,
        }

    def _counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.status:
            name = _STATUS_NAMES[s]
            out[name] = out.get(name, 0) + 1
        return out

    def result(self) -> RunResult:
        """The run's outcome as a :class:`RunResult` (call after the run has ended)."""
        names = self.names
        offset = self.wall0 - self.perf0  # perf_counter reading -> seconds since the epoch
        order: Sequence[int] = range(self.n)
        if self.children:  # subtasks right after their task
            listed: list[int] = []
            for i in range(self.n):
                listed.append(i)
                listed.extend(self.children.get(i, ()))
            order = listed
        status, values, errors = self.status, self.values, self.errors
        attempts, first, last, busy = self.attempts, self.first_start, self.last_end, self.busy
        layer, children, metrics = self.layer, self.children, self.metrics
        output = self.output

        def make(k: int) -> TaskRun:
            i = order[k]
            a = attempts[i]
            started = a or (i in children and last[i] > 0)
            return TaskRun(
                names[i],
                _STATUS_NAMES[status[i]],
                values[i],
                errors[i],
                a,
                first[i] + offset if started else None,
                last[i] + offset if started else None,
                busy[i] if i not in children else 0.0,
                layer[i],
                metrics.get(i, {}),
                output.text(i),
            )

        tasks = TaskRuns([names[i] for i in order], make)
        durations = self._static_durations()
        plan = self.plan  # the result keeps the plan, not the whole run state
        spans, waits, parked, end = self.spans, self.waits, self.parked_since, self.end
        result = RunResult(
            run_id=self.run_id,
            flow_name=self.graph.flow_name,
            status=self.outcome,
            tasks=tasks,
            order=[names[i] for i in self.started],
            layers=lambda: plan.layers,
            critical_path=lambda: plan._longest(plan._longest_to(durations)),
            timeline=lambda: timeline(
                names,
                [_STATUS_NAMES[s] for s in status],
                attempts,
                first,
                last,
                busy,
                spans,
                waits,
                parked,
                offset,
                end,
            ),
            edges=plan.edges,
            predicted=self.predicted,
            started_at=self.wall0,
            finished_at=self.end + offset,
            released=frozenset(names[i] for i in range(self.n) if self.released[i])
            if self.release
            else frozenset(),
            labels={names[i]: t.label for i, t in enumerate(self.spec[: self.n]) if t.label},
        )
        result.stop_reason = self.stop_reason
        specs = self.spec[: self.n]
        result._details = lambda: {names[i]: _detail(t) for i, t in enumerate(specs)}
        result._bound = lambda: plan.binding(
            {names[i]: durations[i] for i in range(self.n)}, *self.given_limits
        )
        result.cpu = {names[i]: c for i, c in self.cpu_times.items() if i < self.n}
        result.cpu_threads = frozenset(result.cpu)  # the GIL note is about these
        result.cpu.update((names[i], c) for i, c in self.cpu_foreign.items() if i < self.n)
        result.budget = self.budget_report()
        return result

    def for_store(self) -> tuple[bytearray, list[Any], list[Any], dict[str, float]]:
        """What the store records at the run's end, from the run's own lists (through the
        ``RunResult``, a 100,000-task run would build a record and an attempt per task):
        ``once``, 1 for each entry that succeeded at its first attempt (its stored result
        says when it ran); the attempts of the others and every wait, as ``timeline``
        gives them; the run's ``lf.record`` numbers, summed."""
        status, attempts = self.status, self.attempts
        once = bytearray(len(status))
        tries = list(attempts)
        for i, s in enumerate(status):
            if s == _SUCCEEDED and attempts[i] == 1:
                once[i] = 1
                tries[i] = 0  # its attempt is left out
        spans, waits = timeline(
            self.names,
            [_STATUS_NAMES[s] for s in status],
            tries,
            self.first_start,
            self.last_end,
            self.busy,
            self.spans,
            self.waits,
            self.parked_since,
            self.wall0 - self.perf0,
            self.end,
        )
        totals: dict[str, float] = {}
        for i in sorted(self.metrics):
            for k, v in self.metrics[i].items():
                totals[k] = totals.get(k, 0) + v
        return once, spans, waits, totals

    def _static_durations(self) -> list[float]:
        """Seconds per graph task; a map task's are its subtasks' wall span."""
        busy = self.busy[: self.n]
        for m, kids in self.children.items():
            if kids and self.status[m] == _SUCCEEDED:
                busy[m] = self.last_end[m] - self.first_start[m]
        return busy


def _detail(task: Any) -> str:
    """What a report shows of a task's definition: its description, and what it calls (a
    YAML step's command or step function with its params; else the function and where it
    is defined)."""
    lines = [task.description] if task.description else []
    detail = getattr(task.fn, "detail", None)
    if isinstance(detail, str):
        lines.append(detail)
    else:
        fn = task.fn
        code = getattr(fn, "__code__", None)
        where = f"  ({code.co_filename}:{code.co_firstlineno})" if code is not None else ""
        name = getattr(fn, "__qualname__", None) or type(fn).__name__
        lines.append(f"{getattr(fn, '__module__', '?')}.{name}(){where}")
    return "\n".join(lines)
