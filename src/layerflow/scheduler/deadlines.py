"""Deadlines: a task's timeout, a group's, the run's; one timer thread for all."""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import (
    TaskTimeout,
)
from ..events import (
    logger,
)
from ..faults import guarded
from .state import (
    _RUNNING,
    _UNSTOPPABLE,
)

if TYPE_CHECKING:  # State, with what every part declares (parts.py)
    from .state import State
else:  # for the type checker only
    State = object


def _times_itself(t: Any) -> bool:
    """Does task ``t``'s callable end each attempt at the task's own timeout (a ``run:``
    step's command)? Its ``cancel`` stops every attempt of the step (fail-fast, Ctrl-C),
    which a deadline of one ``foreach`` element must not do to the others."""
    fn = t.fn
    return bool(getattr(fn, "times_its_attempts", False)) and fn.timeout == t.timeout


class Timer:
    """One thread for every deadline of a run (task timeouts, retry waits, run timeout).

    Started only when a run has something timed. Callbacks run under the run's lock.
    """

    def __init__(self, run: Any) -> None:
        self.run = run
        self.cond = threading.Condition(run.lock)
        self.heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self.count = 0
        self.closed = False
        threading.Thread(
            target=guarded("timer", self._loop, run._fault), name="layerflow-timer", daemon=True
        ).start()

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
                except Exception as e:  # a deadline's handling broke: the run cannot be trusted
                    logger.error("layerflow timer callback %r failed", callback, exc_info=e)
                    self.run._fault_locked("timer", e)


class Deadlines(State):
    """Deadlines: a task's timeout, a group's, the run's; one timer thread for all."""

    def _timer(self) -> Timer:
        if self.timer is None:
            self.timer = Timer(self)
        return self.timer

    def _on_task_deadline(self, i: int, token: int) -> None:
        if self.token[i] != token or self.status[i] != _RUNNING:
            return
        t = self.spec[i]
        name = self.names[i]
        if self.kind[i] in _UNSTOPPABLE and _times_itself(t):
            pass  # its attempt kills its own command at this deadline; its siblings go on
        elif self.kind[i] in _UNSTOPPABLE:
            if t.cancel is not None:  # it knows how to stop (a shell step kills its command)
                try:
                    t.cancel()
                except Exception:
                    logger.exception("could not stop task %r", name)
            else:
                logger.warning(
                    "task %r timed out after %gs; its thread was abandoned and may keep "
                    "running in the background (threads cannot be killed)",
                    name,
                    t.timeout,
                )
        self._abandon(i, self._timeout_error(i), fail=True)

    def _timeout_error(self, i: int) -> TaskTimeout:
        """The error of an attempt that ran past its task's ``timeout``."""
        name, limit = self.names[i], self.spec[i].timeout
        stopped = " and was stopped" if self.spec[i].cancel is not None else ""
        return TaskTimeout(f"task {name!r} timed out after {limit:g}s{stopped}", name, limit)

    def _on_run_deadline(self) -> None:
        """The run's ``timeout``: attempts still running fail with ``TaskTimeout``, all
        else that has not finished is cancelled (not skipped: nothing failed upstream of
        it, the run stopped). The run fails; ``run`` raises it only under fail-fast, as
        for any failure (``driver.outcome``)."""
        if self.left == 0:
            return
        limit = self.run_timeout
        self.outcome = "failed"
        self.run_timed_out = True
        if self.cause < 0:
            self.cause_error = TaskTimeout(f"the run timed out after {limit:g}s", None, limit)
        self.stopping = True
        running = [i for i, status in enumerate(self.status) if status == _RUNNING]
        self._stop(f"the run timed out after {limit:g}s")  # first: the waiting are cancelled
        for i in running:
            if self.status[i] != _RUNNING:
                continue
            name = self.names[i]
            e = TaskTimeout(
                f"task {name!r} was still running when the run timed out after {limit:g}s",
                name,
                limit,
            )
            self._abandon(i, e, fail=True)
