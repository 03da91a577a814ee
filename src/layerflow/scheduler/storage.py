"""Store I/O off the run's lock: cache lookups for the pools layerflow does not drive, a
map's whole list being made durable, a map's cache lookup. The lock is held for microseconds
at a time by every worker; a file read or an fsync under it would stall them all.

One thread per run, started by the first such job: it runs the job, then its continuation
under the lock. The entry concerned is not final while its job is out, so the run cannot
end before it.

And when the store cannot take a result (``_persist``): the task fails with
``ResultNotStored``, and the run stops once, as a budget stop does (``_store_stop``;
``store_failed`` is the first entry it could not keep).

Fields: ``io_jobs`` (the thread's queue, or None before the first job).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from ..errors import ResultNotStored, safe_str
from ..events import logger

_STORE_TROUBLE = {
    "full": " (disk full)",
    "read-only": " (read-only)",
    "damaged": " (damaged database)",
    "locked": " (locked)",
    "io": " (I/O error)",
}


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

    def _persist(self, i: int, value: Any, t0: float, t1: float) -> BaseException | None:
        """Make a result durable before its task counts as done. The error to fail the task
        with when the store cannot take it (a task is done only once its result is stored);
        None when it is stored, or when there is no store."""
        if self.persist is None:
            return None
        try:
            self.persist(i, value, t0, t1)
        except ResultNotStored as e:
            return e
        except Exception as e:  # a bug of the store's: still the same promise
            logger.exception("could not store the result of task %r", self.names[i])
            return ResultNotStored(
                f"task {self.names[i]!r} finished, but its result could not be stored: "
                f"{safe_str(e)}"
            )
        return None

    def _store_stop(self, i: int, error: ResultNotStored) -> None:
        """The store could not take entry ``i``'s result: whatever ran next could not be
        kept either, so the run stops as a budget stop does (nothing new starts, running
        tasks finish and are stored if the store takes them), with one reason, whatever
        ``fail_fast`` says."""
        if self.store_failed < 0:
            self.store_failed = i
        if not self.stopping:
            what = _STORE_TROUBLE.get(error.kind or "", "")
            self.stop_reason = f"the store could not take the result of {self.names[i]!r}{what}"
        self.stopping = True  # before finalizing: nothing may start meanwhile
        self._finalize(i)
        self._stop(self.stop_reason or "the store failed")

    def _not_stored_either(self, i: int, error: ResultNotStored) -> ResultNotStored:
        """A later task the store could not take: said briefly, the first one's error
        says why and what to do."""
        short = ResultNotStored(
            f"task {self.names[i]!r} finished, but its result could not be stored either "
            f"(see {self.names[self.store_failed]!r}); --resume runs it again",
            path=error.path,
            kind=error.kind,
        )
        short.__cause__ = error
        return short
