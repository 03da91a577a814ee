"""Store I/O off the run's lock, and results made durable in batches (group commit).

A task that succeeds is ``storing`` until its result is on disk: its worker (thread,
process, loop or cluster slot) is free at once, but the task counts as done, and its
successors may start, only once its batch is committed. Results that finish while one batch
is being committed go together in the next: one transaction and one sync for all of them,
however many workers finish together. A map's elements go the same way, each on its own,
and so does its whole list once every element has ended. Cache lookups
for the pools layerflow does not drive run on the same thread: the lock is held for
microseconds at a time by every worker, and a file read or a sync under it would stall them
all.

One thread per run, started by the first job: it takes every job queued, makes the batch's
results durable (``persist``, the run's store), runs the other jobs, then every
continuation under the lock once (followed by starting what may start). An entry whose job
is out is not final, so the run cannot end before it.

And when the store cannot take a result: the task fails with ``ResultNotStored``, and the
run stops once, as a budget stop does (``_store_stop``; ``store_failed`` is the first entry
it could not keep).

Results waiting to be stored are bounded (``_BACKLOG``): a thread worker that finishes a
task while more wait takes its next task only once a batch has landed, and no coroutine,
process or Dask task is submitted meanwhile, so a store that cannot keep up slows the run
down instead of leaving ever more finished work unstored.

Fields: ``io_jobs`` (the thread's queue, or None before the first job), ``storing``
(results waiting to be stored), ``stored`` (a condition on the run's lock, notified when
a batch has landed).

The store keeps the items an ``lf.parallel_map`` inside a task finishes too (``items.py``):
with a store, each call that runs in this process (thread, sequential and coroutine tasks)
is tagged with its entry (``taskscope.py``), so that ``parallel_map`` knows its task.
``items`` is the run's ``recorder.RunItems`` (None without a store: then nothing is tagged
and no call costs more). A call is tagged when it is handed out (``fns`` is then a
``_TaggedCalls``): 100,000 wrappers made up front cost 15 us each, the collector walking
them again and again, where one made for the call and dropped after it costs about 1.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from ..errors import ResultNotStored, safe_str
from ..events import logger
from ..faults import guarded
from ..graph import gc_paused
from ..taskscope import scoped, tag
from .faults import STORE_THREAD
from .state import _ASYNC, _STORING, _UNSTOPPABLE

if TYPE_CHECKING:  # State, with what every part declares (parts.py)
    from .state import State
else:  # for the type checker only
    State = object

#: results that may wait to be stored before new work waits for the store: enough for large
#: batches (one sync each), few enough that a crash re-runs little
_BACKLOG = 4096

_STORE_TROUBLE = {
    "full": " (disk full)",
    "read-only": " (read-only)",
    "damaged": " (damaged database)",
    "locked": " (locked)",
    "io": " (I/O error)",
}


class _TaggedCalls(list[Callable[..., Any]]):
    """The run's calls (``fns``), each tagged with its entry as it is read
    (``list.__getitem__(fns, e)`` reads one as it is: a map task's own call, which its
    elements share)."""

    __slots__ = ("items", "kind")
    items: Any  # the store's items (a recorder's), which the scope reads
    kind: list[int]  # each entry's kind

    def __getitem__(self, e: int) -> Callable[..., Any]:  # type: ignore[override]
        fn = list.__getitem__(self, e)
        kind = self.kind[e]
        if kind in _UNSTOPPABLE:  # a thread's call: the scope set, then the call
            return partial(scoped, self.items, e, fn)
        if kind == _ASYNC:
            return tag(fn, self.items, e, True)
        return fn  # a worker process or a Dask worker cannot reach the store


class StoreIO(State):
    """Jobs that touch the store, run outside the lock; results made durable in batches."""

    def _init_store_io(self) -> None:
        self.io_jobs: queue.SimpleQueue[Any] | None = None
        self.storing = 0
        self.stored = threading.Condition(self.lock)

    def _init_scopes(self, items: Any) -> None:
        """With a store, tag each task's call with its entry (see the module docstring)."""
        self.items = items
        if items is not None:
            fns = _TaggedCalls(self.fns)
            fns.items, fns.kind = items, self.kind
            self.fns = fns

    def _wait_for_store(self) -> None:
        """Too many results wait to be stored: wait for a batch to land (lock held)."""
        while self.storing > _BACKLOG and not self.exiting:
            self.stored.wait()

    def _io_put(self, job: tuple[Any, ...]) -> None:
        if self.io_jobs is None:
            self.io_jobs = queue.SimpleQueue()
            threading.Thread(
                target=guarded(STORE_THREAD, self._io_loop, self._fault),
                name="layerflow-store-io",
                daemon=True,
            ).start()
        self.io_jobs.put(job)

    def _off_lock(
        self, work: Callable[[], Any], then: Callable[[Any, BaseException | None], None]
    ) -> None:
        """Run ``work()`` outside the lock, then ``then(result, error)`` under it (followed
        by starting what may start). Call with the lock held."""
        self._io_put((work, then))

    def _store_result(
        self,
        i: int,
        value: Any,
        t0: float,
        t1: float,
        then: Callable[[ResultNotStored | None], None] | None = None,
    ) -> None:
        """Make entry ``i``'s result durable together with whatever else finishes meanwhile,
        then call ``then(error)`` under the lock: None once it is on disk, else the error to
        fail the task with (no ``then``: the entry succeeds, or fails with that error).
        Call with the lock held."""
        self.storing += 1
        if self.mode == "sequential":
            # one at a time, in order: the next task waits for this store (its slot is held)
            self.running += 1
            then = partial(self._release_held, i, value, then)
        # an element is stored under its own name, keyed by the element it was given
        info = None if i < self.n else self._element_info(i)
        # one tuple per result, no closure: up to _BACKLOG of them wait, and what lives
        # that long is what the collector walks
        self._io_put((i, value, t0, t1, info, then))

    def _stored(self, i: int, value: Any, error: ResultNotStored | None) -> None:
        """Entry ``i``'s batch landed: it succeeded, or it fails with the store's error."""
        if self.status[i] != _STORING:
            return  # given up on meanwhile (its store writer failed)
        if error is None:
            self._succeed(i, value)
        else:
            self._fail(i, error)

    def _release_held(
        self,
        i: int,
        value: Any,
        then: Callable[[ResultNotStored | None], None] | None,
        error: ResultNotStored | None,
    ) -> None:
        self.running -= 1
        if then is None:
            self._stored(i, value, error)
        else:
            then(error)

    def _succeed_durably(self, i: int, value: Any, t0: float, t1: float) -> None:
        """Entry ``i``'s attempt succeeded and the run has a store: ``storing`` until its
        batch is committed, then succeeded (or failed: the store could not take it)."""
        self.status[i] = _STORING
        # a first attempt's span is the run's own record of it (from its start, as the
        # RunResult has it): a task stored packed has no other
        self._store_result(i, value, self.first_start[i] if self.attempts[i] == 1 else t0, t1)

    def _io_loop(self) -> None:
        jobs = self.io_jobs
        while True:
            batch = [jobs.get()]  # type: ignore[union-attr]
            while True:  # what came meanwhile goes along: one commit for all its results
                try:
                    batch.append(jobs.get_nowait())  # type: ignore[union-attr]
                except queue.Empty:
                    break
            results = [job for job in batch if job is not None and len(job) == 6]
            errors: list[Any] = []
            # what the batch makes is gone when it ends: the collector need not see it (a
            # collection in the middle would move it to the older generations, whose growth
            # sets off full collections over the whole run's state)
            with gc_paused():
                if results:
                    errors = self._persist([job[:5] for job in results])
                done: list[tuple[Callable[..., None], Any, BaseException | None]] = []
                for job in batch:
                    if job is None or len(job) == 6:
                        continue
                    work, then = job
                    try:
                        done.append((then, work(), None))
                    except BaseException as e:  # reported to its continuation, never raised
                        done.append((then, None, e))
            if results or done:
                with self.lock:
                    self.storing = max(self.storing - len(results), 0)
                    self.stored.notify_all()
                    try:
                        for job, error in zip(results, errors, strict=True):
                            if job[5] is None:
                                self._stored(job[0], job[1], error)
                            else:
                                job[5](error)
                        for then, result, error in done:
                            then(result, error)
                    except Exception as e:  # a task's transition broke: it would never end
                        logger.error("layerflow store job failed", exc_info=e)
                        self._fault_locked(STORE_THREAD, e)
                    try:
                        self._kick()
                    except Exception as e:  # (can't start a thread): idle workers take over
                        logger.exception("layerflow could not start the next tasks")
                        self.idle = 0  # every idle worker woken: they take what is ready
                        self.cond.notify_all()
                        if not self.threads:  # none to take it: the run would wait forever
                            self._fault_locked(STORE_THREAD, e)
            if None in batch:
                return

    def _close_store_io(self) -> None:
        if self.io_jobs is not None:
            self.io_jobs.put(None)

    def _persist(self, batch: Sequence[tuple[int, Any, float, float, Any]]) -> list[Any]:
        """Make a batch of results durable (entry, value, start, end, and for a map's
        element its name and the values it was given): in order, None for
        each one stored, else the ``ResultNotStored`` to fail its task with (a task is done
        only once its result is stored)."""
        try:
            return self.persist(batch)  # type: ignore[misc]
        except Exception as e:  # a bug of the store's: still the same promise
            logger.exception("could not store the results of %d tasks", len(batch))
            names = self.names
            return [
                ResultNotStored(
                    f"task {names[i]!r} finished, but its result could not be stored: {safe_str(e)}"
                )
                for i, *_ in batch
            ]

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
