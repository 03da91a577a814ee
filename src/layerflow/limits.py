"""Bounds on what may start: the worker bound, resource pools, rate limits, checkpoints.

The scheduler asks these before every start (see ``Run._admit``), whatever pool the task
runs on, so a limit holds across threads, processes and coroutines alike.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .adaptive import Adaptive, AdaptiveState
from .errors import (
    InvalidOptionError,
    LayerflowError,
    RateLimited,  # noqa: F401 (re-exported)
    did_you_mean,
)
from .names import counted
from .options import number
from .windows import RateLimit, Window

if TYPE_CHECKING:
    from .graph import Graph

__all__ = [
    "DEFAULT_MAX_WORKERS",
    "Adaptive",
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
    budget: Mapping[str, float] | None = None,
) -> tuple[dict[str, float], dict[str, RateLimit | Adaptive], list[LayerflowError]]:
    """Validate the run's pools and limits against every task, before anything runs.
    A cost named after a ``budget`` needs no rate limit: it is the task's estimate.

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
    limits: dict[str, RateLimit | Adaptive] = {}
    for name, value in (rate_limits or {}).items():
        if isinstance(value, Adaptive):
            limits[name] = value
            continue
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
                if budget and name in budget:
                    continue  # an estimate against the budget, not a rate limit
                if strict:
                    problems.append(
                        InvalidOptionError(
                            f"task {t.name!r} names rate limit {name!r}, which the run does not "
                            f"declare.{did_you_mean(name, limits)} Declare it: "
                            f"flow.run(rate_limits={{{name!r}: '60/min'}})"
                        )
                    )
            elif name in limits and cost > _window_count(limits[name]):
                problems.append(
                    InvalidOptionError(
                        f"task {t.name!r} costs {cost:g} on rate limit {name!r}, more than a "
                        f"whole window allows ({limits[name]}): it could never start"
                    )
                )
    return pools, limits, problems


