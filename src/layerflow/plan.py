"""Analysis of a validated graph: order, layers, critical path, simulation, pictures.

Everything here is linear in nodes plus edges (the simulation adds a log factor for its
heaps) and works on the graph's index lists. The simulation replays the scheduler's own
policy (``policy.py``: the ready order, sequential order, the layer barrier) and admission
rule (``limits.Gate``), so that :meth:`Plan.simulate` predicts what the scheduler does.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping
from typing import Any

from .errors import InvalidOptionError
from .graph import Graph
from .names import counted, duration
from .options import MODES, number
from .policy import KEY_BASE, ranked_keys, sequence_keys
from .prediction import Durations, Prediction, WhatIf

__all__ = ["Plan", "WhatIf", "MODES", "KEY_BASE"]


class Plan(Prediction):
    """What a run will do: built by :meth:`Flow.plan`, before anything runs."""

    def __init__(
        self,
        graph: Graph,
        history: Callable[[], Mapping[str, float]] | None = None,
        *,
        resources: Mapping[str, float] | None = None,
        rate_limits: Mapping[str, Any] | None = None,
    ) -> None:
        self.graph = graph
        #: the pools and rate limits a run of this plan applies unless told otherwise (a
        #: YAML pipeline's settings); predictions model them by default
        self.resources = resources
        self.rate_limits = rate_limits
        self._keys: list[int] | None = None
        #: each task's rank in a depth-first order, set by ``layerflow.dask``: the run then
        #: takes ready tasks as Dask's local schedulers do (``depth_bases``)
        self.depth_first: list[int] | None = None
        self._depth_bases: list[int] | None = None
        self._history_source = history
        self._history: Mapping[str, float] | None = None

    @property
    def history(self) -> Mapping[str, float]:
        """Median durations of this flow's tasks in past runs (from the store), by name;
        empty without a store. ``simulate`` and ``explain`` use it when given no durations."""
        if self._history is None:
            self._history = {}
            if self._history_source is not None:
                try:
                    found = self._history_source()
                except Exception:  # no readable store: predict without history
                    found = {}
                names = self.graph.index
                self._history = {k: v for k, v in found.items() if k in names}
        return self._history

    # --- structure -------------------------------------------------------------------------

    @property
    def name(self) -> str | None:
        """The flow's name."""
        return self.graph.flow_name

    @property
    def tasks(self) -> list[str]:
        """Task names in declaration order."""
        return list(self.graph.names)

    @property
    def order(self) -> list[str]:
        """A topological order: layer 0, then layer 1, ...; each in declaration order."""
        names = self.graph.names
        return [names[i] for i in self.graph.order]

    @property
    def layers(self) -> list[list[str]]:
        """Task names by layer: layer = 1 + max(layer of dependencies), 0 without any."""
        names = self.graph.names
        return [[names[i] for i in lay] for lay in self.graph.layers()]

    @property
    def inputs(self) -> list[str]:
        """Flow inputs that some task needs and that have no default."""
        return list(self.graph.needs_input)

    def dependencies(self, name: str) -> list[str]:
        """The tasks ``name`` waits for (data and ordering)."""
        g = self.graph
        return [g.names[j] for j in g.deps[g.index[name]]]

    def layer_of(self, name: str) -> int:
        """The layer number of task ``name``."""
        return self.graph.layer[self.graph.index[name]]

    def __len__(self) -> int:
        return len(self.graph)

    # --- durations and paths ---------------------------------------------------------------

    def _weights(self, durations: Durations) -> list[float]:
        """Seconds per task: the mapping's value, else the median of the known ones, else 1."""
        n = len(self.graph)
        if durations is None:
            if self.history:
                durations = self.history
            else:
                return [1.0] * n
        if isinstance(durations, (int, float)) and not isinstance(durations, bool):
            if not math.isfinite(durations) or durations < 0:
                raise InvalidOptionError(f"durations must be seconds >= 0, got {durations!r}")
            return [float(durations)] * n
        if not isinstance(durations, Mapping):
            raise InvalidOptionError(
                f"durations must map task names to seconds, got {type(durations).__name__}"
            )
        unknown = [k for k in durations if k not in self.graph.index]
        if unknown:
            raise InvalidOptionError(
                f"durations names {unknown[0]!r}, which is not a task of this plan"
            )
        for name, v in durations.items():
            if not number(v, at_least=0):
                raise InvalidOptionError(
                    f"durations[{name!r}] must be a number of seconds >= 0, got {v!r}"
                )
        known = [float(v) for v in durations.values()]
        default = statistics.median(known) if known else 1.0
        return [float(durations.get(name, default)) for name in self.graph.names]

    def remaining_path(self, weights: list[float] | None = None) -> list[float]:
        """For each task, the longest path from it to a sink, its own weight included."""
        g = self.graph
        w = weights or [1.0] * len(g)
        succs = g.succs
        rank = [0.0] * len(g)
        get = rank.__getitem__
        for i in reversed(g.order):
            s = succs[i]
            rank[i] = w[i] + max(map(get, s)) if s else w[i]
        return rank

    def critical_path(self, durations: Durations = None) -> list[str]:
        """The longest chain of dependent tasks, by ``durations`` (or by task count)."""
        g = self.graph
        if not len(g):
            return []
        if durations is None:  # by count, the layers already hold the longest paths
            return self._longest(g.layer)
        return self._longest(self._longest_to(self._weights(durations)))

    def _longest_to(self, w: list[float]) -> list[float]:
        """For each task, the longest weighted path ending with it."""
        g = self.graph
        deps = g.deps
        dist = [0.0] * len(g)
        get = dist.__getitem__
        for i in g.order:
            d = deps[i]
            dist[i] = w[i] + max(map(get, d)) if d else w[i]
        return dist

    def _longest(self, dist: list[Any]) -> list[str]:
        """Walk back from the first task that ends a longest path."""
        g = self.graph
        deps = g.deps
        if not dist:
            return []
        get = dist.__getitem__
        i = dist.index(max(dist))
        path = [i]
        while deps[i]:
            i = max(deps[i], key=get)
            path.append(i)
        path.reverse()
        return [g.names[k] for k in path]

    def depth_bases(self) -> list[int] | None:
        """With ``depth_first`` ranks: per task, the part of its ready-queue key that does not
        change (priority, higher first, then the rank); the run adds how many entries were
        left when it became ready, so that what the latest finish made ready goes first, as
        the stack of Dask's local schedulers does. ``None`` without ranks."""
        ranks = self.depth_first
        if ranks is None:
            return None
        if self._depth_bases is None:  # the keys and the run's state both ask
            n = len(ranks)
            prio = [t.priority for t in self.graph.tasks]
            pmax = max(prio, default=0)
            span = (n + 1) * n  # room for every "entries left" count times n, per priority
            self._depth_bases = [(pmax - p) * span + r for p, r in zip(prio, ranks, strict=True)]
        return self._depth_bases

    def keys(self) -> list[int]:
        """Ready-queue keys, smaller first: priority (higher first), then longest remaining
        path (in seconds of past runs when the store has them, else in tasks), then
        declaration order; packed into one int so the heap compares ints, not tuples."""
        if self._keys is None and self.depth_first is not None:
            n = len(self.graph)
            bases = self.depth_bases() or []
            self._keys = [(b + n * n) * KEY_BASE + i for i, b in enumerate(bases)]
        if self._keys is None:
            g = self.graph
            n = len(g)
            if self.history:  # past durations: the critical path in seconds, in ms steps
                rank = [int(r * 1000) for r in self.remaining_path(self._weights(None))]
            else:
                rank = [int(r) for r in self.remaining_path()]
            self._keys = ranked_keys([t.priority for t in g.tasks], rank)
        return self._keys

    def sequence_keys(self, seed: int | None = None) -> list[int]:
        """Ready-queue keys of ``mode="sequential"``: the tasks in :meth:`sequence` order."""
        return sequence_keys(self.sequence(seed), len(self.graph))

    def sequence(self, seed: int | None = None) -> list[int]:
        """The order ``mode="sequential"`` runs: ``order``, or a random valid one from ``seed``."""
        g = self.graph
        if seed is None:
            return list(g.order)
        import random

        rng = random.Random(seed)
        waiting = [len(d) for d in g.deps]
        ready = [i for i in range(len(g)) if not waiting[i]]
        out: list[int] = []
        while ready:
            k = rng.randrange(len(ready))
            ready[k], ready[-1] = ready[-1], ready[k]
            i = ready.pop()
            out.append(i)
            for s in g.succs[i]:
                waiting[s] -= 1
                if not waiting[s]:
                    ready.append(s)
        return out

    def explain(
        self,
        durations: Durations = None,
        max_workers: int | None = None,
        *,
        resources: Mapping[str, float] | None = None,
        rate_limits: Mapping[str, Any] | None = None,
    ) -> str:
        """A readable account of the plan: layers, critical path, where the durations come
        from (and which tasks never ran before), the predicted time and speedup under the
        limits (as in :meth:`simulate`), and which limit binds."""
        g = self.graph
        title = f"flow {g.flow_name!r}" if g.flow_name else "flow"
        lines = [f"Plan for {title}: {counted(len(g), 'task')} in {counted(g.n_layers, 'layer')}"]
        for k, lay in enumerate(self.layers):
            shown = ", ".join(lay[:12]) + (f", ... ({len(lay) - 12} more)" if len(lay) > 12 else "")
            lines.append(f"  layer {k}: {shown}")
        if self.inputs:
            lines.append("inputs: " + ", ".join(self.inputs))
        if durations is None and self.history:
            durations = self.history
            lines.append(f"durations: {self.history_note()}")
        unit = durations is None
        path = self.critical_path(durations)
        if path:
            what = "tasks" if unit else "by duration"
            lines.append(f"critical path ({what}): " + " -> ".join(path))
            total = sum(self._weights(durations))
            row = self.what_if(
                [max_workers], durations, resources=resources, rate_limits=rate_limits
            )[0]
            span = row.seconds
            workers = "unbounded" if max_workers is None else str(max_workers)
            if unit:
                lines.append(
                    f"predicted with every task taking 1 unit, max_workers={workers}: "
                    f"{span:g} unit{'' if span == 1 else 's'} instead of {total:g} one by one "
                    f"(speedup {row.speedup:.1f}x; bound by {row.binding})"
                )
            else:
                lines.append(
                    f"predicted with max_workers={workers}: {span:.2f}s instead of {total:.2f}s "
                    f"one by one (speedup {row.speedup:.1f}x; bound by {row.binding})"
                )
        return "\n".join(lines)

    def history_note(self) -> str:
        """Where predictions get their durations, for people: e.g. "8 tasks timed in past
        runs; 2 of 10 tasks never ran before: they take the median, 1.2s"."""
        history = self.history
        if not history:
            return "no past runs of this flow: every task takes 1 unit"
        note = f"{counted(len(history), 'task')} timed in past runs"
        unseen = len(self.graph) - len(history)
        if unseen:
            median = statistics.median(history.values())
            of = counted(len(self.graph), "task")
            they = "it takes" if unseen == 1 else "they take"
            note += f"; {unseen} of {of} never ran before: {they} the median, {duration(median)}"
        return note

    # --- pictures --------------------------------------------------------------------------

    def _edges(self) -> list[tuple[int, int, bool]]:
        """(upstream, downstream, passes data) for every edge."""
        g = self.graph
        out: list[tuple[int, int, bool]] = []
        for i in range(len(g)):
            data = {j for _, j in g.args[i]}
            out.extend((j, i, j in data) for j in g.deps[i])
        return out

    def edges(self) -> list[tuple[str, str]]:
        """Every dependency as an (upstream, downstream) pair of task names."""
        names = self.graph.names
        return [(names[j], names[i]) for j, i, _ in self._edges()]

    def to_mermaid(self) -> str:
        """The graph as a Mermaid flowchart (ordering-only edges dotted)."""
        g = self.graph
        lines = ["flowchart TD"]
        for i, name in enumerate(g.names):
            lines.append(f'    n{i}["{_escape_mermaid(name)}"]')
        for j, i, data in self._edges():
            lines.append(f"    n{j} {'-->' if data else '-.->'} n{i}")
        return "\n".join(lines) + "\n"

    def to_dot(self) -> str:
        """The graph in Graphviz DOT, one rank per layer (ordering-only edges dashed)."""
        g = self.graph
        title = _quote_dot(g.flow_name or "flow")
        lines = [f"digraph {title} {{", "    rankdir=TB;", "    node [shape=box];"]
        for lay in g.layers():
            members = " ".join(_quote_dot(g.names[i]) for i in lay)
            lines.append(f"    {{ rank=same; {members} }}")
        for j, i, data in self._edges():
            style = "" if data else " [style=dashed]"
            lines.append(f"    {_quote_dot(g.names[j])} -> {_quote_dot(g.names[i])}{style};")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def _repr_html_(self) -> str:
        """How a notebook shows the plan: its numbers as cards and the graph by layer."""
        from .notebook import plan_html

        return plan_html(self)

    def __repr__(self) -> str:
        tasks, layers = counted(len(self.graph), "task"), counted(self.graph.n_layers, "layer")
        return f"<Plan {self.name!r}: {tasks}, {layers}>"


def _escape_mermaid(text: str) -> str:
    return text.replace('"', "#quot;")


def _quote_dot(text: Any) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'
