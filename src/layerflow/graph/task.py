""":class:`Task` (one declared step, names unresolved) and :class:`TaskGroup`."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Generic, ParamSpec, TypeVar

from ..backends import BACKENDS
from ..errors import (
    InvalidOptionError,
    did_you_mean,
)
from ..options import SECONDS, SECONDS_OR_0, number
from .signature import Signature, signature_of

#: where a task may run (``executor=``): any backend a run accepts
EXECUTORS = BACKENDS


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
    def plain(cls, fn: Callable[..., Any], name: str, sig: Signature | None = None) -> Task:
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
