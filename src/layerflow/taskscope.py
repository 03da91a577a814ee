"""Which task of which stored run the running code belongs to, for ``lf.parallel_map``.

In a run with a store, each task that runs in this process (a thread, the calling thread,
the event loop) is called through :func:`tag`, which sets the task's (items, entry) in the
context its call runs in; ``parallel_map`` reads it (:func:`current`, :func:`attempt`) to find
the run's store and its task. A run without a store tags nothing: its calls are not touched.
Process and Dask tasks are not tagged either, since their workers cannot reach the store.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

__all__ = ["Scope", "attempt", "clear", "current", "scoped", "tag"]


class Scope:
    """An attempt of task ``entry`` of a run whose ``items`` (``recorder.RunItems``) keeps
    its ``parallel_map`` items; ``counts``: how often the attempt asked for each item."""

    __slots__ = ("counts", "entry", "items")

    def __init__(self, items: Any, entry: int) -> None:
        self.items = items
        self.entry = entry
        self.counts: dict[str, int] = {}


# per call, a task's (items, entry); an attempt's Scope once parallel_map has asked
_SCOPE: contextvars.ContextVar[tuple[Any, int] | Scope | None] = contextvars.ContextVar(
    "layerflow_task_scope", default=None
)

current = _SCOPE.get


def attempt() -> Scope | None:
    """The running task's scope, its attempt's own (made when first asked for, so that
    calling a task allocates nothing for it)."""
    scope = _SCOPE.get()
    if type(scope) is tuple:
        scope = Scope(*scope)
        _SCOPE.set(scope)  # in the attempt's own context: the next attempt starts afresh
    return scope  # type: ignore[return-value]


def tag(fn: Callable[..., Any], items: Any, entry: int, is_async: bool) -> Callable[..., Any]:
    """``fn``, setting its task's scope in the context each call runs in (each task runs
    in a copy of its own, so no other task sees it)."""
    task = (items, entry)
    if is_async:

        async def tagged_async(*args: Any, **kwargs: Any) -> Any:
            _SCOPE.set(task)
            return await fn(*args, **kwargs)

        return tagged_async

    def tagged(*args: Any, **kwargs: Any) -> Any:
        _SCOPE.set(task)
        return fn(*args, **kwargs)

    return tagged


def scoped(items: Any, entry: int, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` as task ``entry`` (what :func:`tag`'s wrapper does, as one function for
    ``functools.partial``: no closure made per call)."""
    _SCOPE.set((items, entry))
    return fn(*args, **kwargs)


def clear(context: contextvars.Context) -> None:
    """A run started inside a tagged task: its own tasks are not that task."""
    if context.get(_SCOPE) is not None:
        context.run(_SCOPE.set, None)
