"""What identifies a task's result: its resume key changes when its code, params or flow
inputs change, or when any task it depends on changes (so a change re-runs everything
downstream); its cache key is its name, its code and the values it is called with. "Its
code" is its source or bytecode, not the values its closure holds; values are compared by
content (dicts and sets in a fixed order).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import threading
import types
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .store import pickled

if TYPE_CHECKING:
    from .graph import Graph, Task

__all__ = ["SCALARS", "fingerprint", "fingerprint_of", "flow_key", "task_keys", "value_digest"]

#: a function's fingerprint, once per function object: reading its source back costs about
#: 60 us, which a run with a store would otherwise pay for every task at its start
_FINGERPRINTS: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
_FINGERPRINTS_LOCK = threading.Lock()


def fingerprint(task: Task) -> str:
    """What identifies a task's code: the loader's fingerprint, else its function's source
    (or bytecode). Not the values its closure holds."""
    if task.fingerprint is not None:
        return task.fingerprint
    return fingerprint_of(task.fn)


def fingerprint_of(fn: Any) -> str:
    """A function's source (or bytecode), read once per function object."""
    try:
        with _FINGERPRINTS_LOCK:
            return _FINGERPRINTS[fn]
    except (KeyError, TypeError):  # not seen yet, or an object that cannot be weakly held
        pass
    code = _code_of(fn)
    with contextlib.suppress(TypeError), _FINGERPRINTS_LOCK:
        _FINGERPRINTS[fn] = code
    return code


def _code_of(fn: Any) -> str:
    if isinstance(fn, functools.partial):  # the function, and the arguments bound to it
        return _code_of(fn.func) + value_digest((fn.args, sorted(fn.keywords.items())))
    if not (inspect.isfunction(fn) or inspect.ismethod(fn) or inspect.isbuiltin(fn)):
        fn = type(fn)  # a callable object: its class, not its address
    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        if code is not None:
            return "code:" + hashlib.sha256(_code_text(code).encode()).hexdigest()
        return f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}"


def _code_text(code: types.CodeType) -> str:
    """A code object with no source (``python -c``, stdin, generated code) as stable text:
    its bytecode, names and constants, nested code objects the same way. Not
    ``marshal.dumps``, whose bytes depend on reference counts: once a traceback's
    formatting interned the file name, the same function fingerprinted differently, so
    resume and the cache ran it again. Line numbers are left out, as the source-based
    fingerprint ignores where a function is."""
    parts = [
        code.co_name,
        code.co_code.hex(),
        repr(code.co_names),
        repr(code.co_varnames),
        repr(code.co_freevars),
        repr(code.co_cellvars),
        repr((code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount)),
        repr(code.co_flags),
    ]
    parts.extend(_const_text(c) for c in code.co_consts)
    return "\x00".join(parts)


def _const_text(value: Any) -> str:
    if isinstance(value, types.CodeType):
        return "<" + _code_text(value) + ">"
    if isinstance(value, tuple):
        return "(" + ",".join(_const_text(v) for v in value) + ")"
    if isinstance(value, frozenset):  # its order follows string hashing, which varies
        return "{" + ",".join(sorted(_const_text(v) for v in value)) + "}"
    return f"{type(value).__name__}:{value!r}"


SCALARS = frozenset((int, float, str, bytes, bool, type(None), complex))


def _canonical(value: Any) -> Any:
    """``value`` with every plain dict and set put in a fixed order, so that equal values
    built in another order hash alike (a pickle keeps insertion order). Other types,
    ``OrderedDict`` among them (its order is part of its equality), are left as they are."""
    kind = type(value)
    if kind in SCALARS:
        return value
    if kind is dict:
        items = [(_canonical(k), _canonical(v)) for k, v in value.items()]
        return ("<dict>", sorted(items, key=pickled))
    if kind is set or kind is frozenset:
        return ("<set>", sorted((_canonical(v) for v in value), key=pickled))
    if kind is list or kind is tuple:
        if all(type(v) in SCALARS for v in value):
            return value
        return kind(_canonical(v) for v in value)
    return value


def value_digest(value: Any, *, strict: bool = False) -> str:
    """A hash of a value's pickle, dicts and sets in a fixed order; with ``strict``, a value
    that cannot be pickled raises (the cache must not match two different values by their
    repr)."""
    try:
        with contextlib.suppress(RecursionError):  # too deep to reorder: hashed as it is
            value = _canonical(value)
        data = pickled(value)
    except Exception:
        if strict:
            raise
        data = repr(value).encode()
    return hashlib.sha256(data).hexdigest()


def flow_key(graph: Graph) -> str:
    """The name runs of a flow are stored under; an unnamed flow is known by its tasks,
    so that resume and history find its own runs, not another unnamed flow's."""
    if graph.flow_name:
        return graph.flow_name
    return "unnamed-" + hashlib.sha256("\n".join(graph.names).encode()).hexdigest()[:12]


def task_keys(graph: Graph, inputs: Mapping[str, Any]) -> list[str]:
    """A key per task that changes when its code, params or flow inputs change, or when
    any task it depends on changes (so a change re-runs everything downstream)."""
    n = len(graph)
    keys = [""] * n
    raw = [b""] * n  # the same keys as bytes, for the tasks downstream
    nothing = value_digest([]).encode()  # no params, no flow inputs: most tasks, hashed once
    prints: dict[Any, bytes] = {}  # one fingerprint per function, however many tasks use it
    sha256 = hashlib.sha256
    tasks, deps, input_args = graph.tasks, graph.deps, graph.input_args
    for i in graph.order:
        t = tasks[i]
        which = t.fingerprint if t.fingerprint is not None else id(t.fn)
        code = prints.get(which)
        if code is None:
            code = prints[which] = fingerprint(t).encode()
        given = input_args[i]
        parts = [
            t.name.encode(),
            code,
            value_digest(sorted(t.params.items())).encode() if t.params else nothing,
            value_digest([(p, inputs.get(name)) for p, name in given]).encode()
            if given
            else nothing,
        ]
        for j in deps[i]:  # (a loop: a generator costs more than the few it yields)
            parts.append(raw[j])
        key = sha256(b"".join(parts)).hexdigest()  # as hashing the parts one by one
        keys[i] = key
        raw[i] = key.encode()
    return keys
