"""Bounds on what may start: the worker bound, resource pools, rate limits, checkpoints.

The scheduler asks these before every start (see ``Run._admit``), whatever pool the task
runs on, so a limit holds across threads, processes and coroutines alike.
"""

from __future__ import annotations

import heapq
import math
import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import (
    InvalidOptionError,
    LayerflowError,
    RateLimited,  # noqa: F401 (re-exported)
    did_you_mean,
)
from .options import number

if TYPE_CHECKING:
    from .graph import Graph

__all__ = [
    "DEFAULT_MAX_WORKERS",
    "Gate",
    "LayerReport",
    "RateLimit",
    "RateLimited",
    "resolve_max_workers",
]

#: With ``max_workers=None`` every ready task may start, but no run holds more than this
#: many worker threads: tasks are mostly I/O (API calls, subprocesses), so the bound is far
#: above the core count, yet low enough that a 10,000-wide layer does not start 10,000 threads.
DEFAULT_MAX_WORKERS = 64


def resolve_max_workers(max_workers: int | None) -> int:
    """The number of worker slots for a run; validates the user's value."""
    if max_workers is None:
        return DEFAULT_MAX_WORKERS
    if not number(max_workers, whole=True, at_least=1):
        raise InvalidOptionError(
            f"max_workers must be a whole number >= 1 or None, got {max_workers!r}"
        )
    return max_workers


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


@dataclass(frozen=True)
class LayerReport:
    """What a ``checkpoint`` sees after a layer: its ``index`` (from 0, as in
    ``plan.layers``), its ``tasks``, and their ``statuses`` and ``values`` by name."""

    index: int
    tasks: tuple[str, ...]
    statuses: dict[str, str]
    values: dict[str, Any]

    def counts(self) -> dict[str, int]:
        """How many tasks of the layer ended in each status."""
        out: dict[str, int] = {}
        for s in self.statuses.values():
            out[s] = out.get(s, 0) + 1
        return out


class Window:
    """A sliding-window log of one rate limit's starts. Not thread-safe: the scheduler's
    lock guards it."""

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self.log: deque[tuple[float, float]] = deque()
        self.used = 0.0
        self.paused_until = 0.0

    def wait(self, now: float, cost: float) -> float:
        """Seconds until ``cost`` more units fit in the window (0: now)."""
        per = self.limit.per_seconds
        log = self.log
        while log and log[0][0] <= now - per:
            self.used -= log.popleft()[1]
        if now < self.paused_until:
            return self.paused_until - now
        excess = self.used + cost - self.limit.count
        if excess <= 1e-9:
            return 0.0
        for t, c in log:  # the oldest entries leave the window first
            excess -= c
            if excess <= 1e-9:
                return t + per - now
        return per  # unreachable: costs are checked against the window before the run

    def take(self, now: float, cost: float) -> None:
        self.log.append((now, cost))
        self.used += cost

    def pause(self, until: float) -> None:
        self.paused_until = max(self.paused_until, until)


def task_costs(rate_limit: str | Mapping[str, float] | None) -> dict[str, float] | None:
    """A task's ``rate_limit`` option as {limit name: cost}."""
    if rate_limit is None:
        return None
    if isinstance(rate_limit, str):
        return {rate_limit: 1.0}
    return dict(rate_limit)  # costs are checked (check_limits) before anything runs


def check_limits(
    graph: Graph,
    resources: Mapping[str, float] | None,
    rate_limits: Mapping[str, Any] | None,
    *,
    strict: bool = True,
) -> tuple[dict[str, float], dict[str, RateLimit], list[LayerflowError]]:
    """Validate the run's pools and limits against every task, before anything runs.

    ``strict=False`` lets tasks name pools and limits that are not declared (a prediction
    then leaves them out); bad values and tasks that could never start are still problems."""
    if (
        not resources
        and not rate_limits
        and not any(t.resources or t.rate_limit for t in graph.tasks)
    ):
        return {}, {}, []  # nothing declared, nothing asked for: the common case, fast
    problems: list[LayerflowError] = []
    pools: dict[str, float] = {}
    for name, capacity in (resources or {}).items():
        if not number(capacity, above=0):
            problems.append(
                InvalidOptionError(f"resources[{name!r}] must be a number > 0, got {capacity!r}")
            )
        else:
            pools[name] = float(capacity)
    limits: dict[str, RateLimit] = {}
    for name, value in (rate_limits or {}).items():
        try:
            limits[name] = RateLimit.parse(value)
        except InvalidOptionError as e:
            problems.append(InvalidOptionError(f"rate_limits[{name!r}]: {e}"))
    for t in graph.tasks:
        for pool, units in t.resources.items():
            if pool not in pools and pool not in (resources or {}):
                if strict:
                    problems.append(
                        InvalidOptionError(
                            f"task {t.name!r} needs resource {pool!r}, which the run does not "
                            f"declare.{did_you_mean(pool, pools)} Declare it: "
                            f"flow.run(resources={{{pool!r}: N}})"
                        )
                    )
            elif pool in pools and units > pools[pool]:
                problems.append(
                    InvalidOptionError(
                        f"task {t.name!r} needs {units:g} of {pool!r}, but the pool holds only "
                        f"{pools[pool]:g}: it could never start"
                    )
                )
        for name, cost in (task_costs(t.rate_limit) or {}).items():
            if not number(cost, above=0):
                problems.append(
                    InvalidOptionError(
                        f"task {t.name!r}: the cost on rate limit {name!r} must be a number "
                        f"> 0, got {cost!r}"
                    )
                )
            elif name not in limits and name not in (rate_limits or {}):
                if strict:
                    problems.append(
                        InvalidOptionError(
                            f"task {t.name!r} names rate limit {name!r}, which the run does not "
                            f"declare.{did_you_mean(name, limits)} Declare it: "
                            f"flow.run(rate_limits={{{name!r}: '60/min'}})"
                        )
                    )
            elif name in limits and cost > limits[name].count:
                problems.append(
                    InvalidOptionError(
                        f"task {t.name!r} costs {cost:g} on rate limit {name!r}, more than a "
                        f"whole window allows ({limits[name]}): it could never start"
                    )
                )
    return pools, limits, problems


