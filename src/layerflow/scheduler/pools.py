"""Pools layerflow does not drive itself (event loop, processes, Dask): submission."""

from __future__ import annotations

import heapq
import time
from functools import partial
from typing import TYPE_CHECKING, Any

from ..policy import KEY_BASE
from .state import (
    _ASYNC,
    _CALLER,
    _DASK,
    _FOREIGN,
    _PROCESS,
    _READY,
    _RUNNING,
)
from .storage import _BACKLOG

if TYPE_CHECKING:  # State, with what every part declares (parts.py)
    from .state import State
else:  # for the type checker only
    State = object

#: pools whose calls begin some time after their submission (a worker process's cold start,
#: Dask's queue), which their backend reports; no hint for the others (shared, never written)
_BEGINS_LATE = (_PROCESS, _DASK)
_NO_HINT: dict[str, Any] = {}


class ForeignPools(State):
    """Pools layerflow does not drive itself (event loop, processes, Dask): submission."""

    def _best_foreign(self) -> tuple[int, int]:
        """(key, kind) of the best ready coroutine or process task that may start; kind -1
        when there is none."""
        best, best_kind = 0, -1
        for kind in _FOREIGN:
            ready = self.ready[kind]
            if (
                ready
                and self.running_kind[kind] < self.kind_cap[kind]
                and (best_kind < 0 or ready[0] < best)
            ):
                best, best_kind = ready[0], kind
        return best, best_kind

    def _foreign_first(self, key: int) -> bool:
        """When slots are scarce, does a coroutine or process task come before ``key``?"""
        if self.limit - self.running > len(self.ready_threads):
            return False  # room for every ready thread task anyway
        best, kind = self._best_foreign()
        return kind >= 0 and best < key

    def _pump(self) -> None:
        """Submit ready coroutine and process tasks while the bounds allow. When slots are
        scarce, the best keys over all pools go first, so priorities (and the sequential
        order) hold across pools."""
        if self.stopping or self.order_hold or not any(self.ready_foreign):
            return
        ready = self.ready
        if self.storing > _BACKLOG:  # the store is behind: a landed batch kicks again
            return
        threads_ready = self.ready_threads
        status = self.status
        running_kind = self.running_kind
        only = self.only_foreign
        while self.running < self.limit:
            if only >= 0:  # one foreign pool: no comparison between pools to make
                kind = only
                heap = ready[kind]
                if not heap or running_kind[kind] >= self.kind_cap[kind]:
                    return
                best = heap[0]
            else:
                best, kind = self._best_foreign()
                if kind < 0:
                    return
                heap = ready[kind]
            if (
                threads_ready
                and threads_ready[0] < best
                and self.limit - self.running <= len(threads_ready)
            ):
                return  # the slots left belong to better thread tasks
            i = heapq.heappop(heap) % KEY_BASE
            if status[i] != _READY:
                continue
            if (
                kind == _DASK
                and self.spec[i].timeout is not None
                and running_kind[_DASK] >= self.dask_threads
            ):
                self.blocked_dask.append((self.keys[i], i))  # queued again when a Dask task ends
                continue
            if self.gated and not self._admit(i):
                if self.order_hold:
                    return
                continue
            self._start(i)
            args, kwargs = self._call_args(i)
            token = self.token[i]
            if self.lookup is not None:  # the cache is read outside the lock, then it goes
                self._look_up_then_submit(i, token, kind, args, kwargs)
                continue
            self._submit(i, token, kind, args, kwargs)

    def _look_up_then_submit(
        self, i: int, token: int, kind: int, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        """A cached result ends the attempt at once; otherwise it is submitted."""
        lookup = self.lookup
        assert lookup is not None  # called only with a cache

        def then(found: Any, error: BaseException | None) -> None:
            if token != self.token[i]:
                return  # given up on meanwhile (a deadline, a stop)
            hit, value = found if error is None else (False, None)
            if hit:  # a cached result: the task does not run
                now = time.perf_counter()
                self._record(i, token, True, value, now, now, cached=True)
            else:
                self._submit(i, token, kind, args, kwargs)

        self._off_lock(lambda: lookup(i, args, kwargs), then)

    def _begin_hint(self, i: int, token: int, kind: int) -> dict[str, Any]:
        """A worker process may start cold (40-225 ms), and a Dask task waits in Dask's
        queue: its rate windows (and a process task's timeout) count from when the call
        really begins, which the backend reports."""
        if not self.cost[i] and (kind == _DASK or self.spec[i].timeout is None):
            return {}
        return {"began": partial(self._began, i, token)}

    def _began(self, i: int, token: int, when: float) -> None:
        """Entry ``i``'s call began in its worker process at ``when``."""
        with self.lock:
            if self.token[i] != token or self.status[i] != _RUNNING:
                return  # given up on meanwhile
            timeout = self.spec[i].timeout
            if timeout is not None and self.kind[i] == _PROCESS:  # (Dask: see _pump)
                self._timer().add(when + timeout, self._on_task_deadline, i, token)
            if self.gated:  # its window room now runs out from when it began
                self.gate.restamp(i, when)
                self._requeue(self.gate.rate_parked())
                self._kick()

    def _submit(
        self, i: int, token: int, kind: int, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        """Hand entry ``i``'s started attempt to its backend. Mutates; lock held."""

        # the backend's done-callback: on_done(ok, value, seconds, ref=None, metrics=None)
        on_done = partial(self._foreign_done, i, token, self.attempts[i])
        if kind == _CALLER:  # what it prints is its own (one call at a time: see state.py)
            self.caller_cell.a = self.attempts[i]
            self.caller_cell.i = i
        try:
            if kind == _DASK and self.cluster.remote:  # upstream values there: futures
                args, kwargs = self._call_args(i, remote=True)
            if kind == _ASYNC:  # the coroutine says whose its output is, in its own context
                self.handle[i] = self.backends[kind].submit(
                    self.names[i],
                    self.fns[i],
                    args,
                    kwargs,
                    on_done,
                    priority=self.spec[i].priority,
                    tag=i,
                    sink=(self.output, i, self.attempts[i]),
                )
                return
            self.handle[i] = self.backends[kind].submit(
                self.names[i],
                self.fns[i],
                args,
                kwargs,
                on_done,
                priority=self.spec[i].priority,
                fetch=kind != _DASK or self.cluster.fetch_now(self._owner(i)),
                tag=i,
                **(self._begin_hint(i, token, kind) if kind in _BEGINS_LATE else _NO_HINT),
            )
        except Exception as e:  # could not even be sent (e.g. cannot be pickled)
            now = time.perf_counter()
            self._record(i, token, False, e, now, now)
