"""The state of one run: every field, and the task state machine.

One ``Run`` object holds all of a run's state in plain lists indexed by *entry*: the graph's
tasks are entries ``0..n-1``; the subtasks a ``map`` adds at run time are appended after them.
Every field is guarded by ``lock``; the transitions (``transitions.py`` and the policy
modules) mutate it with the lock held and are called by whoever holds the news: a thread
worker whose task returned, a backend's done-callback, the timer, a checkpoint's thread.

Task states (``status[i]``; the names a ``RunResult`` shows are in ``_STATUS_NAMES``)::

    pending ──(dependencies done)──▶ ready ──(admitted)──▶ running ──▶ succeeded
       │                              │  ▲                   │  │  ▲
       │                     held ◀───┘  └─── parked         │  │  └── storing ──▶ failed
       │            (layer barrier)       (pool, rate limit)  │  │  (with a store)  (not stored)
       │                                                      │  ├──▶ retry-wait ──▶ ready
       │                                                      │  └──▶ failed
       ├──▶ skipped   (an upstream failed, fail_fast=False)   └──▶ cancelled (stopped by us)
       ├──▶ cancelled (the run stopped before it started)
       └──▶ reused (loaded by resume) / cached (a cache hit: it never runs)

``held`` and ``parked`` are not codes of their own: the entry is ``_READY`` and sits in a
layer's ``held`` list or in the gate's parked lists instead of a ready heap. A ``map`` task
is ``_MAPPED`` while its subtasks run, and ends when the last of them ends. With a store, a
succeeded attempt is ``_STORING`` until its batch of results is committed (``storage.py``):
its slot is free, but nothing downstream starts before its result is on disk.

Per-entry fields (lists, appended to by ``fanout`` for map subtasks):

- ``names``, ``spec`` (the ``Task``), ``layer``, ``kind`` (the pool: ``_THREAD`` ...
  ``_DASK``, and ``_CALLER``, the calling thread, for thread tasks when ``inline``), ``fns``
  (what is called), ``consts`` (constant keyword arguments: params and flow inputs),
  ``args`` ((parameter, upstream entry) pairs), ``positional``, ``need`` (resource units),
  ``cost`` (rate-limit costs), ``keys`` (the ready-heap key: priority, path, order).
- ``status``, ``token`` (bumped when an attempt starts or is abandoned, so a late result of an
  abandoned attempt is recognised as stale), ``attempts``, ``pushbacks`` (attempts that were
  push-back, which spend no retry), ``handle`` (a foreign backend's handle of the running
  attempt), ``parent`` (a map subtask's task, else -1), ``seq`` (start order, from 1).
- records: ``values``, ``errors``, ``first_start``, ``last_end`` (the running attempt's start
  while it runs), ``busy`` (seconds spent running, over attempts).

Run-wide fields:

- set once: ``plan``, ``graph``, ``n`` (graph tasks), ``mode``, ``fail_fast``, ``run_id``,
  ``rng`` (a seed's order), ``loop`` (the caller's event loop, for ``run_async``),
  ``perf0`` / ``wall0`` (the start, on both clocks; ``end``: the end), ``predicted`` and
  ``given_limits`` (for the result's what-bound-it line).
- ``waiting``: per graph task, dependencies not yet succeeded; ``left``: entries not in a
  final state (the run ends at 0); ``final_counts``: entries that ended, by status.
- ``ready[kind]``: one heap of keys per pool kind (``ready_threads`` is the thread one,
  ``ready_foreign`` the others); ``succs``: the graph's successor lists.
  ``depth_base``: for a Dask graph, the fixed part of each key (``Plan.depth_bases``), to
  which ``_make_ready`` adds ``left`` so that the latest-readied go first; else ``None``.
- ``running`` / ``running_kind``: attempts running, in all and per pool; ``limit``: the
  ``max_workers`` bound over all pools; ``kind_cap``: per foreign pool.
- thread workers (``workers.py``): ``threads`` (those that count towards the bound;
  abandoned ones do not), ``starting`` (started, not yet at their first task), ``idle``
  (waiting in ``cond``), ``thread_cap``, ``avg_task``, ``progress``, ``last_take``,
  ``watching`` (the tiny-task mode).
- admission (``admission.py``): ``gate`` (the pools' free units, the rate windows and the
  entries they park), ``gated`` (any task has a pool or a limit), ``rate_wake``,
  ``parked_since`` and ``waits`` (for the trace); sequential runs: ``in_order``,
  ``order_hold`` and ``order_held_by`` (a parked task holds the queue).
- budgets (``budgets.py``): ``budget``, ``spent``, ``committed``, ``estimates``, ``est``
  (each task's declared cost), ``budget_stopped``, ``stop_reason``.
- layers (``layers.py``): ``layered``, ``barrier`` (``policy.LayerBarrier``: ``current``,
  ``held``, ``left``),
  ``layer_seen``, ``layer_names``, ``checkpoint``, ``checkpoint_asked``.
- map (``fanout.py``): ``map_left`` and ``children`` per mapped task; streaming maps:
  ``streams``, ``stream_from``, ``streamable``, ``elem_wait``; ``pending_skip`` (skips
  waiting for their task's other inputs, ``skips.py``).
- deadlines (``deadlines.py``): ``timer``, ``run_timeout``; groups (``groups.py``):
  ``group_deadline``, ``stopped_groups``.
- values no longer needed (``transitions._release``): ``release``, ``keep``, ``users_left``,
  ``released``, ``track_users``; on Dask, ``cluster`` (``remote.py``; the
  Dask backend's ``ClusterValues``: which values stay on the cluster, and their futures).
- store I/O off the lock and group commit (``storage.py``): ``io_jobs``, ``storing``
  (results waiting to be stored) and ``stored`` (notified when a batch has landed).
- outcome: ``stopping`` (no new starts), ``exiting`` (workers leave), ``outcome``, ``cause`` and
  ``cause_error`` (what stopped the run), ``store_failed`` (the first entry whose result
  the store could not take, else -1), ``started`` (entries in start order), ``spans``
  (attempts that did not succeed), ``metrics`` (``lf.record``), ``cpu_times`` and
  ``cpu_foreign`` (CPU seconds per entry), ``done`` (set at the end) and ``on_done``
  (``run_async``'s wake-up); ``run_timed_out``; ``begun`` (``faults.py``).
- ``context``: the caller's ``contextvars`` when the run was made; tasks run in copies.
  ``output``: what each task printed and logged (``capture.TaskLogs``); ``caller_cell``:
  whose output the calling thread's calls write (sequential runs).
  ``tracing`` and ``untraced`` (``telemetry.py``): OpenTelemetry spans, when asked for.
  With a store, ``items`` (``storage.py``): tasks say which task they are.
- pools (``pools.py``, opened by ``Run`` once this state is built): ``backends[kind]``,
  ``kind_cap``, what each can do (``begins_late``, ``times_from_begin``, ``interrupts``,
  ``slots``; ``keeper`` and ``keeper_kind``: the one whose values stay where they ran),
  ``blocked_slot`` ((key, entry) with a timeout, waiting for a free slot), ``handle`` per
  entry, ``inline`` (a sequential run with no deadline: its own thread makes the calls),
  ``has_foreign``, ``only_foreign`` (the one foreign pool kind in use, else -1).
- connections: ``persist`` and ``lookup`` (the store and the cache), ``preset`` (resumed
  values), ``reuse`` and ``reusable`` (elements a resumed map finished), ``bus`` and
  ``emit`` (the event bus and its ``put``, or None), ``live`` (a live progress display).
"""

