"""One timer thread for every deadline of a run: task timeouts, retry waits, the run's."""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable
from typing import Any

from ..events import logger
from ..faults import guarded

__all__ = ["Timer"]


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
