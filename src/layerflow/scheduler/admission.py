"""Admission: may a ready task start now? Resource pools and rate windows."""

from __future__ import annotations

import heapq
import math
import time

from .state import (
    _READY,
)


class Admission:
    """Admission: may a ready task start now? Resource pools and rate windows."""

    def _admit(self, i: int) -> bool:
        """May entry ``i`` start now? Takes its pool units and rate-window room if so;
        otherwise parks it until units return or the window has room."""
        need = self.need[i]
        if need:
            free = self.free
            for pool, units in need.items():
                if free[pool] < units - 1e-9:
                    self.blocked_units.append(i)
                    self.parked_since.setdefault(i, ("pool", pool, time.perf_counter()))
                    return False
        cost = self.cost[i]
        if cost:
            now = time.perf_counter()
            wait = 0.0
            for name, c in cost.items():
                wait = max(wait, self.windows[name].wait(now, c))
            if wait > 0:
                self.blocked_rate.append(i)
                self.parked_since.setdefault(i, ("rate_limit", cost, now))
                if now + wait < self.rate_wake:
                    self.rate_wake = now + wait
                    self._timer().add(now + wait, self._on_rate_wake)
                return False
            for name, c in cost.items():
                self.windows[name].take(now, c)
        if need:
            for pool, units in need.items():
                self.free[pool] -= units
        if i in self.parked_since:  # admitted after waiting for a pool or a rate window
            self.waits.append((i, *self.parked_since.pop(i), time.perf_counter()))
        return True

    def _unblock(self, parked: list[int]) -> None:
        """Queue parked entries again; they are checked again when taken."""
        for i in parked:
            if self.status[i] == _READY:
                heapq.heappush(self.ready[self.kind[i]], self.keys[i])
        parked.clear()

    def _release_units(self, i: int) -> None:
        """An attempt ended: its pool units return, and tasks waiting for units may go."""
        need = self.need[i]
        if need:
            for pool, units in need.items():
                self.free[pool] += units
            self._unblock(self.blocked_units)

    def _on_rate_wake(self) -> None:
        self.rate_wake = math.inf
        self._unblock(self.blocked_rate)
        self._kick()
