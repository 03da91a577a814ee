"""Dask: values that stay on the cluster until something here needs them."""

from __future__ import annotations

import time
from typing import Any

from ..errors import (
    LayerflowError,
    safe_str,
)
from ..events import (
    logger,
)
from ..metrics import add as add_metrics
from .state import (
    _DASK,
    _FAILED,
    _FETCH_AT_END,
    _FETCH_NOW,
    _STAYS_REMOTE,
    _SUCCEEDED,
)


class DaskResidency:
    """Dask: values that stay on the cluster until something here needs them."""

    def _init_residency(self) -> None:
        """``remote`` (entry -> its value's future on the cluster), ``on_cluster`` (entries
        whose value was not brought back), ``fetch_mode`` (per task: now, at the end, or
        never), ``collected`` (the end's gather has run)."""
        self.remote: dict[int, Any] = {}
        self.collected = False
        self.on_cluster: list[int] = []
        self.fetch_mode = bytearray(self.n)
        if self.dask is not None:
            self._plan_fetch()

    def _plan_fetch(self) -> None:
        """Decide, per Dask task, when its value comes back to this process: at once when
        something here needs it (a task on another pool, a ``map`` over it, the store, a
        checkpoint's report); at the end of the run when the caller asks for it (every
        task when ``outputs`` were not named); never otherwise (it is released on the
        cluster once its last user has finished)."""
        g = self.graph
        kind = self.kind
        sources = set(g.map_source.values())
        here = self.persist is not None or self.checkpoint is not None
        for i in range(self.n):
            if kind[i] != _DASK:
                continue
            if here or i in sources or any(kind[s] != _DASK for s in g.succs[i]):
                self.fetch_mode[i] = _FETCH_NOW
            elif not self.release or self.keep[i]:
                self.fetch_mode[i] = _FETCH_AT_END
            else:
                self.fetch_mode[i] = _STAYS_REMOTE

    def _remote_ref(self, j: int) -> Any:
        """What stands for entry ``j``'s value on the Dask cluster (a future, or for a
        ``map`` task the list of its elements' futures); None when it is not there."""
        ref = self.remote.get(j)
        if ref is None and j in self.children:
            kids = self.children[j]
            if kids and all(k in self.remote for k in kids):
                return [self.remote[k] for k in kids]
        return ref

    def _drop_remote(self, j: int) -> None:
        """Nobody will read entry ``j``'s copy on the cluster again: let Dask release it."""
        self.remote.pop(j, None)
        for k in self.children.get(j, ()):
            self.remote.pop(k, None)

    def _collect_remote(self) -> None:
        """After the run: bring back, in one round trip, the values the caller asked for
        that stayed on the Dask cluster; forget the others (Dask releases them)."""
        if self.dask is None or self.collected:
            return
        self.collected = True
        try:
            recorded = self.dask.metrics()
        except Exception as e:  # the numbers are lost, the values need not be
            logger.warning("could not read the tasks' lf.record numbers from Dask: %s", e)
            recorded = []
        with self.lock:
            ran: dict[int, list[float]] = {}
            for i, box, seconds in recorded:
                if box:
                    add_metrics(self.metrics, i, box)
                if seconds is not None:
                    ran.setdefault(i, []).append(seconds)
            self._without_queue_time(ran)
            entries = [i for i in self.on_cluster if self.status[i] == _SUCCEEDED]
            self.on_cluster = []
            self.remote.clear()
            wanted = [i for i in entries if self.fetch_mode[self._owner(i)] == _FETCH_AT_END]
            refs = [self.values[i] for i in wanted]
        got: dict[int, Any] = {}
        lost: dict[int, BaseException] = {}
        if refs:
            try:
                got = dict(zip(wanted, self.dask.gather(refs), strict=True))
            except Exception:  # find which: one at a time
                for i, ref in zip(wanted, refs, strict=True):
                    try:
                        got[i] = self.dask.gather([ref])[0]
                    except Exception as e:  # its value is lost, and so is the cluster's
                        lost[i] = e
        with self.lock:
            for i in entries:
                self.values[i] = got.get(i)
                if i in lost:
                    self._lose(i, lost[i])
                elif i not in got and i < self.n:
                    self.released[i] = 1
            for m, kids in self.children.items():  # a map task's list of element values
                if self.kind[m] == _DASK and self.status[m] == _SUCCEEDED:
                    if self.fetch_mode[m] == _FETCH_AT_END:
                        self.values[m] = [self.values[k] for k in kids]
                    elif self.fetch_mode[m] == _STAYS_REMOTE:
                        self.values[m] = None
                        self.released[m] = 1
            self.end = time.perf_counter()

    def _without_queue_time(self, ran: dict[int, list[float]]) -> None:
        """Seen from here, a Dask attempt lasts from its submission to its callback, its
        wait in Dask's queue included; the workers timed each attempt themselves. Where
        every attempt of an entry was timed so, its duration is theirs, and its span in
        the timeline ends when it ended and starts that long before."""
        for i, times in ran.items():
            if len(times) != self.attempts[i] or self.status[i] < _SUCCEEDED:
                continue  # an attempt that was never timed (its worker died, say)
            seconds = sum(times)
            self.busy[i] = seconds
            if len(times) == 1:
                self.first_start[i] = max(self.first_start[i], self.last_end[i] - seconds)

    def _lose(self, i: int, error: BaseException) -> None:
        """A finished value could not be brought back from the cluster."""
        name = self.names[i]
        self.final_counts[self.status[i]] -= 1
        self.final_counts[_FAILED] += 1
        self.status[i] = _FAILED
        self.errors[i] = LayerflowError(
            f"task {name!r} finished on the Dask cluster, but its value could not be "
            f"brought back: {safe_str(error)}"
        )
        self.outcome = "failed"
        if self.cause < 0:
            self.cause, self.cause_error = i, self.errors[i]
