"""``GraphBuilder``: tasks as they are declared, resolved all at once by ``build`` into a
:class:`Graph`, every problem (missing dependencies, cycles, missing inputs) collected and
raised together, before anything runs."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import (
    InvalidOptionError,
    MissingDependencyError,
    closest,
    did_you_mean,
    raise_all,
)
from .indexed import Graph, gc_paused
from .signature import Signature
from .task import Task

# GraphBuilder tells whether the caller kept a Task by its reference count
_REFCOUNTED = sys.implementation.name == "cpython"
getrefcount = sys.getrefcount


class GraphBuilder:
    """Resolves names while tasks are added, so that planning a large flow works on ints.

    A name that refers to an already-added task is resolved at once; the rest (forward
    references, flow inputs, typos) wait in ``pending`` and are resolved by :meth:`build`.
    """

    def __init__(self) -> None:
        # a task added by add_plain whose Task nobody kept is held as its function until a
        # Task is asked for (task(k), all_tasks()): a million Tasks kept from the start
        # cost the cyclic GC more than making them (its full collections walk each again)
        self.tasks: list[Task | Callable[..., Any]] = []
        self._returned: Task | None = None  # the Task add_plain returned last
        self.names: list[str] = []
        self.index: dict[str, int] = {}
        # tuples, not lists: the cyclic GC stops tracking a tuple of ints, while its full
        # collections walk every list again and again as 1M tasks are added (up to half
        # their time)
        self.deps: list[tuple[int, ...]] = []
        self.args: list[tuple[tuple[str, int], ...]] = []
        # (task index, free parameters, (parameter, source) of inputs=, after= names) left;
        # the task index alone when only its free parameters are (an int: no tuple for
        # the collector to walk per task)
        self.pending: list[
            int | tuple[int, tuple[str, ...], tuple[tuple[str, str], ...], tuple[str, ...]]
        ]
        self.pending = []
        self.mapped: list[int] = []  # tasks with map=

    def add_plain(self, fn: Callable[..., Any], name: str, sig: Signature) -> Task | None:
        """``add(Task.plain(fn, name, sig))``, faster; ``None`` when ``name`` is taken."""
        index = self.index
        k = len(self.names)
        if index.setdefault(name, k) != k:
            return None
        kept = self._returned
        # references to kept: self._returned, the name kept, getrefcount's argument; a
        # fourth is the caller's (then flow[name] must be that object)
        if kept is not None and (getrefcount(kept) > 3 or not _REFCOUNTED):
            self.tasks[index[kept.name]] = kept
        task = Task.plain(fn, name, sig)
        free = sig.names
        if (free and not index.keys().isdisjoint(free)) or type(fn) is functools.partial:
            self._returned = None
            del index[name]  # add() resolves parameters that name tasks added before
            self.add(task)
            return task
        self._returned = task
        self.tasks.append(fn)
        self.names.append(name)
        self.deps.append(())
        self.args.append(())
        if free:
            self.pending.append(k)
        return task

    def _settle(self) -> None:
        """Keep the Task add_plain returned last if anyone else holds it (so that
        ``flow[name]`` is that object); otherwise its function stays in its place."""
        task = self._returned
        if task is not None:
            self._returned = None
            # references: the name task, getrefcount's argument; a third is the caller's
            if sys.getrefcount(task) > 2 or not _REFCOUNTED:
                self.tasks[self.index[task.name]] = task

    def task(self, k: int) -> Task:
        """Task ``k``, made now if only its function was kept."""
        self._settle()
        task = self.tasks[k]
        if type(task) is not Task:
            task = self.tasks[k] = Task.plain(task, self.names[k])
        return task

    def all_tasks(self) -> list[Task]:
        """Every task, in declaration order (made now where only functions were kept)."""
        self._settle()
        tasks = self.tasks
        with gc_paused():
            for k, task in enumerate(tasks):
                if type(task) is not Task:
                    tasks[k] = Task.plain(task, self.names[k])
        return tasks  # type: ignore[return-value]

    def add(self, task: Task) -> None:
        """Append ``task`` (its name must be new) and resolve what can be resolved now."""
        self._settle()
        k = len(self.tasks)
        index = self.index
        free: tuple[str, ...] = task.free_params
        if (
            not task.inputs
            and not task.after
            and (not free or index.keys().isdisjoint(free))
            and task.map is None
        ):  # nothing named yet (most tasks of a big flow): no list, no tuple made
            self.tasks.append(task)
            self.names.append(task.name)
            index[task.name] = k
            self.deps.append(())
            self.args.append(())
            if free:
                self.pending.append(k)
            return
        deps: list[int] = []
        args: list[tuple[str, int]] = []
        # what is left for build()
        refs: tuple[tuple[str, str], ...] = ()
        after: tuple[str, ...] = ()
        if free and not index.keys().isdisjoint(free):
            free_left = []
            for p in free:
                j = index.get(p)
                if j is None:
                    free_left.append(p)
                else:
                    args.append((p, j))
                    deps.append(j)
            free = tuple(free_left)
        if task.inputs:
            refs_left = []
            for p, src in task.inputs.items():
                j = index.get(src)
                if j is None:
                    refs_left.append((p, src))
                else:
                    args.append((p, j))
                    deps.append(j)
            refs = tuple(refs_left)
        if task.after:
            after_left = []
            for src in task.after:
                j = index.get(src)
                if j is None:
                    after_left.append(src)
                else:
                    deps.append(j)
            after = tuple(after_left)
        if len(deps) > 1 and len(set(deps)) < len(deps):
            deps = list(dict.fromkeys(deps))
        self.tasks.append(task)
        self.names.append(task.name)
        index[task.name] = k
        self.deps.append(tuple(deps))
        self.args.append(tuple(args))
        if free or refs or after:
            self.pending.append((k, free, refs, after))
        if task.map is not None:
            self.mapped.append(k)

    def build(self, flow_name: str | None = None, input_names: Iterable[str] = ()) -> Graph:
        """Resolve what is pending, validate, and order; raise every problem at once."""
        g, problems = self.check(flow_name, input_names)
        raise_all(problems, flow_name)
        return g

    def check(
        self, flow_name: str | None = None, input_names: Iterable[str] = ()
    ) -> tuple[Graph, list[Any]]:
        """Like :meth:`build`, but return the problems instead of raising them (the graph
        is only usable when there are none).

        ``input_names`` are the flow inputs that will be given; a parameter that names
        neither a task nor one of them is a required input when it has no default.
        """
        tasks = self.all_tasks()
        with gc_paused():
            g = Graph()
            g.flow_name = flow_name
            g.tasks = list(tasks)
            g.names = names = list(self.names)
            g.index = index = dict(self.index)
            g.deps = list(self.deps)
            g.args = list(self.args)
            g.input_args = [()] * len(names)
            given = set(input_names)
            needs_input = g.needs_input
            problems: list[Any] = []
            free: tuple[str, ...]
            refs: tuple[tuple[str, str], ...]
            after: tuple[str, ...]
            for entry in self.pending:
                if isinstance(entry, int):  # only its free parameters
                    k, free, refs, after = entry, tasks[entry].free_params, (), ()
                else:
                    k, free, refs, after = entry
                t = tasks[k]
                deps = list(self.deps[k])
                args = list(self.args[k])
                in_args: list[tuple[str, str]] = []
                for p in free:
                    j = index.get(p)
                    if j is not None:
                        args.append((p, j))
                        deps.append(j)
                    elif p in given:
                        in_args.append((p, p))
                    elif p in t.signature.required:
                        needs_input.setdefault(p, t.name)
                        in_args.append((p, p))
                for p, src in refs:
                    j = index.get(src)
                    if j is None:
                        problems.append(_missing(t.name, src, f"inputs[{p!r}]", names))
                    else:
                        args.append((p, j))
                        deps.append(j)
                for src in after:
                    j = index.get(src)
                    if j is None:
                        problems.append(_missing(t.name, src, "after", names))
                    else:
                        deps.append(j)
                if len(deps) > 1 and len(set(deps)) < len(deps):
                    deps = list(dict.fromkeys(deps))
                g.deps[k] = tuple(deps)
                g.args[k] = tuple(args)
                g.input_args[k] = tuple(in_args)
            for k in self.mapped:
                _resolve_map(g, k, tasks[k], problems)
            g._order_and_layers(problems)
        return g, problems


def _resolve_map(g: Graph, k: int, t: Task, problems: list[Any]) -> None:
    """Task ``k``'s ``map`` names resolved to ``g.map_args[k]``: (parameter, upstream task,
    or -1 for a list the task is given: a flow input or one of its params)."""
    spec: list[tuple[str, int]] = []
    for name in t.map or ():
        j = g.index.get(name)
        if j is not None:
            params = [p for p, src in g.args[k] if src == j]
            if not params:
                problems.append(
                    InvalidOptionError(
                        f"task {t.name!r} maps over {name!r}, but none of its parameters "
                        f"receives {name!r}: name a parameter {name!r}, or pass "
                        f"inputs={{'item': {name!r}}}"
                    )
                )
                return
            spec.extend((p, j) for p in params)
        elif name in t.params:
            spec.append((name, -1))
        else:
            params = [p for p, src in g.input_args[k] if src == name]
            if not params:
                problem = _missing(t.name, name, "map", g.names)
                problem.args = (
                    f"{problem} (map takes a task, a flow input the task receives, or one "
                    f"of its params)",
                )
                problems.append(problem)
                return
            spec.extend((p, -1) for p in params)
    g.map_args[k] = tuple(spec)
    g.map_source[k] = tuple(dict.fromkeys(j for _, j in spec if j >= 0))


def _missing(task: str, name: str, where: str, names: list[str]) -> MissingDependencyError:
    hint = closest(name, names)
    tip = did_you_mean(name, names) or " Add a task with that name, or fix the name."
    return MissingDependencyError(
        f"task {task!r} depends on {name!r} ({where}), but the flow has no task named "
        f"{name!r}.{tip}",
        task,
        name,
        hint,
    )
