"""Admission: may a ready task start now? The worker bound is checked by whoever takes a
task (``workers``, ``pools``); resource pools and rate windows are one ``limits.Gate``,
shared with ``plan.simulate``. This module connects the gate to the run: parking, the timer
that looks at rate-parked tasks again, and the waits the trace shows.

Fields: ``gate`` (or None when no task has a pool or a rate limit), ``gated``,
``rate_wake`` (when the timer looks at rate-parked entries again), ``parked_since``
(entry -> (what, which, since)), ``waits`` (entry, what, which, from, to).
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..limits import Adaptive, Gate, RateLimit
from ..policy import holds_queue
from ..pushback import classify
from .state import _READY

if TYPE_CHECKING:  # State, with what every part declares (parts.py)
    from .state import State
else:  # for the type checker only
    State = object


class Admission(State):
    """Resource pools and rate limits, through one ``Gate``."""

    def _init_admission(
        self, pools: Mapping[str, float], limits: Mapping[str, RateLimit | Adaptive]
    ) -> None:
        self.gate = Gate(pools, limits, self.need, self.cost)
        self.gated = self.gate.active or bool(self.budget)  # a budget asks at every start
        self.rate_wake = math.inf
        self.parked_since: dict[int, tuple[str, Any, float]] = {}
        self.waits: list[tuple[int, str, Any, float, float]] = []
        # sequential: a task held by a pool or a rate window holds the queue (nothing
        # overtakes it: the run's order is the plan's) until it is queued again
        self.in_order = holds_queue(self.mode)
        self.order_hold = False
        self.order_held_by = -1  # the entry whose retry holds it

    def _admit(self, i: int) -> bool:
        """May entry ``i`` start now? Takes its pool units and rate-window room if so;
        otherwise parks it until units return or the window has room. Mutates; lock held."""
        estimates: dict[str, float] | None = None
        if self.budget:
            estimates = self._within_budget(i)
            if estimates is None:
                return False  # the run stops: this start would cross a budget
        now = time.perf_counter()
        # on a pool whose calls begin late (a worker process's cold start, a cluster's
        # queue), its rate room is held until the call begins (``pools._began``)
        held = self.gate.admit(self.keys[i], i, now, self.begins_late[self.kind[i]])
        if held is None:
            if estimates is not None:
                self._commit(i, estimates)
            if i in self.parked_since:  # admitted after waiting for a pool or a rate window
                self.waits.append((i, *self.parked_since.pop(i), now))
            return True
        if self.in_order:
            self.order_hold = True
        if i not in self.parked_since:
            self.parked_since[i] = (*held, now)
        wake = self.gate.wake
        if held[0] == "rate_limit" and wake < self.rate_wake:
            self.rate_wake = wake
            self._timer().add(wake, self._on_rate_wake)
        return False

    def _requeue(self, parked: list[tuple[int, int]]) -> None:
        """Queue parked entries again (those still ready); they are checked when taken."""
        status, ready, kind = self.status, self.ready, self.kind
        if parked:
            self.order_hold = False
        for key, i in parked:
            if status[i] == _READY:
                heapq.heappush(ready[kind[i]], key)

    def _release_units(
        self,
        i: int,
        ok: bool,
        error: Any,
        now: float,
        used: Mapping[str, float] | None,
        abandoned: bool = False,
    ) -> None:
        """An attempt ended: its pool units and adaptive slots return (adaptive limits
        learn from how it ended), its rate windows count what it really used, and tasks
        parked for the room may go."""
        push = None if ok else classify(error)
        if self.budget:  # a request refused by push-back spent nothing it did not record
            self._charge(i, used, abandoned=abandoned, refused=push is not None)
        retry_after = push.retry_after if push is not None else None
        overload = push is not None and push.overload
        status = self.status
        self._requeue(
            self.gate.release(
                i, ok, retry_after, now, used, lambda j: status[j] == _READY, overload
            )
        )

    def _offer_room(self) -> None:
        """After many entries were cancelled at once: free room to those still waiting."""
        if self.gated:
            status = self.status
            self._requeue(self.gate.offer(lambda j: status[j] == _READY))

    def _on_rate_wake(self) -> None:
        self.rate_wake = math.inf
        self._requeue(self.gate.rate_parked())
        self._kick()
