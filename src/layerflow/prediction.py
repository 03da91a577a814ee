"""What a run will take, before it runs: ``Plan.simulate`` replays the scheduler's own policy
(``policy.py``: the ready order, the sequential order, the layer barrier) and admission rule
(``limits.Gate``) with given or past durations; ``what_if`` asks what more workers would buy
and which limit binds. A part of :class:`~layerflow.plan.Plan` (its base class).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import InvalidOptionError, raise_all
from .limits import Adaptive, Gate, RateLimit, check_limits, resolve_max_workers, task_costs
from .options import MODES
from .policy import KEY_BASE, LayerBarrier, holds_queue

if TYPE_CHECKING:
    from .graph import Graph

__all__ = ["Durations", "Prediction", "WhatIf"]

#: task durations: a mapping of names to seconds, one number for every task, or None (the
#: store's history)
Durations = Mapping[str, float] | float | int | None


@dataclass(frozen=True)
class WhatIf:
    """One row of :meth:`Plan.what_if`: with ``max_workers``, the predicted wall time
    (``seconds``; units when there are no durations), the ``speedup`` over one by one, and
    the limit that ``binding`` holds it back: ``"workers"``, ``"pool NAME"``, ``"rate limit
    NAME"``, two of them joined by ``" + "`` when only lifting both would help, or
    ``"critical path"`` when no limit does (the prediction is the longest chain)."""

    max_workers: int | None
    seconds: float
    speedup: float
    binding: str


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise InvalidOptionError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")


class Prediction:
    """Predictions of a :class:`~layerflow.plan.Plan` (which defines what is declared here)."""

    if TYPE_CHECKING:
        graph: Graph
        resources: Mapping[str, float] | None
        rate_limits: Mapping[str, Any] | None

        @property
        def history(self) -> Mapping[str, float]: ...
        def keys(self) -> list[int]: ...
        def sequence_keys(self, seed: int | None = None) -> list[int]: ...
        def _weights(self, durations: Durations) -> list[float]: ...

    def simulate(
        self,
        durations: Durations = None,
        max_workers: int | None = None,
        *,
        mode: str = "dynamic",
        resources: Mapping[str, float] | None = None,
        rate_limits: Mapping[str, Any] | None = None,
    ) -> float:
        """Predicted wall time in seconds, under the scheduler's own policy and limits.

        ``durations`` maps task names to seconds (tasks not named take the median of those
        named); without durations, the store's :attr:`history` (every task 1 unit when there
        is none). ``max_workers``, ``mode``, ``resources`` and ``rate_limits`` as in ``run``:
        a task waits for free pool units and for room in its rate windows, exactly as the
        scheduler makes it wait. ``None`` means the plan's own limits (a YAML pipeline's
        settings; see :attr:`resources`), ``{}`` none; a pool or limit that tasks name but
        nobody declared is left out of the prediction.
        """
        return self._replay(durations, max_workers, mode, resources, rate_limits)

    def predicted_order(
        self,
        durations: Durations = None,
        max_workers: int | None = None,
        *,
        mode: str = "dynamic",
        resources: Mapping[str, float] | None = None,
        rate_limits: Mapping[str, Any] | None = None,
    ) -> list[str]:
        """The order in which the tasks start in :meth:`simulate`'s replay (same arguments).
        With one worker, or ``mode="sequential"``, it is the order a run starts them in
        (``run.order``) whatever the tasks take; with more, it holds for these durations."""
        starts: list[int] = []
        self._replay(durations, max_workers, mode, resources, rate_limits, starts)
        names = self.graph.names
        return [names[i] for i in starts]

    def _replay(
        self,
        durations: Durations,
        max_workers: int | None,
        mode: str,
        resources: Mapping[str, float] | None,
        rate_limits: Mapping[str, Any] | None,
        starts: list[int] | None = None,
    ) -> float:
        """:meth:`simulate` and :meth:`predicted_order`: the arguments checked and read, the
        replay run (each start appended to ``starts`` if given)."""
        _check_mode(mode)
        limits = self._limits(resources, rate_limits)
        w = self._weights(durations)
        return self._simulate(w, resolve_max_workers(max_workers), mode, *limits, starts=starts)

    def what_if(
        self,
        max_workers: Iterable[int | None],
        durations: Durations = None,
        *,
        mode: str = "dynamic",
        resources: Mapping[str, float] | None = None,
        rate_limits: Mapping[str, Any] | None = None,
    ) -> list[WhatIf]:
        """One :class:`WhatIf` row per worker count: the predicted wall time, the speedup
        over running one by one, and which limit binds. Arguments as in :meth:`simulate`.
        For example:

            >>> [(r.max_workers, r.seconds, r.binding) for r in plan.what_if([1, 4])]
            [(1, 5.0, 'workers'), (4, 3.0, 'pool group:chunks')]
        """
        _check_mode(mode)
        w = self._weights(durations)
        pools, limits = self._limits(resources, rate_limits)
        total = sum(w)
        # lifting every limit leaves what the graph itself allows: the critical path (or
        # the layer barriers, or one at a time)
        floor = self._simulate(w, max(len(w), 1), mode, {}, {})
        rows = []
        for count in max_workers:
            slots = resolve_max_workers(count)
            span = self._simulate(w, slots, mode, pools, limits)
            binding = self._binding(w, slots, mode, pools, limits, span, floor)
            speedup = total / span if span > 0 else 1.0
            rows.append(WhatIf(count, span, speedup, binding))
        return rows

    def _binding(
        self,
        w: list[float],
        slots: int,
        mode: str,
        pools: dict[str, float],
        limits: dict[str, RateLimit | Adaptive],
        span: float,
        floor: float,
    ) -> str:
        """The limit whose lifting would shorten the prediction most, by simulating without
        it; two together when no single one helps (e.g. 2 workers and a pool of 2)."""
        tol = 1e-9 * max(1.0, span)
        if span <= floor + tol:
            return {"dynamic": "critical path", "layered": "layers"}.get(mode, "one at a time")
        labels = ["workers"] if mode != "sequential" else []
        labels += [f"pool {name}" for name in pools]
        labels += [f"rate limit {name}" for name in limits]

        def without(lifted: set[str]) -> float:
            return self._simulate(
                w,
                max(len(w), 1) if "workers" in lifted else slots,
                mode,
                {k: v for k, v in pools.items() if f"pool {k}" not in lifted},
                {k: v for k, v in limits.items() if f"rate limit {k}" not in lifted},
            )

        gains = [(span - without({label}), label) for label in labels]
        best = max((g for g, _ in gains), default=0.0)
        if best > tol:
            return next(label for g, label in gains if g >= best - tol)
        for a, b in itertools.combinations(labels, 2):
            if span - without({a, b}) > tol:
                return f"{a} + {b}"
        return " + ".join(labels) or "critical path"

    def _limits(
        self, resources: Mapping[str, float] | None, rate_limits: Mapping[str, Any] | None
    ) -> tuple[dict[str, float], dict[str, RateLimit | Adaptive]]:
        """The pools and rate limits a prediction models: the given ones, else the plan's."""
        pools, limits, problems = check_limits(
            self.graph, *self._or_own(resources, rate_limits), strict=False
        )
        raise_all(problems, self.graph.flow_name)
        return pools, limits

    def _simulate(
        self,
        w: list[float],
        slots: int,
        mode: str,
        pools: dict[str, float],
        limits: dict[str, RateLimit | Adaptive],
        starts: list[int] | None = None,
    ) -> float:
        """An event-driven replay of the scheduler's transitions with task ``i`` taking
        ``w[i]`` seconds: the best ready task starts when a slot is free and its limits
        admit it; one its limits hold back is parked (lower ones may pass it, but for
        sequential mode) until pool units return or its rate window opens, by the same
        ``limits.Gate`` as the scheduler. Appends each start's task to ``starts`` if given."""
        g = self.graph
        n = len(g)
        tasks = g.tasks
        need: list[Mapping[str, float] | None] = [
            {p: u for p, u in t.resources.items() if p in pools} or None for t in tasks
        ]
        cost: list[dict[str, float] | None] = [
            {k: c for k, c in (task_costs(t.rate_limit) or {}).items() if k in limits} or None
            for t in tasks
        ]
        gated = any(need) or any(cost)
        if mode == "sequential":
            if not gated and starts is None:
                return float(sum(w))
            slots = 1
            keys = self.sequence_keys()
        else:
            keys = self.keys()
        in_order = holds_queue(mode)
        gate = Gate(pools, limits, need, cost)  # the scheduler's own admission rule
        waiting = [len(d) for d in g.deps]
        barrier = LayerBarrier(g.layer, g.n_layers, holding=mode == "layered")
        layered = mode == "layered"
        layer = g.layer
        held = barrier.hold if layered else lambda i, li: False
        ready = [keys[i] for i in range(n) if not waiting[i] and not held(i, layer[i])]
        heapq.heapify(ready)
        running: list[tuple[float, int]] = []
        now = 0.0

        def admit(key: int) -> bool:
            # look a hair ahead, so a start exactly one window ago has left it
            later = now + 1e-9 * max(1.0, now)
            return gate.admit(key, key % KEY_BASE, later) is None

        while True:
            while ready and len(running) < slots:
                key = heapq.heappop(ready)
                if gated and not admit(key):
                    if in_order:  # parked: nothing may overtake it
                        break
                    continue
                i = key % KEY_BASE
                if starts is not None:
                    starts.append(i)
                heapq.heappush(running, (now + w[i], i))
            if not running:
                if gate.wake == math.inf:
                    return now
            elif running[0][0] <= gate.wake:
                now, i = heapq.heappop(running)
                done = [i]
                while running and running[0][0] <= now:  # finish simultaneous ends together
                    done.append(heapq.heappop(running)[1])
                for i in done:
                    barrier.ended(layer[i])
                    if gated:  # adaptive limits: as if nothing pushed back
                        for key, _ in gate.release(i, now=now):
                            heapq.heappush(ready, key)
                    for s in g.succs[i]:
                        waiting[s] -= 1
                        if not waiting[s] and not held(s, layer[s]):
                            heapq.heappush(ready, keys[s])
                if layered:
                    while not barrier.last and not barrier.left[barrier.current]:
                        for j in barrier.open_next():
                            heapq.heappush(ready, keys[j])
                continue
            now = gate.wake  # a rate window opens before the next task ends
            for key, _ in gate.rate_parked():
                heapq.heappush(ready, key)

    def prediction(
        self,
        max_workers: int | None,
        mode: str,
        resources: Mapping[str, float] | None,
        rate_limits: Mapping[str, Any] | None,
        reused: Iterable[int] = (),
    ) -> Callable[[], float] | None:
        """For a run starting now: its predicted wall time from the store's history, as a
        function computed on first call (a run never waits for its own prediction), or
        None without history. Tasks ``reused`` (resumed) take no time."""
        history = self.history  # read now: once the run records, it would count itself
        if not history or not len(self.graph):
            return None
        skip = list(reused)
        value: list[float] = []

        def predicted() -> float:
            if not value:
                w = self._weights(history)
                for i in skip:
                    w[i] = 0.0
                pools, limits = self._limits(resources or {}, rate_limits or {})
                value.append(
                    self._simulate(w, resolve_max_workers(max_workers), mode, pools, limits)
                )
            return value[0]

        return predicted

    def binding(
        self,
        durations: Durations,
        max_workers: int | None,
        mode: str = "dynamic",
        resources: Mapping[str, float] | None = None,
        rate_limits: Mapping[str, Any] | None = None,
    ) -> str:
        """Which limit bound a run of these ``durations`` (``"critical path"``,
        ``"workers"``, ``"pool gpu"``, ``"rate limit api"``, ``"layers"``...), by the same
        simulation :meth:`what_if` uses."""
        row = self.what_if(
            [max_workers],
            durations,
            mode=mode,
            resources=resources or {},
            rate_limits=rate_limits or {},
        )[0]
        return row.binding

    def binding_limits(
        self,
        resources: Mapping[str, float] | None = None,
        rate_limits: Mapping[str, Any] | None = None,
    ) -> list[str]:
        """Sentences about the pools and rate limits that will slow this plan down, e.g.
        "rate limit github allows 80 starts per minute; 500 tasks need at least 6.2 min"
        (``None``: the plan's own, as in :meth:`simulate`)."""
        from .limits import binding_limits

        return binding_limits(self.graph, *self._or_own(resources, rate_limits))

    def _or_own(
        self, resources: Mapping[str, float] | None, rate_limits: Mapping[str, Any] | None
    ) -> tuple[Mapping[str, float] | None, Mapping[str, Any] | None]:
        """The given pools and rate limits, each ``None`` replaced by the plan's own."""
        return (
            self.resources if resources is None else resources,
            self.rate_limits if rate_limits is None else rate_limits,
        )
