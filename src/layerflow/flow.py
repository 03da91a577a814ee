"""Declaring a flow: :class:`Flow`, its ``task`` decorator and ``add``.

Dependencies are inferred from parameter names: a parameter named after a task receives
that task's value; any other parameter without a default is a flow input; a parameter with
a default and no matching task or input keeps its default. Names resolve when the flow is
planned or run, so tasks may be declared in any order.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast, overload

from .errors import (
    DuplicateTaskError,
    InvalidOptionError,
    MissingDependencyError,
    closest,
    did_you_mean,
    raise_all,
)
from .events import Observer
from .graph import Graph, GraphBuilder, Task, signature_of
from .limits import LayerReport, RateLimit
from .names import counted
from .options import RunOptions
from .plan import Plan
from .progress import Progress
from .result import RunResult

if TYPE_CHECKING:  # the model does not load the engine or the store until a run
    from .recorder import Recorder
    from .store import Store

__all__ = ["Flow", "TASK_OPTIONS"]

_P = ParamSpec("_P")
_R = TypeVar("_R")

TASK_OPTIONS = (
    "params",
    "inputs",
    "after",
    "retries",
    "retry_delay",
    "retry_on",
    "timeout",
    "priority",
    "executor",
    "resources",
    "rate_limit",
    "cache",
    "map",
    "description",
    "group",
)


class Flow:
    """A named set of tasks whose dependencies layerflow works out from their parameters.

    >>> flow = Flow("profile")
    >>> @flow.task
    ... def user(user_id): ...
    """

    #: an input no task uses is an error (a typo); a YAML pipeline accepts any ``--set``
    strict_inputs = True

    def __init__(self, name: str | None = None) -> None:
        if name is not None and not isinstance(name, str):
            raise InvalidOptionError(f"a flow's name must be a str, got {name!r}")
        self.name = name
        self._graph = GraphBuilder()
        self._last: tuple[Any, Any] | None = None  # the function added last, its signature

    # --- declaring --------------------------------------------------------------------------

    @overload
    def task(self, fn: Callable[_P, _R], /) -> Task[_P, _R]: ...

    @overload
    def task(
        self, fn: None = None, /, *, name: str | None = None, **options: Any
    ) -> Callable[[Callable[_P, _R]], Task[_P, _R]]: ...

    def task(
        self, fn: Callable[_P, _R] | None = None, /, *, name: str | None = None, **options: Any
    ) -> Task[_P, _R] | Callable[[Callable[_P, _R]], Task[_P, _R]]:
        """Decorator: ``@flow.task`` or ``@flow.task(retries=2, timeout=5.0, ...)``.

        Returns the :class:`Task`, which stays callable as the plain function.
        """
        if fn is not None:
            return self.add(fn, name=name, **options)

        def decorate(f: Callable[_P, _R]) -> Task[_P, _R]:
            return self.add(f, name=name, **options)

        return decorate

    def add(self, fn: Callable[_P, _R], *, name: str | None = None, **options: Any) -> Task[_P, _R]:
        """Add ``fn`` as a task (under ``name``, default its ``__name__``) and return it.

        One function may be added many times under different names. Raises
        ``DuplicateTaskError`` for a name already taken and ``InvalidOptionError`` for an
        option value layerflow cannot use; dependencies are checked later, at plan time.
        """
        if not options and type(name) is str and name and callable(fn):
            # every option at its default: nothing to check; the signature of the function
            # added last is at hand (a big flow adds one function again and again)
            last = self._last
            if last is None or last[0] is not fn or type(fn) is functools.partial:
                last = self._last = (fn, signature_of(fn))
            task = self._graph.add_plain(fn, name, last[1])
            if task is None:
                raise DuplicateTaskError(
                    f"flow {self.name or ''!r} already has a task named {name!r}; "
                    f"pass name='...' to add the same function again under another name",
                    name,
                )
            return task
        for key in options:
            if key not in TASK_OPTIONS:
                shown = name or getattr(fn, "__name__", repr(fn))
                raise InvalidOptionError(
                    f"task {shown!r}: unknown option {key!r}."
                    f"{did_you_mean(key, TASK_OPTIONS)} Options: {', '.join(TASK_OPTIONS)}"
                )
        task = Task(fn, name=name, **options)
        if task.name in self._graph.index:
            raise DuplicateTaskError(
                f"flow {self.name or ''!r} already has a task named {task.name!r}; "
                f"pass name='...' to add the same function again under another name",
                task.name,
            )
        self._graph.add(task)
        return task

    @property
    def tasks(self) -> list[Task]:
        """The tasks in declaration order."""
        return list(self._graph.all_tasks())

    def __getitem__(self, name: str) -> Task:
        i = self._graph.index.get(name)
        if i is None:
            raise KeyError(f"flow has no task {name!r}.{did_you_mean(name, self._graph.index)}")
        return self._graph.task(i)

    def __contains__(self, name: object) -> bool:
        return name in self._graph.index

    def __iter__(self) -> Iterator[Task]:
        return iter(self._graph.all_tasks())

    def __len__(self) -> int:
        return len(self._graph.tasks)

    def __repr__(self) -> str:
        return f"<Flow {self.name!r}: {counted(len(self), 'task')}>"

    # --- planning ---------------------------------------------------------------------------

    def plan(
        self,
        inputs: Mapping[str, Any] | None = None,
        *,
        outputs: Iterable[str | Task] | str | Task | None = None,
    ) -> Plan:
        """Resolve, validate and order the flow (pruned to ``outputs`` when given).

        Every problem is raised at once: ``MissingDependencyError``, ``CycleError``, and,
        when ``inputs`` is given, ``MissingInputError`` for inputs some task still needs.
        """
        if inputs is not None and not isinstance(inputs, Mapping):
            raise InvalidOptionError(
                f"inputs must be a mapping of input names to values, got {type(inputs).__name__}"
            )
        graph, problems = self._graph.check(self.name, inputs or ())
        if inputs:
            problems += self._input_name_problems(graph, inputs)
        if outputs is not None and not problems:
            graph = graph.prune(self._output_indices(graph, outputs))
        if inputs is not None:
            problems += graph.input_problems(inputs)
        raise_all(problems, self.name)
        return Plan(graph, history=lambda: _history(graph))

    def _input_name_problems(self, graph: Graph, inputs: Mapping[str, Any]) -> list[Any]:
        used = {name for pairs in graph.input_args for name, _ in pairs}
        problems: list[Any] = []
        for name in inputs:
            if name in graph.index:
                problems.append(
                    InvalidOptionError(
                        f"input {name!r} has the same name as a task; a task's value comes from "
                        f"the task, so rename the input or the task"
                    )
                )
            elif name not in used and self.strict_inputs:
                params = {p for t in self._graph.all_tasks() for p in t.signature.names}
                problems.append(
                    InvalidOptionError(
                        f"input {name!r} is not a parameter of any task."
                        f"{did_you_mean(name, params - set(graph.index))}"
                    )
                )
        return problems

    def _output_indices(
        self, graph: Graph, outputs: Iterable[str | Task] | str | Task
    ) -> list[int]:
        refs: Iterable[str | Task]
        if isinstance(outputs, (str, Task)):
            refs = [outputs]
        else:  # (mypy does not narrow the ParamSpec-generic Task out of the union)
            refs = cast("Iterable[str | Task]", outputs)
        out = []
        for ref in refs:
            name = ref.name if isinstance(ref, Task) else ref
            if name not in graph.index:
                hint = closest(str(name), graph.names)
                raise MissingDependencyError(
                    f"outputs names {name!r}, but the flow has no such task."
                    f"{did_you_mean(str(name), graph.names)}",
                    None,
                    str(name),
                    hint,
                )
            out.append(graph.index[name])
        return out

    # --- running ----------------------------------------------------------------------------

    def run(
        self,
        inputs: Mapping[str, Any] | None = None,
        *,
        outputs: Iterable[str | Task] | str | Task | None = None,
        max_workers: int | None = None,
        mode: str = "dynamic",
        fail_fast: bool = True,
        timeout: float | None = None,
        backend: str = "thread",
        address: str | None = None,
        client: Any = None,
        on_event: Observer | None = None,
        progress: bool | Progress = False,
        seed: int | None = None,
        resources: Mapping[str, float] | None = None,
        rate_limits: Mapping[str, RateLimit | str] | None = None,
        checkpoint: Callable[[LayerReport], Any] | None = None,
        budget: Mapping[str, float] | None = None,
        store: Store | str | os.PathLike[str] | bool | None = None,
        resume: bool | str | None = None,
        cache: bool = False,
    ) -> RunResult:
        """Run the flow and return its :class:`RunResult`.

        ``mode``: ``"dynamic"`` (each task starts as soon as its dependencies are done),
        ``"layered"`` (a barrier between layers) or ``"sequential"`` (one at a time in
        ``plan.order``, in the calling thread; with ``seed``, a random valid order).
        ``max_workers`` bounds how many tasks run at once (None: every ready task, up to
        ``DEFAULT_MAX_WORKERS`` threads). ``fail_fast=True`` raises ``TaskFailed`` at the
        first failure; ``False`` skips what depends on a failure and runs the rest.
        ``timeout`` bounds the whole run. ``backend`` is where plain functions run:
        ``"thread"`` (default), ``"process"`` (worker processes), ``"async"`` (same as
        thread; coroutine functions run on the event loop unless ``executor`` says
        otherwise) or ``"dask"`` (a Dask cluster: the scheduler at ``address``, the
        ``distributed.Client`` given as ``client``, or else a local cluster started for the
        run). ``outputs`` runs only what those tasks need and releases other values
        once their last user has finished. ``on_event`` receives
        every event, in order, from one thread; ``progress=True`` shows progress on stderr (a
        live display on a terminal, plain lines otherwise; ``lf.Progress`` chooses).
        ``resources`` declares pool capacities (``{"gpu": 2}``) that tasks' ``resources``
        draw units from; ``rate_limits`` declares limits (``{"api": "80/min"}``) that tasks'
        ``rate_limit`` names; ``checkpoint(report)`` is called after each layer but the
        last, and the next layer starts only once it has answered (False stops the run with
        status ``"stopped"``). ``budget`` (``{"cost": 5.0}``) caps what the run spends of
        numbers the tasks ``lf.record``: a start whose declared cost of that name would
        cross it, or reaching it, stops the run (status ``"stopped"``). ``store`` records
        the run (a folder path, a :class:`Store`, or False for none; by default only when
        ``$LAYERFLOW_STORE`` is set or ``resume`` asks); ``resume=True`` (the latest
        unfinished run of this flow) or a run id reuses every result that run finished,
        unless the task changed. ``cache=True`` (or ``cache=True`` on a task) reuses a
        result from any earlier run when the task's name, code and call values are the same
        (status ``"cached"``).
        """
        options = self._execution(locals())  # before the import below adds a local
        from .scheduler import execute

        return execute(**options)

    def _execution(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """``run``'s arguments turned into the scheduler's: a validated plan, the inputs,
        the :class:`RunOptions`, the indices of the outputs to keep, and the store's
        recorder."""
        given_options = {k: v for k, v in arguments.items() if k not in ("self", "__class__")}
        inputs, outputs = given_options.pop("inputs"), given_options.pop("outputs")
        # every option checked, all problems at once, before anything is planned: the one
        # object that carries them to the scheduler
        options = RunOptions.of(**given_options)
        store, resume, cache = options.store, options.resume, options.cache
        given = dict(inputs or {})
        plan = self.plan(given, outputs=outputs)
        if store is False:  # no store at all: not even the default one's history
            plan = Plan(plan.graph, resources=plan.resources, rate_limits=plan.rate_limits)
        keep = None if outputs is None else self._output_indices(plan.graph, outputs)
        recorder = recorder_for(plan, given, store, resume, cache)
        if recorder is not None:  # priorities and the prediction from the run's own store
            found = recorder.store, recorder.flow
            plan = Plan(
                plan.graph,
                history=lambda: found[0].durations(found[1]),
                resources=plan.resources,
                rate_limits=plan.rate_limits,
            )
        return {
            "plan": plan,
            "inputs": given,
            "options": options,
            "outputs": keep,
            "recorder": recorder,
        }

    async def run_async(
        self,
        inputs: Mapping[str, Any] | None = None,
        *,
        outputs: Iterable[str | Task] | str | Task | None = None,
        max_workers: int | None = None,
        mode: str = "dynamic",
        fail_fast: bool = True,
        timeout: float | None = None,
        backend: str = "thread",
        address: str | None = None,
        client: Any = None,
        on_event: Observer | None = None,
        progress: bool | Progress = False,
        seed: int | None = None,
        resources: Mapping[str, float] | None = None,
        rate_limits: Mapping[str, RateLimit | str] | None = None,
        checkpoint: Callable[[LayerReport], Any] | None = None,
        budget: Mapping[str, float] | None = None,
        store: Store | str | os.PathLike[str] | bool | None = None,
        resume: bool | str | None = None,
        cache: bool = False,
    ) -> RunResult:
        """``await flow.run_async(...)``: ``run`` from a coroutine. Coroutine tasks run on
        the caller's event loop, other tasks on their pools; the loop is never blocked.
        Cancelling the awaiting coroutine stops the run as Ctrl-C does."""
        options = self._execution(locals())
        from .scheduler import execute_async

        return await execute_async(**options)


def _history(graph: Graph) -> Mapping[str, float]:
    """Past durations from the store, if one exists (never created just to look)."""
    from .recorder import flow_key
    from .store import Store, default_store_path

    folder = default_store_path()
    return Store(folder).durations(flow_key(graph)) if folder.is_dir() else {}


def recorder_for(
    plan: Plan, inputs: Mapping[str, Any], store: Any, resume: Any, cache: bool
) -> Recorder | None:
    """The store a run records to, per the options and ``$LAYERFLOW_STORE``."""
    from .recorder import Recorder
    from .store import Store

    caching = cache or any(t.cache for t in plan.graph.tasks)
    if store is False:
        if resume or caching:
            raise InvalidOptionError("resume and cache need a store, but store=False")
        return None
    owns = not isinstance(store, Store)  # a Store the caller made stays open for them
    if store is None or store is True:
        if not (store or resume or caching or os.environ.get("LAYERFLOW_STORE")):
            return None
        store = Store()
    elif not isinstance(store, Store):
        store = Store(store)
    return Recorder(store, plan.graph, inputs, resume, cache, owns_store=owns)
