"""Retries and push-back."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..errors import Cancelled, NoRetry
from ..events import logger
from ..pushback import PushBack, classify
from .state import (
    _RETRY_WAIT,
)

if TYPE_CHECKING:  # State, with what every part declares (parts.py)
    from .state import State
else:  # for the type checker only
    State = object

#: push-backs one task may take before it fails with the last one (a provider that never
#: lets it through must not hold the run forever)
MAX_PUSHBACKS = 100
#: an overload's backoff (a 503 or 529 without Retry-After): this many seconds after the
#: task's first push-back, doubling with each further one up to ``OVERLOAD_MAX``, times a
#: random 0.5 to 1.5; only the task waits
OVERLOAD_FIRST = 0.25
OVERLOAD_MAX = 8.0


class Retries(State):
    """Retries and push-back."""

    sdk_retries_told = False  # this run said once that a client library retried by itself

    def _try_again(self, i: int, error: BaseException) -> bool:
        """Entry ``i``'s attempt failed: end it as cancelled (stopped by us), push it back,
        or schedule a retry. False: it fails for good. Mutates; lock held."""
        if isinstance(error, Cancelled) and (self.stopping or self._in_stopped_group(i)):
            self._cancel_waiting(i, str(error))  # stopped by us, not its own fault
            if not self.stopping and i < self.n:  # only its group stopped: the run goes on
                self._skip_downstream(i)
            return True
        push = classify(error)
        pushed = push is not None and self.pushbacks[i] < MAX_PUSHBACKS
        if self.stopping:
            if pushed or (self.outcome == "stopped" and self._retryable(i, error)):
                # a push-back is never a failure; and after a clean stop (a budget, a
                # checkpoint) neither is an attempt that would have been tried again: it
                # will not run again
                self._cancel_waiting(i, self.stop_reason or "the run stopped")
                return True
            return False
        if pushed:
            self._push_back(i, error, push)  # type: ignore[arg-type]
            return True
        if not self._retryable(i, error):
            return False
        t = self.spec[i]
        a = self.attempts[i] - self.pushbacks[i]
        delay = t.retry_delay * (2 ** (a - 1)) * self.rng.uniform(0.8, 1.2)
        self.errors[i] = error  # kept if the run stops before the next attempt
        if self.emit:
            self._task_event("task_retrying", i, error=error, delay=delay)
        if delay > 0:
            self._wait_to_retry(i, time.perf_counter() + delay)
        else:
            self._make_ready(i)
        return True

    def _retryable(self, i: int, error: BaseException) -> bool:
        """Would entry ``i`` be tried again after ``error``?"""
        t = self.spec[i]
        a = self.attempts[i] - self.pushbacks[i]
        return a <= t.retries and isinstance(error, t.retry_on) and not isinstance(error, NoRetry)

    def _push_back(self, i: int, error: BaseException, push: PushBack) -> None:
        """The task said "too many requests" (``lf.RateLimited``, an HTTP 429): pause its
        rate limits for ``push.retry_after`` seconds and try it again then; or "overloaded"
        (a 503 or 529 without Retry-After): try it again after a backoff of its own. Either
        way the attempt does not count against its retries."""
        self.pushbacks[i] += 1
        self.errors[i] = error
        if push.sdk_retries and not self.sdk_retries_told:
            self.sdk_retries_told = True
            logger.warning(
                "task %r was pushed back%s after the %s client had already retried it %d "
                "time(s) by itself: build the client with max_retries=0, so that its retries "
                "do not hold the task's slot and hide the push-back from layerflow, which "
                "tries the task again without spending a retry and paces its rate limits",
                self.names[i],
                f" (HTTP {push.status})" if push.status else "",
                push.library,
                push.sdk_retries,
            )
        after = push.retry_after
        if after is None:  # an overload: this task alone backs off, longer each time
            k = min(self.pushbacks[i], 16)
            after = min(OVERLOAD_FIRST * 2 ** (k - 1), OVERLOAD_MAX) * self.rng.uniform(0.5, 1.5)
        until = time.perf_counter() + after
        if self.emit:
            self._task_event("task_retrying", i, error=error, delay=after)
        cost = self.cost[i]
        if cost and push.retry_after is not None:
            self.gate.pause(cost, until)
            self._make_ready(i)  # it waits in the paused window like any other start
        else:
            self._wait_to_retry(i, until)

    def _wait_to_retry(self, i: int, when: float) -> None:
        """Entry ``i`` is tried again at ``when``; in sequential mode nothing overtakes it
        meanwhile (the run's order stays the plan's)."""
        self.status[i] = _RETRY_WAIT
        if self.in_order:
            self.order_hold = True
            self.order_held_by = i  # (if it ends otherwise, _finalize lets the queue go)
        self._timer().add(when, self._on_retry, i, self.token[i])

    def _on_retry(self, i: int, token: int) -> None:
        if self.token[i] != token or self.status[i] != _RETRY_WAIT:
            return
        if self.in_order:
            self.order_hold = False
            self.order_held_by = -1
        self._make_ready(i)
        self._kick()
