"""The thread backend: layerflow's own worker threads, which call the transitions.

When a task returns, its worker calls ``complete``, which records the result, releases the
successors and hands the best ready task back to the same thread in the same critical
section: a finished task passes its successor to the thread that just freed up, with no
hand-off to another thread (that hand-off, 20-100 us, is what makes a ready-queue-plus-pool
scheduler slow). Idle workers are woken only when more is ready than the finishing worker
takes. Tiny tasks (under ``_SHORT`` on average) run on one worker: more threads would only
add hand-offs; the others are woken when a task turns out to take longer than ``_WATCH``.
"""

from __future__ import annotations

import heapq
import threading
import time
from contextvars import copy_context
from typing import TYPE_CHECKING, Any

from ..backends import LONG_TASK
from ..capture import open_cell
from ..errors import Cancelled
from ..faults import guarded
from ..graph import positional_args
from ..metrics import CURRENT_BOX, open_box
from ..metrics import add as add_metrics
from ..policy import KEY_BASE
from .state import (
    _READY,
    _SHORT,
    _THREAD,
    _WATCH,
)

if TYPE_CHECKING:  # State, with what every part declares (parts.py)
    from .state import State
else:  # for the type checker only
    State = object


class ThreadWorkers(State):
    """The thread backend: layerflow's own worker threads, which call the transitions."""

    def _init_workers(self) -> None:
        """``threads`` (workers that count towards the bound), ``starting`` (those
        started that have not yet looked for a task), ``idle`` (waiting for work), and for
        the tiny-task mode the recent thread-task duration (``avg_task``, a moving
        average), completions (``progress``), ``last_take`` and ``watching``;
        ``cpu_times``: the CPU seconds of long thread tasks, by task (``cpu_foreign``: of
        long tasks in worker processes)."""
        self.cpu_times: dict[int, float] = {}
        self.cpu_foreign: dict[int, float] = {}  # a worker process's tasks, by the same rule
        self.threads = 0
        self.starting = 0  # started, and not yet at the ready tasks: they will take some
        self.idle = 0
        self.avg_task = 1.0
        self.progress = 0
        self.last_take = 0.0
        self.watching = False

    def _next(self) -> int:
        """The best ready thread task for the calling worker, waiting while there is none;
        -1 tells the worker to exit."""
        ready = self.ready_threads
        while True:
            if self.exiting:
                return -1
            if ready and not self.stopping and self.running < self.limit and not self.order_hold:
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
        # (a worker started a moment ago takes one of them: another is not started for it,
        # or each of n ready tasks taken would start one for each still ready: n²/2 threads)
        want = min(len(self.ready_threads), self.limit - self.running) - self.starting
        if want <= 0 or self.stopping:
            return
        wake = min(want, self.idle)
        if wake:
            self.idle -= wake
            self.cond.notify(wake)
            want -= wake
        for _ in range(min(want, self.thread_cap - self.threads)):
            self.threads += 1
            self.starting += 1
            try:
                threading.Thread(
                    target=guarded("worker", self._worker, self._fault),
                    name="layerflow-worker",
                    daemon=True,
                ).start()
            except BaseException:  # (can't start new thread): it does not count
                self.threads -= 1
                self.starting -= 1
                raise

    def _worker(self) -> None:
        """A worker thread: take a task, run it, report it and take the next, until done.
        It works in a copy of the caller's context, so the caller's contextvars reach every
        task (each task then runs in a copy of its own)."""
        self.context.copy().run(self._serve)

    def _serve(self) -> None:
        open_box()  # this thread's lf.record box, emptied after each task
        cell = open_cell(self.output)  # whose output this thread's writes are
        with self.lock:
            self.starting -= 1
            i = self._next()
            token = self.token[i] if i >= 0 else 0
        self._loop(i, token, CURRENT_BOX.get(), cell)  # type: ignore[arg-type]

    def _loop(self, i: int, token: int, box: dict[str, float], cell: Any) -> None:
        lock = self.lock
        fns = self.fns
        consts = self.consts
        args_all = self.args
        values = self.values
        tokens = self.token
        attempts = self.attempts
        positional = self.positional
        lookup = self.lookup
        perf = time.perf_counter
        fresh = copy_context  # each task in a copy: what one sets is not seen by the next
        cpu = time.thread_time
        cpu_times = self.cpu_times
        cpu_mark = cpu()  # this thread's CPU clock at its last long task (or its start)
        long = LONG_TASK
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
            cell.a = attempts[i]  # what this thread writes now is this attempt's
            cell.i = i  # (of task i)
            try:
                if self.stopping:  # the run stopped just after handing this task out
                    raise Cancelled("the run stopped before this task began")
                if positional[i]:
                    value = fresh().run(fns[i], *positional_args(positional[i], kwargs), **kwargs)
                else:
                    value = fresh().run(fns[i], **kwargs)
                ok = True
            except BaseException as e:  # the task's own error, reported, never raised here
                value = e
                ok = False
            cell.i = -1
            t1 = perf()
            spent = -1.0
            if t1 - t0 > long:  # its CPU time: read only after long tasks, never per short one
                now = cpu()  # (what short tasks since the last mark used counts too: capped)
                spent = min(now - cpu_mark, t1 - t0)
                cpu_mark = now
            with lock:
                if spent >= 0 and tokens[i] == token:  # (an abandoned attempt's is not kept:
                    cpu_times[i] = spent  # the run may have ended and be read meanwhile)
                used = None
                if box:
                    if tokens[i] == token:
                        add_metrics(self.metrics, i, box)
                        used = dict(box)  # its real costs, for its rate windows
                    box.clear()
                self.avg_task += (t1 - t0 - self.avg_task) * 0.125
                self.progress += 1
                i = self.complete(i, token, ok, value, t0, t1, used=used)
                token = tokens[i] if i >= 0 else 0  # read under the lock: a deadline may bump it
