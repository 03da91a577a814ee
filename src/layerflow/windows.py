"""Rate windows: ``RateLimit`` (at most so many units per so many seconds) and the
sliding-window log that enforces one."""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass
from typing import Any

from .errors import InvalidOptionError
from .options import number

__all__ = ["RateLimit", "Window"]

_UNITS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
    "days": 86400.0,
}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)?\s*([a-z]+)\s*$")


@dataclass(frozen=True)
class RateLimit:
    """At most ``count`` units (starts, or the costs tasks declare) in any window of
    ``per_seconds``. ``RateLimit.parse("80/min")``, ``"5/s"``, ``"1000/h"``, ``"3/10s"``."""

    count: float
    per_seconds: float

    def __post_init__(self) -> None:
        for what, v in (("count", self.count), ("per_seconds", self.per_seconds)):
            if not number(v, above=0):
                raise InvalidOptionError(f"RateLimit {what} must be a number > 0, got {v!r}")

    @classmethod
    def parse(cls, value: RateLimit | str | tuple[float, float]) -> RateLimit:
        """A rate limit from ``"80/min"``-style text, a ``(count, seconds)`` pair or itself."""
        if isinstance(value, RateLimit):
            return value
        if isinstance(value, tuple) and len(value) == 2:
            return cls(*value)
        if isinstance(value, str):
            m = _RATE.match(value.lower())
            if m and m.group(3) in _UNITS:
                count, many, unit = m.groups()
                return cls(float(count), float(many or 1) * _UNITS[unit])
        raise InvalidOptionError(
            f"a rate limit looks like '80/min', '5/s', '1000/h' or '3/10s' "
            f"(or lf.RateLimit(count, per_seconds)), got {value!r}"
        )

    def __str__(self) -> str:
        for unit, seconds in (("s", 1.0), ("min", 60.0), ("h", 3600.0), ("day", 86400.0)):
            if self.per_seconds == seconds:
                return f"{self.count:g}/{unit}"
        return f"{self.count:g}/{self.per_seconds:g}s"


class Window:
    """A sliding-window log of one rate limit's starts. Not thread-safe: the scheduler's
    lock guards it."""

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self.log: deque[list[Any]] = deque()  # [start, cost, still in the window]
        self.used = 0.0
        self.paused_until = 0.0

    def wait(self, now: float, cost: float) -> float:
        """Seconds until ``cost`` more units fit in the window (0: now)."""
        per = self.limit.per_seconds
        log = self.log
        while log and log[0][0] <= now - per:
            item = log.popleft()
            item[2] = False
            self.used -= item[1]
        if now < self.paused_until:
            return self.paused_until - now
        excess = self.used + cost - self.limit.count
        if excess <= 1e-9:
            return 0.0
        for t, c, _ in log:  # the oldest entries leave the window first
            excess -= c
            if excess <= 1e-9:
                return t + per - now
        return per  # unreachable: costs are checked against the window before the run

    def take(self, now: float, cost: float, pending: bool = False) -> list[Any]:
        """Count a start of ``cost`` at ``now``. A ``pending`` one (a call a cold worker
        process begins later) is counted but out of the log, so it cannot leave the window,
        until :meth:`restamp` says when it began."""
        if pending:
            self.used += cost
            return [math.inf, cost, True]
        item = [now, cost, True]
        self.log.append(item)
        self.used += cost
        return item

    def correct(self, item: list[Any], actual: float) -> None:
        """A start's real cost is known (``lf.usage``): count that instead of the estimate,
        while the start is still in the window."""
        actual = max(actual, 0.0)
        if item[2]:
            self.used += actual - item[1]
            item[1] = actual

    def restamp(self, item: list[Any], when: float) -> None:
        """A pending start (``take(pending=True)``) really happened at ``when``: from now
        on it leaves the window ``per`` seconds after that (the log stays in start order)."""
        if item[0] != math.inf:
            return
        item[0] = when
        log = self.log
        k = len(log)
        while k and log[k - 1][0] > when:
            k -= 1
        log.insert(k, item)

    def pause(self, until: float) -> None:
        self.paused_until = max(self.paused_until, until)
