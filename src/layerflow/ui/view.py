"""A run as the page shows it, read from the store: a finished run as ``Store.load_run``
gives it; a running one from what the store holds so far (its graph, recorded at the start,
and the results committed) merged with its latest heartbeat (``heartbeat.py``: what is
running, waiting, retrying or failed). A run whose heartbeat stopped is told apart: its
process gone (killed, crashed) or not responding.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import RecordedError
from ..heartbeat import SIMULATED
from ..names import owner_of
from ..result import Attempt, RunResult, TaskRun, Wait, assign_lanes
from ..store import Store

__all__ = ["STALE", "RunView", "liveness", "load_view"]

#: seconds without a heartbeat (beats come every second) after which a run that is still
#: recorded as running is said not to be going any more
STALE = 10.0

#: what a task that was running when its run stopped beating is shown as
UNFINISHED = "unfinished"


@dataclass
class RunView:
    """One run for the page: ``result`` (what the report's pictures draw), ``status`` as
    shown (a run status, or ``running``, ``crashed``, ``not responding``, ``unfinished``),
    ``note`` (why, for people), ``live`` (the page keeps polling), ``counts`` by task
    status, ``total`` tasks, ``waiting`` (tasks held by a pool or rate limit now, as
    (name, reason, since)), ``options`` (what the run was given), ``heard`` (its latest
    heartbeat, epoch seconds), ``ended`` (on record: the view is final)."""

    result: RunResult
    status: str
    note: str | None = None
    live: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    total: int = 0
    waiting: list[tuple[str, str, float]] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    heard: float | None = None
    ended: bool = False  # ended on record: the view cannot change any more


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def _process_gone(pid: int | None, host: str | None) -> bool | None:
    """Whether the process ``pid`` on ``host`` is gone (None: cannot tell from here)."""
    if not pid or host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OSError):  # another user's: it exists
        return False
    return False


def _resume(run_id: str) -> str:
    return (
        f"The results it finished are kept: layerflow run FILE --resume {run_id} (or "
        f"flow.run(..., resume={run_id!r})) runs the rest."
    )


def liveness(
    started_at: float | None, live: dict[str, Any] | None, now: float, run_id: str = "RUN_ID"
) -> tuple[str, str | None]:
    """How a run the store lists as ``running`` is doing, as (status, note): ``running``,
    ``crashed`` (its process is gone, or no heartbeat for long) or ``not responding``."""
    if live is None:  # recorded by a version without heartbeats, or its start was cut short
        if started_at is not None and now - started_at > STALE:
            return "crashed", (
                "This run never ended, and nothing says it is still going (it was started "
                "by an earlier layerflow, or its process was killed). " + _resume(run_id)
            )
        return "running", None
    at, pid, host = live["at"], live["pid"], live["host"]
    silent = now - at
    gone = _process_gone(pid, host)
    if gone:
        return "crashed", (
            f"This run never ended: its process ({pid}) is gone, killed or crashed; it was "
            f"last heard from {_ago(silent)} ago. " + _resume(run_id)
        )
    if silent <= STALE:
        return "running", None
    if gone is False:
        return "not responding", (
            f"No heartbeat from this run for {_ago(silent)}, but its process ({pid}) is still "
            f"there: it may be stopped (Ctrl-Z) or stuck holding the interpreter."
        )
    return "crashed", (
        f"No heartbeat from this run for {_ago(silent)} (it ran on {host}, pid {pid}): it "
        f"probably crashed. " + _resume(run_id)
    )


def load_view(store: Store, run_id: str, now: float | None = None) -> RunView:
    """The run ``run_id`` as the page shows it (``StoreError`` when there is no such run)."""
    now = time.time() if now is None else now
    result = store.load_run(run_id)
    graph = store.run_graph(run_id) or {}
    options = graph.get("options") or {}
    if result.status != "running":
        with contextlib.suppress(Exception):  # an explanation is a nicety, never a failure
            _bound(result, graph, options)
        counts = result.counts()
        return RunView(
            result, result.status, counts=counts, total=len(result.tasks), options=options
        )
    live = store.live(run_id)
    status, note = liveness(result.started_at, live, now, run_id)
    state = (live or {}).get("state") or {}
    heard = live["at"] if live else None
    end = now if status == "running" else max(heard or result.started_at, result.started_at)
    view = _merge(result, graph, state, status, end)
    view.note, view.options, view.heard = note, options, heard
    view.live = status in ("running", "not responding")
    return view


def _merge(
    stored: RunResult, graph: dict[str, Any], state: dict[str, Any], status: str, end: float
) -> RunView:
    """A running run: its graph's tasks, each as the store has it (succeeded: its result is
    committed), else as its latest heartbeat lists it, else pending."""
    names: list[str] = graph.get("names") or list(stored.tasks)
    layer_of: list[int] = graph.get("layers") or [0] * len(names)
    needs: list[list[int]] = graph.get("needs") or [[] for _ in names]
    listed: dict[str, list[Any]] = state.get("tasks") or {}
    stopped = status != "running"
    tasks: dict[str, TaskRun] = {}
    extra: dict[str, list[str]] = {}  # map task -> its elements (stored or listed)
    for name in [*stored.tasks, *listed]:
        owner = owner_of(name)
        if owner:
            extra.setdefault(owner, [])
            if name not in extra[owner]:
                extra[owner].append(name)
    layers: list[list[str]] = []
    running: list[Attempt] = []
    index = {name: k for k, name in enumerate(names)}

    def add(name: str, layer: int) -> None:
        known = stored.tasks.get(name)
        row = listed.get(name)
        if known is not None and (row is None or known.ok):
            tasks[name] = known
            return
        if row is None:
            tasks[name] = TaskRun(name, "pending", layer=layer)
            return
        shown, attempts, first, this, busy, error, tb = row
        if shown == "running" and stopped:
            shown = UNFINISHED
        if shown in ("running", UNFINISHED) and this is not None:
            busy += max(end - this, 0.0)
            running.append(Attempt(name, attempts, this, end, shown, None, 0))
        tasks[name] = TaskRun(
            name,
            shown,
            None,
            RecordedError(error, tb) if error is not None else None,
            attempts,
            first,
            end if shown in ("running", UNFINISHED) else (this if attempts else None),
            busy,
            layer,
        )

    for k, name in enumerate(names):
        layer = layer_of[k] if k < len(layer_of) else 0
        while len(layers) <= layer:
            layers.append([])
        layers[layer].append(name)
        add(name, layer)
        for element in extra.pop(name, ()):
            add(element, layer)
    for rest in extra.values():
        for element in rest:
            add(element, 0)
    edges = [(names[j], names[k]) for k, ups in enumerate(needs) for j in ups if j < len(names)]
    spans = [a for a in stored.attempts]
    spans += [
        Attempt(name, attempt, t0, t1, outcome, error, 0)
        for name, attempt, t0, t1, outcome, error in state.get("spans") or ()
        if name in index or owner_of(name)
    ]
    spans += running
    spans.sort(key=lambda a: (a.started_at, a.finished_at))
    lanes = assign_lanes([(a.started_at, a.finished_at) for a in spans])
    attempts = [a._replace(lane=lane) for a, lane in zip(spans, lanes, strict=True)]
    held = [
        (name, kind, reason, t0, t1 if t1 is not None else end)
        for name, kind, reason, t0, t1 in state.get("waits") or ()
    ]
    held.sort(key=lambda w: (w[3], w[4]))
    wait_lanes = assign_lanes([(w[3], w[4]) for w in held])
    waits = [Wait(*w, lane) for w, lane in zip(held, wait_lanes, strict=True)]
    result = RunResult(
        run_id=stored.run_id,
        flow_name=stored.flow_name,
        status=status,
        tasks=tasks,
        order=[a.task for a in attempts if a.attempt == 1],
        layers=layers,
        critical_path=[],
        started_at=stored.started_at,
        finished_at=end,
        timeline=(attempts, waits),
        edges=edges,
    )
    result.stop_reason = state.get("stop_reason")
    result.budget = state.get("budget") or {}
    counts = result.counts()
    total = len(tasks)
    entries = state.get("entries") or 0
    if entries > total:  # map elements not listed yet (or past the heartbeat's lists)
        counts["pending"] = counts.get("pending", 0) + entries - total
        total = entries
    waiting = [
        (name, reason, t0)
        for name, _kind, reason, t0, t1 in state.get("waits") or ()
        if t1 is None and not stopped
    ]
    if waiting:
        counts["waiting"] = len(waiting)
        counts["pending"] = max(counts.get("pending", 0) - len(waiting), 0)
    return RunView(result, status, counts=counts, total=total, waiting=waiting)


def _bound(result: RunResult, graph: dict[str, Any], options: dict[str, Any]) -> None:
    """What bound a finished run (the report's line), by the planner's simulation of its
    recorded durations under the options it was given, for runs small enough to simulate
    on a page request."""
    names = graph.get("names")
    if not names or len(names) > SIMULATED or not options or result.duration < 0.05:
        return
    from ..flow import Flow

    needs = graph.get("needs") or []
    limits = options.get("limits") or {}
    flow = Flow("bound")
    for k, name in enumerate(names):
        mine = limits.get(name) or {}
        flow.add(
            _nothing,
            name=name,
            after=[names[j] for j in needs[k]] if k < len(needs) else [],
            resources=mine.get("resources") or None,
            rate_limit=mine.get("rate_limit"),
        )
    plan = flow.plan()
    durations = {n: t.duration for n, t in result.tasks.items() if n in plan.graph.index}
    bound = plan.binding(
        durations,
        options.get("max_workers"),
        options.get("mode") or "dynamic",
        options.get("resources") or {},
        options.get("rate_limits") or {},
    )
    result._bound = lambda: bound


def _nothing() -> None:
    """The stand-in for every task of a flow rebuilt to be simulated."""
