"""What watches a Dask graph's run on layerflow: Dask's own local-scheduler callbacks
(``dask.callbacks.Callback``, for ``dask.diagnostics``), driven by the run's events, and
progress lines by key group (``progress=True``)."""

from __future__ import annotations

import contextlib
import sys
from collections import Counter
from collections.abc import Callable, Hashable, Iterator, Mapping
from typing import Any, Protocol, cast

from dask._task_spec import DataNode
from dask.callbacks import local_callbacks, unpack_callbacks

from .errors import safe_str
from .events import Event, LogObserver, RunEvent, TaskEvent
from .graph import Graph


class _Translated(Protocol):
    """A task's function as ``lf.dask`` makes it (``dask._Call``): the Dask node it runs."""

    node: Any


class DaskCallbacks:
    """Dask's local-scheduler callbacks (``dask.callbacks.Callback``: ``start``,
    ``start_state``, ``pretask``, ``posttask``, ``finish``) driven by the run's events, so
    that ``dask.diagnostics.ProgressBar``, ``Profiler`` and ``ResourceProfiler`` work as with
    ``dask.threaded.get``. ``state`` keeps the keys Dask's has for them (``ready``,
    ``waiting``, ``running``, ``finished``, ``cache``...). ``start`` and ``finish`` run in the
    caller's thread; ``pretask``/``posttask`` in the thread that delivers events, and the
    first exception one raises is raised to the caller when the run ends. ``posttask``
    gets ``None`` for the result (the value is not carried by events) and worker id 0."""

    def __init__(self, callbacks: Any, dsk: dict[Hashable, Any], graph: Graph) -> None:
        self.callbacks = [getattr(c, "_callback", c) for c in callbacks]
        _, _, self.pretask, self.posttask, _ = unpack_callbacks(self.callbacks)
        self.dsk = dsk  # the graph dict, as Dask's callbacks are given it
        # name -> Dask key, for tasks only: Dask's schedulers hold a literal (a DataNode) in
        # their cache from the start, and call no callback for it
        nodes = {t.name: cast(_Translated, t.fn).node for t in graph.tasks}
        key = {name: node.key for name, node in nodes.items()}
        data = {node.key: node() for node in nodes.values() if isinstance(node, DataNode)}
        self.key = {n: k for n, k in key.items() if k not in data}
        deps = {
            key[n]: {key[graph.names[j]] for j in graph.deps[i]} - data.keys()
            for i, n in enumerate(graph.names)
            if key[n] not in data
        }
        dependents: dict[Hashable, set[Hashable]] = {k: set() for k in deps}
        for k, ds in deps.items():
            for d in ds:
                dependents[d].add(k)
        self.state: dict[str, Any] = {
            "dependencies": deps,
            "dependents": dependents,
            "waiting": {k: set(ds) for k, ds in deps.items() if ds},
            "waiting_data": {k: set(v) for k, v in dependents.items() if v},
            "ready": [k for k, ds in deps.items() if not ds],
            "running": set(),
            "finished": set(),
            "released": set(),
            "cache": data,
        }
        self.error: BaseException | None = None

    def __call__(self, event: Event) -> None:
        if self.error is not None or not isinstance(event, TaskEvent) or event.task is None:
            return
        key = self.key.get(event.task)
        if key is None:
            return
        s = self.state
        try:
            if event.kind == "task_started" and event.attempt == 1:
                with contextlib.suppress(ValueError):
                    s["ready"].remove(key)
                s["running"].add(key)
                for f in self.pretask:
                    f(key, self.dsk, s)
            elif event.kind in ("task_succeeded", "task_reused", "task_cached"):
                s["running"].discard(key)
                s["finished"].add(key)
                for k in s["dependents"].get(key, ()):
                    waiting = s["waiting"].get(k)
                    if waiting is not None:
                        waiting.discard(key)
                        if not waiting:
                            del s["waiting"][k]
                            s["ready"].append(k)
                for f in self.posttask:
                    f(key, None, self.dsk, s, 0)
        except BaseException as e:  # raised to the caller when the run ends, as in Dask
            self.error = e


@contextlib.contextmanager
def dask_callbacks(
    given: Any, dsk: dict[Hashable, Any], graph: Graph, options: dict[str, Any]
) -> Iterator[None]:
    """Dask's callbacks around one run (the global ones unless ``callbacks=`` is given, as
    ``dask.callbacks.local_callbacks`` decides): ``start`` and ``start_state`` before it, in
    the caller's thread (an error there is raised before anything runs), ``finish`` after it,
    then the first error ``pretask``/``posttask`` raised."""
    with local_callbacks(given) as callbacks:
        if not callbacks:
            yield
            return
        hooks = DaskCallbacks(callbacks, dsk, graph)
        started, failed = [], True
        for cb in hooks.callbacks:
            if cb[0]:
                cb[0](hooks.dsk)
            started.append(cb)
        try:
            for cb in hooks.callbacks:
                if cb[1]:
                    cb[1](hooks.dsk, hooks.state)
            options["on_event"] = also(options.get("on_event"), hooks)
            yield
            failed = hooks.error is not None
        finally:
            for cb in started:
                if cb[4]:
                    cb[4](hooks.dsk, hooks.state, failed)
        if hooks.error is not None:
            raise hooks.error


def also(
    on_event: Callable[[Event], Any] | None, observer: Callable[[Event], Any]
) -> Callable[[Event], Any]:
    """The caller's ``on_event`` (if any), then ``observer``."""
    if on_event is None:
        return observer

    def both(event: Event) -> None:
        on_event(event)
        observer(event)

    return both


class GroupProgress:
    """Progress lines by key group, on stderr: a 10,000-chunk array is a few lines::

    [0/3 groups] Started: ones (100 tasks)
    [1/3 groups] Completed: ones (100 tasks in 0.4s)
    """

    def __init__(self, labels: Mapping[str, str]) -> None:
        self.labels = labels
        self.total = Counter(labels.values())
        self.done: dict[str, int] = {}
        self.first: dict[str, float] = {}
        self.groups_done = 0

    def __call__(self, event: Event) -> None:
        kind = event.kind
        if isinstance(event, RunEvent) and kind == "run_finished":
            line, _ = LogObserver.format(event)  # the closing line, as for any run
            self._print(line or "")
        if not isinstance(event, TaskEvent) or event.task is None:
            return
        label = self.labels.get(event.task, event.task)
        n = self.total.get(label, 1)
        tag = f"[{self.groups_done}/{len(self.total)} groups]"
        if kind == "task_started" and label not in self.first:
            self.first[label] = event.time
            self._print(f"{tag} Started: {label} ({_tasks(n)})")
        elif kind in ("task_succeeded", "task_reused", "task_cached"):
            done = self.done[label] = self.done.get(label, 0) + 1
            if done == n:
                self.groups_done += 1
                tag = f"[{self.groups_done}/{len(self.total)} groups]"
                if label in self.first:
                    took = event.time - self.first[label]
                    self._print(f"{tag} Completed: {label} ({_tasks(n)} in {took:.1f}s)")
                else:
                    self._print(f"{tag} Reused: {label} ({_tasks(n)})")
        elif kind == "task_failed":
            error = safe_str(event.error)[:200] if event.error is not None else ""
            self._print(f"{tag} Failed: {event.task} ({error})")

    @staticmethod
    def _print(line: str) -> None:
        print(line, file=sys.stderr, flush=True)


def _tasks(n: int) -> str:
    return "1 task" if n == 1 else f"{n} tasks"
