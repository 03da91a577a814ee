"""Retries and push-back."""

from __future__ import annotations

import time

from ..errors import Cancelled, _NoRetry
from ..pushback import retry_after_of
from .state import (
    _RETRY_WAIT,
)

#: push-backs one task may take before it fails with the last one (a provider that never
#: lets it through must not hold the run forever)
MAX_PUSHBACKS = 100


class Retries:
    """Retries and push-back."""

    def _try_again(self, i: int, error: BaseException) -> bool:
        """Entry ``i``'s attempt failed: end it as cancelled (stopped by us), push it back,
        or schedule a retry. False: it fails for good. Mutates; lock held."""
        if isinstance(error, Cancelled) and (self.stopping or self._in_stopped_group(i)):
            self._cancel_waiting(i, str(error))  # stopped by us, not its own fault
            if not self.stopping and i < self.n:  # only its group stopped: the run goes on
                self._skip_downstream(i)
            return True
        after = retry_after_of(error)
        pushed = after is not None and self.pushbacks[i] < MAX_PUSHBACKS
        if self.stopping:
            if self.outcome == "stopped" and (pushed or self._retryable(i, error)):
                # a clean stop (a budget, a checkpoint): an attempt that would have been
                # tried again is not a failure of the run; it will not run again
                self._cancel_waiting(i, self.stop_reason or "stopped")
                return True
            return False
        if pushed:
            self._push_back(i, error, after)  # type: ignore[arg-type]
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
            self.status[i] = _RETRY_WAIT
            self._timer().add(time.perf_counter() + delay, self._on_retry, i, self.token[i])
        else:
            self._make_ready(i)
        return True

    def _retryable(self, i: int, error: BaseException) -> bool:
        """Would entry ``i`` be tried again after ``error``?"""
        t = self.spec[i]
        a = self.attempts[i] - self.pushbacks[i]
        return a <= t.retries and isinstance(error, t.retry_on) and not isinstance(error, _NoRetry)

    def _push_back(self, i: int, error: BaseException, after: float) -> None:
        """The task said "too many requests" (``lf.RateLimited``, an HTTP 429 or 503): pause
        its rate limits for ``after`` seconds, try it again then, and do not count the
        attempt against its retries."""
        self.pushbacks[i] += 1
        self.errors[i] = error
        until = time.perf_counter() + after
        if self.emit:
            self._task_event("task_retrying", i, error=error, delay=after)
        cost = self.cost[i]
        if cost:
            self.gate.pause(cost, until)
            self._make_ready(i)  # it waits in the paused window like any other start
        else:
            self.status[i] = _RETRY_WAIT
            self._timer().add(until, self._on_retry, i, self.token[i])

    def _on_retry(self, i: int, token: int) -> None:
        if self.token[i] != token or self.status[i] != _RETRY_WAIT:
            return
        self._make_ready(i)
        self._kick()
