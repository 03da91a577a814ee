"""Store I/O off the run's lock: cache lookups for the pools layerflow does not drive, a
map's whole list being made durable, a map's cache lookup. The lock is held for microseconds
at a time by every worker; a file read or an fsync under it would stall them all.

One thread per run, started by the first such job: it runs the job, then its continuation
under the lock. The entry concerned is not final while its job is out, so the run cannot
end before it.

Fields: ``io_jobs`` (the thread's queue, or None before the first job).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from ..events import logger


class StoreIO:
    """Jobs that touch the store, run outside the lock."""

    def _init_store_io(self) -> None:
        self.io_jobs: queue.SimpleQueue[Any] | None = None

    def _off_lock(
        self, work: Callable[[], Any], then: Callable[[Any, BaseException | None], None]
    ) -> None:
        """Run ``work()`` outside the lock, then ``then(result, error)`` under it (followed
        by starting what may start). Call with the lock held."""
        if self.io_jobs is None:
            self.io_jobs = queue.SimpleQueue()
            threading.Thread(target=self._io_loop, name="layerflow-store-io", daemon=True).start()
        self.io_jobs.put((work, then))

    def _io_loop(self) -> None:
        jobs = self.io_jobs
        while True:
            job = jobs.get()  # type: ignore[union-attr]
            if job is None:
                return
            work, then = job
            try:
                result, error = work(), None
            except BaseException as e:  # reported to the continuation, never raised here
                result, error = None, e
            with self.lock:
                try:
                    then(result, error)
                    self._kick()
                except Exception:  # a bug here must not strand every later job
                    logger.exception("layerflow store job %r failed", then)

    def _close_store_io(self) -> None:
        if self.io_jobs is not None:
            self.io_jobs.put(None)
