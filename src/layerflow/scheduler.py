"""The run loop: one state object whose small transitions run under one lock.

Whoever holds the news calls the transitions: the thread backend's workers call
:meth:`Run.complete` when their task returns and get the next task back in the same
critical section, so a finished task hands its successor to the very thread that just
freed up, with no hand-off to another thread (that hand-off, 20-100 us, is what makes a
ready-queue-plus-pool scheduler slow). Idle workers are woken only when more is ready than
the finishing worker takes.

Task-selection policy (all in :meth:`Run._next`): among ready tasks, the smallest
``Plan.keys()`` value: higher ``priority`` first, then the longest remaining path to a sink
(critical path first), then declaration order. ``layered`` holds back tasks of later layers
until the current layer has ended; ``sequential`` runs one task at a time in the plan's
(or a seeded random) order.

State (lists indexed by task; every field guarded by ``lock``):

- ``status``: one of the ``_PENDING`` ... ``_CANCELLED`` codes below.
- ``waiting``: how many dependencies have not succeeded yet.
- ``ready``: heap of keys of tasks whose dependencies are all done.
- ``held``: per layer, keys of ready tasks a ``layered`` barrier still holds back.
- ``token``: bumped when a running attempt is abandoned (timeout, Ctrl-C), so the thread
  that ran it recognises its result as stale when it returns.
- ``running`` / ``threads`` / ``idle``: attempts running, worker threads that count
  towards ``max_workers`` (abandoned ones do not), and how many of those are waiting.
- ``left``: tasks not yet in a final state; the run is done when it reaches 0.
- ``values``, ``errors``, ``attempts``, ``first_start``, ``last_end``, ``busy``: records.
"""

from __future__ import annotations

import heapq
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .errors import InvalidOptionError, RunInterrupted, TaskFailed, TaskTimeout
from .events import EventBus, LayerEvent, LogObserver, Observer, RunEvent, TaskEvent, logger
from .graph import _gc_paused
from .limits import resolve_max_workers
from .plan import MODES, Plan
from .result import RunResult, TaskRun

__all__ = ["Run", "execute"]

_PENDING, _READY, _RUNNING, _RETRY_WAIT, _SUCCEEDED, _FAILED, _SKIPPED, _CANCELLED = range(8)
_FINAL = _SUCCEEDED
_STATUS_NAMES = {
    _PENDING: "pending",
    _READY: "pending",
    _RUNNING: "running",
    _RETRY_WAIT: "pending",
    _SUCCEEDED: "succeeded",
    _FAILED: "failed",
    _SKIPPED: "skipped",
    _CANCELLED: "cancelled",
}


