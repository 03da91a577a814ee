"""Dask collections on layerflow: a scheduler ``get`` for ``dask.compute``.

``get(dsk, keys, **options)`` follows Dask's scheduler protocol (the one ``dask.threaded``,
``dask.multiprocessing`` and ``distributed.Client.get`` follow), so ``dask.delayed``
functions, arrays, bags and dataframes run on layerflow unchanged::

    import dask
    import layerflow as lf

    dask.compute(total, scheduler=lf.dask.scheduler(store=".layerflow", resume=True))

How a Dask graph becomes a layerflow graph, in one pass over it (linear in its size):

- Dask's own ``convert_legacy_graph`` turns legacy tuples, literals and aliases into
  task-spec nodes (``Task``, ``DataNode``, ``Alias``, ``List``, ``Dict``...); each node's
  ``dependencies`` are its edges. One Dask key is one layerflow task, whose function calls
  the node with its dependencies' values (the node evaluates whatever is nested inside it,
  so nothing here recurses along the graph).
- Task names are the keys as Dask prints them: a str key as it is, any other key as
  ``str(key)``, e.g. ``"('sum-aggregate-6a7f', 0, 1)"``. Each task's label is its key's
  group (``dask.utils.key_split``, e.g. ``sum-aggregate``): progress and the HTML report
  show a 10,000-chunk array as a few named groups.
- Only what the requested keys need runs, and every other value is released as soon as
  its last consumer has finished. Ready tasks are taken as Dask's local schedulers take
  them: the tasks the latest finish made ready first, then a depth-first order from the
  requested keys (``_depth_first``), so a chunk's consumers run before the next chunks
  are made and peak memory is Dask's (bench/dask_memory.py). ``tasks=`` priorities still
  come first.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import threading
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from typing import Any

try:
    from dask._task_spec import DataNode, GraphNode, convert_legacy_graph
    from dask.core import flatten
    from dask.utils import ensure_dict, key_split
except ImportError:  # pragma: no cover - exercised only without Dask
    from .backends import install_command

    raise ImportError(
        f"layerflow.dask needs Dask, which is not installed: {install_command('dask')}"
    ) from None

from .dask_observers import GroupProgress, also, dask_callbacks
from .errors import (
    InvalidOptionError,
    MissingDependencyError,
    TaskFailed,
    did_you_mean,
    raise_all,
)
from .flow import TASK_OPTIONS, recorder_for
from .graph import Graph, Task, gc_paused
from .options import RUN_OPTIONS, RunOptions
from .plan import Plan
from .result import RunResult
from .scheduler import execute_run

__all__ = ["get", "scheduler", "RUN_OPTIONS", "TASK_GROUP_OPTIONS"]

#: ``flow.run`` options that ``get`` passes on: all of them (``layerflow.options``)
#: options of the tasks of one key group, given as ``tasks={group: {option: value}}``: a
#: task's options, but for those the Dask graph itself decides (its inputs and edges)
TASK_GROUP_OPTIONS = tuple(o for o in TASK_OPTIONS if o not in ("params", "inputs", "after", "map"))
# get's own options (besides the run's); num_workers is what Dask's schedulers call max_workers
_OWN_OPTIONS = (
    "name",
    "tasks",
    "report",
    "trace",
    "on_result",
    "num_workers",
    "pool",
    "callbacks",
    "initializer",
)
_ALL_OPTIONS = RUN_OPTIONS + _OWN_OPTIONS
logger = logging.getLogger("layerflow.dask")


class _Call:
    """A layerflow task's function: evaluate one Dask node with its dependencies' values.

    The scheduler passes the values as keyword arguments ``p0, p1, ...`` in the order of
    ``keys`` (parameter names must be str; Dask keys are often tuples)."""

    __slots__ = ("node", "keys")

    def __init__(self, node: GraphNode, keys: tuple[Hashable, ...]) -> None:
        self.node = node
        self.keys = keys

    def __call__(self, **values: Any) -> Any:
        if self.keys:
            return self.node(dict(zip(self.keys, values.values(), strict=False)))
        return self.node({})

    def __repr__(self) -> str:
        return f"<Dask node {self.node!r}>"


#: the initializer tokens this process has run (see _Initialized)
_INITIALIZED: set[str] = set()
_INIT_LOCK = threading.Lock()


class _Initialized:
    """A task's function behind Dask's ``initializer=``: the initializer runs once in each
    process that runs this run's tasks (a worker process, or the caller's for threads),
    before the first of them; ``token`` names the run."""

    __slots__ = ("call", "init", "token")

    def __init__(self, call: _Call, init: Callable[[], Any], token: str) -> None:
        self.call, self.init, self.token = call, init, token

    def __call__(self, **values: Any) -> Any:
        if self.token not in _INITIALIZED:
            with _INIT_LOCK:
                if self.token not in _INITIALIZED:
                    self.init()
                    _INITIALIZED.add(self.token)
        return self.call(**values)

    @property
    def node(self) -> GraphNode:
        return self.call.node


def get(dsk: Mapping[Hashable, Any], keys: Any, **options: Any) -> Any:
    """Compute ``keys`` of the Dask graph ``dsk`` on layerflow (Dask's ``get`` protocol).

    ``dsk`` is a graph dict or a ``HighLevelGraph``; ``keys`` one key or nested lists of
    keys, and the result has the same nesting (lists become tuples, as in Dask). A key
    that is not in the graph raises ``KeyError``; a task's exception is raised as itself.

    ``options`` are ``flow.run``'s (``max_workers``, default ``os.cpu_count()`` as in
    ``dask.threaded``, also accepted as ``num_workers``; ``backend``, ``store``,
    ``resume``, ``cache``, ``rate_limits``, ``resources``, ``progress``, ``on_event``...)
    and these: ``name`` (the flow name the run is stored under; default: one derived
    from the graph's keys), ``tasks`` (``{group: {option: value}}``: task options such as
    ``retries``, ``rate_limit`` or ``resources`` for every task whose key is in that
    group), ``report`` / ``trace`` (paths: write the run's HTML report / Chrome trace,
    also when it fails) and ``on_result`` (called with the run's ``RunResult``).
    """
    options = _known(options)
    given = options.pop("cache") if isinstance(options.get("cache"), Mapping) else None
    options = _checked(options)
    name = options.pop("name", None)
    groups = options.pop("tasks", None) or {}
    report, trace = options.pop("report", None), options.pop("trace", None)
    on_result = options.pop("on_result", None)
    if "num_workers" in options:
        workers = options.pop("num_workers")
        options.setdefault("max_workers", workers)
    pool = options.pop("pool", None)
    if pool is not None:
        options.setdefault("max_workers", _pool_size(pool))
    options.setdefault("max_workers", os.cpu_count() or 1)
    store, resume = options.pop("store", None), options.pop("resume", None)
    cache = options.pop("cache", False)
    progress = options.pop("progress", False)
    for path in (report, trace):
        if path is not None:
            from .report import check_writable

            check_writable(path)  # before anything runs

    given_callbacks = options.pop("callbacks", None)
    initializer = options.pop("initializer", None)
    if initializer is None and options.get("backend") == "process":
        import dask  # as dask.multiprocessing.get: the keyword, else the config

        initializer = dask.config.get("multiprocessing.initializer", None)
    if initializer is not None and not callable(initializer):
        raise InvalidOptionError(
            f"layerflow.dask.get: initializer= must be a function, got {initializer!r}"
        )
    wanted = list(flatten(keys)) if isinstance(keys, list) else [keys]
    # a HighLevelGraph's layers merged once, for the translation and Dask's callbacks
    graph_dict = ensure_dict(dsk if isinstance(dsk, Mapping) else dsk.__dask_graph__())
    if given:  # Dask's cache=: values of keys, known before the run (layerflow's is a bool)
        graph_dict = {**graph_dict, **{k: DataNode(k, v) for k, v in given.items()}}
    graph, labels, named = _translate(graph_dict, wanted, name, groups)
    if initializer is not None:
        token = os.urandom(8).hex()
        for t in graph.tasks:
            t.fn = _Initialized(t.fn, initializer, token)  # type: ignore[arg-type]
    with dask_callbacks(given_callbacks, graph_dict, graph, options):
        if progress:
            options["on_event"] = also(options.get("on_event"), GroupProgress(labels))
        if _wants_store(store, resume, cache):
            _fingerprint(graph)
        outputs = list(dict.fromkeys(graph.index[named[k]] for k in wanted))
        plan = Plan(graph)
        plan.depth_first = _depth_first(graph, outputs)
        recorder = recorder_for(plan, {}, store, resume, cache)
        run_options = RunOptions.of(**options)  # (checked above: this only builds them)
        try:
            result, values = _execute(plan, recorder, run_options, outputs)
        except TaskFailed as e:
            _finish(e.result, report, trace, on_result)
            cause = e.__cause__
            if cause is None:
                raise
            cause.add_note(f"(raised by Dask task {e.task!r} in layerflow run {e.result.run_id})")
            raise cause from None
        _finish(result, report, trace, on_result)
        if result.ok:
            index = graph.index
            found = {k: values[index[named[k]]] for k in wanted}
        else:  # stopped by a checkpoint: say which value is missing, and why
            found = {k: result[named[k]] for k in wanted}
        return _nested(keys, found)


def scheduler(**options: Any) -> Callable[..., Any]:
    """A ``get`` with ``options`` bound, for ``dask.compute(x, scheduler=...)`` and
    ``dask.config.set(scheduler=...)``; options given to ``compute`` are added to them."""
    _checked(options)

    def layerflow_get(dsk: Mapping[Hashable, Any], keys: Any, **more: Any) -> Any:
        return get(dsk, keys, **{**options, **more})

    layerflow_get.__doc__ = f"layerflow.dask.get with {sorted(options)} bound."
    return layerflow_get


def _known(options: dict[str, Any]) -> dict[str, Any]:
    """Dask's ``compute(**kwargs)`` hands every keyword to the scheduler, including those
    meant for others: as in Dask, a keyword layerflow does not know is ignored (logged at
    debug level; at warning level when it looks like a typo of one of ours)."""
    known = {}
    for key, value in options.items():
        if key in _ALL_OPTIONS:
            known[key] = value
            continue
        hint = did_you_mean(str(key), _ALL_OPTIONS)
        level = logging.WARNING if hint else logging.DEBUG
        logger.log(level, "layerflow.dask.get ignores the keyword %r.%s", key, hint)
    return known


def _pool_size(pool: Any) -> int:
    """The workers of a ``concurrent.futures`` or ``multiprocessing.pool`` thread pool:
    layerflow runs the tasks on that many threads of its own (its workers call the
    transitions themselves; a foreign pool would add two hand-offs per task)."""
    for attr in ("_max_workers", "_processes"):
        size = getattr(pool, attr, None)
        if isinstance(size, int) and size > 0:
            logger.debug("layerflow.dask.get runs on %d threads of its own, as pool= has", size)
            return size
    raise InvalidOptionError(
        f"layerflow.dask.get: pool= must be a ThreadPoolExecutor or a "
        f"multiprocessing.pool.ThreadPool (layerflow uses its size), got {type(pool).__name__}"
    )


def _checked(options: dict[str, Any]) -> dict[str, Any]:
    for key in options:
        if key not in _ALL_OPTIONS:
            raise InvalidOptionError(
                f"layerflow.dask.get: unknown option {key!r}.{did_you_mean(key, _ALL_OPTIONS)} "
                f"Options: {', '.join(_ALL_OPTIONS)}"
            )
    RunOptions.of(**{k: v for k, v in options.items() if k in RUN_OPTIONS})  # as flow.run
    groups = options.get("tasks")
    if groups is not None:
        if not isinstance(groups, Mapping):
            raise InvalidOptionError(
                f"layerflow.dask.get: tasks= must map a key group to task options, e.g. "
                f"{{'fetch': {{'retries': 2}}}}, got {groups!r}"
            )
        for group, opts in groups.items():
            bad = [k for k in opts if k not in TASK_GROUP_OPTIONS]
            if bad:
                raise InvalidOptionError(
                    f"layerflow.dask.get: tasks[{group!r}] has unknown option {bad[0]!r}."
                    f"{did_you_mean(bad[0], TASK_GROUP_OPTIONS)} Options: "
                    f"{', '.join(TASK_GROUP_OPTIONS)}"
                )
    return dict(options)


def _translate(
    dsk: dict[Hashable, Any], wanted: list[Hashable], flow_name: str | None, groups: Any
) -> tuple[Graph, dict[str, str], dict[Hashable, str]]:
    """The layerflow graph of what ``wanted`` needs (``dsk``: a graph dict), each task's
    label by name, and the names of the ``wanted`` keys."""
    with gc_paused():  # it makes an object or more per task, none of them cyclic
        nodes: dict[Hashable, GraphNode] = convert_legacy_graph(dsk)
    for key in wanted:
        if key not in nodes:
            raise KeyError(_missing_key(key, nodes))
    with gc_paused():
        position = dict(zip(nodes, range(len(nodes)), strict=True))
        default = _template("dask", None)
        templates = {label: _template(label, opts) for label, opts in groups.items()}
        names: list[str] = []
        tasks: list[Task] = []
        deps: list[Sequence[int]] = []
        args: list[tuple[tuple[str, int], ...]] = []
        params = _PARAMS
        for key, node in nodes.items():
            label = key_split(key)
            # one checked template per group with options, one for all the others
            template = templates.get(label, default) if templates else default
            name = key if key.__class__ is str else str(key)
            needs = node.dependencies
            if needs:
                dep_keys = tuple(needs)
                try:
                    ds = [position[k] for k in dep_keys]
                except KeyError:
                    missing = next(k for k in dep_keys if k not in position)
                    raise MissingDependencyError(  # a ValueError, as Dask raises
                        f"Missing dependency: Dask task {name!r} depends on key {missing!r}, "
                        f"which is not in the graph; compute the collections together, or "
                        f"add that key",
                        name,
                        str(missing),
                        None,
                    ) from None
                if len(dep_keys) > len(params):
                    params = _params(len(dep_keys))
                deps.append(ds)
                args.append(tuple(zip(params, ds, strict=False)))
            else:
                dep_keys = ()
                deps.append([])
                args.append(())
            task = template.clone(_Call(node, dep_keys), name)
            task.label = label
            tasks.append(task)
            names.append(name)
        g = Graph()
        g.flow_name = flow_name
        g.names = names
        g.tasks = tasks
        g.index = dict(zip(names, range(len(names)), strict=True))
        if len(g.index) < len(names):
            _disambiguate(g, nodes)
        g.deps = deps
        g.args = args
        g.input_args = [()] * len(names)
        problems: list[Any] = []
        g._order_and_layers(problems)
    raise_all(problems, flow_name)
    named = {k: g.names[position[k]] for k in wanted}  # after any renaming
    g = g.prune([g.index[named[k]] for k in wanted])
    labels = {t.name: t.label for t in g.tasks}
    return g, labels, named  # type: ignore[return-value]


def _depth_first(g: Graph, outputs: list[int]) -> list[int]:
    """Each task's rank in a depth-first post-order from ``outputs``: a task right after
    what it needs, dependencies later in the graph first (as Dask's stack runs later keys first).

    With these ranks the run takes ready tasks as Dask's local schedulers do: what the
    latest finish made ready first, then the lowest rank (``Plan.depth_first``), so that a
    chunk's consumers run before the next chunks are made. It stands in for ``dask.order``
    (10-90 us a task) at about 1 us a task, and held as little memory on the workloads of
    bench/dask_memory.py."""
    deps = g.deps
    rank = [-1] * len(g)
    expanded = bytearray(len(g))
    k = 0
    stack = outputs[::-1]
    while stack:
        i = stack[-1]
        if rank[i] >= 0:
            stack.pop()
        elif not expanded[i]:
            expanded[i] = 1
            d = deps[i]
            if d:  # sorted: the same order in every process (a node's dependencies are a set)
                stack.extend(sorted(j for j in d if rank[j] < 0))
        else:
            stack.pop()
            rank[i] = k
            k += 1
    return rank


_PARAMS: tuple[str, ...] = tuple(f"p{k}" for k in range(64))


def _params(n: int) -> tuple[str, ...]:
    global _PARAMS
    _PARAMS = tuple(f"p{k}" for k in range(max(n, 2 * len(_PARAMS))))
    return _PARAMS


def _template(label: str, options: Mapping[str, Any] | None) -> Task:
    """The checked options shared by the tasks of one key group."""
    return Task(_Call(None, ()), name=label, **(options or {}))  # type: ignore[arg-type]


def _disambiguate(g: Graph, nodes: Mapping[Hashable, Any]) -> None:
    """Two keys print the same (``1`` and ``"1"``): the later ones get their type added."""
    seen: set[str] = set()
    for i, key in enumerate(nodes):
        name = g.names[i]
        if name in seen:
            name = f"{name} ({type(key).__name__} key)"
            while name in seen:
                name += "'"
            g.names[i] = g.tasks[i].name = name
        seen.add(name)
    g.index = dict(zip(g.names, range(len(g.names)), strict=True))


def _missing_key(key: Hashable, nodes: Mapping[Hashable, Any]) -> str:
    shown = [k for k in nodes if isinstance(k, str)][:10_000]
    hint = did_you_mean(str(key), shown) if isinstance(key, str) else ""
    return f"{key!r} is not a key of this Dask graph ({len(nodes)} keys).{hint}"


def _wants_store(store: Any, resume: Any, cache: bool) -> bool:
    if store is False:
        return False
    return bool(store or resume or cache or os.environ.get("LAYERFLOW_STORE"))


def _fingerprint(g: Graph) -> None:
    """What identifies each task's work for resume and cache: Dask's token of its node
    (its function and arguments), since every task's function is the same evaluator."""
    from dask.base import tokenize

    for t in g.tasks:
        try:
            t.fingerprint = tokenize(t.fn.node)  # type: ignore[attr-defined]
        except Exception:  # an untokenizable argument: only the key identifies it
            t.fingerprint = repr(type(t.fn.node))  # type: ignore[attr-defined]


def _execute(
    plan: Plan, recorder: Any, options: RunOptions, outputs: list[int]
) -> tuple[RunResult, list[Any]]:
    """Run the translated graph; its result and the run's values list."""
    with _graph_frozen(len(plan.graph)):
        result, run = execute_run(plan, {}, options, outputs=outputs, recorder=recorder)
        return result, run.values


@contextlib.contextmanager
def _graph_frozen(n: int) -> Iterator[None]:
    """Keep the cyclic GC from scanning the graph (hundreds of thousands of objects that
    hold no cycles) over and over while it runs; garbage the tasks make is still collected."""
    if n < 10_000 or not gc.isenabled():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _finish(
    result: RunResult,
    report: Any,
    trace: Any,
    on_result: Callable[[RunResult], Any] | None,
) -> None:
    if report is not None:
        result.to_html(report)
    if trace is not None:
        result.to_chrome_trace(trace)
    if on_result is not None:
        on_result(result)


def _nested(keys: Any, values: Mapping[Hashable, Any]) -> Any:
    if isinstance(keys, list):
        return tuple(_nested(k, values) for k in keys)
    return values[keys]
