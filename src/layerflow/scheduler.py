"""The run loop: one state object whose small transitions run under one lock.

Whoever holds the news calls the transitions. The thread backend's workers are our own
threads: when a task returns, its worker calls :meth:`Run.complete`, which records the
result, releases the successors and hands the best ready task back to the same thread in
the same critical section, so a finished task passes its successor to the thread that just
freed up, with no hand-off to another thread (that hand-off, 20-100 us, is what makes a
ready-queue-plus-pool scheduler slow). Idle workers are woken only when more is ready than
the finishing worker takes. Tasks for other pools (coroutines on an event loop, worker
processes) are submitted by whoever makes them ready, and their backends' done-callbacks
call the same transitions (:meth:`Run._foreign_done`).

Task-selection policy (the keys of ``Plan.keys()``): among ready tasks, higher
``priority`` first, then the longest remaining path to a sink (critical path first), then
declaration order. ``layered`` holds back tasks of later layers until the current layer has
ended; ``sequential`` runs one task at a time in the plan's (or a seeded random) order.
``max_workers`` bounds the tasks running at once over all pools together.

State (lists indexed by entry: the graph's tasks ``0..n-1``, then the subtasks that a
``map`` adds at run time; every field guarded by ``lock``):

- ``status``: one of the ``_PENDING`` ... ``_CANCELLED`` codes below.
- ``waiting``: how many dependencies have not succeeded yet (graph tasks only).
- ``ready[kind]``: heap of keys of tasks that may start, one heap per pool kind.
- ``held``: per layer, tasks that a ``layered`` barrier still holds back.
- ``token``: bumped when a running attempt is abandoned (timeout, Ctrl-C), so the result
  that arrives later for it is recognised as stale and dropped.
- ``running`` / ``running_kind`` / ``threads`` / ``idle``: attempts running (all pools, per
  pool), worker threads that count towards the bound (abandoned ones do not), and how many
  of those are waiting for work.
- ``left``: entries not yet in a final state; the run is done when it reaches 0.
- ``parent`` / ``map_left`` / ``children``: a ``map`` subtask's task, and per mapped task
  how many subtasks have not finished and which they are.
- ``values``, ``errors``, ``attempts``, ``first_start``, ``last_end``, ``busy``: records.
"""

from __future__ import annotations

import heapq
import math
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .errors import (
    Cancelled,
    InvalidOptionError,
    LayerflowError,
    RunInterrupted,
    TaskFailed,
    TaskTimeout,
    _NoRetry,
    raise_all,
    safe_str,
)
from .events import (
    EventBus,
    LayerEvent,
    LogObserver,
    Observer,
    RunEvent,
    TaskEvent,
    final_line,
    logger,
)
from .graph import Task, _gc_paused, positional_args
from .limits import (
    LayerReport,
    RateLimited,
    Window,
    check_limits,
    resolve_max_workers,
    task_costs,
)
from .metrics import _BOX, open_box
from .metrics import add as add_metrics
from .plan import KEY_BASE, MODES, Plan
from .progress import Progress
from .progress import resolve as resolve_progress
from .result import RunResult, TaskRun, TaskRuns, timeline

__all__ = ["Run", "execute", "BACKENDS"]

_PENDING, _READY, _RUNNING, _RETRY_WAIT, _MAPPED = range(5)
_SUCCEEDED, _FAILED, _SKIPPED, _CANCELLED, _REUSED, _CACHED = range(5, 11)
_STATUS_NAMES = [
    "pending",
    "pending",
    "running",
    "pending",
    "running",
    "succeeded",
    "failed",
    "skipped",
    "cancelled",
    "reused",
    "cached",
]
_WAITING_STATES = (_PENDING, _READY, _RETRY_WAIT)

#: pool kinds; a task's kind comes from its ``executor`` option or the run's ``backend``
_THREAD, _ASYNC, _PROCESS, _DASK = range(4)
_KINDS = {"thread": _THREAD, "async": _ASYNC, "process": _PROCESS, "dask": _DASK}
_FOREIGN = (_ASYNC, _PROCESS, _DASK)
BACKENDS = ("thread", "process", "async", "dask")
#: what happens to a Dask task's value (see ``Run._plan_fetch``)
_FETCH_NOW, _FETCH_AT_END, _STAYS_REMOTE = range(3)
_INFINITE = 1 << 62
#: thread tasks shorter than this on average gain nothing from more threads (the GIL and
#: the run's lock serialize them; each extra thread only adds hand-offs): one worker runs
#: them, and the others are woken when a task turns out to take longer than _WATCH
_SHORT = 200e-6
_WATCH = 0.002