from __future__ import annotations

import contextvars
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..backends import sync_call
from ..capture import TaskLogs, cell_in
from ..errors import (
    InvalidOptionError,
    raise_all,
)
from ..events import (
    EventBus,
    Observer,
    TaskEvent,
)
from ..graph import Task, gc_paused, positional_args
from ..limits import (
    check_limits,
    resolve_max_workers,
    task_costs,
)
from ..names import new_run_id
from ..options import RunOptions
from ..plan import Plan
from ..taskscope import clear as clear_scope
from . import statuses

# the status codes under the engine's own (module-global) names: statuses.py
_PENDING, _READY, _RUNNING, _RETRY_WAIT, _MAPPED, _STORING = (
    statuses.PENDING,
    statuses.READY,
    statuses.RUNNING,
    statuses.RETRY_WAIT,
    statuses.MAPPED,
    statuses.STORING,
)
_SUCCEEDED, _FAILED, _SKIPPED, _CANCELLED, _REUSED, _CACHED = (
    statuses.SUCCEEDED,
    statuses.FAILED,
    statuses.SKIPPED,
    statuses.CANCELLED,
    statuses.REUSED,
    statuses.CACHED,
)
_STATUS_NAMES = statuses.STATUS_NAMES
_WAITING_STATES = statuses.WAITING_STATES

