"""Coroutine tasks on one event loop per run (or on the caller's loop for ``run_async``).

Coroutines are run by *worker* asyncio tasks that take them from one queue, rather than
by one asyncio task each. A worker runs a coroutine's steps itself, each in the
coroutine's own copy of the caller's context, and reports its end at once. A coroutine
that finishes without waiting for anything (a cache hit, a fast path, a no-op) thus costs
no asyncio task and no turn of the loop; it shares its worker's task with the others the
worker ran (``asyncio.current_task()``). When a coroutine waits, its worker stays with it
until it is done (so ``asyncio.timeout`` and cancellation work as usual) and is then
retired, since the coroutine may have kept a reference to its task; if others are queued,
each is started on an asyncio task of its own (``_work``), as ``asyncio.gather`` would.

Submissions from other threads are queued and moved over by one ``call_soon_threadsafe``
per batch, so 10,000 ready coroutines cost one wake-up of the loop, not 10,000.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
import types
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from typing import Any

from ..errors import InternalError, safe_str
from ..faults import Fault, guarded, log_fault
from ..metrics import _BOX
from . import Done

__all__ = ["AsyncBackend"]

#: coroutines a worker runs through, without their waiting, before it lets the loop turn
_TURN = 256


class AsyncBackend:
    """Runs coroutine functions on an event loop; ``cancel`` cancels the coroutine."""

    def __init__(
        self,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        context: contextvars.Context | None = None,
        on_fault: Fault = log_fault,
        **_: Any,
    ) -> None:
        self._own = loop is None
        self._on_fault = on_fault
        # each coroutine runs in a copy of this (the run's caller's) context, whichever
        # thread submitted it
        self._context = context if context is not None else contextvars.copy_context()
        self._queue: deque[tuple[Any, ...]] = deque()  # the loop's thread only
        self._pulling = 0  # workers that will look at the queue before they wait on anything
        self._incoming: deque[tuple[Any, ...]] = deque()  # from other threads
        self._lock = threading.Lock()
        self._scheduled = False
        if loop is None:
            self.loop = asyncio.new_event_loop()
            ready = threading.Event()
            died: list[BaseException] = []

            def fault(where: str, error: BaseException) -> None:
                died.append(error)
                ready.set()  # (a loop that never started must not leave this waiting)
                on_fault(where, error)

            self._thread: threading.Thread | None = threading.Thread(
                target=guarded("async loop", self._serve, fault),
                args=(ready,),
                name="layerflow-async",
                daemon=True,
            )
            self._thread.start()
            ready.wait()
            if died and not self.loop.is_running():
                self.loop.close()
                raise InternalError(
                    f"layerflow's async loop thread failed as it started ({safe_str(died[0])})"
                ) from died[0]
        else:
            self.loop = loop
            self._thread = None
            self._loop_thread = threading.get_ident()

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self._loop_thread = threading.get_ident()
        self.loop.call_soon(ready.set)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def submit(
        self,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        on_done: Done,
        *,
        priority: int = 0,
        fetch: bool = True,
        tag: Any = None,
    ) -> list[Any]:
        handle: list[Any] = [None, False]  # [the asyncio task while it waits, cancelled]
        if threading.get_ident() == self._loop_thread:
            self._queue.append((fn, args, kwargs, on_done, handle))
            if not self._pulling:
                self._spawn(1)
            return handle
        with self._lock:
            self._incoming.append((fn, args, kwargs, on_done, handle))
            wake = not self._scheduled
            self._scheduled = True
        if wake:
            self.loop.call_soon_threadsafe(self._drain)
        return handle

    def _drain(self) -> None:
        with self._lock:
            self._queue.extend(self._incoming)
            self._incoming.clear()
            self._scheduled = False
        if self._queue and not self._pulling:
            self._spawn(1)

    def _spawn(self, count: int) -> None:
        """Start ``count`` workers that take coroutines from the queue."""
        self._pulling += count
        for _ in range(count):
            self.loop.create_task(self._pull(), context=self._context.copy())

    def _spawn_each(self) -> None:
        """Start every queued coroutine on an asyncio task of its own (``_work``): what
        happens when the queue's coroutines wait, as they usually do together."""
        queue, base, create = self._queue, self._context, self.loop.create_task
        while queue:
            item = queue.popleft()
            if not item[4][1]:  # not cancelled before it started
                # the task is the handle's from now on: a cancel before its first step
                # stops it there
                item[4][0] = create(self._work(*item), context=base.copy())

    async def _work(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        on_done: Done,
        handle: list[Any],
    ) -> None:
        """Run one coroutine as this asyncio task, in the task's own context."""
        box: dict[str, float] = {}  # this coroutine's lf.record box
        _BOX.set(box)
        t0 = time.perf_counter()
        try:
            value = await fn(*args, **kwargs)
        except BaseException as e:
            handle[0] = None
            if not _ours(handle, e):
                self._report(on_done, False, e, time.perf_counter() - t0, None, box)
        else:
            handle[0] = None
            self._report(on_done, True, value, time.perf_counter() - t0, None, box)

    async def _pull(self) -> None:
        """Take coroutines from the queue until it is empty or one of them waited (see
        the module docstring). The caller has counted this worker in ``_pulling``."""
        queue, base = self._queue, self._context
        me = asyncio.current_task()
        ran = 0
        try:
            while queue:
                fn, args, kwargs, on_done, handle = queue.popleft()
                if handle[1]:  # cancelled before it started
                    continue
                context = base.copy()
                box: dict[str, float] = {}  # this coroutine's lf.record box
                coro = _call(fn, args, kwargs, box)
                t0 = time.perf_counter()
                try:
                    step = context.run(coro.send, None)
                except StopIteration as stop:
                    self._report(on_done, True, stop.value, time.perf_counter() - t0, None, box)
                except BaseException as e:  # the task's own error, reported, never raised
                    self._report(on_done, False, e, time.perf_counter() - t0, None, box)
                else:  # it waits: stay with it, and let new workers take the rest
                    handle[0] = me
                    self._pulling -= 1
                    if queue and not self._pulling:
                        self._spawn_each()
                    try:
                        ok, value = await _resume(coro, context, step)
                    finally:
                        handle[0] = None
                        self._pulling += 1
                    if not _ours(handle, value):
                        self._report(on_done, ok, value, time.perf_counter() - t0, None, box)
                    break  # the coroutine may have kept this task: it runs no other one
                ran += 1
                if ran >= _TURN and queue:  # let the loop turn (timers, I/O, others)
                    ran = 0
                    await asyncio.sleep(0)
        finally:
            self._pulling -= 1
            if queue and not self._pulling and not self.loop.is_closed():
                self._spawn(1)

    def _report(self, on_done: Done, *args: Any) -> None:
        """An attempt's end, to the scheduler: its own failure there is a fault of the run
        (inside an asyncio task it would only be logged, and the run would wait forever)."""
        try:
            on_done(*args)
        except BaseException as e:
            self._on_fault("async loop", e)

    def capacity(self, limit: int | None) -> int | None:
        """Coroutines wait for I/O: only the run's bound limits them."""
        return limit

    def prepare(self, count: int) -> None:
        """Nothing to start: the loop is running."""

    def cancel(self, handle: list[Any]) -> None:
        def cancel() -> None:
            handle[1] = True
            if handle[0] is not None:  # its worker waits on it: cancel what it waits for
                handle[0].cancel()

        if threading.get_ident() == self._loop_thread:
            cancel()
        elif not self.loop.is_closed():  # (a loop that died has nothing left to cancel)
            self.loop.call_soon_threadsafe(cancel)

    def close(self) -> None:
        if self._own and self._thread is not None and not self.loop.is_closed():

            def stop() -> None:
                for task in asyncio.all_tasks(self.loop):
                    task.cancel()
                # one more turn of the loop lets the cancelled tasks finish before it stops
                self.loop.call_soon(self.loop.stop)

            self.loop.call_soon_threadsafe(stop)
            self._thread.join(timeout=5)


def _ours(handle: list[Any], error: object) -> bool:
    """Is ``error`` the cancel layerflow made (reported when it was made)? Any other
    ``CancelledError`` is the task's own failure."""
    return handle[1] and isinstance(error, asyncio.CancelledError)


async def _call(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], box: dict[str, float]
) -> Any:
    _BOX.set(box)  # the task's lf.record box, in its own context
    return await fn(*args, **kwargs)


@types.coroutine
def _resume(
    coro: Coroutine[Any, Any, Any], context: contextvars.Context, step: Any
) -> Generator[Any, Any, tuple[bool, Any]]:
    """Go on with ``coro``, which waits on ``step``: what ``await coro`` would do, but each
    step in ``context``. Returns (True, value) or (False, the exception it raised)."""
    while True:
        try:
            sent = yield step
        except GeneratorExit:
            context.run(coro.close)
            raise
        except BaseException as e:  # thrown into the worker (a cancel): into the coroutine
            call, arg = coro.throw, e
        else:
            call, arg = coro.send, sent
        try:
            step = context.run(call, arg)
        except StopIteration as stop:
            return True, stop.value
        except BaseException as e:
            return False, e