def _new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def _sync_call(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A coroutine function made callable from a worker thread (one event loop per call).

    Until the asyncio backend exists this keeps async tasks working on threads.
    """
    import asyncio

    def call(**kwargs: Any) -> Any:
        return asyncio.run(fn(**kwargs))

    return call


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
        observers: list[Observer] = (),  # type: ignore[assignment]
        seed: int | None = None,
        run_id: str | None = None,
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
        self.slots = 1 if mode == "sequential" else resolve_max_workers(max_workers)
        if mode == "sequential":
            seq = plan.sequence(seed)
            self.keys = [0] * n
            for pos, i in enumerate(seq):
                self.keys[i] = pos * n + i  # keys decode to their task as key % n
        else:
            self.keys = plan.keys()

        tasks = g.tasks
        self.fns = [_sync_call(t.fn) if t.is_coroutine else t.fn for t in tasks]
        self.consts: list[dict[str, Any] | None] = []
        for t, in_args in zip(tasks, g.input_args, strict=True):
            const = dict(t.params)
            for param, name in in_args:
                if name in inputs:
                    const[param] = inputs[name]
            self.consts.append(const or None)
        self.args = g.args
        self.positional = [t.signature.positional_only for t in tasks]

        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.done = threading.Event()
        self.status = [_PENDING] * n
        self.waiting = [len(d) for d in g.deps]
        self.ready: list[int] = []
        self.layered = mode == "layered"
        self.current_layer = 0
        self.held: list[list[int]] = [[] for _ in range(g.n_layers)] if self.layered else []
        self.layer_left = [0] * g.n_layers
        for li in g.layer:
            self.layer_left[li] += 1
        self.layer_seen = bytearray(g.n_layers)
        self.layer_names: list[tuple[str, ...]] | None = None
        self.token = [0] * n
        self.values: list[Any] = [None] * n
        self.errors: list[BaseException | None] = [None] * n
        self.attempts = [0] * n
        self.first_start = [0.0] * n
        self.last_end = [0.0] * n
        self.busy = [0.0] * n
        self.seq = [0] * n
        self.started: list[int] = []
        self.left = n
        self.running = 0
        self.threads = 0
        self.idle = 0
        self.stopping = False
        self.exiting = False
        self.outcome = "succeeded"
        self.cause: int = -1  # the task whose failure stopped the run
        self.cause_error: BaseException | None = None

        # values released once their last consumer finished (only when outputs were named)
        self.release = keep is not None
        self.keep = bytearray(n)
        self.users_left: list[int] = []
        self.released = bytearray(n)
        if keep is not None:
            for i in keep:
                self.keep[i] = 1
            self.users_left = [len(s) for s in g.succs]

        self.timer: _Timer | None = None
        self.bus = EventBus(list(observers)) if observers else None
        self.emit = self.bus.put if self.bus else None
        self.wall0 = time.time()
        self.perf0 = time.perf_counter()
        self.end = self.perf0

    # --- helpers ------------------------------------------------------------------------

    def wall(self, t: float) -> float:
        """A perf_counter reading as seconds since the epoch."""
        return self.wall0 + (t - self.perf0)

    def _task_event(self, kind: str, i: int, **fields: Any) -> None:
        self.emit(  # type: ignore[misc]
            TaskEvent(
                kind,
                self.graph.names[i],
                time.time(),
                self.run_id,
                layer=self.graph.layer[i],
                seq=self.seq[i],
                total=self.n,
                attempt=self.attempts[i],
                **fields,
            )
        )

    def _timer(self) -> _Timer:
        if self.timer is None:
            self.timer = _Timer(self)
        return self.timer

    # --- transitions (mutate; call with ``lock`` held) -----------------------------------

    def _make_ready(self, i: int) -> None:
        """Task ``i`` may start: queue it, or hold it behind a layer barrier."""
        self.status[i] = _READY
        if self.layered and self.graph.layer[i] != self.current_layer:
            self.held[self.graph.layer[i]].append(self.keys[i])
        else:
            heapq.heappush(self.ready, self.keys[i])

    def _start(self, i: int) -> None:
        """Record that task ``i`` starts an attempt now."""
        now = time.perf_counter()
        self.status[i] = _RUNNING
        self.running += 1
        a = self.attempts[i] = self.attempts[i] + 1
        if a == 1:
            self.first_start[i] = now
            self.started.append(i)
            self.seq[i] = len(self.started)
        self.last_end[i] = now  # start of the current attempt until it ends
        t = self.graph.tasks[i]
        if t.timeout is not None:
            self._timer().add(now + t.timeout, self._on_task_deadline, i, self.token[i])
        if self.emit:
            li = self.graph.layer[i]
            if not self.layer_seen[li]:
                self.layer_seen[li] = 1
                self.emit(LayerEvent("layer_started", None, time.time(), self.run_id, layer=li))
            self._task_event("task_started", i)

    def _next(self) -> int:
        """The best ready task for the calling worker, waiting while none is; -1 to exit."""
        while True:
            if self.exiting:
                return -1
            ready = self.ready
            if ready and not self.stopping and self.running < self.slots:
                i = heapq.heappop(ready) % self.n
                self._start(i)
                if ready:
                    self._dispatch()
                return i
            self.idle += 1
            self.cond.wait()

    def _dispatch(self) -> None:
        """Wake idle workers (or start new ones) for ready tasks nobody has taken yet."""
        want = min(len(self.ready), self.slots - self.running)
        if want <= 0 or self.stopping:
            return
        wake = min(want, self.idle)
        if wake:
            self.idle -= wake
            self.cond.notify(wake)
            want -= wake
        spawn = min(want, self.slots - self.threads)
        for _ in range(spawn):
            self._spawn()

    def _spawn(self) -> None:
        self.threads += 1
        threading.Thread(target=self._worker, name="layerflow-worker", daemon=True).start()

    def complete(self, i: int, token: int, ok: bool, value: Any, t0: float, t1: float) -> int:
        """Task ``i``'s attempt ended: record it, release its successors, return the next
        task for this worker (-1: this worker exits)."""
        if token != self.token[i]:
            return -1  # abandoned: its slot went to a fresh worker, its result is stale
        self.running -= 1
        self.busy[i] += t1 - t0
        self.last_end[i] = t1
        if ok:
            self._succeed(i, value)
        else:
            self._fail(i, value)
        return self._next()

    def _succeed(self, i: int, value: Any) -> None:
        self.status[i] = _SUCCEEDED
        self.values[i] = value
        if self.emit:
            self._task_event("task_succeeded", i, duration=self.busy[i])
        waiting = self.waiting
        status = self.status
        for s in self.graph.succs[i]:
            waiting[s] -= 1
            if not waiting[s] and status[s] == _PENDING:
                self._make_ready(s)
        self._finalize(i)

    def _fail(self, i: int, error: BaseException) -> None:
        t = self.graph.tasks[i]
        a = self.attempts[i]
        if not self.stopping and a <= t.retries and isinstance(error, t.retry_on):
            delay = t.retry_delay * (2 ** (a - 1)) * self.rng.uniform(0.8, 1.2)
            if self.emit:
                self._task_event("task_retrying", i, error=error, delay=delay)
            if delay > 0:
                self.status[i] = _RETRY_WAIT
                self._timer().add(time.perf_counter() + delay, self._on_retry, i, self.token[i])
            else:
                self._make_ready(i)
                self._dispatch()
            return
        self.status[i] = _FAILED
        self.errors[i] = error
        if self.emit:
            self._task_event("task_failed", i, error=error, duration=self.busy[i])
        if self.cause < 0:
            self.cause = i
            self.cause_error = error
        self.outcome = "failed"
        self._finalize(i)
        if self.fail_fast:
            self._stop(f"{self.graph.names[i]!r} failed")
        else:
            self._skip_downstream(i)

    def _skip_downstream(self, i: int) -> None:
        """Continue-on-failure: everything that needs ``i`` will never run."""
        names = self.graph.names
        status = self.status
        stack = [i]
        while stack:
            j = stack.pop()
            for s in self.graph.succs[j]:
                if status[s] == _PENDING:
                    status[s] = _SKIPPED
                    if self.emit:
                        self._task_event(
                            "task_skipped", s, reason=f"upstream {names[j]!r} did not succeed"
                        )
                    self._finalize(s)
                    stack.append(s)

    def _finalize(self, i: int) -> None:
        """Task ``i`` reached a final state: count it, end its layer, release inputs."""
        li = self.graph.layer[i]
        self.layer_left[li] -= 1
        if not self.layer_left[li]:
            self._layer_done(li)
        if self.release:
            users = self.users_left
            for j in self.graph.deps[i]:
                users[j] -= 1
                if not users[j] and not self.keep[j]:
                    self.values[j] = None
                    self.released[j] = 1
        self.left -= 1
        if not self.left:
            self._finish_run()

    def _layer_done(self, li: int) -> None:
        if self.emit:
            if self.layer_names is None:
                g = self.graph
                self.layer_names = [tuple(g.names[i] for i in lay) for lay in g.layers()]
            names = self.layer_names[li]
            self.emit(
                LayerEvent("layer_finished", None, time.time(), self.run_id, layer=li, tasks=names)
            )
        if self.layered and li == self.current_layer:
            while self.current_layer < len(self.layer_left) - 1:
                self.current_layer += 1
                for k in self.held[self.current_layer]:
                    heapq.heappush(self.ready, k)
                self.held[self.current_layer] = []
                if self.layer_left[self.current_layer]:
                    break
            self._dispatch()

    def _stop(self, reason: str) -> None:
        """No more starts: every task not running now is cancelled."""
        self.stopping = True
        self.ready.clear()
        status = self.status
        for i in range(self.n):
            if status[i] in (_PENDING, _READY, _RETRY_WAIT):
                status[i] = _CANCELLED
                if self.emit:
                    self._task_event("task_cancelled", i, reason=reason)
                self._finalize(i)

    def _abandon(self, i: int, error: BaseException, *, fail: bool) -> None:
        """Give up on task ``i``'s running attempt: its thread is left to finish on its own
        (a thread cannot be killed) and its slot goes to a fresh worker."""
        now = time.perf_counter()
        self.token[i] += 1
        self.running -= 1
        self.threads -= 1
        self.busy[i] += now - self.last_end[i]
        self.last_end[i] = now
        if fail:
            self._fail(i, error)
        else:
            self.status[i] = _CANCELLED
            self.errors[i] = error
            if self.emit:
                self._task_event("task_cancelled", i, reason=str(error))
            self._finalize(i)
        self._dispatch()

    def _on_task_deadline(self, i: int, token: int) -> None:
        if self.token[i] != token or self.status[i] != _RUNNING:
            return
        t = self.graph.tasks[i]
        name = self.graph.names[i]
        logger.warning(
            "task %r timed out after %gs; its thread was abandoned and may keep running "
            "in the background (threads cannot be killed)",
            name,
            t.timeout,
        )
        err = TaskTimeout(f"task {name!r} timed out after {t.timeout:g}s", name, t.timeout)
        self._abandon(i, err, fail=True)

    def _on_retry(self, i: int, token: int) -> None:
        if self.token[i] != token or self.status[i] != _RETRY_WAIT:
            return
        self._make_ready(i)
        self._dispatch()

    def _on_run_deadline(self) -> None:
        if self.left == 0:
            return
        limit = self.run_timeout
        err = TaskTimeout(f"the run timed out after {limit:g}s", None, limit)
        self.outcome = "failed"
        if self.cause < 0:
            self.cause_error = err
        self.stopping = True
        for i in range(self.n):
            if self.status[i] == _RUNNING:
                name = self.graph.names[i]
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
            for i in range(self.n):
                if self.status[i] == _RUNNING:
                    self._abandon(i, err, fail=False)
            self._stop("the run was interrupted")

    def _finish_run(self) -> None:
        self.end = time.perf_counter()
        self.exiting = True
        self.cond.notify_all()
        if self.timer is not None:
            self.timer.close()
        self.done.set()

    # --- workers --------------------------------------------------------------------------

    def _worker(self) -> None:
        """A worker thread: take a task, run it, report it and take the next, until done."""
        with self.lock:
            i = self._next()
        self._work(i, inline=False)

    def _work(self, i: int, *, inline: bool) -> None:
        lock = self.lock
        fns = self.fns
        consts = self.consts
        args_all = self.args
        values = self.values
        tokens = self.token
        positional = self.positional
        perf = time.perf_counter
        while i >= 0:
            token = tokens[i]
            const = consts[i]
            kwargs = dict(const) if const else {}
            for param, j in args_all[i]:
                kwargs[param] = values[j]
            t0 = perf()
            try:
                if positional[i]:
                    pos = [kwargs.pop(p) for p in positional[i] if p in kwargs]
                    value = fns[i](*pos, **kwargs)
                else:
                    value = fns[i](**kwargs)
                ok = True
            except BaseException as e:  # the task's own error, reported, never raised here
                if inline and isinstance(e, KeyboardInterrupt):
                    raise
                value = e
                ok = False
            t1 = perf()
            with lock:
                i = self.complete(i, token, ok, value, t0, t1)

    # --- driving a run --------------------------------------------------------------------

    def execute(self) -> None:
        """Run to the end (or to a stop), in the calling thread's lifetime."""
        g = self.graph
        if self.emit:
            self.emit(RunEvent("run_started", None, time.time(), self.run_id, total=self.n))
        inline = (
            self.mode == "sequential"
            and self.run_timeout is None
            and not any(t.timeout is not None for t in g.tasks)
        )
        try:
            with self.lock:
                if self.run_timeout is not None:
                    self._timer().add(self.perf0 + self.run_timeout, self._on_run_deadline)
                for i in range(self.n):
                    if not self.waiting[i]:
                        self._make_ready(i)
                if not self.n:
                    self._finish_run()
                elif not inline:
                    self._dispatch()
            if inline:
                with self.lock:
                    self.threads = 1  # the calling thread is the one worker
                    i = self._next()
                self._work(i, inline=True)
            self.done.wait()
        except KeyboardInterrupt:
            self.interrupt()
        finally:
            if self.bus is not None:
                self.emit(  # type: ignore[misc]
                    RunEvent(
                        "run_finished",
                        None,
                        time.time(),
                        self.run_id,
                        total=self.n,
                        status=self.outcome,
                        duration=self.end - self.perf0,
                        sequential_estimate=sum(self.busy),
                        counts=self._counts(),
                    )
                )
                self.bus.close()

    def _counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.status:
            name = _STATUS_NAMES[s]
            out[name] = out.get(name, 0) + 1
        return out

    def result(self) -> RunResult:
        """The run's outcome as a :class:`RunResult` (call after :meth:`execute`)."""
        g = self.graph
        names = g.names
        offset = self.wall0 - self.perf0  # perf_counter reading -> seconds since the epoch
        status_names = [_STATUS_NAMES[s] for s in range(8)]
        with _gc_paused():
            tasks = {
                names[i]: TaskRun(
                    names[i],
                    status_names[self.status[i]],
                    self.values[i],
                    self.errors[i],
                    a,
                    self.first_start[i] + offset if a else None,
                    self.last_end[i] + offset if a else None,
                    self.busy[i],
                    g.layer[i],
                    {},
                )
                for i, a in enumerate(self.attempts)
            }
            critical = self.plan._longest(self.plan._longest_to(self.busy))
            return RunResult(
                run_id=self.run_id,
                flow_name=g.flow_name,
                status=self.outcome,
                tasks=tasks,
                order=[names[i] for i in self.started],
                layers=lambda: self.plan.layers,
                critical_path=critical,
                started_at=self.wall0,
                finished_at=self.end + offset,
                released=frozenset(names[i] for i in range(self.n) if self.released[i])
                if self.release
                else frozenset(),
            )


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
                    self.cond.wait(delay)
                    continue
                _, _, callback, args = heapq.heappop(heap)
                callback(*args)


def execute(
    plan: Plan,
    inputs: Mapping[str, Any],
    *,
    outputs: list[int] | None,
    mode: str,
    max_workers: int | None,
    fail_fast: bool,
    timeout: float | None,
    on_event: Observer | None,
    progress: bool,
    seed: int | None,
) -> RunResult:
    """Run a validated plan; raise ``TaskFailed`` or ``RunInterrupted`` as ``flow.run`` does."""
    if mode not in MODES:
        raise InvalidOptionError(
            f"mode must be one of {', '.join(repr(m) for m in MODES)}, got {mode!r}"
        )
    if timeout is not None and (
        not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0
    ):
        raise InvalidOptionError(f"timeout must be a number of seconds > 0, got {timeout!r}")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise InvalidOptionError(f"seed must be an int, got {seed!r}")
    if on_event is not None and not callable(on_event):
        raise InvalidOptionError(f"on_event must be a callable taking an event, got {on_event!r}")
    observers: list[Observer] = []
    if on_event is not None:
        observers.append(on_event)
    if progress:
        import sys

        observers.append(LogObserver(lambda line, level: print(line, file=sys.stderr, flush=True)))
    elif logger.isEnabledFor(20):  # logging.INFO: plain progress lines through logging
        observers.append(LogObserver())
    run = Run(
        plan,
        inputs,
        mode=mode,
        max_workers=max_workers,
        fail_fast=fail_fast,
        timeout=timeout,
        keep=outputs,
        observers=observers,
        seed=seed,
    )
    run.execute()
    result = run.result()
    if result.status == "interrupted":
        raise RunInterrupted("the run was interrupted (Ctrl-C); finished results are kept", result)
    if result.status == "failed" and fail_fast:
        cause = run.cause_error
        if run.cause >= 0:
            name = plan.graph.names[run.cause]
            attempts = run.attempts[run.cause]
            tries = f" after {attempts} attempts" if attempts > 1 else ""
            message = f"task {name!r} failed{tries}: {type(cause).__name__}: {cause}"
        else:
            name = ""
            message = str(cause)
        raise TaskFailed(message, name, result) from cause
    return result