#: pool kinds; a task's kind comes from its ``executor`` option or the run's ``backend``;
#: ``_CALLER`` (the calling thread) takes the thread tasks of a ``mode="sequential"`` run
_THREAD, _ASYNC, _PROCESS, _DASK, _CALLER = range(5)
_NKINDS = _CALLER + 1
_KINDS = {"thread": _THREAD, "async": _ASYNC, "process": _PROCESS, "dask": _DASK}
_KIND_NAMES = {kind: name for name, kind in _KINDS.items()} | {_CALLER: "sequential"}
_FOREIGN = (_ASYNC, _PROCESS, _DASK, _CALLER)
#: pools whose running attempts cannot be stopped: the run waits for them (or abandons them)
_UNSTOPPABLE = (_THREAD, _CALLER)
_INFINITE = 1 << 62
#: thread tasks shorter than this on average gain nothing from more threads (the GIL and
#: the run's lock serialize them; each extra thread only adds hand-offs): one worker runs
#: them, and the others are woken when a task turns out to take longer than _WATCH
_SHORT = 200e-6
_WATCH = 0.002


if TYPE_CHECKING:
    from .parts import RunParts
else:  # what the parts define, declared for the type checker only (parts.py)
    RunParts = object


class State(RunParts):
    """The fields of one run (see the module docstring) and their set-up."""

    def __init__(
        self,
        plan: Plan,
        inputs: Mapping[str, Any],
        options: RunOptions,
        *,
        keep: Iterable[int] | None = None,
        observers: Sequence[Observer] = (),
        loop: Any = None,
        run_id: str | None = None,
        preset: Mapping[int, Any] | None = None,
        persist: Callable[[Sequence[tuple[int, Any, float, float, Any]]], list[Any]] | None = None,
        lookup: Callable[[int, tuple[Any, ...], dict[str, Any]], tuple[bool, Any]] | None = None,
        reuse: Callable[[int, list[tuple[int, tuple[Any, ...]]]], dict[int, Any]] | None = None,
        reusable: Iterable[int] = (),
        items: Any = None,
    ) -> None:
        o = options
        mode, max_workers, timeout, seed = o.mode, o.max_workers, o.timeout, o.seed
        backend, resources, rate_limits = o.backend, o.resources, o.rate_limits
        checkpoint, budget = o.checkpoint, o.budget
        g = plan.graph
        self.plan = plan
        self.graph = g
        self.n = n = len(g)
        self.mode = mode
        self.fail_fast = options.fail_fast
        self.run_timeout = timeout
        self.run_timed_out = False  # the run reached ``run_timeout``
        self.run_id = run_id or new_run_id()
        self.rng = random.Random(seed)
        self.loop = loop
        # the caller's contextvars: every task runs in a copy of this context (but not in
        # the scope of a task that started this run: parallel_map asks which task it is in)
        self.context = contextvars.copy_context()
        clear_scope(self.context)
        sequential = mode == "sequential"
        # with max_workers=None coroutines are unbounded; threads stop at the default cap
        self.limit = 1 if sequential else (max_workers or _INFINITE)
        self.thread_cap = 1 if sequential else resolve_max_workers(max_workers)
        if sequential:
            self.keys = plan.sequence_keys(seed)
        else:
            self.keys = list(plan.keys())
        # Dask's order (lf.dask): a ready task's key depends on when it became ready
        self.depth_base = None if sequential else plan.depth_bases()

        # limits are checked before any pool (worker processes, a cluster) is started
        pools, limits, problems = check_limits(g, resources, rate_limits, budget=budget)
        raise_all(problems, g.flow_name)
        # sequential, with no deadline that would need to abandon a task: the calling
        # thread runs the thread tasks itself (``backends/caller.py``)
        self.inline = (
            sequential
            and loop is None
            and timeout is None
            and not any(
                t.timeout is not None or (t.group is not None and t.group.timeout is not None)
                for t in g.tasks
            )
        )
        # what each task prints and logs (``capture.py``): the echo chosen around this run;
        # the calling thread's calls (sequential) say whose they are in ``caller_cell``
        self.output = TaskLogs.for_run([], [])
        self.caller_cell = cell_in(self.context, self.output)
        with gc_paused():
            self._init_entries(inputs, backend)
        self.output.names, self.output.attempts = self.names, self.attempts
        self._init_scopes(items)
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.done = threading.Event()
        self.on_done: Callable[[], None] | None = None
        self.waiting = [len(d) for d in g.deps]
        self.succs = g.succs  # the graph builds it on first use; read once per task here
        self.ready: list[list[int]] = [[] for _ in range(_NKINDS)]
        self.ready_threads = self.ready[_THREAD]
        self.ready_foreign = [self.ready[kind] for kind in _FOREIGN]  # the same heaps
        self._init_layers(mode, checkpoint)
        self._init_fanout()
        self._init_recording()
        self.left = n
        self.running = 0
        self.running_kind = [0] * _NKINDS
        self._init_workers()
        self.stopping = False
        self.exiting = False
        self.outcome = "succeeded"
        self.cause: int = -1  # the task whose failure stopped the run
        self.cause_error: BaseException | None = None
        self.store_failed: int = -1  # the first task whose result the store could not take
        self.pending_skip: dict[int, Any] = {}  # an input skipped, others not ended (skips)

        # values released once their last consumer finished (only when outputs were named;
        # a Dask task's copy on the cluster, always)
        self.release = keep is not None
        self.keep = bytearray(n)
        self.users_left: list[int] = []
        self.released = bytearray(n)
        if keep is not None:
            for i in keep:
                self.keep[i] = 1
        self.track_users = self.release  # and when values stay where they ran: _open_pools
        if self.track_users:
            self.users_left = [len(s) for s in self.succs]

        self._init_budgets(budget, limits)  # before the gate: it takes its costs apart
        self._init_admission(pools, limits)

        self._init_groups()
        # resume: values loaded from the store for tasks that need not run again
        self.preset = dict(preset or {})
        # the prediction from past runs, for the result: fixed now, simulated when asked
        self.predicted = plan.prediction(max_workers, mode, resources, rate_limits, self.preset)
        # the limits as the run was given them: what_if explains afterwards which one bound it
        self.given_limits = (max_workers, mode, resources, rate_limits)
        # the store: called with a batch of (task, value, start, end) on the store thread
        # (``storage.py``) before the run counts those tasks done, so they are durable
        self.persist = persist
        # the cache: (task, args, kwargs) -> (hit, value), asked before a task runs
        self.lookup = lookup
        # resume, element by element: (map task, [(index, element values)]) -> {index:
        # value} of the elements an earlier run finished; ``reusable``: the map tasks it has
        self.reuse = reuse
        self.reusable = frozenset(reusable)
        self._init_store_io()
        self.timer: Any = None  # a deadlines.Timer, started by the first deadline
        self.bus = EventBus(list(observers), self._fault) if observers else None
        self.emit = self.bus.put if self.bus else None
        self.wall0 = time.time()
        self.perf0 = time.perf_counter()
        self.end = self.perf0

    def _init_entries(self, inputs: Mapping[str, Any], backend: str) -> None:
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
            if kind == _THREAD and self.inline:
                kind = _CALLER
            if kind == _ASYNC and not t.is_coroutine:
                raise InvalidOptionError(
                    f"task {t.name!r}: executor='async' needs an 'async def' function; "
                    f"use executor='thread' for a plain function"
                )
            self.kind.append(kind)
            in_thread = kind in _UNSTOPPABLE and t.is_coroutine  # executor="thread"
            self.fns.append(sync_call(t.fn) if in_thread else t.fn)
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
        used = set(self.kind)
        self.has_foreign = bool(used - {_THREAD})
        # the one foreign pool in use, if only one is: the pump then skips comparing pools
        foreign = [k for k in _FOREIGN if k in used]
        self.only_foreign = foreign[0] if len(foreign) == 1 else -1

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

    def _call_args(self, i: int, remote: bool = False) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The positional and keyword arguments of entry ``i``'s call; with ``remote``,
        upstream values that are on the Dask cluster are passed as their futures."""
        const = self.consts[i]
        kwargs = dict(const) if const else {}
        values = self.values
        for param, j in self.args[i]:
            kwargs[param] = values[j]
        if remote:
            self.cluster.substitute(kwargs, self.args[i], self.children)
        if self.positional[i]:
            return tuple(positional_args(self.positional[i], kwargs)), kwargs
        return (), kwargs

    def _owner(self, i: int) -> int:
        """The graph task of entry ``i`` (itself, or the task a ``map`` subtask belongs to)."""
        return i if i < self.n else self.parent[i]