def binding_limits(
    graph: Graph,
    resources: Mapping[str, float] | None = None,
    rate_limits: Mapping[str, Any] | None = None,
) -> list[str]:
    """Plain sentences about the pools and rate limits that will slow this plan down."""
    pools, limits, problems = check_limits(graph, resources, rate_limits)
    if problems:
        return [str(p) for p in problems]
    lines = []
    for name, limit in limits.items():
        costs = [(task_costs(t.rate_limit) or {}).get(name) for t in graph.tasks]
        costs = [c for c in costs if c is not None]
        if costs:
            need = sum(costs) / limit.count * limit.per_seconds
            unit = "starts" if all(c == 1.0 for c in costs) else "units"
            lines.append(
                f"rate limit {name} allows {limit.count:g} {unit} per "
                f"{_span(limit.per_seconds)}; {len(costs)} tasks need at least {_span(need)}"
            )
    for name, capacity in pools.items():
        users = [t for t in graph.tasks if name in t.resources]
        if users:
            most = int(capacity // min(t.resources[name] for t in users))
            lines.append(
                f"resource pool {name} holds {capacity:g}: at most {most} of its "
                f"{len(users)} tasks at once"
            )
    return lines


def _span(seconds: float) -> str:
    if seconds == 60:
        return "minute"
    if seconds == 1:
        return "second"
    if seconds == 3600:
        return "hour"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


class Gate:
    """May an entry start now? Resource pools and rate windows, one rule for the scheduler
    (``scheduler/admission.py``) and for ``plan.simulate``, so predictions follow it.

    ``need[i]`` / ``cost[i]``: entry ``i``'s pool units and rate-limit costs (the caller's
    lists; it may append to them). An entry that does not fit is *parked*: behind the first
    pool that lacks units (until units of that pool return), or until its rate windows have
    room (``wake``). Parked entries are handed back to be queued again and checked again when
    taken, so lower entries may pass one that does not fit. Not thread-safe: the caller's
    lock guards it.
    """

    def __init__(
        self,
        pools: Mapping[str, float],
        limits: Mapping[str, RateLimit],
        need: list[Mapping[str, float] | None],
        cost: list[dict[str, float] | None],
    ) -> None:
        self.free = dict(pools)  # free units per pool
        self.windows = {name: Window(limit) for name, limit in limits.items()}
        self.need = need
        self.cost = cost
        self.parked_units: dict[str, list[tuple[int, int]]] = {}  # pool -> heap of (key, i)
        self.parked_rate: list[tuple[int, int]] = []
        self.wake = math.inf  # when the first rate-parked entry may fit
        self.active = any(need) or any(cost)

    def admit(self, key: int, i: int, now: float) -> tuple[str, Any] | None:
        """Take entry ``i``'s units and window room and return None, or park it and say
        what holds it: ``("pool", its name)`` or ``("rate_limit", the costs)``."""
        need = self.need[i]
        if need:
            free = self.free
            for pool, units in need.items():
                if free[pool] < units - 1e-9:
                    heapq.heappush(self.parked_units.setdefault(pool, []), (key, i))
                    return "pool", pool
        cost = self.cost[i]
        if cost:
            wait = 0.0
            for name, c in cost.items():
                wait = max(wait, self.windows[name].wait(now, c))
            if wait > 0:
                self.parked_rate.append((key, i))
                if now + wait < self.wake:
                    self.wake = now + wait
                return "rate_limit", cost
            for name, c in cost.items():
                self.windows[name].take(now, c)
        if need:
            for pool, units in need.items():
                self.free[pool] -= units
        return None

    def release(self, i: int) -> list[tuple[int, int]]:
        """Entry ``i``'s attempt ended: its units return. Gives back the parked entries
        (key, i) that may fit now, best first: as many as the returned room could hold, not
        every parked one (that would make each release cost as much as the queue)."""
        need = self.need[i]
        if not need:
            return []
        free = self.free
        for pool, units in need.items():
            free[pool] += units
        out: list[tuple[int, int]] = []
        for pool in need:
            parked = self.parked_units.get(pool)
            room = free[pool]
            too_big = []
            while parked and room > 1e-9:
                item = heapq.heappop(parked)
                units = (self.need[item[1]] or {}).get(pool, 0.0)
                if units > room + 1e-9:
                    too_big.append(item)  # lower ones may pass it
                    continue
                room -= units
                out.append(item)
            for item in too_big:
                heapq.heappush(parked, item)
        return out

    def rate_parked(self) -> list[tuple[int, int]]:
        """The rate window's time has come: every entry parked for one, to check again."""
        out, self.parked_rate = self.parked_rate, []
        self.wake = math.inf
        return out

    def pause(self, names: Iterable[str], until: float) -> None:
        """Push-back: no start on these rate limits before ``until``."""
        for name in names:
            self.windows[name].pause(until)
