"""A function's signature as a task reads it: its parameters (names of upstream tasks or
inputs), read once per function however many tasks share it."""

from __future__ import annotations

import functools
import inspect
import weakref
from collections.abc import Callable, Iterable
from types import MethodType
from typing import Any

_POSITIONAL_ONLY = inspect.Parameter.POSITIONAL_ONLY
_VAR_POSITIONAL = inspect.Parameter.VAR_POSITIONAL
_VAR_KEYWORD = inspect.Parameter.VAR_KEYWORD
_EMPTY = inspect.Parameter.empty


class Signature:
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


# One function added many times (chunk_0 ... chunk_999999) is read once: known by identity
# and held weakly, so a redefined function (a new object) is read anew and a dead one is not
# kept alive. obj.method is a new object at each access, so a method is known by its function.
_known: dict[int, tuple[weakref.ref[Any], Signature]] = {}
_known_methods: dict[int, tuple[weakref.ref[Any], Signature]] = {}


def signature_of(fn: Callable[..., Any]) -> Signature:
    """``fn``'s signature, read once per function object (a partial, whose bound arguments
    can change, and a callable that cannot be weakly referenced: each time)."""
    if type(fn) is MethodType:
        key, known = fn.__func__, _known_methods
    else:
        key, known = fn, _known
    found = known.get(id(key))
    if found is not None and found[0]() is key:
        return found[1]
    sig = Signature(fn)
    if not isinstance(key, functools.partial):
        try:
            ref = weakref.ref(key)
        except TypeError:
            return sig
        if len(known) >= 4096:  # bounds the dead entries too (a new closure per task)
            known.clear()
        known[id(key)] = (ref, sig)
    return sig


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
