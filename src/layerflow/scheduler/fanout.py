"""``map``: one subtask per element of an upstream list, added at run time."""

from __future__ import annotations

import heapq
import time
from collections.abc import Sequence
from typing import Any

from ..errors import MapError
from ..graph import _gc_paused
from ..plan import KEY_BASE
from .state import (
    _CACHED,
    _CANCELLED,
    _FAILED,
    _MAPPED,
    _PENDING,
    _READY,
    _SUCCEEDED,
)


class FanOut:
    """``map``: one subtask per element of an upstream list, added at run time."""

    def _expand(self, m: int) -> None:
        """A ``map`` task's list has arrived: one subtask per element, ``name[k]``."""
        src = self.graph.map_source[m]
        items = self.values[src]
        name = self.names[m]
        if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
            err = MapError(
                f"task {name!r} maps over {self.names[src]!r}, which returned "
                f"{type(items).__name__}, not a list"
            )
            self.attempts[m] = 1
            self._fail(m, err)
            return
        if self.lookup is not None:  # the whole list, cached from an earlier run?
            args, kwargs = self._call_args(m)

            def then(found: Any, error: BaseException | None) -> None:
                if self.status[m] != _READY:
                    return  # cancelled while the cache was read
                hit, value = found if error is None else (False, None)
                if hit:
                    self.first_start[m] = self.last_end[m] = time.perf_counter()
                    self._succeed(m, value, _CACHED)
                else:
                    self._fan_out(m, items)

            self._off_lock(lambda: self.lookup(m, args, kwargs), then)
            return
        self._fan_out(m, items)

    def _fan_out(self, m: int, items: Sequence[Any]) -> None:
        """One subtask per element of ``items``, queued. Mutates; lock held."""
        src = self.graph.map_source[m]
        name = self.names[m]
        self.status[m] = _MAPPED
        k = len(items)
        if not k:
            self.first_start[m] = self.last_end[m] = time.perf_counter()
            self._succeed(m, [])
            return
        params = [p for p, j in self.args[m] if j == src]
        other_args = tuple((p, j) for p, j in self.args[m] if j != src)
        base = self.consts[m] or {}
        prefix = (self.keys[m] // KEY_BASE) * KEY_BASE
        first = len(self.names)
        kids = list(range(first, first + k))
        self.children[m] = kids
        self.map_left[m] = k
        self.left += k
        spec, kind, fn = self.spec[m], self.kind[m], self.fns[m]
        pos, layer = self.positional[m], self.layer[m]
        need, cost = self.need[m], self.cost[m]
        with _gc_paused():
            for idx, item in enumerate(items):
                const = dict(base)
                for p in params:
                    const[p] = item
                self.names.append(f"{name}[{idx}]")
                self.spec.append(spec)
                self.layer.append(layer)
                self.kind.append(kind)
                self.fns.append(fn)
                self.consts.append(const)
                self.args.append(other_args)
                self.positional.append(pos)
                self.need.append(need)
                self.cost.append(cost)
                self.pushbacks.append(0)
                self.keys.append(prefix + first + idx)
                self.status.append(_PENDING)
                self.token.append(0)
                self.values.append(None)
                self.errors.append(None)
                self.attempts.append(0)
                self.first_start.append(0.0)
                self.last_end.append(0.0)
                self.busy.append(0.0)
                self.seq.append(0)
                self.handle.append(None)
                self.parent.append(m)
        for j in kids:
            self.status[j] = _READY
        ready = self.ready[kind]
        ready.extend(self.keys[j] for j in kids)
        heapq.heapify(ready)

    def _map_done(self, m: int) -> None:
        """Every subtask of map task ``m`` ended: its value is their values, in order."""
        kids = self.children[m]
        status = self.status
        ran = [j for j in kids if self.attempts[j]]
        if ran:  # the map task's span is its elements'
            self.first_start[m] = min(self.first_start[j] for j in ran)
            self.last_end[m] = max(self.last_end[j] for j in ran)
        if all(status[j] == _SUCCEEDED for j in kids):
            value = [self.values[j] for j in kids]
            if self.persist is None:
                self._succeed(m, value)
                return
            t0, t1 = self.first_start[m], self.last_end[m]

            def then(error: BaseException | None) -> None:
                if error is None:
                    self._succeed(m, value)
                else:
                    self._map_failed(m, error)

            # a map's value is durable as one list, written outside the lock
            self._store_result(m, value, t0, t1, then)
            return
        failed = [j for j in kids if status[j] == _FAILED]
        if failed:
            self._map_failed(m, self.errors[failed[0]])  # type: ignore[arg-type]
        else:
            self.status[m] = _CANCELLED
            self._finalize(m)

    def _map_failed(self, m: int, error: BaseException) -> None:
        """Map task ``m`` failed: a subtask failed, or its list could not be stored."""
        self.status[m] = _FAILED
        self.errors[m] = error
        if self.emit:
            self._task_event("task_failed", m, error=error, duration=0.0)
        if self.outcome != "interrupted":  # a Ctrl-C stays one (its list not stored after it)
            self.outcome = "failed"
        if self.cause < 0:
            self.cause, self.cause_error = m, error
        self._finalize(m)
        if not self._fails_fast(m) or self._in_stopped_group(m):
            self._skip_downstream(m)
        elif not self.stopping:
            self._stop(f"{self.names[m]!r} failed")