def _window_count(limit: RateLimit | Adaptive) -> float:
    """The most one window of ``limit`` admits (an adaptive limit without a rate: any)."""
    if isinstance(limit, Adaptive):
        return limit.rate.count if limit.rate is not None else math.inf
    return limit.count


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
        found = [(task_costs(t.rate_limit) or {}).get(name) for t in graph.tasks]
        costs = [c for c in found if c is not None]
        if costs and isinstance(limit, Adaptive):
            lines.append(
                f"rate limit {name} is {limit}: {counted(len(costs), 'task')} "
                f"{'shares' if len(costs) == 1 else 'share'} it, and it learns "
                f"the provider's capacity from push-back as the run goes"
            )
        elif costs and isinstance(limit, RateLimit):
            need = sum(costs) / limit.count * limit.per_seconds
            unit = "starts" if all(c == 1.0 for c in costs) else "units"
            lines.append(
                f"rate limit {name} allows {limit.count:g} {unit} per "
                f"{_span(limit.per_seconds)}; {counted(len(costs), 'task')} "
                f"{'needs' if len(costs) == 1 else 'need'} at least {_span(need)}"
            )
    for name, capacity in pools.items():
        users = [t for t in graph.tasks if name in t.resources]
        if users:
            most = int(capacity // min(t.resources[name] for t in users))
            mapped = [t.name for t in users if t.map is not None]  # each element holds units
            if mapped and len(mapped) == len(users):
                what = f"the elements of {', '.join(mapped)}"
            elif mapped:
                each = ", ".join(mapped)
                what = f"its {counted(len(users), 'task')} (each element of {each} counting)"
            else:
                what = f"its {counted(len(users), 'task')}"
            lines.append(
                f"resource pool {name} holds {capacity:g}: at most {most} of {what} at once"
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
    """May an entry start now? Resource pools, rate windows and adaptive limits, one rule for
    the scheduler (``scheduler/admission.py``) and for ``plan.simulate``, so predictions
    follow it.

    ``need[i]`` / ``cost[i]``: entry ``i``'s pool units and rate-limit costs (the caller's
    lists; it may append to them). An entry that does not fit is *parked*: behind the first
    pool that lacks units (until units of that pool return), behind an adaptive limit whose
    slots are all taken (until one is free), or until its rate windows have room or a
    push-back's pause is over (``wake``). Parked entries are handed back to be queued again
    and checked again when taken, so lower entries may pass one that does not fit. Not
    thread-safe: the caller's lock guards it.
    """

    def __init__(
        self,
        pools: Mapping[str, float],
        limits: Mapping[str, RateLimit | Adaptive],
        need: list[Mapping[str, float] | None],
        cost: list[dict[str, float] | None],
    ) -> None:
        self.free = dict(pools)  # free units per pool
        self.windows = {
            name: Window(limit) for name, limit in limits.items() if isinstance(limit, RateLimit)
        }
        self.adaptive = {
            name: AdaptiveState(limit)
            for name, limit in limits.items()
            if isinstance(limit, Adaptive)
        }
        self.need = need
        self.cost = cost
        self.parked_units: dict[str, list[tuple[int, int]]] = {}  # pool -> heap of (key, i)
        self.parked_rate: list[tuple[int, int]] = []
        self.wake = math.inf  # when the first rate-parked entry may fit
        self.active = any(need) or any(cost)
        # entry -> the window starts its running attempt took, to correct with real usage
        self.taken: dict[int, list[tuple[str, list[Any]]]] = {}

    def admit(self, key: int, i: int, now: float, pending: bool = False) -> tuple[str, Any] | None:
        """Take entry ``i``'s units and window room and return None, or park it and say
        what holds it: ``("pool", its name)`` or ``("rate_limit", the costs)``. With
        ``pending``, its call begins later (a worker process): its window room is held
        until :meth:`restamp` says when the call began."""
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
            adaptive = self.adaptive
            for name, c in cost.items():
                if name in adaptive:
                    w = adaptive[name].wait(now, c)
                    if w is None:  # every slot taken: until one is free
                        adaptive[name].park(key, i)
                        return "rate_limit", cost
                else:
                    w = self.windows[name].wait(now, c)
                wait = max(wait, w)
            if wait > 0:
                self.parked_rate.append((key, i))
                if now + wait < self.wake:
                    self.wake = now + wait
                return "rate_limit", cost
            taken = []
            for name, c in cost.items():
                if name in adaptive:
                    item = adaptive[name].take(i, now, c, pending)
                    if item is not None:  # its rate ceiling counts real usage too
                        taken.append((name, item))
                else:
                    taken.append((name, self.windows[name].take(now, c, pending)))
            if taken:
                self.taken[i] = taken
        if need:
            for pool, units in need.items():
                self.free[pool] -= units
        return None

    def release(
        self,
        i: int,
        ok: bool = True,
        retry_after: float | None = None,
        now: float = 0.0,
        used: Mapping[str, float] | None = None,
        waiting: Callable[[int], bool] | None = None,
        overload: bool = False,
    ) -> list[tuple[int, int]]:
        """Entry ``i``'s attempt ended (``ok``; pushed back for ``retry_after`` seconds, or
        an ``overload``; its real ``used`` costs, by limit name): its units and slots
        return, adaptive limits learn from how it ended. Gives back the parked entries
        (key, i) that may fit now, best first: as many as the returned room could hold,
        not every parked one (that would make each release cost as much as the queue).
        Parked entries no longer ``waiting`` (cancelled meanwhile) are dropped and take
        none of the room."""
        out: list[tuple[int, int]] = []
        cost = self.cost[i]
        if cost:
            taken = self.taken.pop(i, None)
            for name, item in taken or ():  # ended before it was heard to begin: from now
                if item[0] == math.inf:
                    window = self.windows.get(name) or self.adaptive[name].window
                    assert window is not None  # what took an item has a window
                    window.restamp(item, now)
            if taken and used:
                for name, item in taken:
                    if name in used:
                        window = self.windows.get(name) or self.adaptive[name].window
                        assert window is not None
                        window.correct(item, used[name])
            if self.adaptive:
                for name in cost:
                    state = self.adaptive.get(name)
                    if state is not None:
                        state.done(i, ok, retry_after, now, overload)
                        out += state.unpark(waiting)
        need = self.need[i]
        if not need:
            return out
        free = self.free
        for pool, units in need.items():
            free[pool] += units
        for pool in need:
            out += self._unpark_pool(pool, waiting)
        return out

    def _unpark_pool(
        self, pool: str, waiting: Callable[[int], bool] | None
    ) -> list[tuple[int, int]]:
        """Parked entries of ``pool`` that its free units could hold, best first."""
        parked = self.parked_units.get(pool)
        room = self.free[pool]
        out, too_big = [], []
        while parked and room > 1e-9:
            item = heapq.heappop(parked)
            if waiting is not None and not waiting(item[1]):
                continue  # not waiting any more: the room goes to the next one
            units = (self.need[item[1]] or {}).get(pool, 0.0)
            if units > room + 1e-9:
                too_big.append(item)  # lower ones may pass it
                continue
            room -= units
            out.append(item)
        if too_big:
            assert parked is not None  # they came from it
            for item in too_big:
                heapq.heappush(parked, item)
        return out

    def restamp(self, i: int, when: float) -> None:
        """Entry ``i``'s pending call (see :meth:`admit`) began at ``when``: its window
        starts count from then, so calls do not bunch where they run."""
        for name, item in self.taken.get(i, ()):
            window = self.windows.get(name) or self.adaptive[name].window
            assert window is not None  # what took an item has a window
            window.restamp(item, when)

    def offer(self, waiting: Callable[[int], bool]) -> list[tuple[int, int]]:
        """Room handed to entries that were then cancelled (a group stopped at once) goes
        to the next ones: the parked entries that the free room could hold now. Handing
        out too much is harmless: each is checked again when taken."""
        out: list[tuple[int, int]] = []
        for pool in self.parked_units:
            out += self._unpark_pool(pool, waiting)
        for state in self.adaptive.values():
            out += state.unpark(waiting)
        return out

    def rate_parked(self) -> list[tuple[int, int]]:
        """The rate window's time has come: every entry parked for one, to check again."""
        out, self.parked_rate = self.parked_rate, []
        self.wake = math.inf
        return out

    def pause(self, names: Iterable[str], until: float) -> None:
        """Push-back: no start on these rate limits before ``until``."""
        for name in names:
            if name in self.adaptive:
                self.adaptive[name].pause(until)
            else:
                self.windows[name].pause(until)
