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

The loop of ``flow.run`` is kept for the next run from the same thread (``_KeptLoop``):
clients made once and shared by the coroutines (``httpx.AsyncClient``, ``openai.AsyncOpenAI``,
whose connections belong to the loop they were opened on) keep working from run to run, as
they would under one ``asyncio.run``. At the end of a run only its own coroutines that are
still going are cancelled; the loop and what else runs on it stay. A loop that a coroutine
blocked past the end of its run is left to it, and the next run gets a fresh one.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import os
import threading
import time
import types
import weakref
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from typing import Any

from ..capture import SINK
from ..errors import InternalError, safe_str
from ..faults import Fault, guarded, log_fault
from ..metrics import CURRENT_BOX
from . import Backend, Done

__all__ = ["AsyncBackend"]

#: coroutines a worker runs through, without their waiting, before it lets the loop turn
_TURN = 256
#: seconds a run's end waits for its cancelled coroutines to take their cancel
_CLOSE_WAIT = 5.0


class _KeptLoop:
    """An event loop on a thread of its own that serves the runs of one calling thread,
    one run after another, and stops when that thread ends (or the interpreter exits)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.pid = os.getpid()
        self.busy = False  # a run is using it
        ready = threading.Event()
        # [the error its thread died of, whom to tell]: the run using it sets the latter
        box: list[Any] = [None, log_fault]
        self.fault_box = box

        def fault(where: str, error: BaseException) -> None:
            box[0] = error
            ready.set()  # (a loop that never started must not leave its maker waiting)
            box[1](where, error)

        # the thread holds the loop, not this object: when the calling thread ends, its
        # thread-local keeper goes, and the finalizer stops the loop
        self.thread = threading.Thread(
            target=guarded("async loop", _serve, fault),
            args=(self.loop, ready),
            name="layerflow-async",
            daemon=True,
        )
        self.thread.start()
        ready.wait()
        weakref.finalize(self, _stop_loop, self.loop, self.pid)
        _ALL_KEPT.add(self)

    def usable(self) -> bool:
        return (
            not self.busy
            and self.pid == os.getpid()  # not a fork's copy, whose loop thread is gone
            and self.thread.is_alive()
            and not self.loop.is_closed()
        )


_KEPT = threading.local()  # .keeper: the calling thread's _KeptLoop
_ALL_KEPT: weakref.WeakSet[_KeptLoop] = weakref.WeakSet()


def _serve(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
    asyncio.set_event_loop(loop)
    loop.call_soon(ready.set)
    try:
        loop.run_forever()
    finally:
        # an async generator that would not close: the loop closes anyway
        with contextlib.suppress(Exception):
            loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def _stop_loop(loop: asyncio.AbstractEventLoop, pid: int | None = None) -> None:
    """Stop ``loop`` from any thread (not a forked copy's: its thread is the parent's)."""
    if (pid is None or pid == os.getpid()) and not loop.is_closed():
        with contextlib.suppress(RuntimeError):  # closed meanwhile
            loop.call_soon_threadsafe(loop.stop)


def _kept_loop() -> _KeptLoop:
    """The calling thread's kept loop, made on first use (or anew if it is unusable);
    marked busy for the run that takes it."""
    keeper = getattr(_KEPT, "keeper", None)
    if keeper is None or not keeper.usable():
        if keeper is not None and not keeper.busy:
            _stop_loop(keeper.loop, keeper.pid)
        keeper = _KEPT.keeper = _KeptLoop()
    keeper.busy = True
    return keeper


@atexit.register
def _stop_kept_loops() -> None:
    """At exit, stop the kept loops so that they close (and say nothing about it)."""
    for keeper in list(_ALL_KEPT):
        if keeper.pid == os.getpid() and not keeper.busy:
            _stop_loop(keeper.loop)
            keeper.thread.join(timeout=1)


class AsyncBackend(Backend):
    """Runs coroutine functions on an event loop; ``cancel`` cancels the coroutine."""

    def __init__(
        self,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        context: contextvars.Context | None = None,
        on_fault: Fault = log_fault,
        **_: Any,
    ) -> None:
        self._on_fault = on_fault
        # each coroutine runs in a copy of this (the run's caller's) context, whichever
        # thread submitted it
        self._context = context if context is not None else contextvars.copy_context()
        self._queue: deque[tuple[Any, ...]] = deque()  # the loop's thread only
        self._pulling = 0  # workers that will look at the queue before they wait on anything
        self._incoming: deque[tuple[Any, ...]] = deque()  # from other threads
        self._lock = threading.Lock()
        self._scheduled = False
        self._tasks: set[asyncio.Task[Any]] = set()  # this run's asyncio tasks, while they run
        self._keeper: _KeptLoop | None = None
        if loop is None:
            self._keeper = _kept_loop()
            died = self._keeper.fault_box[0]
            if died is not None:  # its thread failed as it started: no loop to run on
                self._keeper.busy = False
                raise InternalError(
                    f"layerflow's async loop thread failed as it started ({safe_str(died)})"
                ) from died
            self._keeper.fault_box[1] = on_fault  # a fault while this run uses it
            self.loop = self._keeper.loop
            self._thread: threading.Thread | None = self._keeper.thread
            self._loop_thread = self._thread.ident
        else:
            self.loop = loop
            self._thread = None
            self._loop_thread = threading.get_ident()

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
        sink: Any = None,
    ) -> list[Any]:
        # [the asyncio task while it waits, cancelled, whose output it writes (capture.py)]
        handle: list[Any] = [None, False, sink]
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
        CURRENT_BOX.set(box)
        if handle[2] is not None:
            SINK.set(handle[2])
        me = asyncio.current_task()
        self._tasks.add(me)  # type: ignore[arg-type]
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
        finally:
            self._tasks.discard(me)

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
                coro = _call(fn, args, kwargs, box, handle[2])
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
                    self._tasks.add(me)  # type: ignore[arg-type]
                    if queue and not self._pulling:
                        self._spawn_each()
                    try:
                        ok, value = await _resume(coro, context, step)
                    finally:
                        handle[0] = None
                        self._pulling += 1
                        self._tasks.discard(me)
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
        """The run ended: its coroutines still going are cancelled, and the loop is kept
        for the next run from the same thread once they have taken their cancel (if a
        coroutine blocks the loop past that, the next run gets a fresh loop)."""
        keeper = self._keeper
        if keeper is None:
            return  # the caller's loop (run_async): its own
        self._keeper = None
        keeper.fault_box[1] = log_fault  # (its next run says whom to tell)
        if self.loop.is_closed():
            return  # its thread died: nothing left to cancel
        settled = threading.Event()

        def free() -> None:
            keeper.busy = False
            settled.set()

        def stop() -> None:
            for task in list(self._tasks):
                task.cancel()
            # one more turn of the loop lets the cancelled tasks take their cancel
            self.loop.call_soon(free)

        try:
            self.loop.call_soon_threadsafe(stop)
        except RuntimeError:  # the loop was closed (an interpreter shutting down)
            return
        if threading.get_ident() != self._loop_thread:
            settled.wait(_CLOSE_WAIT)


def _ours(handle: list[Any], error: object) -> bool:
    """Is ``error`` the cancel layerflow made (reported when it was made)? Any other
    ``CancelledError`` is the task's own failure."""
    return handle[1] and isinstance(error, asyncio.CancelledError)


async def _call(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    box: dict[str, float],
    sink: Any,
) -> Any:
    CURRENT_BOX.set(box)  # the task's lf.record box, in its own context
    if sink is not None:  # and whose output it writes
        SINK.set(sink)
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
            call: Callable[[Any], Any] = coro.throw
            arg: Any = e
        else:
            call, arg = coro.send, sent
        try:
            step = context.run(call, arg)
        except StopIteration as stop:
            return True, stop.value
        except BaseException as e:
            return False, e