def _new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def _sync_call(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A coroutine function run to completion in a worker thread (``executor="thread"``)."""
    import asyncio

    def call(*args: Any, **kwargs: Any) -> Any:
        return asyncio.run(fn(*args, **kwargs))

    return call


class MapError(_NoRetry, TypeError):
    """The upstream value of a ``map`` task is not a list."""


class Run:
    """The mutable state of one run and its transitions (see the module docstring)."""

    def __init__(
        self,
        plan: Plan,
        inputs: Mapping[str, Any],
        *,
        mode: str = "dynamic",
        max_workers: int | None = None,
        fail_fast: bool = True,
        timeout: float | None = None,
        keep: Iterable[int] | None = None,
        observers: Sequence[Observer] = (),
        seed: int | None = None,
        backend: str = "thread",
        loop: Any = None,
        run_id: str | None = None,
        resources: Mapping[str, float] | None = None,
        rate_limits: Mapping[str, Any] | None = None,
        checkpoint: Callable[[LayerReport], Any] | None = None,
        preset: Mapping[int, Any] | None = None,
        persist: Callable[[int, Any, float, float], None] | None = None,
        lookup: Callable[[int, tuple[Any, ...], dict[str, Any]], tuple[bool, Any]] | None = None,
        address: str | None = None,
        client: Any = None,
    ) -> None:
        g = plan.graph
        self.plan = plan
        self.graph = g
        self.n = n = len(g)
        self.mode = mode
        self.fail_fast = fail_fast
        self.run_timeout = timeout
        self.run_id = run_id or _new_run_id()
        self.rng = random.Random(seed)
        self.loop = loop
        sequential = mode == "sequential"
        # with max_workers=None coroutines are unbounded; threads stop at the default cap
        self.limit = 1 if sequential else (max_workers or _INFINITE)
        self.thread_cap = 1 if sequential else resolve_max_workers(max_workers)
        if sequential:
            keys = [0] * n
            for pos, i in enumerate(plan.sequence(seed)):
                keys[i] = pos * KEY_BASE + i
            self.keys = keys
        else:
            self.keys = list(plan.keys())

        # limits are checked before any pool (worker processes, a cluster) is started
        pools, limits, problems = check_limits(g, resources, rate_limits)
        raise_all(problems, g.flow_name)
        with _gc_paused():
            self._init_entries(inputs, backend, address, client)
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.done = threading.Event()
        self.on_done: Callable[[], None] | None = None
        self.waiting = [len(d) for d in g.deps]
        self.ready: list[list[int]] = [[], [], [], []]
        self.ready_threads = self.ready[_THREAD]
        # a checkpoint answers after each layer before the next may start: a barrier
        self.checkpoint = checkpoint
        self.layered = mode == "layered" or checkpoint is not None
        self.current_layer = 0
        self.held: list[list[int]] = [[] for _ in range(g.n_layers)] if self.layered else []
        self.layer_left = [0] * g.n_layers
        for li in g.layer:
            self.layer_left[li] += 1
        self.layer_seen = bytearray(g.n_layers)
        self.layer_names: list[tuple[str, ...]] | None = None
        self.started: list[int] = []
        # for the trace and the report: a plain tuple per attempt that did not succeed (a
        # succeeded attempt is known from the records above) and per wait for a limit
        self.spans: list[tuple[int, int, float, float, BaseException | None]] = []
        self.parked_since: dict[int, tuple[str, Any, float]] = {}  # ready, held by a limit
        self.waits: list[tuple[int, str, Any, float, float]] = []
        self.left = n
        self.running = 0
        self.running_kind = [0, 0, 0, 0]
        self.threads = 0
        self.idle = 0
        self.stopping = False
        self.exiting = False
        self.outcome = "succeeded"
        self.cause: int = -1  # the task whose failure stopped the run
        self.cause_error: BaseException | None = None

        # values released once their last consumer finished (only when outputs were named;
        # a Dask task's copy on the cluster, always)
        self.release = keep is not None
        self.keep = bytearray(n)
        self.users_left: list[int] = []
        self.released = bytearray(n)
        if keep is not None:
            for i in keep:
                self.keep[i] = 1
        self.track_users = self.release or self.dask is not None
        if self.track_users:
            self.users_left = [len(s) for s in g.succs]

        self.free = pools  # free units per resource pool
        self.windows = {name: Window(limit) for name, limit in limits.items()}
        self.blocked_units: list[int] = []  # ready, waiting for pool units
        self.blocked_rate: list[int] = []  # ready, waiting for room in a rate window
        self.blocked_dask: list[int] = []  # ready, with a timeout: waiting for a Dask thread
        # recent thread-task duration (moving average) and completions, for _next's choice
        # of how many workers to keep busy; a watch wakes parked workers if one is stuck
        self.avg_task = 1.0
        self.progress = 0
        self.last_take = 0.0
        self.watching = False
        self.rate_wake = math.inf  # when a timer will look at blocked_rate again
        self.gated = any(self.need) or any(self.cost)

        self.group_deadline: dict[str | None, float] = {}  # parallel_group -> its deadline
        # resume: values loaded from the store for tasks that need not run again
        self.preset = dict(preset or {})
        # the prediction from past runs, for the result: fixed now, simulated when asked
        self.predicted = plan.prediction(max_workers, mode, resources, rate_limits, self.preset)
        # the store: called with (task, value, start, end) when a task succeeds, in the
        # worker (or callback) thread and before the run counts it done, so it is durable
        self.persist = persist
        # the cache: (task, args, kwargs) -> (hit, value), asked before a task runs
        self.lookup = lookup
        # Dask: the cluster's copy of finished values, by entry, and the values left there
        self.remote: dict[int, Any] = {}
        self.collected = False  # _collect_remote has run
        self.metrics: dict[int, dict[str, float]] = {}  # lf.record's numbers, by entry
        self.on_cluster: list[int] = []
        self.fetch_mode = bytearray(n)
        if self.dask is not None:
            self._plan_fetch()

        self.timer: _Timer | None = None
        self.live: Progress | None = None  # a live progress display, reading snapshot()
        self._scan_from = 0  # snapshot(): tasks before it in ``started`` have all ended
        self.final_counts = [0] * len(_STATUS_NAMES)  # entries that ended, by status
        self.bus = EventBus(list(observers)) if observers else None
        self.emit = self.bus.put if self.bus else None
        self.wall0 = time.time()
        self.perf0 = time.perf_counter()
        self.end = self.perf0

    def _init_entries(
        self, inputs: Mapping[str, Any], backend: str, address: str | None, client: Any
    ) -> None:
        """Per-entry lists for the graph's tasks (map subtasks are appended later)."""
        g = self.graph
        n = self.n
        tasks = g.tasks
        self.names = list(g.names)
        self.spec: list[Task] = list(tasks)
        self.layer = list(g.layer)
        self.kind: list[int] = []
        self.fns: list[Callable[..., Any]] = []
        default = _KINDS[backend if backend != "async" else "thread"]
        for t in tasks:
            if t.executor is not None:
                kind = _KINDS[t.executor]
            elif t.is_coroutine:
                kind = _ASYNC
            else:
                kind = default
            if kind == _ASYNC and not t.is_coroutine:
                raise InvalidOptionError(
                    f"task {t.name!r}: executor='async' needs an 'async def' function; "
                    f"use executor='thread' for a plain function"
                )
            self.kind.append(kind)
            self.fns.append(_sync_call(t.fn) if kind == _THREAD and t.is_coroutine else t.fn)
        self.consts: list[dict[str, Any] | None] = []
        for t, in_args in zip(tasks, g.input_args, strict=True):
            if not in_args and not t.params:
                self.consts.append(None)
                continue
            const = dict(t.params)
            for param, name in in_args:
                if name in inputs:
                    const[param] = inputs[name]
            self.consts.append(const or None)
        self.args: list[tuple[tuple[str, int], ...]] = list(g.args)
        self.positional = [t.signature.positional_only for t in tasks]
        self.need: list[Mapping[str, float] | None] = [t.resources or None for t in tasks]
        self.cost: list[dict[str, float] | None] = [
            None if t.rate_limit is None else task_costs(t.rate_limit) for t in tasks
        ]
        self.pushbacks = [0] * n  # RateLimited push-backs: retries that cost nothing
        self.status = [_PENDING] * n
        self.token = [0] * n
        self.values: list[Any] = [None] * n
        self.errors: list[BaseException | None] = [None] * n
        self.attempts = [0] * n
        self.first_start = [0.0] * n
        self.last_end = [0.0] * n
        self.busy = [0.0] * n
        self.seq = [0] * n
        self.handle: list[Any] = [None] * n
        self.parent = [-1] * n
        self.map_left: dict[int, int] = {}
        self.children: dict[int, list[int]] = {}
        self.backends: list[Any] = [None, None, None, None]
        self.kind_cap = [_INFINITE, _INFINITE, _INFINITE, _INFINITE]
        used = set(self.kind)
        if (address is not None or client is not None) and _DASK not in used:
            raise InvalidOptionError(
                "address= and client= are for the Dask backend: pass backend='dask' "
                "(or executor='dask' on the tasks that should run there)"
            )
        if _PROCESS in used:
            import os

            from .backends.process import ProcessBackend

            self.backends[_PROCESS] = ProcessBackend()
            cap = os.cpu_count() or 1
            self.kind_cap[_PROCESS] = cap if self.limit == _INFINITE else self.limit
            # start the workers now: their start-up overlaps the layers before them
            self.backends[_PROCESS].warm(min(self.kind_cap[_PROCESS], self.kind.count(_PROCESS)))
        if _ASYNC in used:
            from .backends.aio import AsyncBackend

            self.backends[_ASYNC] = AsyncBackend(self.loop)
        if _DASK in used:
            from .backends.dask import DaskBackend

            try:
                self.backends[_DASK] = DaskBackend(address=address, client=client)
                # ready tasks are handed to Dask at once (it queues them, which hides the
                # round trip of each completion); a task with a timeout waits here until
                # a worker thread is free, so its deadline does not count Dask's queue
                self.dask_threads = self.backends[_DASK].threads()
                self.kind_cap[_DASK] = self.limit
            except BaseException:
                for started in self.backends:
                    if started is not None:
                        started.close()
                raise
        self.dask = self.backends[_DASK]
        self.has_foreign = bool(used - {_THREAD})

    # --- helpers ------------------------------------------------------------------------

    def _task_event(self, kind: str, i: int, **fields: Any) -> None:
        self.emit(  # type: ignore[misc]
            TaskEvent(
                kind,
                self.names[i],
                time.time(),
                self.run_id,
                layer=self.layer[i],
                seq=self.seq[i],
                total=len(self.names),
                attempt=self.attempts[i],
                **fields,
            )
        )

    def _timer(self) -> _Timer:
        if self.timer is None:
            self.timer = _Timer(self)
        return self.timer

    def _plan_fetch(self) -> None:
        """Decide, per Dask task, when its value comes back to this process: at once when
        something here needs it (a task on another pool, a ``map`` over it, the store, a
        checkpoint's report); at the end of the run when the caller asks for it (every
        task when ``outputs`` were not named); never otherwise (it is released on the
        cluster once its last user has finished)."""
        g = self.graph
        kind = self.kind
        sources = set(g.map_source.values())
        here = self.persist is not None or self.checkpoint is not None
        for i in range(self.n):
            if kind[i] != _DASK:
                continue
            if here or i in sources or any(kind[s] != _DASK for s in g.succs[i]):
                self.fetch_mode[i] = _FETCH_NOW
            elif not self.release or self.keep[i]:
                self.fetch_mode[i] = _FETCH_AT_END
            else:
                self.fetch_mode[i] = _STAYS_REMOTE

    def _call_args(self, i: int, remote: bool = False) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The positional and keyword arguments of entry ``i``'s call; with ``remote``,
        upstream values that are on the Dask cluster are passed as their futures."""
        const = self.consts[i]
        kwargs = dict(const) if const else {}
        values = self.values
        for param, j in self.args[i]:
            kwargs[param] = values[j]
        if remote and self.remote:
            for param, j in self.args[i]:
                ref = self._remote_ref(j)
                if ref is not None:
                    kwargs[param] = ref
        if self.positional[i]:
            return tuple(positional_args(self.positional[i], kwargs)), kwargs
        return (), kwargs

    def _remote_ref(self, j: int) -> Any:
        """What stands for entry ``j``'s value on the Dask cluster (a future, or for a
        ``map`` task the list of its elements' futures); None when it is not there."""
        ref = self.remote.get(j)
        if ref is None and j in self.children:
            kids = self.children[j]
            if kids and all(k in self.remote for k in kids):
                return [self.remote[k] for k in kids]
        return ref

    def _owner(self, i: int) -> int:
        """The graph task of entry ``i`` (itself, or the task a ``map`` subtask belongs to)."""
        return i if i < self.n else self.parent[i]

    def _drop_remote(self, j: int) -> None:
        """Nobody will read entry ``j``'s copy on the cluster again: let Dask release it."""
        self.remote.pop(j, None)
        for k in self.children.get(j, ()):
            self.remote.pop(k, None)

    # --- transitions (mutate; call with ``lock`` held) -----------------------------------

    def _make_ready(self, i: int) -> None:
        """Entry ``i`` may start: hold it behind a layer barrier, expand it, or queue it."""
        self.status[i] = _READY
        if self.layered and self.layer[i] != self.current_layer:
            self.held[self.layer[i]].append(i)
        elif i < self.n and i in self.graph.map_source:
            self._expand(i)
        else:
            heapq.heappush(self.ready[self.kind[i]], self.keys[i])

    def _expand(self, m: int) -> None:
        """A ``map`` task's list has arrived: one subtask per element, ``name[k]``."""
        src = self.graph.map_source[m]
        items = self.values[src]
        name = self.names[m]
        if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
            err = MapError(
                f"task {name!r} maps over {self.names[src]!r}, which returned "
                f"{type(items).__name__}, not a list"
            )
            self.attempts[m] = 1
            self._fail(m, err)
            return
        if self.lookup is not None:  # the whole list, cached from an earlier run
            args, kwargs = self._call_args(m)
            hit, value = self.lookup(m, args, kwargs)
            if hit:
                self.first_start[m] = self.last_end[m] = time.perf_counter()
                self._succeed(m, value, _CACHED)
                return
        self.status[m] = _MAPPED
        k = len(items)
        if not k:
            self.first_start[m] = self.last_end[m] = time.perf_counter()
            self._succeed(m, [])
            return
        params = [p for p, j in self.args[m] if j == src]
        other_args = tuple((p, j) for p, j in self.args[m] if j != src)
        base = self.consts[m] or {}
        prefix = (self.keys[m] // KEY_BASE) * KEY_BASE
        first = len(self.names)
        kids = list(range(first, first + k))
        self.children[m] = kids
        self.map_left[m] = k
        self.left += k
        spec, kind, fn = self.spec[m], self.kind[m], self.fns[m]
        pos, layer = self.positional[m], self.layer[m]
        need, cost = self.need[m], self.cost[m]
        with _gc_paused():
            for idx, item in enumerate(items):
                const = dict(base)
                for p in params:
                    const[p] = item
                self.names.append(f"{name}[{idx}]")
                self.spec.append(spec)
                self.layer.append(layer)
                self.kind.append(kind)
                self.fns.append(fn)
                self.consts.append(const)
                self.args.append(other_args)
                self.positional.append(pos)
                self.need.append(need)
                self.cost.append(cost)
                self.pushbacks.append(0)
                self.keys.append(prefix + first + idx)
                self.status.append(_PENDING)
                self.token.append(0)
                self.values.append(None)
                self.errors.append(None)
                self.attempts.append(0)
                self.first_start.append(0.0)
                self.last_end.append(0.0)
                self.busy.append(0.0)
                self.seq.append(0)
                self.handle.append(None)
                self.parent.append(m)
        for j in kids:
            self.status[j] = _READY
        ready = self.ready[kind]
        ready.extend(self.keys[j] for j in kids)
        heapq.heapify(ready)

    def _admit(self, i: int) -> bool:
        """May entry ``i`` start now? Takes its pool units and rate-window room if so;
        otherwise parks it until units return or the window has room."""
        need = self.need[i]
        if need:
            free = self.free
            for pool, units in need.items():
                if free[pool] < units - 1e-9:
                    self.blocked_units.append(i)
                    self.parked_since.setdefault(i, ("pool", pool, time.perf_counter()))
                    return False
        cost = self.cost[i]
        if cost:
            now = time.perf_counter()
            wait = 0.0
            for name, c in cost.items():
                wait = max(wait, self.windows[name].wait(now, c))
            if wait > 0:
                self.blocked_rate.append(i)
                self.parked_since.setdefault(i, ("rate_limit", cost, now))
                if now + wait < self.rate_wake:
                    self.rate_wake = now + wait
                    self._timer().add(now + wait, self._on_rate_wake)
                return False
            for name, c in cost.items():
                self.windows[name].take(now, c)
        if need:
            for pool, units in need.items():
                self.free[pool] -= units
        if i in self.parked_since:  # admitted after waiting for a pool or a rate window
            self.waits.append((i, *self.parked_since.pop(i), time.perf_counter()))
        return True

    def _unblock(self, parked: list[int]) -> None:
        """Queue parked entries again; they are checked again when taken."""
        for i in parked:
            if self.status[i] == _READY:
                heapq.heappush(self.ready[self.kind[i]], self.keys[i])
        parked.clear()

    def _release_units(self, i: int) -> None:
        """An attempt ended: its pool units return, and tasks waiting for units may go."""
        need = self.need[i]
        if need:
            for pool, units in need.items():
                self.free[pool] += units
            self._unblock(self.blocked_units)

    def _on_rate_wake(self) -> None:
        self.rate_wake = math.inf
        self._unblock(self.blocked_rate)
        self._kick()

    def _start(self, i: int) -> None:
        """Record that entry ``i`` starts an attempt now."""
        now = time.perf_counter()
        self.status[i] = _RUNNING
        self.token[i] += 1  # a new attempt: whatever was timed for the last one is stale
        self.running += 1
        self.running_kind[self.kind[i]] += 1
        a = self.attempts[i] = self.attempts[i] + 1
        if a == 1:
            self.first_start[i] = now
            self.started.append(i)
            self.seq[i] = len(self.started)
        self.last_end[i] = now  # start of the current attempt until it ends
        t = self.spec[i]
        if t.timeout is not None:
            self._timer().add(now + t.timeout, self._on_task_deadline, i, self.token[i])
        if t.group_timeout is not None and t.group not in self.group_deadline:
            self.group_deadline[t.group] = now + t.group_timeout
            self._timer().add(now + t.group_timeout, self._on_group_deadline, t)
        if self.emit:
            self._layer_started(self.layer[i])
            self._task_event("task_started", i)

    def _layer_started(self, li: int) -> None:
        """Emit ``layer_started`` once per layer: at its first start, or at its end when
        every task of it was skipped or cancelled."""
        if not self.layer_seen[li]:
            self.layer_seen[li] = 1
            self.emit(LayerEvent("layer_started", None, time.time(), self.run_id, layer=li))  # type: ignore[misc]

    def _next(self) -> int:
        """The best ready thread task for the calling worker, waiting while there is none;
        -1 tells the worker to exit."""
        ready = self.ready_threads
        while True:
            if self.exiting:
                return -1
            if ready and not self.stopping and self.running < self.limit:
                short = self.avg_task < _SHORT
                if (
                    short
                    and self.running_kind[_THREAD]
                    and time.perf_counter() - self.last_take < _WATCH
                ):
                    # another worker, taking a task a moment ago, runs these tiny tasks
                    # faster alone: wait, unless it turns out to be stuck in a long one
                    self._watch()
                else:
                    if self.has_foreign and self._foreign_first(ready[0]):
                        self._pump()  # a better coroutine or process task takes the slot
                        continue
                    i = heapq.heappop(ready) % KEY_BASE
                    if self.status[i] != _READY or (self.gated and not self._admit(i)):
                        continue
                    self._start(i)
                    self.last_take = self.last_end[i]  # when this attempt started
                    if ready:
                        if short:
                            self._watch()
                        else:
                            self._dispatch()
                    return i
            self.idle += 1
            self.cond.wait()

    def _watch(self) -> None:
        """In a moment, wake idle workers if no thread task has ended meanwhile (the one
        busy worker is in a long task): tasks are short no more."""
        if self.watching:
            return
        self.watching = True
        self._timer().add(time.perf_counter() + _WATCH, self._on_watch, self.progress)

    def _on_watch(self, progress: int) -> None:
        self.watching = False
        if not self.ready_threads or self.stopping or self.exiting:
            return
        if self.progress == progress:
            self.avg_task = max(self.avg_task, _WATCH)
            self._dispatch()
        elif self.idle:
            self._watch()

    def _dispatch(self) -> None:
        """Wake idle workers (or start new ones) for ready thread tasks nobody has taken."""
        want = min(len(self.ready_threads), self.limit - self.running)
        if want <= 0 or self.stopping:
            return
        wake = min(want, self.idle)
        if wake:
            self.idle -= wake
            self.cond.notify(wake)
            want -= wake
        for _ in range(min(want, self.thread_cap - self.threads)):
            self.threads += 1
            threading.Thread(target=self._worker, name="layerflow-worker", daemon=True).start()

    def _best_foreign(self) -> tuple[int, int]:
        """(key, kind) of the best ready coroutine or process task that may start; kind -1
        when there is none."""
        best, best_kind = 0, -1
        for kind in _FOREIGN:
            ready = self.ready[kind]
            if (
                ready
                and self.running_kind[kind] < self.kind_cap[kind]
                and (best_kind < 0 or ready[0] < best)
            ):
                best, best_kind = ready[0], kind
        return best, best_kind

    def _foreign_first(self, key: int) -> bool:
        """When slots are scarce, does a coroutine or process task come before ``key``?"""
        if self.limit - self.running > len(self.ready_threads):
            return False  # room for every ready thread task anyway
        best, kind = self._best_foreign()
        return kind >= 0 and best < key

    def _pump(self) -> None:
        """Submit ready coroutine and process tasks while the bounds allow. When slots are
        scarce, the best keys over all pools go first, so priorities (and the sequential
        order) hold across pools."""
        if self.stopping or not (self.ready[_ASYNC] or self.ready[_PROCESS] or self.ready[_DASK]):
            return
        threads_ready = self.ready_threads
        while self.running < self.limit:
            best, kind = self._best_foreign()
            if kind < 0:
                return
            if (
                threads_ready
                and threads_ready[0] < best
                and self.limit - self.running <= len(threads_ready)
            ):
                return  # the slots left belong to better thread tasks
            i = heapq.heappop(self.ready[kind]) % KEY_BASE
            if self.status[i] != _READY:
                continue
            if (
                kind == _DASK
                and self.spec[i].timeout is not None
                and self.running_kind[_DASK] >= self.dask_threads
            ):
                self.blocked_dask.append(i)  # queued again when a Dask task ends
                continue
            if self.gated and not self._admit(i):
                continue
            self._start(i)
            args, kwargs = self._call_args(i)
            token = self.token[i]
            if self.lookup is not None:
                hit, value = self.lookup(i, args, kwargs)
                if hit:  # a cached result: the task does not run
                    now = time.perf_counter()
                    self._record(i, token, True, value, now, now, cached=True)
                    continue

            def on_done(
                ok: bool,
                value: Any,
                seconds: float,
                ref: Any = None,
                metrics: dict[str, float] | None = None,
                i: int = i,
                token: int = token,
            ) -> None:
                self._foreign_done(i, token, ok, value, seconds, ref, metrics)

            try:
                if kind == _DASK:
                    if self.remote:
                        args, kwargs = self._call_args(i, remote=True)
                    self.handle[i] = self.dask.submit(
                        self.names[i],
                        self.fns[i],
                        args,
                        kwargs,
                        on_done,
                        priority=self.spec[i].priority,
                        fetch=self.fetch_mode[self._owner(i)] == _FETCH_NOW,
                        tag=i,
                    )
                else:
                    self.handle[i] = self.backends[kind].submit(
                        self.names[i], self.fns[i], args, kwargs, on_done
                    )
            except Exception as e:  # could not even be sent (e.g. cannot be pickled)
                now = time.perf_counter()
                self._record(i, token, False, e, now, now)

    def _kick(self) -> None:
        """After a change: start what may start now."""
        if self.has_foreign:
            self._pump()
        if self.ready_threads:
            self._dispatch()

    def _record(
        self, i: int, token: int, ok: bool, value: Any, t0: float, t1: float, cached: bool = False
    ) -> bool:
        """Entry ``i``'s attempt ended; False when the attempt had been abandoned."""
        if token != self.token[i]:
            return False  # abandoned: its slot was given away, its result is stale
        self.running -= 1
        self.running_kind[self.kind[i]] -= 1
        if self.blocked_dask and self.kind[i] == _DASK:
            self._unblock(self.blocked_dask)
        self.handle[i] = None
        if self.gated:
            self._release_units(i)
        self.busy[i] += t1 - t0
        self.last_end[i] = t1
        limit = self.spec[i].timeout
        if limit is not None and t1 - t0 > limit:  # ended past its deadline: still a timeout
            ok, value = False, self._timeout_error(i)
        if not ok:
            self.spans.append((i, self.attempts[i], t0, t1, value))
        if ok:
            self._succeed(i, value, _CACHED if cached else _SUCCEEDED)
        else:
            self._fail(i, value)
        return True

    def complete(
        self, i: int, token: int, ok: bool, value: Any, t0: float, t1: float, cached: bool = False
    ) -> int:
        """A thread worker's task ended: record it and return the worker's next task
        (-1: the worker exits)."""
        if not self._record(i, token, ok, value, t0, t1, cached):
            return -1
        if self.has_foreign:
            self._pump()
        return self._next()

    def _foreign_done(
        self,
        i: int,
        token: int,
        ok: bool,
        value: Any,
        seconds: float,
        ref: Any = None,
        metrics: dict[str, float] | None = None,
    ) -> None:
        """A backend's done-callback: the same transition as a thread worker's. ``ref`` is
        where the value stays on a cluster (a Dask future); ``value is ref`` when it was
        not brought back here."""
        t1 = time.perf_counter()
        if ok and self.persist is not None and self.token[i] == token:
            self._persist(i, value, t1 - seconds, t1)  # durable before the run counts it done
        with self.lock:
            if metrics and token == self.token[i]:
                add_metrics(self.metrics, i, metrics)
            if ref is not None and ok and token == self.token[i]:
                self.remote[i] = ref
                if value is ref:
                    self.on_cluster.append(i)
            if self._record(i, token, ok, value, t1 - seconds, t1):
                self._kick()

    def _persist(self, i: int, value: Any, t0: float, t1: float) -> None:
        """Hand a result to the store; a store that fails is reported, and the run goes on
        with the value in memory (it simply will not be reusable)."""
        try:
            self.persist(i, value, t0, t1)  # type: ignore[misc]
        except Exception:
            logger.exception("could not store the result of task %r", self.names[i])

    def _succeed(self, i: int, value: Any, status: int = _SUCCEEDED) -> None:
        self.status[i] = status
        self.values[i] = value
        self.errors[i] = None  # an earlier attempt's error is history
        if self.emit:
            kind = {_SUCCEEDED: "task_succeeded", _REUSED: "task_reused"}.get(status, "task_cached")
            self._task_event(kind, i, duration=self.busy[i])
        if i < self.n:
            waiting = self.waiting
            status = self.status
            for s in self.graph.succs[i]:
                waiting[s] -= 1
                if not waiting[s] and status[s] == _PENDING:
                    self._make_ready(s)
        self._finalize(i)

    def _fail(self, i: int, error: BaseException) -> None:
        t = self.spec[i]
        if isinstance(error, Cancelled) and self.stopping:  # stopped by us, not its own fault
            self.status[i] = _CANCELLED
            if self.emit:
                self._task_event("task_cancelled", i, reason=str(error))
            self._finalize(i)
            return
        if isinstance(error, RateLimited) and not self.stopping:
            self._push_back(i, error)
            return
        a = self.attempts[i] - self.pushbacks[i]
        if (
            not self.stopping
            and a <= t.retries
            and isinstance(error, t.retry_on)
            and not isinstance(error, _NoRetry)
        ):
            delay = t.retry_delay * (2 ** (a - 1)) * self.rng.uniform(0.8, 1.2)
            self.errors[i] = error  # kept if the run stops before the next attempt
            if self.emit:
                self._task_event("task_retrying", i, error=error, delay=delay)
            if delay > 0:
                self.status[i] = _RETRY_WAIT
                self._timer().add(time.perf_counter() + delay, self._on_retry, i, self.token[i])
            else:
                self._make_ready(i)
            return
        self.status[i] = _FAILED
        self.errors[i] = error
        if self.emit:
            self._task_event("task_failed", i, error=error, duration=self.busy[i])
        if self.cause < 0:
            self.cause = i
            self.cause_error = error
        self.outcome = "failed"
        fail_fast = self.fail_fast if t.fail_fast is None else t.fail_fast
        if fail_fast:
            self.stopping = True  # before anything below can start a task or ask a checkpoint
        self._finalize(i)
        if fail_fast:
            reason = f"{self.names[i]!r} failed"
            # what can be cancelled is: coroutines and worker processes; a running thread
            # cannot be, so the run waits for it and keeps its result
            for j in [j for j, st in enumerate(self.status) if st == _RUNNING]:
                if self.kind[j] != _THREAD:
                    self._abandon(j, None, fail=False, reason=reason)
                elif self.spec[j].cancel is not None:
                    try:  # e.g. a shell step kills its command; the task then ends
                        self.spec[j].cancel()
                    except Exception:
                        logger.exception("could not stop task %r", self.names[j])
            self._stop(reason)
        elif i < self.n:
            self._skip_downstream(i)

    def _push_back(self, i: int, error: RateLimited) -> None:
        """The task said "too many requests": pause its rate limits, try it again later,
        and do not count the attempt against its retries."""
        self.pushbacks[i] += 1
        self.errors[i] = error
        until = time.perf_counter() + error.retry_after
        if self.emit:
            self._task_event("task_retrying", i, error=error, delay=error.retry_after)
        cost = self.cost[i]
        if cost:
            for name in cost:
                self.windows[name].pause(until)
            self._make_ready(i)  # it waits in the paused window like any other start
        else:
            self.status[i] = _RETRY_WAIT
            self._timer().add(until, self._on_retry, i, self.token[i])

    def _skip_downstream(self, i: int) -> None:
        """Continue-on-failure: everything that needs ``i`` will never run."""
        status = self.status
        stack = [i]
        while stack:
            j = stack.pop()
            for s in self.graph.succs[j]:
                if status[s] == _PENDING:
                    status[s] = _SKIPPED
                    if self.emit:
                        self._task_event(
                            "task_skipped", s, reason=f"upstream {self.names[j]!r} did not succeed"
                        )
                    self._finalize(s)
                    stack.append(s)

    def _finalize(self, i: int) -> None:
        """Entry ``i`` reached a final state: count it, end its layer or its map, release."""
        self.final_counts[self.status[i]] += 1
        m = self.parent[i]
        if m >= 0:
            self.map_left[m] -= 1
            if not self.map_left[m]:
                self._map_done(m)
        else:
            li = self.layer[i]
            self.layer_left[li] -= 1
            if not self.layer_left[li]:
                self._layer_done(li)
            if self.track_users:
                users = self.users_left
                for j in self.graph.deps[i]:
                    users[j] -= 1
                    if not users[j]:
                        self._release(j)
                if not users[i]:
                    self._release(i)
        self.left -= 1
        if not self.left:
            self._finish_run()

    def _release(self, j: int) -> None:
        """Entry ``j``'s last user has finished."""
        if self.remote:
            self._drop_remote(j)
        if self.release:
            self._maybe_release(j)

    def _maybe_release(self, j: int) -> None:
        """Drop a value nobody will read again (only when ``outputs`` were named). A value
        still being computed is dropped when it arrives, not before."""
        if (
            not self.users_left[j]
            and not self.keep[j]
            and self.status[j] >= _SUCCEEDED
            and not self.released[j]
        ):
            self.values[j] = None
            self.released[j] = 1

    def _map_done(self, m: int) -> None:
        """Every subtask of map task ``m`` ended: its value is their values, in order."""
        kids = self.children[m]
        status = self.status
        ran = [j for j in kids if self.attempts[j]]
        if ran:  # the map task's span is its elements'
            self.first_start[m] = min(self.first_start[j] for j in ran)
            self.last_end[m] = max(self.last_end[j] for j in ran)
        if all(status[j] == _SUCCEEDED for j in kids):
            value = [self.values[j] for j in kids]
            if self.persist is not None:  # a map's value is durable as one list
                self._persist(m, value, self.first_start[m], self.last_end[m])
            self._succeed(m, value)
            return
        failed = [j for j in kids if status[j] == _FAILED]
        if failed:
            self.status[m] = _FAILED
            self.errors[m] = self.errors[failed[0]]
            if self.emit:
                self._task_event("task_failed", m, error=self.errors[m], duration=0.0)
            self.outcome = "failed"
            self._finalize(m)
            spec_ff = self.spec[m].fail_fast
            if not (self.fail_fast if spec_ff is None else spec_ff):
                self._skip_downstream(m)
        else:
            self.status[m] = _CANCELLED
            self._finalize(m)

    def _layer_done(self, li: int) -> None:
        if self.emit:
            self._layer_started(li)
            if self.layer_names is None:
                g = self.graph
                self.layer_names = [tuple(g.names[i] for i in lay) for lay in g.layers()]
            names = self.layer_names[li]
            self.emit(
                LayerEvent("layer_finished", None, time.time(), self.run_id, layer=li, tasks=names)
            )
        if self.layered and li == self.current_layer:
            last = li == len(self.layer_left) - 1
            if self.checkpoint is not None and not last and not self.stopping:
                self._ask_checkpoint(li)
            else:
                self._open_next_layer()

    def _ask_checkpoint(self, li: int) -> None:
        """Call the checkpoint for layer ``li`` in its own thread (it may prompt a person);
        the next layer opens only when it has answered."""
        names = self.graph.names
        layer = self.graph.layers()[li]
        report = LayerReport(
            li,
            tuple(names[i] for i in layer),
            {names[i]: _STATUS_NAMES[self.status[i]] for i in layer},
            {
                names[i]: self.values[i]
                for i in layer
                if self.status[i] >= _REUSED or self.status[i] == _SUCCEEDED
            },
        )

        def ask() -> None:
            try:
                answer = self.checkpoint(report)  # type: ignore[misc]
                error = None
            except Exception as e:  # the checkpoint's own bug stops the run, reported
                answer, error = False, e
            with self.lock:
                if self.stopping:
                    return
                if error is not None:
                    self.outcome = "failed"
                    self.cause_error = error
                    self._stop(f"the checkpoint after layer {li} raised {safe_str(error)}")
                elif answer is False:
                    self.outcome = "stopped"
                    self._stop(f"the checkpoint after layer {li} said stop")
                else:
                    self._open_next_layer()
                    self._kick()

        threading.Thread(target=ask, name="layerflow-checkpoint", daemon=True).start()

    def _open_next_layer(self) -> None:
        """Let the next layer (the first with tasks left) start."""
        while self.current_layer < len(self.layer_left) - 1:
            self.current_layer += 1
            held, self.held[self.current_layer] = self.held[self.current_layer], []
            for j in held:
                if self.status[j] == _READY:  # not cancelled meanwhile
                    self._make_ready(j)
            if self.layer_left[self.current_layer]:
                break

    def _stop(self, reason: str) -> None:
        """No more starts: every entry not running now is cancelled."""
        self.stopping = True
        for ready in self.ready:
            ready.clear()
        status = self.status
        for i in range(len(status)):
            if status[i] in _WAITING_STATES:
                status[i] = _CANCELLED
                if self.emit:
                    self._task_event("task_cancelled", i, reason=reason)
                self._finalize(i)

    def _abandon(
        self, i: int, error: BaseException | None, *, fail: bool, reason: str = ""
    ) -> None:
        """Give up on entry ``i``'s running attempt. A coroutine is cancelled and a worker
        process killed; a thread cannot be killed, so it is left to finish on its own and
        its slot goes to a fresh worker."""
        now = time.perf_counter()
        kind = self.kind[i]
        self.token[i] += 1
        self.running -= 1
        self.running_kind[kind] -= 1
        if self.blocked_dask and kind == _DASK:
            self._unblock(self.blocked_dask)
        if self.gated:
            self._release_units(i)
        if kind == _THREAD:
            self.threads -= 1
        elif self.handle[i] is not None:
            self.backends[kind].cancel(self.handle[i])
            self.handle[i] = None
        self.spans.append((i, self.attempts[i], self.last_end[i], now, error))
        self.busy[i] += now - self.last_end[i]
        self.last_end[i] = now
        if fail and error is not None:
            self._fail(i, error)
        else:
            self.status[i] = _CANCELLED
            self.errors[i] = error
            if self.emit:
                self._task_event("task_cancelled", i, reason=reason or safe_str(error))
            self._finalize(i)
        self._kick()

    def _on_task_deadline(self, i: int, token: int) -> None:
        if self.token[i] != token or self.status[i] != _RUNNING:
            return
        t = self.spec[i]
        name = self.names[i]
        if self.kind[i] == _THREAD:
            logger.warning(
                "task %r timed out after %gs; its thread was abandoned and may keep running "
                "in the background (threads cannot be killed)",
                name,
                t.timeout,
            )
        self._abandon(i, self._timeout_error(i), fail=True)

    def _timeout_error(self, i: int) -> TaskTimeout:
        """The error of an attempt that ran past its task's ``timeout``."""
        name, limit = self.names[i], self.spec[i].timeout
        return TaskTimeout(f"task {name!r} timed out after {limit:g}s", name, limit)

    def _on_group_deadline(self, spec: Task) -> None:
        """A parallel_group's time is up: what is still running in it fails, and so does
        what has not started (its time is spent); the group's fail_fast decides the rest."""
        from .pipeline import GroupTimeout

        group, limit = spec.group, spec.group_timeout
        for i in range(len(self.status)):
            if self.spec[i].group != group:
                continue
            st = self.status[i]
            err = GroupTimeout(
                f"group {group!r} timed out after {limit:g}s with {self.names[i]!r} unfinished",
                self.names[i],
                limit,
            )
            if st == _RUNNING:
                self._abandon(i, err, fail=True)
            elif st in _WAITING_STATES:
                self._fail(i, err)

    def _on_retry(self, i: int, token: int) -> None:
        if self.token[i] != token or self.status[i] != _RETRY_WAIT:
            return
        self._make_ready(i)
        self._kick()

    def _on_run_deadline(self) -> None:
        if self.left == 0:
            return
        limit = self.run_timeout
        self.outcome = "failed"
        if self.cause < 0:
            self.cause_error = TaskTimeout(f"the run timed out after {limit:g}s", None, limit)
        self.stopping = True
        for i in range(len(self.status)):
            if self.status[i] == _RUNNING:
                name = self.names[i]
                e = TaskTimeout(
                    f"task {name!r} was still running when the run timed out after {limit:g}s",
                    name,
                    limit,
                )
                self._abandon(i, e, fail=True)
        self._stop(f"the run timed out after {limit:g}s")

    def interrupt(self) -> None:
        """Ctrl-C: stop starting, give up on running attempts, keep what finished."""
        with self.lock:
            if self.left == 0:
                return
            self.outcome = "interrupted"
            self.stopping = True
            err = KeyboardInterrupt("interrupted")
            for i in range(len(self.status)):
                if self.status[i] == _RUNNING:
                    self._abandon(i, err, fail=False, reason="the run was interrupted")
            self._stop("the run was interrupted")

    def _finish_run(self) -> None:
        self.end = time.perf_counter()
        self.exiting = True
        self.cond.notify_all()
        if self.timer is not None:
            self.timer.close()
        self.done.set()
        if self.on_done is not None:
            self.on_done()

    # --- thread workers -------------------------------------------------------------------

    def _worker(self) -> None:
        """A worker thread: take a task, run it, report it and take the next, until done."""
        open_box()  # this thread's lf.record box, emptied after each task
        with self.lock:
            i = self._next()
            token = self.token[i] if i >= 0 else 0
        self._work(i, token, inline=False)

    def _work(self, i: int, token: int, *, inline: bool) -> None:
        if not inline:
            self._loop(i, token, False, _BOX.get())  # type: ignore[arg-type]
            return
        # the calling thread (sequential mode), maybe itself a task of an outer run: a box
        # of this run's own, and the outer one back afterwards
        outer = _BOX.set({})
        try:
            self._loop(i, token, True, _BOX.get())  # type: ignore[arg-type]
        finally:
            _BOX.reset(outer)

    def _loop(self, i: int, token: int, inline: bool, box: dict[str, float]) -> None:
        lock = self.lock
        fns = self.fns
        consts = self.consts
        args_all = self.args
        values = self.values
        tokens = self.token
        positional = self.positional
        persist = self.persist
        lookup = self.lookup
        perf = time.perf_counter
        while i >= 0:
            # _call_args, inlined: this loop runs once per task
            const = consts[i]
            kwargs = dict(const) if const else {}
            for param, j in args_all[i]:
                kwargs[param] = values[j]
            if lookup is not None:
                hit, value = lookup(i, (), kwargs)
                if hit:  # a cached result: the task does not run
                    t0 = perf()
                    with lock:
                        i = self.complete(i, token, True, value, t0, t0, cached=True)
                        token = tokens[i] if i >= 0 else 0
                    continue
            t0 = perf()
            try:
                if positional[i]:
                    value = fns[i](*positional_args(positional[i], kwargs), **kwargs)
                else:
                    value = fns[i](**kwargs)
                ok = True
            except BaseException as e:  # the task's own error, reported, never raised here
                if inline and isinstance(e, KeyboardInterrupt):
                    raise
                value = e
                ok = False
            t1 = perf()
            if ok and persist is not None and tokens[i] == token:
                self._persist(i, value, t0, t1)  # durable before the run counts it done
            with lock:
                if box:
                    if tokens[i] == token:
                        add_metrics(self.metrics, i, box)
                    box.clear()
                self.avg_task += (t1 - t0 - self.avg_task) * 0.125
                self.progress += 1
                i = self.complete(i, token, ok, value, t0, t1)
                token = tokens[i] if i >= 0 else 0  # read under the lock: a deadline may bump it

    # --- driving a run --------------------------------------------------------------------

    def start(self, *, inline: bool = False) -> None:
        """Queue the tasks without dependencies and start the pools (lock not held)."""
        if self.live is not None:
            self.live.start(self)
        if self.emit:
            self.emit(RunEvent("run_started", None, time.time(), self.run_id, total=self.n))
        with self.lock:
            if self.run_timeout is not None:
                self._timer().add(self.perf0 + self.run_timeout, self._on_run_deadline)
            if inline:
                self.threads = 1  # the calling thread is the one worker
            for i in self.preset:  # all reused before any is released: none runs again
                self.status[i] = _REUSED
            for i in self.graph.order:  # resumed tasks first: their users may be ready
                if i in self.preset:
                    self._succeed(i, self.preset[i], _REUSED)
            for i in range(self.n):
                if not self.waiting[i] and self.status[i] == _PENDING:
                    self._make_ready(i)
            if not self.left:
                self._finish_run()
            elif inline:
                if self.has_foreign:
                    self._pump()
            elif self.backends[_ASYNC] is not None and self.ready[_ASYNC]:
                # Start coroutines from the loop's own thread: there a submission creates
                # the asyncio task directly, and completions never wait for this thread.
                if self.ready_threads:
                    self._dispatch()
                self.backends[_ASYNC].loop.call_soon_threadsafe(self._kick_locked)
            else:
                self._kick()

    def _kick_locked(self) -> None:
        with self.lock:
            self._kick()

    def execute(self) -> None:
        """Run to the end (or to a stop) in the calling thread."""
        g = self.graph
        inline = (
            self.mode == "sequential"
            and self.run_timeout is None
            and not any(t.timeout is not None for t in g.tasks)
        )
        try:
            self.start(inline=inline)
            if inline:
                with self.lock:
                    i = self._next()
                    token = self.token[i] if i >= 0 else 0
                self._work(i, token, inline=True)
            self.done.wait()
        except KeyboardInterrupt:
            if self.done.is_set():
                raise  # the run had ended: the Ctrl-C is the caller's
            self.interrupt()
        finally:
            self.close()

    def _collect_remote(self) -> None:
        """After the run: bring back, in one round trip, the values the caller asked for
        that stayed on the Dask cluster; forget the others (Dask releases them)."""
        if self.dask is None or self.collected:
            return
        self.collected = True
        try:
            recorded = self.dask.metrics()
        except Exception as e:  # the numbers are lost, the values need not be
            logger.warning("could not read the tasks' lf.record numbers from Dask: %s", e)
            recorded = []
        with self.lock:
            for i, box in recorded:
                add_metrics(self.metrics, i, box)
            entries = [i for i in self.on_cluster if self.status[i] == _SUCCEEDED]
            self.on_cluster = []
            self.remote.clear()
            wanted = [i for i in entries if self.fetch_mode[self._owner(i)] == _FETCH_AT_END]
            refs = [self.values[i] for i in wanted]
        got: dict[int, Any] = {}
        lost: dict[int, BaseException] = {}
        if refs:
            try:
                got = dict(zip(wanted, self.dask.gather(refs), strict=True))
            except Exception:  # find which: one at a time
                for i, ref in zip(wanted, refs, strict=True):
                    try:
                        got[i] = self.dask.gather([ref])[0]
                    except Exception as e:  # its value is lost, and so is the cluster's
                        lost[i] = e
        with self.lock:
            for i in entries:
                self.values[i] = got.get(i)
                if i in lost:
                    self._lose(i, lost[i])
                elif i not in got and i < self.n:
                    self.released[i] = 1
            for m, kids in self.children.items():  # a map task's list of element values
                if self.kind[m] == _DASK and self.status[m] == _SUCCEEDED:
                    if self.fetch_mode[m] == _FETCH_AT_END:
                        self.values[m] = [self.values[k] for k in kids]
                    elif self.fetch_mode[m] == _STAYS_REMOTE:
                        self.values[m] = None
                        self.released[m] = 1
            self.end = time.perf_counter()

    def _lose(self, i: int, error: BaseException) -> None:
        """A finished value could not be brought back from the cluster."""
        name = self.names[i]
        self.final_counts[self.status[i]] -= 1
        self.final_counts[_FAILED] += 1
        self.status[i] = _FAILED
        self.errors[i] = LayerflowError(
            f"task {name!r} finished on the Dask cluster, but its value could not be "
            f"brought back: {safe_str(error)}"
        )
        self.outcome = "failed"
        if self.cause < 0:
            self.cause, self.cause_error = i, self.errors[i]

    def close(self) -> None:
        """Report the end to observers and release the pools."""
        try:
            self._collect_remote()
        except Exception as e:
            logger.error("could not bring the run's values back from the Dask cluster: %s", e)
        if self.live is not None:
            self.live.stop(
                final_line(
                    self.outcome,
                    self._counts(),
                    len(self.names),
                    self.end - self.perf0,
                    sum(self.busy),
                )
            )
        for backend in self.backends:
            if backend is not None:
                backend.close()
        if self.bus is not None:
            self.emit(  # type: ignore[misc]
                RunEvent(
                    "run_finished",
                    None,
                    time.time(),
                    self.run_id,
                    total=len(self.names),
                    status=self.outcome,
                    duration=self.end - self.perf0,
                    sequential_estimate=sum(self.busy),
                    counts=self._counts(),
                )
            )
            self.bus.close()

    def snapshot(self, running: int = 10) -> dict[str, Any]:
        """What a progress display shows, read without the lock (a display may be a
        moment behind): ``counts`` by final status, ``running_count``, the ``running``
        tasks that started first as (name, epoch start), ``total`` and ``elapsed``."""
        status = self.status
        final = self.final_counts
        counts = {_STATUS_NAMES[c]: final[c] for c in range(_SUCCEEDED, len(final))}
        started, first = self.started, self.first_start
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
        shown: list[tuple[str, float]] = []
        near = range(k, min(n, k + window))
        latest = range(max(k + window, n - window), n)  # if the pointer lags behind
        for span in (near, latest):
            for j in span:
                i = started[j]
                if status[i] == _RUNNING:
                    shown.append((self.names[i], first[i] + offset))
                    if len(shown) >= running:
                        break
            if len(shown) >= running:
                break
        return {
            "counts": counts,
            "running_count": self.running,
            "running": shown,
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
        order = range(self.n)
        if self.children:  # subtasks right after their task
            order = []
            for i in range(self.n):
                order.append(i)
                order.extend(self.children.get(i, ()))
        status, values, errors = self.status, self.values, self.errors
        attempts, first, last, busy = self.attempts, self.first_start, self.last_end, self.busy
        layer, children, metrics = self.layer, self.children, self.metrics

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
            )

        tasks = TaskRuns([names[i] for i in order], make)
        durations = self._static_durations()
        plan = self.plan  # the result keeps the plan, not the whole run state
        spans, waits, parked, end = self.spans, self.waits, self.parked_since, self.end
        return RunResult(
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

    def _static_durations(self) -> list[float]:
        """Seconds per graph task; a map task's are its subtasks' wall span."""
        busy = self.busy[: self.n]
        for m, kids in self.children.items():
            if kids and self.status[m] == _SUCCEEDED:
                busy[m] = self.last_end[m] - self.first_start[m]
        return busy


class _Timer:
    """One thread for every deadline of a run (task timeouts, retry waits, run timeout).

    Started only when a run has something timed. Callbacks run under the run's lock.
    """

    def __init__(self, run: Run) -> None:
        self.run = run
        self.cond = threading.Condition(run.lock)
        self.heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self.count = 0
        self.closed = False
        threading.Thread(target=self._loop, name="layerflow-timer", daemon=True).start()

    def add(self, when: float, callback: Callable[..., None], *args: Any) -> None:
        """Call ``callback(*args)`` at perf_counter time ``when`` (lock held by the caller)."""
        self.count += 1
        heapq.heappush(self.heap, (when, self.count, callback, args))
        if self.heap[0][1] == self.count:
            self.cond.notify()

    def close(self) -> None:
        self.closed = True
        self.cond.notify()

    def _loop(self) -> None:
        heap = self.heap
        with self.run.lock:
            while not self.closed:
                if not heap:
                    self.cond.wait()
                    continue
                delay = heap[0][0] - time.perf_counter()
                if delay > 0:
                    self.cond.wait(min(delay, threading.TIMEOUT_MAX))
                    continue
                _, _, callback, args = heapq.heappop(heap)
                try:
                    callback(*args)
                except Exception:  # a bug here must not stop every later deadline
                    logger.exception("layerflow timer callback %r failed", callback)


def _observers(on_event: Observer | None, shown: Progress | None) -> list[Observer]:
    if on_event is not None and not callable(on_event):
        raise InvalidOptionError(f"on_event must be a callable taking an event, got {on_event!r}")
    observers: list[Observer] = []
    if on_event is not None:
        observers.append(on_event)
    if shown is not None:
        lines = shown.observer()  # None for the live display, which reads snapshot()
        if lines is not None:
            observers.append(lines)
    elif logger.isEnabledFor(20):  # logging.INFO: plain progress lines through logging
        observers.append(LogObserver())
    return observers


def prepare(
    plan: Plan,
    inputs: Mapping[str, Any],
    *,
    outputs: list[int] | None,
    mode: str,
    max_workers: int | None,
    fail_fast: bool,
    timeout: float | None,
    backend: str,
    on_event: Observer | None,
    progress: bool | Progress,
    seed: int | None,
    loop: Any = None,
    resources: Mapping[str, float] | None = None,
    rate_limits: Mapping[str, Any] | None = None,
    checkpoint: Callable[[LayerReport], Any] | None = None,
    recorder: Any = None,
    address: str | None = None,
    client: Any = None,
) -> Run:
    """Check the run options and build the run's state. ``recorder`` connects the run to
    a store: its ``preset`` values are reused, its ``persist`` makes results durable."""
    if checkpoint is not None and not callable(checkpoint):
        raise InvalidOptionError(
            f"checkpoint must be a callable taking a LayerReport, got {checkpoint!r}"
        )
    if mode not in MODES:
        raise InvalidOptionError(
            f"mode must be one of {', '.join(repr(m) for m in MODES)}, got {mode!r}"
        )
    if backend not in BACKENDS:
        from .errors import did_you_mean

        raise InvalidOptionError(
            f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}."
            f"{did_you_mean(str(backend), BACKENDS)}"
        )
    if timeout is not None and (
        not isinstance(timeout, (int, float))
        or isinstance(timeout, bool)
        or not 0 < timeout < math.inf
    ):
        raise InvalidOptionError(f"timeout must be a number of seconds > 0, got {timeout!r}")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise InvalidOptionError(f"seed must be an int, got {seed!r}")
    if not isinstance(fail_fast, bool):
        raise InvalidOptionError(f"fail_fast must be True or False, got {fail_fast!r}")
    resolve_max_workers(max_workers)
    if not isinstance(progress, (bool, Progress)):
        raise InvalidOptionError(
            f"progress must be True, False or an lf.Progress, got {progress!r}"
        )
    shown = resolve_progress(progress)
    run = Run(
        plan,
        inputs,
        mode=mode,
        max_workers=max_workers,
        fail_fast=fail_fast,
        timeout=timeout,
        keep=outputs,
        observers=_observers(on_event, shown),
        seed=seed,
        backend=backend,
        loop=loop,
        resources=resources,
        rate_limits=rate_limits,
        checkpoint=checkpoint,
        preset=recorder.preset if recorder is not None else None,
        persist=recorder.persist if recorder is not None else None,
        lookup=recorder.lookup if recorder is not None and recorder.caching else None,
        address=address,
        client=client,
    )
    if shown is not None and shown.is_live():
        run.live = shown
    return run


def outcome(run: Run, recorder: Any = None) -> RunResult:
    """The run's result (recorded in the store, if any), or the exception ``flow.run``
    raises for it."""
    result = run.result()
    if recorder is not None:
        recorder.end(result)
    if result.status == "interrupted":
        raise RunInterrupted("the run was interrupted (Ctrl-C); finished results are kept", result)
    if result.status == "failed" and (run.fail_fast or run.cause < 0):
        cause = run.cause_error
        if run.cause >= 0:
            name = run.names[run.cause]
            attempts = run.attempts[run.cause]
            tries = f" after {attempts} attempts" if attempts > 1 else ""
            message = f"task {name!r} failed{tries}: {safe_str(cause)}"
        else:
            name = None
            message = safe_str(cause) if cause is not None else "the run failed"
        raise TaskFailed(message, name, result) from cause
    return result


def execute(plan: Plan, inputs: Mapping[str, Any], **options: Any) -> RunResult:
    """Run a validated plan in the calling thread; raise as ``flow.run`` does."""
    return execute_run(plan, inputs, **options)[0]


def execute_run(plan: Plan, inputs: Mapping[str, Any], **options: Any) -> tuple[RunResult, Run]:
    """``execute``, also giving the ended run's state (``lf.dask.get`` reads its values
    list: through ``RunResult`` 100,000 values would build a ``TaskRun`` each)."""
    recorder = options.get("recorder")
    run = prepare(plan, inputs, **options)
    if recorder is not None:
        recorder.begin(run.run_id, run.wall0, run.perf0)
    try:
        run.execute()
    except KeyboardInterrupt:  # after the run had ended: record it, then let Ctrl-C through
        if recorder is not None:
            result = run.result()
            recorder.end(result)
        raise
    return outcome(run, recorder), run


async def execute_async(plan: Plan, inputs: Mapping[str, Any], **options: Any) -> RunResult:
    """Run a validated plan from a coroutine: coroutine tasks on the caller's event loop,
    the others on their pools; the caller's loop is never blocked."""
    import asyncio

    loop = asyncio.get_running_loop()
    recorder = options.get("recorder")
    run = prepare(plan, inputs, loop=loop, **options)
    if recorder is not None:
        recorder.begin(run.run_id, run.wall0, run.perf0)
    finished = loop.create_future()

    def done() -> None:
        loop.call_soon_threadsafe(lambda: finished.done() or finished.set_result(None))

    run.on_done = done
    try:
        run.start()
        await asyncio.shield(finished)
        if run.dask is not None:  # a blocking round trip: not on the caller's loop
            await loop.run_in_executor(None, run._collect_remote)
    except asyncio.CancelledError:
        run.interrupt()
        raise
    finally:
        run.close()
    return outcome(run, recorder)
