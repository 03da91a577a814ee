""":class:`Graph`: tasks resolved to indices ``0..n-1`` in declaration order, ``deps[i]`` and
``succs[i]`` as sequences of indices, ``layer[i]`` and a topological ``order``; planning and
the scheduler work on these, never on names."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import (
    CycleError,
    MissingInputError,
    closest,
)

if TYPE_CHECKING:
    from .task import Task


class Graph:
    """Tasks resolved to indices and validated; immutable once built.

    Fields (all lists indexed by task, tasks in declaration order):
    ``names``, ``tasks``; ``deps[i]`` / ``succs[i]`` (indices, data and ordering edges);
    ``args[i]``: ``(parameter, upstream index)`` pairs passed as values; ``input_args[i]``:
    ``(parameter, input name)`` pairs read from the flow inputs; ``layer[i]``; ``order``.
    """

    __slots__ = (
        "flow_name",
        "names",
        "tasks",
        "index",
        "deps",
        "_succs",
        "args",
        "input_args",
        "needs_input",
        "map_source",
        "map_args",
        "layer",
        "layer_lists",
        "order",
        "n_layers",
    )

    def __init__(self) -> None:
        self.flow_name: str | None = None
        self.names: list[str] = []
        self.tasks: list[Task] = []
        self.index: dict[str, int] = {}
        self.deps: list[Sequence[int]] = []
        self._succs: list[list[int]] | None = None
        self.args: list[tuple[tuple[str, int], ...]] = []
        self.input_args: list[tuple[tuple[str, str], ...]] = []
        # required input name -> first task that needs it (for the error message)
        self.needs_input: dict[str, str] = {}
        # mapped task -> the upstream tasks whose lists it is applied to (none: given lists)
        self.map_source: dict[int, tuple[int, ...]] = {}
        # mapped task -> (parameter, upstream task or -1 for a given list) per zipped list
        self.map_args: dict[int, tuple[tuple[str, int], ...]] = {}
        self.layer: list[int] = []
        self.layer_lists: list[list[int]] = []
        self.order: list[int] = []
        self.n_layers = 0

    def __len__(self) -> int:
        return len(self.names)

    @property
    def succs(self) -> list[list[int]]:
        """``succs[i]``: the tasks that wait for task ``i`` (built on first use)."""
        if self._succs is None:
            with gc_paused():
                succs: list[list[int]] = [[] for _ in range(len(self.deps))]
                for i, d in enumerate(self.deps):
                    for j in d:
                        succs[j].append(i)
            self._succs = succs
        return self._succs

    def _order_and_layers(self, problems: list[Any]) -> None:
        """Layers and a topological order (layer by layer, each in declaration order).

        When every task is declared after its dependencies (the usual case) one forward
        pass computes the layers; otherwise Kahn's algorithm, which also finds cycles.
        """
        deps = self.deps
        n = len(deps)
        layer = [0] * n
        get_layer = layer.__getitem__
        forward = False
        for i, d in enumerate(deps):
            if d:
                if max(d) >= i:
                    forward = True
                    break
                layer[i] = max(map(get_layer, d)) + 1
        if forward and not self._kahn(layer, problems):
            return
        n_layers = (max(layer) + 1) if n else 0
        layers: list[list[int]] = [[] for _ in range(n_layers)]
        for i, li in enumerate(layer):
            layers[li].append(i)
        self.layer = layer
        self.layer_lists = layers
        self.order = [i for lay in layers for i in lay]
        self.n_layers = n_layers

    def _kahn(self, layer: list[int], problems: list[Any]) -> bool:
        """Kahn's algorithm; False (with the cycles added to ``problems``) if there are any."""
        deps = self.deps
        succs = self.succs
        indegree = [len(d) for d in deps]
        for i in range(len(layer)):
            layer[i] = 0
        queue = [i for i, d in enumerate(indegree) if not d]
        for i in queue:  # the queue grows while it is read: one pass, no deque needed
            li = layer[i] + 1
            for s in succs[i]:
                if layer[s] < li:
                    layer[s] = li
                indegree[s] -= 1
                if not indegree[s]:
                    queue.append(s)
        if len(queue) == len(layer):
            return True
        for cycle in _find_cycles(deps, indegree):
            shown = [self.names[i] for i in cycle]
            problems.append(
                CycleError(
                    "cycle between tasks: "
                    + " -> ".join(shown)
                    + " (each arrow points from a task to one that uses it); "
                    "remove one of these dependencies",
                    shown,
                )
            )
        return False

    def layers(self) -> list[list[int]]:
        """Task indices by layer, each layer in declaration order."""
        return self.layer_lists

    def input_problems(self, inputs: Mapping[str, Any]) -> list[MissingInputError]:
        """An error for every required input that ``inputs`` does not give."""
        problems = []
        for name, task in self.needs_input.items():
            if name in inputs:
                continue
            hint = closest(name, (n for n in self.names if n != task))
            if hint is not None:
                tip = f" Did you mean task {hint!r}? A parameter receives a task's value "
                tip += "only when it has exactly the task's name."
            else:
                tip = f" Pass it: flow.run({{{name!r}: ...}})."
            problems.append(
                MissingInputError(
                    f"task {task!r} needs {name!r}, which is neither a task nor a flow "
                    f"input given to run().{tip}",
                    task,
                    name,
                    hint,
                )
            )
        return problems

    def prune(self, keep: Iterable[int]) -> Graph:
        """The subgraph of ``keep`` and everything it depends on, re-indexed."""
        n = len(self.names)
        wanted = bytearray(n)
        stack = list(keep)
        for i in stack:
            wanted[i] = 1
        while stack:
            i = stack.pop()
            for j in self.deps[i]:
                if not wanted[j]:
                    wanted[j] = 1
                    stack.append(j)
        if all(wanted):
            return self
        kept = [i for i in range(n) if wanted[i]]
        new_index = {old: new for new, old in enumerate(kept)}
        g = Graph()
        g.flow_name = self.flow_name
        g.tasks = [self.tasks[i] for i in kept]
        g.names = [self.names[i] for i in kept]
        g.index = {name: i for i, name in enumerate(g.names)}
        g.deps = [[new_index[j] for j in self.deps[i]] for i in kept]
        g.args = [tuple((p, new_index[j]) for p, j in self.args[i]) for i in kept]
        g.input_args = [self.input_args[i] for i in kept]
        used = {name for ia in g.input_args for name, _ in ia}
        g.needs_input = {k: v for k, v in self.needs_input.items() if k in used}
        g.map_source = {
            new_index[k]: tuple(new_index[j] for j in js)
            for k, js in self.map_source.items()
            if k in new_index
        }
        g.map_args = {
            new_index[k]: tuple((p, new_index[j] if j >= 0 else -1) for p, j in spec)
            for k, spec in self.map_args.items()
            if k in new_index
        }
        g._order_and_layers([])
        return g


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Building millions of small lists triggers the cyclic GC over and over (3x slower);
    these structures hold no cycles, so collection waits until they are built."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _find_cycles(deps: list[Sequence[int]], indegree: list[int]) -> list[list[int]]:
    """Cycles among the nodes Kahn's pass could not order (indegree left > 0).

    Iterative DFS along dependency edges; each back edge closes one cycle. Returned in data
    flow direction (each node feeds the next), first and last the same, starting at the
    earliest-declared node of the cycle. Cycles reported share no node.
    """
    left = [i for i, d in enumerate(indegree) if d > 0]
    in_left = set(left)
    state: dict[int, int] = {}  # 1 on the stack, 2 done
    used: set[int] = set()
    cycles: list[list[int]] = []
    for root in left:
        if root in state:
            continue
        path: list[int] = [root]
        iters = [iter(deps[root])]
        state[root] = 1
        while path:
            for j in iters[-1]:
                if j not in in_left:
                    continue
                if state.get(j) == 1:
                    cyc = path[path.index(j) :]
                    if not used.intersection(cyc):
                        used.update(cyc)
                        cyc.reverse()  # dependency direction -> data flow direction
                        k = cyc.index(min(cyc))
                        cyc = cyc[k:] + cyc[:k]
                        cycles.append(cyc + [cyc[0]])
                elif j not in state:
                    state[j] = 1
                    path.append(j)
                    iters.append(iter(deps[j]))
                    break
            else:
                state[path.pop()] = 2
                iters.pop()
    return cycles
