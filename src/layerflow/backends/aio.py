"""Coroutine tasks on one event loop per run (or on the caller's loop for ``run_async``).

Submissions made on the loop's own thread (a coroutine's completion releasing the next
coroutine) create the asyncio task at once; submissions from other threads are queued and
drained by one ``call_soon_threadsafe`` per batch, so 10,000 ready coroutines cost one
wake-up of the loop, not 10,000.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ..metrics import _BOX
from . import Done

__all__ = ["AsyncBackend"]


class AsyncBackend:
    """Runs coroutine functions on an event loop; ``cancel`` cancels the coroutine."""

    def __init__(
        self,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        context: contextvars.Context | None = None,
        **_: Any,
    ) -> None:
        self._own = loop is None
        # each coroutine runs in a copy of this (the run's caller's) context, whichever
        # thread submitted it
        self._context = context if context is not None else contextvars.copy_context()
        self._pending: deque[tuple[Any, ...]] = deque()
        self._lock = threading.Lock()
        self._scheduled = False
        if loop is None:
            self.loop = asyncio.new_event_loop()
            ready = threading.Event()
            self._thread: threading.Thread | None = threading.Thread(
                target=self._serve, args=(ready,), name="layerflow-async", daemon=True
            )
            self._thread.start()
            ready.wait()
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
        handle: list[Any] = [None, False]  # [asyncio.Task once created, cancelled]
        if threading.get_ident() == self._loop_thread:
            self._create(fn, args, kwargs, on_done, handle)
            return handle
        with self._lock:
            self._pending.append((fn, args, kwargs, on_done, handle))
            wake = not self._scheduled
            self._scheduled = True
        if wake:
            self.loop.call_soon_threadsafe(self._drain)
        return handle

    def _drain(self) -> None:
        with self._lock:
            batch = list(self._pending)
            self._pending.clear()
            self._scheduled = False
        for item in batch:
            self._create(*item)

    def _create(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        on_done: Done,
        handle: list[Any],
    ) -> None:
        if handle[1]:  # cancelled before it started
            return
        # the handle (held by the scheduler while the attempt runs) keeps the task alive
        handle[0] = self.loop.create_task(
            _call(fn, args, kwargs, on_done, handle), context=self._context.copy()
        )

    def capacity(self, limit: int | None) -> int | None:
        """Coroutines wait for I/O: only the run's bound limits them."""
        return limit

    def prepare(self, count: int) -> None:
        """Nothing to start: the loop is running."""

    def cancel(self, handle: list[Any]) -> None:
        def cancel() -> None:
            handle[1] = True
            if handle[0] is not None:
                handle[0].cancel()

        if threading.get_ident() == self._loop_thread:
            cancel()
        else:
            self.loop.call_soon_threadsafe(cancel)

    def close(self) -> None:
        if self._own and self._thread is not None:

            def stop() -> None:
                for task in asyncio.all_tasks(self.loop):
                    task.cancel()
                # one more turn of the loop lets the cancelled tasks finish before it stops
                self.loop.call_soon(self.loop.stop)

            self.loop.call_soon_threadsafe(stop)
            self._thread.join(timeout=5)


async def _call(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    on_done: Done,
    handle: list[Any],
) -> None:
    box: dict[str, float] = {}  # this coroutine's lf.record box (metrics.open_box, inlined:
    _BOX.set(box)  # the task runs in a copy of the context, so the box is its own)
    t0 = time.perf_counter()
    try:
        value = await fn(*args, **kwargs)
    except asyncio.CancelledError as e:
        if handle[1]:
            return  # cancelled by layerflow (timeout, fail-fast, Ctrl-C): already reported
        # not by us: the coroutine awaited something that someone else cancelled; that is
        # the task's own failure (treating it as ours would leave the run waiting forever)
        on_done(False, e, time.perf_counter() - t0, None, box)
        return
    except BaseException as e:  # the task's own error, reported, never raised here
        on_done(False, e, time.perf_counter() - t0, None, box)
        return
    on_done(True, value, time.perf_counter() - t0, None, box)
