"""The model: :class:`Task` (one declared step) and :class:`Graph` (tasks resolved to indices).

A ``Task`` keeps what the user declared, names unresolved, so tasks may be declared in any
order. ``GraphBuilder.build`` resolves every name at once, collects every problem (missing
dependencies, cycles, missing inputs) and raises them together, before anything runs.
A built graph is int-indexed lists: tasks ``0..n-1`` in declaration order, ``deps[i]`` and
``succs[i]`` as sequences of indices, ``layer[i]`` and a topological ``order``; planning and the
scheduler work on these, never on names.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import inspect
import sys
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType, MethodType
from typing import Any, Generic, ParamSpec, TypeVar

from .backends import BACKENDS
from .errors import (
    CycleError,
    InvalidOptionError,
    MissingDependencyError,
    MissingInputError,
    closest,
    did_you_mean,
    raise_all,
)
from .options import SECONDS, SECONDS_OR_0, number

__all__ = ["Task", "TaskGroup", "Graph", "GraphBuilder", "EXECUTORS"]

#: where a task may run (``executor=``): any backend a run accepts
EXECUTORS = BACKENDS

_POSITIONAL_ONLY = inspect.Parameter.POSITIONAL_ONLY
_VAR_POSITIONAL = inspect.Parameter.VAR_POSITIONAL
_VAR_KEYWORD = inspect.Parameter.VAR_KEYWORD
_EMPTY = inspect.Parameter.empty


@dataclass(frozen=True, eq=False)
class TaskGroup:
    """Tasks that fail and time out together (a YAML ``parallel_group`` is one).

    ``fail_fast``: when one of them fails for good, the group's other tasks that have not
    finished are cancelled (``True``), or go on (``False``); ``None`` follows the run's
    ``fail_fast``. A group's ``fail_fast=True`` stops only the group, not the whole run,
    when the run itself continues on failure. ``timeout``: seconds for the whole group,
    counted from its first start; what has not finished by then fails with ``GroupTimeout``.
    """

    name: str
    fail_fast: bool | None = None
    timeout: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InvalidOptionError(f"a TaskGroup name must be a non-empty str, got {self.name!r}")
        if self.fail_fast is not None and not isinstance(self.fail_fast, bool):
            raise InvalidOptionError(
                f"group {self.name!r}: fail_fast must be True, False or None, "
                f"got {self.fail_fast!r}"
            )
        t = self.timeout
        if t is not None and not number(t, above=0):
            raise InvalidOptionError(f"group {self.name!r}: timeout must be {SECONDS}, got {t!r}")


class _Signature:
    """What dependency inference and the scheduler need from a function's signature,
    computed once."""

    __slots__ = ("names", "required", "positional_only", "var_keyword", "is_coroutine", "_free")

    def __init__(self, fn: Callable[..., Any]) -> None:
        params: Iterable[inspect.Parameter]
        try:
            params = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):  # builtins without a signature: no inference
            params = ()
        self.names: tuple[str, ...] = tuple(
            p.name for p in params if p.kind not in (_VAR_POSITIONAL, _VAR_KEYWORD)
        )
        self.required = frozenset(
            p.name
            for p in params
            if p.default is _EMPTY and p.kind not in (_VAR_POSITIONAL, _VAR_KEYWORD)
        )
        # (name, default or _EMPTY): a call passes these by position, in this order
        self.positional_only = tuple(
            (p.name, p.default) for p in params if p.kind is _POSITIONAL_ONLY
        )
        self.var_keyword = any(p.kind is _VAR_KEYWORD for p in params)
        self.is_coroutine = inspect.iscoroutinefunction(fn)
        self._free: dict[tuple[str, ...], tuple[str, ...]] = {}

    def free_params(self, explicit: tuple[str, ...]) -> tuple[str, ...]:
        """The parameters left to inference by name when ``explicit`` are given (the keys
        of params= and inputs=); remembered, as one function is often given the same."""
        found = self._free.get(explicit)
        if found is None:
            found = tuple(p for p in self.names if p not in explicit)
            if len(self._free) >= 64:  # inputs named per task (**kwargs) would grow it
                self._free.clear()
            self._free[explicit] = found
        return found


# Shared by every task without params/inputs/resources: 1M tasks need no 1M empty dicts.
_NO_MAPPING: Mapping[str, Any] = MappingProxyType({})
_ANY_EXCEPTION: tuple[type[BaseException], ...] = (Exception,)  # retry_on's default

_FROM_FN = object()  # a default read from the task's function or signature (_from_fn)


def _from_fn(task: Task, slot: str) -> Any:
    if slot == "__wrapped__":
        return task.fn
    sig = task.signature
    return sig.is_coroutine if slot == "is_coroutine" else sig.names


# The options Task.plain leaves unset until one is read, and their defaults
_DEFAULTS: dict[str, Any] = {
    "params": _NO_MAPPING,
    "retries": 0,
    "retry_delay": 0.0,
    "retry_on": _ANY_EXCEPTION,
    "timeout": None,
    "priority": 0,
    "executor": None,
    "resources": _NO_MAPPING,
    "rate_limit": None,
    "cache": False,
    "description": None,
    "is_coroutine": _FROM_FN,
    "__wrapped__": _FROM_FN,
    "free_params": _FROM_FN,
    "inputs": _NO_MAPPING,
    "after": (),
    "map": None,
    "group": None,
    "fingerprint": None,
    "cancel": None,
    "label": None,
    "element_index": None,
}

# One function added many times (chunk_0 ... chunk_999999) is read once: known by identity
# and held weakly, so a redefined function (a new object) is read anew and a dead one is not
# kept alive. obj.method is a new object at each access, so a method is known by its function.
_known: dict[int, tuple[weakref.ref[Any], _Signature]] = {}
_known_methods: dict[int, tuple[weakref.ref[Any], _Signature]] = {}

# GraphBuilder tells whether the caller kept a Task by its reference count
_REFCOUNTED = sys.implementation.name == "cpython"
getrefcount = sys.getrefcount


def signature_of(fn: Callable[..., Any]) -> _Signature:
    """``fn``'s signature, read once per function object (a partial, whose bound arguments
    can change, and a callable that cannot be weakly referenced: each time)."""
    if type(fn) is MethodType:
        key, known = fn.__func__, _known_methods
    else:
        key, known = fn, _known
    found = known.get(id(key))
    if found is not None and found[0]() is key:
        return found[1]
    sig = _Signature(fn)
    if not isinstance(key, functools.partial):
        try:
            ref = weakref.ref(key)
        except TypeError:
            return sig
        if len(known) >= 4096:  # bounds the dead entries too (a new closure per task)
            known.clear()
        known[id(key)] = (ref, sig)
    return sig


def _name_of(ref: Task | str, what: str, task: str) -> str:
    if isinstance(ref, Task):
        return ref.name
    if isinstance(ref, str) and ref:
        return ref
    raise InvalidOptionError(
        f"task {task!r}: {what} must name a task (a str or a Task), got {ref!r}"
    )


def _map_names(map: Any, task: str) -> tuple[str, ...] | None:
    """``map=`` as a tuple of names: one (a str or a Task) or several, to zip."""
    if map is None:
        return None
    if isinstance(map, (str, Task)):
        return (_name_of(map, "map", task),)
    if isinstance(map, (list, tuple)) and map:
        names = tuple(_name_of(m, "map", task) for m in map)
        if len(set(names)) < len(names):
            raise InvalidOptionError(f"task {task!r}: map names {names[0]!r} twice in {map!r}")
        return names
    raise InvalidOptionError(
        f"task {task!r}: map must name a task or a flow input (a str), or list several to "
        f"zip, got {map!r}"
    )


def positional_args(spec: tuple[tuple[str, Any], ...], kwargs: dict[str, Any]) -> list[Any]:
    """Take a call's positional-only arguments out of ``kwargs``, in order, filling the
    ones not given with their defaults."""
    out = []
    for name, default in spec:
        if name in kwargs:
            out.append(kwargs.pop(name))
        elif default is not _EMPTY:
            out.append(default)
        else:
            break
    return out


def _number(value: Any, option: str, task: str, *, positive: bool, seconds: bool = False) -> float:
    if number(value, above=0) if positive else number(value, at_least=0):
        return float(value)
    if seconds:
        need = SECONDS if positive else SECONDS_OR_0
    else:
        need = "a number > 0" if positive else "a number >= 0"
    raise InvalidOptionError(f"task {task!r}: {option} must be {need}, got {value!r}")


_P = ParamSpec("_P")
_R = TypeVar("_R")


class Task(Generic[_P, _R]):
    """One step of a flow: a function, its name and its options.

    Calling a ``Task`` calls its function, so a decorated function stays usable (and
    testable) on its own; for a type checker, a ``Task`` made from a function has that
    function's parameters and return type (``Task[P, R]``). Names of dependencies are
    kept as declared and resolved when the flow is planned or run.
    """

    __slots__ = (
        "fn",
        "name",
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
        "is_coroutine",
        "signature",
        "free_params",
        "group",
        "fingerprint",
        "cancel",
        "label",
        "element_index",
        "__wrapped__",
    )

    fn: Callable[_P, _R]

    def __init__(
        self,
        fn: Callable[_P, _R],
        *,
        name: str | None = None,
        params: Mapping[str, Any] | None = None,
        inputs: Mapping[str, Task | str] | None = None,
        after: Iterable[Task | str] | Task | str | None = None,
        retries: int = 0,
        retry_delay: float = 0.0,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
        timeout: float | None = None,
        priority: int = 0,
        executor: str | None = None,
        resources: Mapping[str, float] | None = None,
        rate_limit: str | Mapping[str, float] | None = None,
        cache: bool = False,
        map: str | Task | Sequence[str | Task] | None = None,
        description: str | None = None,
        group: TaskGroup | None = None,
    ) -> None:
        if not callable(fn):
            shown = name or repr(fn)
            raise InvalidOptionError(
                f"task {shown!r}: expected a function, got {type(fn).__name__} {fn!r}"
            )
        if name is None:
            name = getattr(fn, "__name__", None)
            if not name or name == "<lambda>":
                raise InvalidOptionError(
                    f"{fn!r} has no usable name: pass one, e.g. flow.add(fn, name='step')"
                )
        if not isinstance(name, str) or not name:
            raise InvalidOptionError(f"a task name must be a non-empty str, got {name!r}")
        self.fn = fn
        self.name = name
        self.__wrapped__ = fn
        sig = self.signature = signature_of(fn)
        self.is_coroutine = sig.is_coroutine
        # Each option at its default skips its check: adding one function 1,000,000 times
        # is then mostly the cost of the objects made.
        self.params = _NO_MAPPING
        if params is not None:
            if type(params) is not dict and not isinstance(params, Mapping):
                raise InvalidOptionError(f"task {name!r}: params must be a mapping, got {params!r}")
            if params:
                self.params = dict(params)
                for key in self.params:
                    if key not in sig.names and not sig.var_keyword:
                        raise InvalidOptionError(
                            f"task {name!r}: params names {key!r}, which {_fn_name(fn)} does "
                            f"not accept.{did_you_mean(key, sig.names)}"
                        )
        self.inputs = _NO_MAPPING
        if inputs is not None:
            if type(inputs) is not dict and not isinstance(inputs, Mapping):
                raise InvalidOptionError(
                    f"task {name!r}: inputs must map parameter -> task name, got {inputs!r}"
                )
            if inputs:
                refs = self.inputs = dict(inputs)
                for param, src in refs.items():
                    if type(src) is not str or not src:  # a Task, or not a name
                        refs[param] = _name_of(src, f"inputs[{param!r}]", name)
                for param in refs:
                    if param not in sig.names and not sig.var_keyword:
                        raise InvalidOptionError(
                            f"task {name!r}: inputs maps parameter {param!r}, which "
                            f"{_fn_name(fn)} does not accept.{did_you_mean(param, sig.names)}"
                        )
        if after is None:
            self.after: tuple[str, ...] = ()
        else:
            if isinstance(after, (str, Task)):
                afters: Iterable[Task | str] = (after,)
            elif not isinstance(after, Iterable):
                raise InvalidOptionError(
                    f"task {name!r}: after must be a task name or a list of them, got {after!r}"
                )
            else:
                afters = after
            # a loop: a generator reading name would make every call allocate a cell
            after_names = []
            for a in afters:
                after_names.append(_name_of(a, "after", name))
            self.after = tuple(after_names)

        if (type(retries) is not int or retries != 0) and not number(
            retries, whole=True, at_least=0
        ):
            raise InvalidOptionError(f"task {name!r}: retries must be an int >= 0, got {retries!r}")
        self.retries = retries
        self.retry_delay = (
            retry_delay
            if type(retry_delay) is float and retry_delay == 0.0
            else _number(retry_delay, "retry_delay", name, positive=False, seconds=True)
        )
        if retry_on is Exception:
            self.retry_on: tuple[type[BaseException], ...] = _ANY_EXCEPTION
        else:
            retry_types = retry_on if isinstance(retry_on, tuple) else (retry_on,)
            if not retry_types or not all(
                isinstance(t, type) and issubclass(t, BaseException) for t in retry_types
            ):
                raise InvalidOptionError(
                    f"task {name!r}: retry_on must be an exception type or a tuple of them, "
                    f"got {retry_on!r}"
                )
            self.retry_on = retry_types
        self.timeout = (
            None
            if timeout is None
            else _number(timeout, "timeout", name, positive=True, seconds=True)
        )
        if (type(priority) is not int or priority != 0) and not number(priority, whole=True):
            raise InvalidOptionError(f"task {name!r}: priority must be an int, got {priority!r}")
        self.priority = priority
        if executor is not None and executor not in EXECUTORS:
            raise InvalidOptionError(
                f"task {name!r}: executor must be one of {', '.join(EXECUTORS)}, "
                f"got {executor!r}.{did_you_mean(str(executor), EXECUTORS)}"
            )
        self.executor = executor
        self.resources = _NO_MAPPING
        if resources:
            self.resources = dict(resources)
            for pool, units in self.resources.items():
                _number(units, f"resources[{pool!r}]", name, positive=True)
        if rate_limit is not None and not isinstance(rate_limit, (str, Mapping)):
            raise InvalidOptionError(
                f"task {name!r}: rate_limit must be a limit's name or a mapping of names to "
                f"costs, got {rate_limit!r}"
            )
        self.rate_limit = rate_limit
        if cache is not False and cache is not True:
            raise InvalidOptionError(f"task {name!r}: cache must be True or False, got {cache!r}")
        self.cache = cache
        self.map = _map_names(map, name)
        self.description = description
        if group is not None and not isinstance(group, TaskGroup):
            raise InvalidOptionError(
                f"task {name!r}: group must be an lf.TaskGroup, got {type(group).__name__}"
            )
        self.group = group
        # what identifies the task's code for the store (the YAML loader's step config);
        # None: the function's source
        self.fingerprint: str | None = None
        # how to stop it while it runs in a thread (a shell step kills its command);
        # None: a running thread task cannot be stopped, and fail-fast waits for it
        self.cancel: Callable[[], None] | None = None
        # the group progress and reports show the task under (a Dask key's group); None: none
        self.label: str | None = None
        # the parameter that receives a map element's index (the YAML loader's {{index}});
        # None: the index is not passed
        self.element_index: str | None = None
        # what GraphBuilder resolves, precomputed: parameters left to inference by name
        given, named = self.params, self.inputs
        if named is _NO_MAPPING:
            self.free_params = sig.names if given is _NO_MAPPING else sig.free_params(tuple(given))
        elif given is _NO_MAPPING:  # (iterating _NO_MAPPING costs more than this test)
            self.free_params = sig.free_params(tuple(named))
        else:
            self.free_params = sig.free_params((*given, *named))

    @classmethod
    def plain(cls, fn: Callable[..., Any], name: str, sig: _Signature | None = None) -> Task:
        """``Task(fn, name=name)`` with every option at its default, which needs no check:
        what ``flow.add(fn, name=...)`` makes, a million times for a big flow (``sig``:
        ``fn``'s, when the caller has it).

        Only what adding it reads is set; the other options are filled in with their
        defaults when one is first read (``__getattr__``). Until then the cyclic GC, whose
        full collections walk every task of the flow again and again while it grows,
        visits 3 of its 25 fields: it spent more time on a million tasks than making them.
        """
        t = object.__new__(cls)
        t.fn = fn
        t.name = name
        t.signature = signature_of(fn) if sig is None else sig
        return t

    def __getattr__(self, attr: str) -> Any:
        """An option a task made by :meth:`plain` has not set yet: every one set now to its
        default (so this runs once per task), then read."""
        if attr not in _DEFAULTS:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {attr!r}")
        for slot, default in _DEFAULTS.items():
            try:
                object.__getattribute__(self, slot)
            except AttributeError:
                if default is _FROM_FN:
                    default = _from_fn(self, slot)
                object.__setattr__(self, slot, default)
        return object.__getattribute__(self, attr)

    def __call__(self, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        return self.fn(*args, **kwargs)

    def clone(self, fn: Callable[..., Any], name: str) -> Task:
        """This task's options, already checked, for ``fn`` (which must take the same
        parameters as this task's function) under ``name``: how a translator makes
        100,000 tasks without inspecting and validating each one again."""
        t = Task.__new__(Task)
        for slot in Task.__slots__:
            setattr(t, slot, getattr(self, slot))
        t.fn = t.__wrapped__ = fn
        t.name = name
        return t

    def __repr__(self) -> str:
        return f"<Task {self.name!r} {_fn_name(self.fn)}>"

    @property
    def __name__(self) -> str:  # so a Task passes where a function's name is read
        return self.name


def _fn_name(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", repr(fn))
    return f"{module}.{qualname}()" if module else f"{qualname}()"


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

    def add_plain(self, fn: Callable[..., Any], name: str, sig: _Signature) -> Task | None:
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
