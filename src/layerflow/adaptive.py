"""Adaptive limits: how many tasks on one key run at once, found from the provider's answers.

``rate_limits={"llm": lf.Adaptive(start=4, max=64)}``. The number of tasks on that key that
may run at once starts at ``start``; while tasks succeed with every slot in use it grows by
one per round of successes, and a push-back (``lf.RateLimited`` or an HTTP 429, see
``pushback.py``) shrinks it by a factor, at most once per round, as TCP does with its
congestion window; after a push-back it grows back along a cubic of the time since, as TCP
CUBIC does (quickly at first, flat near the level that drew the push-back). A
``Retry-After`` pauses new starts on the key, for every task that uses it, until it has
passed. An overload (a 503 or 529 without
Retry-After) is the provider's trouble rather than the key's pace: one changes nothing here
(the task backs off alone), but ``OVERLOAD_RUN`` of them in a row, with no success between,
shrink the limit as a push-back would, without a pause. ``rate="100/min"`` adds a ceiling on
starts per window that the limit never exceeds.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import InvalidOptionError
from .options import number
from .windows import RateLimit, Window

__all__ = ["Adaptive"]

#: overloads in a row, with no success between, that shrink the limit (one does not: with
#: 5% of requests overloaded at random, three in a row come once in 8,000 ends)
OVERLOAD_RUN = 3
#: after a push-back the limit grows back along a cubic of the time since, as TCP CUBIC's
#: window does: quickly while far below the level that drew it, flat near that level (the
#: provider's capacity, roughly), then faster again past it. Growth per round of successes
#: would not do: a provider's window is much longer than a call, so its 429 comes many
#: rounds after the limit went past it. In limit units per second cubed.
CUBIC = 4.0


@dataclass(frozen=True)
class Adaptive:
    """A limit on one key that adapts to push-back: between ``min`` and ``max`` tasks at
    once, starting at ``start``; ``rate`` an optional ceiling on starts (``"100/min"``);
    ``decrease`` the factor it shrinks by on push-back."""

    start: int = 4
    max: int = 64
    min: int = 1
    rate: Any = None
    decrease: float = 0.7

    def __post_init__(self) -> None:
        problems = []
        for what in ("start", "max", "min"):
            value = getattr(self, what)
            if not number(value, whole=True, at_least=1):
                problems.append(f"{what} must be a whole number >= 1, got {value!r}")
        if not problems and not self.min <= self.start <= self.max:
            problems.append(
                f"needs min <= start <= max, got min={self.min}, start={self.start}, max={self.max}"
            )
        if not number(self.decrease, above=0) or self.decrease >= 1:
            problems.append(f"decrease must be a number between 0 and 1, got {self.decrease!r}")
        if self.rate is not None:
            try:
                object.__setattr__(self, "rate", RateLimit.parse(self.rate))
            except InvalidOptionError as e:
                problems.append(f"rate: {e}")
        if problems:
            raise InvalidOptionError("lf.Adaptive: " + "; ".join(problems))

    def __str__(self) -> str:
        ceiling = f", at most {self.rate}" if self.rate is not None else ""
        return f"adaptive, {self.start} to {self.max} at once{ceiling}"


class AdaptiveState:
    """One adaptive key during a run: its current limit, the tasks using it, the pause.
    Not thread-safe: the caller's lock guards it."""

    def __init__(self, spec: Adaptive) -> None:
        self.spec = spec
        self.limit = float(spec.start)  # tasks at once, now (its floor is what counts)
        self.running = 0
        self.paused_until = 0.0
        self.window = Window(spec.rate) if spec.rate is not None else None
        self.round = 0  # bumped at each decrease: push-backs of an older round do not count
        # entry -> (the round its running attempt started in, when it started)
        self.started: dict[int, tuple[int, float]] = {}
        self.parked: list[tuple[int, int]] = []  # (key, entry) waiting for a slot
        # after a push-back, one task probes alone until one succeeds: the pause ends when
        # the provider has room for one more start, not for every task that was held back
        self.probing = False
        self.pushed_at = math.inf  # the limit at the last push-back: growth slows near it
        self.decreased_at = 0.0  # when the limit last shrank
        # starts are spaced by (typical attempt time / limit), so a limit of 4.5 means 4.5
        # tasks' worth of requests per attempt time, not bursts of 5 then gaps
        self.latency = 0.0  # moving average of successful attempts' seconds
        self.last_start = -math.inf
        self.held_back = False
        self.overloads = 0  # overloads in a row, since the last success

    def slots(self) -> int:
        if self.probing:
            return 1
        return max(1, math.floor(self.limit + 1e-9))

    def wait(self, now: float, cost: float) -> float | None:
        """Seconds until a start fits (0: now); None when every slot is taken."""
        if now < self.paused_until:
            return self.paused_until - now
        if self.running >= self.slots():
            return None
        wait = self.last_start + self.latency / self.limit - now
        if wait > 0:
            self.held_back = True  # the limit, through its spacing, held a start back
        if self.window is not None:
            wait = max(wait, self.window.wait(now, cost))
        return max(wait, 0.0)

    def take(self, i: int, now: float, cost: float, pending: bool = False) -> list[Any] | None:
        """Entry ``i`` starts on this key; its entry in the rate ceiling's window, if any
        (``pending``: see ``Window.take``)."""
        self.running += 1
        self.started[i] = (self.round, now)
        self.last_start = now
        return self.window.take(now, cost, pending) if self.window is not None else None

    def park(self, key: int, i: int) -> None:
        heapq.heappush(self.parked, (key, i))

    def done(
        self, i: int, ok: bool, retry_after: float | None, now: float, overload: bool = False
    ) -> None:
        """Entry ``i``'s attempt on this key ended (``overload``: the provider said it is
        overloaded, with no wait); adapt the limit to how."""
        attempt = self.started.pop(i, None)
        if attempt is None:
            return  # it never took a slot here (a cached result, say)
        started, began = attempt
        full = self.running >= self.slots() or bool(self.parked) or self.held_back
        self.held_back = False
        self.running -= 1
        spec = self.spec
        if retry_after is not None:
            self.pause(now + retry_after)
            self.probing = True
            if started == self.round:  # one decrease per round of starts
                self.decrease(now)
        elif overload:
            self.overloads += 1
            if self.overloads >= OVERLOAD_RUN and started == self.round:
                self.overloads = 0
                self.decrease(now)
        elif ok:
            self.overloads = 0
            self.probing = False
            took = now - began
            self.latency = took if not self.latency else self.latency + (took - self.latency) / 8
            if full:  # the limit was what held tasks back: it may grow, by at most one
                # per round of successes
                step = 1.0
                if self.pushed_at < math.inf:  # towards the cubic's level now (see CUBIC)
                    # when the cubic is back at the level that drew the push-back
                    back = (self.pushed_at * (1 - spec.decrease) / CUBIC) ** (1 / 3)
                    t = now - self.decreased_at
                    step = min(CUBIC * (t - back) ** 3 + self.pushed_at - self.limit, 1.0)
                if step > 0:
                    self.limit = min(float(spec.max), self.limit + step / self.limit)

    def decrease(self, now: float = 0.0) -> None:
        """Shrink the limit (multiplicative decrease); a new round of starts begins."""
        self.decreased_at = now
        self.pushed_at = self.limit
        self.limit = max(float(self.spec.min), self.limit * self.spec.decrease)
        self.round += 1

    def unpark(self, waiting: Callable[[int], bool] | None = None) -> list[tuple[int, int]]:
        """Parked entries that free slots may take now, best first. Entries no longer
        ``waiting`` (cancelled meanwhile, say) are dropped and take no slot: otherwise the
        slot would go to nobody, and the entries behind them would wait forever."""
        room = self.slots() - self.running
        out = []
        while self.parked and room > 0:
            item = heapq.heappop(self.parked)
            if waiting is None or waiting(item[1]):
                out.append(item)
                room -= 1
        return out

    def pause(self, until: float) -> None:
        self.paused_until = max(self.paused_until, until)
