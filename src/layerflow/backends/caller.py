"""``mode="sequential"``: plain functions run in the thread that called ``flow.run``.

A synchronous executor behind the same interface as the others. ``submit`` only queues
the call (it is made with the run's lock held, and the call's end takes that lock);
``serve``, called by the run's own thread once the run has started, makes the queued calls
there one at a time until ``stop``. A Ctrl-C during a call reaches the caller as it would
in a plain loop.
"""

from __future__ import annotations

import contextvars
import queue
import time
from collections.abc import Callable
from typing import Any

from ..errors import Cancelled
from ..metrics import CURRENT_BOX
from . import LONG_TASK, SIGNAL_POLL, Backend, Done

__all__ = ["CallerThread"]

_STOP = None


class CallerThread(Backend):
    """Runs each submitted call in the thread that runs ``serve``, in submission order."""

    interrupts = False  # a call is made in the caller's thread: nothing can stop it

    def __init__(self, *, context: contextvars.Context | None = None, **_: Any) -> None:
        # each call runs in a copy of this (the run's caller's) context, with one lf.record
        # box for all, emptied after each call
        self._context = (context if context is not None else contextvars.copy_context()).copy()
        self._box: dict[str, float] = {}
        self._context.run(CURRENT_BOX.set, self._box)
        self._calls: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def submit(
        self,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        on_done: Done,
        **_: Any,
    ) -> list[bool]:
        handle = [False]  # [cancelled]
        self._calls.put((fn, args, kwargs, on_done, handle))
        return handle

    def serve(self) -> None:
        """Make the queued calls, waiting for more, until ``stop``."""
        calls, base, box = self._calls, self._context, self._box
        perf, cpu = time.perf_counter, time.thread_time
        mark = cpu()  # this thread's CPU clock after the last long call (or at the start)
        while True:
            try:
                call = calls.get(timeout=SIGNAL_POLL)
            except queue.Empty:
                continue  # a Ctrl-C another thread took is raised here, between waits
            if call is _STOP:
                return
            fn, args, kwargs, on_done, handle = call
            if handle[0]:  # cancelled before it started: it ends so, as a thread's does
                on_done(False, Cancelled("the run stopped before this task began"), 0.0)
                continue
            t0 = perf()
            try:
                value = base.copy().run(fn, *args, **kwargs)
                ok = True
            except KeyboardInterrupt:
                raise  # the caller's Ctrl-C: the run is interrupted, as a loop would be
            except BaseException as e:  # the task's own error, reported, never raised here
                value, ok = e, False
            seconds = perf() - t0
            used = None
            if seconds > LONG_TASK:  # its CPU time: read after long calls only
                now = cpu()
                used, mark = min(now - mark, seconds), now
            metrics = None
            if box:
                metrics = dict(box)
                box.clear()
            on_done(ok, value, seconds, None, metrics, used)

    def stop(self) -> None:
        """``serve`` returns once the call it is making (if any) has ended."""
        self._calls.put(_STOP)

    def cancel(self, handle: list[bool]) -> None:
        """A call not yet started is not made (its end is ``Cancelled``); one running
        cannot be stopped."""
        handle[0] = True

    spare = cancel  # the run stops: the same (a call that began cannot be stopped)

    def capacity(self, limit: int | None) -> int | None:
        """One call at a time: there is one thread."""
        return 1

    def prepare(self, count: int) -> None:
        """Nothing to start: the caller's thread is there."""

    def close(self) -> None:
        """Nothing to release."""
