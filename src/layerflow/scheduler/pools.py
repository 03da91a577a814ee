"""Pools layerflow does not drive itself (event loop, processes, Dask): opening them, asking
what each can do, and submission.

What a pool can do is asked of its backend when it opens (``backends.Backend``), and kept
per kind for the hot path: ``begins_late`` (rate windows count from the call's begin),
``times_from_begin`` (so does a timeout), ``interrupts`` (``cancel`` stops a running call),
``slots`` (a task with a timeout waits for one; ``_INFINITE`` when it need not), and
``keeper``, ``keeper_kind``: the backend whose values stay where they ran (``remote.py``).
"""

from __future__ import annotations

import heapq
import time
from functools import partial
from typing import TYPE_CHECKING, Any

from ..backends import open_backend
from ..errors import InvalidOptionError
from ..options import RunOptions
from ..policy import KEY_BASE
from .state import (
    _ASYNC,
    _CALLER,
    _DASK,
    _FOREIGN,
    _INFINITE,
    _KIND_NAMES,
    _NKINDS,
    _READY,
    _RUNNING,
)
from .storage import _BACKLOG

if TYPE_CHECKING:  # State, with what every part declares (parts.py)
    from .state import State
else:  # for the type checker only
    State = object

#: no begin hint for a pool whose calls begin at once (shared, never written)
_NO_HINT: dict[str, Any] = {}


class ForeignPools(State):
    """Pools layerflow does not drive itself (event loop, processes, Dask): opening them,
    what each can do, and submission."""

    def _open_pools(self, options: RunOptions) -> None:
        """Open the pools the tasks use (once the whole state is built and checked: a
        worker process or a cluster is never started for a run that cannot begin) and ask
        each what it can do."""
        self.backends: list[Any] = [None] * _NKINDS
        self.kind_cap = [_INFINITE] * _NKINDS
        self.begins_late = [False] * _NKINDS
        self.times_from_begin = [False] * _NKINDS
        self.interrupts = [False] * _NKINDS  # the engine's own threads: never
        self.slots = [_INFINITE] * _NKINDS
        self.blocked_slot: list[tuple[int, int]] = []  # (key, entry) waiting for a slot
        used = set(self.kind)
        address, client = options.address, options.client
        # (backend='dask' with every task elsewhere, coroutines or explicit executors, is
        # fine: the cluster is simply not needed)
        connects = address is not None or client is not None
        if connects and _DASK not in used and options.backend != "dask":
            raise InvalidOptionError(
                "address= and client= are for the Dask backend: pass backend='dask' "
                "(or executor='dask' on the tasks that should run there)"
            )
        bound = None if self.limit == _INFINITE else self.limit
        try:
            for kind in _FOREIGN:  # looked up by name, imported only when used
                if kind in used:
                    self._open_pool(kind, bound, address, client)
        except BaseException:
            for started in self.backends:
                if started is not None:
                    started.close()
            raise
        self.keeper_kind, self.keeper = -1, None
        for kind in _FOREIGN:
            if self.backends[kind] is not None and self.backends[kind].keeps_values:
                self.keeper_kind, self.keeper = kind, self.backends[kind]
        if self.keeper is not None and not self.track_users:
            # values that stay where they ran are let go once their last user finished
            self.track_users = True
            self.users_left = [len(s) for s in self.succs]
        self._init_remote()

    def _open_pool(self, kind: int, bound: int | None, address: str | None, client: Any) -> None:
        opened = self.backends[kind] = open_backend(
            _KIND_NAMES[kind],
            loop=self.loop,
            context=self.context,
            address=address,
            client=client,
            on_fault=self._fault,
        )
        cap = opened.capacity(bound)
        self.kind_cap[kind] = _INFINITE if cap is None else cap
        opened.prepare(min(self.kind_cap[kind], self.kind.count(kind)))
        self.begins_late[kind] = opened.begins_late
        self.times_from_begin[kind] = opened.times_from_begin
        self.interrupts[kind] = opened.interrupts
        slots = opened.slots()
        if slots is not None:
            self.slots[kind] = slots

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

    def _free_slot(self, kind: int) -> None:
        """A task of pool ``kind`` ended: the tasks that waited for a slot may go."""
        if self.slots[kind] < _INFINITE:
            self._requeue(self.blocked_slot)
            self.blocked_slot.clear()

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
        slots = self.slots
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
            if running_kind[kind] >= slots[kind] and self.spec[i].timeout is not None:
                # queued again when a task of that pool ends (``transitions._free_slot``)
                self.blocked_slot.append((self.keys[i], i))
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
        queue: its rate windows (and, where the pool times from the begin, its timeout)
        count from when the call really begins, which the backend reports."""
        if not self.cost[i] and (not self.times_from_begin[kind] or self.spec[i].timeout is None):
            return _NO_HINT
        return {"began": partial(self._began, i, token)}

    def _began(self, i: int, token: int, when: float) -> None:
        """Entry ``i``'s call began in its worker process at ``when``."""
        with self.lock:
            if self.token[i] != token or self.status[i] != _RUNNING:
                return  # given up on meanwhile
            timeout = self.spec[i].timeout
            if timeout is not None and self.times_from_begin[self.kind[i]]:  # else: _pump
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
            if kind == self.keeper_kind and self.cluster.remote:  # upstream values: futures
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
                fetch=kind != self.keeper_kind or self.cluster.fetch_now(self._owner(i)),
                tag=i,
                **(self._begin_hint(i, token, kind) if self.begins_late[kind] else _NO_HINT),
            )
        except Exception as e:  # could not even be sent (e.g. cannot be pickled)
            now = time.perf_counter()
            self._record(i, token, False, e, now, now)
