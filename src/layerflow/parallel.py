"""``parallel_map``: parallelism inside one step, on the same engine as flows.

It is a two-task flow, ``items`` and a task mapped over it, so it gets the scheduler's
bounds, timeouts, backends and progress lines for free, and, inside a task of a run with a
store, durable items (``items.py``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

from .errors import (
    InvalidOptionError,
    ParallelMapError,  # noqa: F401 (re-exported)
    TaskFailed,
    TaskTimeout,
)
from .flow import Flow
from .metrics import record
from .names import counted, element_index
from .taskscope import attempt
from .taskscope import current as current_scope

__all__ = ["parallel_map", "ParallelMapError"]

#: an item's statuses with a value ("reused": kept by an earlier attempt of the calling task)
_DONE = ("succeeded", "reused")


def parallel_map(
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    *,
    max_workers: int | None = None,
    backend: str = "thread",
    ordered: bool = True,
    fail_fast: bool = True,
    timeout: float | None = None,
    progress: bool = False,
) -> list[Any]:
    """``[fn(x) for x in items]``, run in parallel; results in input order.

    ``backend``: ``"thread"``, ``"process"`` (``fn`` and the items cross with cloudpickle)
    or ``"async"`` (``fn`` is a coroutine function; all items on one event loop).
    ``ordered=False`` returns results in the order they finished. ``fail_fast=True``
    raises the first item's own exception (with a note naming its index) and starts no
    more items; ``fail_fast=False`` runs every item, then raises one
    :class:`ParallelMapError` listing every failed index. ``timeout`` bounds the whole call.

    Called inside a task of a run with a store (from a thread, sequential or coroutine
    task's own thread or coroutine), each item is stored as it finishes, and a retry of
    the task or a resumed run calls only the items that did not finish (``items.py``).
    Elsewhere (outside a run, without a store, in a process or Dask task) nothing is stored.
    """
    if not callable(fn):
        raise InvalidOptionError(f"parallel_map needs a function, got {type(fn).__name__}")
    values = list(items)
    is_async = inspect.iscoroutinefunction(fn)
    if backend == "async" and not is_async:
        raise InvalidOptionError("parallel_map(backend='async') needs an 'async def' function")
    call: Callable[[Any], Any]
    if is_async:

        async def call_async(item: Any) -> Any:
            return await fn(item)

        call, executor = call_async, "process" if backend == "process" else "async"
    else:

        def call_sync(item: Any) -> Any:
            return fn(item)

        call, executor = call_sync, "process" if backend == "process" else "thread"
    if backend not in ("thread", "process", "async"):
        raise InvalidOptionError(f"backend must be one of thread, process, async, got {backend!r}")
    flow = Flow("parallel_map")
    flow.add(lambda: values, name="items", executor="thread")
    flow.add(call, name="map", map="items", inputs={"item": "items"}, executor=executor)
    options: dict[str, Any] = {
        "max_workers": max_workers,
        "fail_fast": fail_fast,
        "timeout": timeout,
        "progress": progress,
    }
    scope = current_scope() if values else None
    try:
        if scope is None:
            run = flow.run(**options)
        else:  # inside a task of a run with a store: finished items are kept
            from .items import run_kept

            run = run_kept(flow, attempt(), fn, values, **options)  # type: ignore[arg-type]
    except TaskFailed as e:
        record(**e.result.metrics)
        cause = e.__cause__ if e.__cause__ is not None else e
        note = f"parallel_map: item {element_index(e.task)} failed" if e.task else ""
        if note and note not in getattr(cause, "__notes__", ()):
            cause.add_note(note)
        raise cause from None
    # what the items gave lf.record belongs to the task that called parallel_map
    record(**run.metrics)
    kids = [t for name, t in run.tasks.items() if name.startswith("map[")]
    if run.ok:
        if ordered:
            return run["map"]
        return [t.value for t in sorted(kids, key=lambda t: t.finished_at or 0.0)]
    errors: dict[int, BaseException] = {}
    for t in kids:
        if t.status == "failed" and t.error is not None:
            errors[element_index(t.name)] = t.error
        elif t.status not in _DONE:  # the timeout (or a stop) kept it from finishing
            errors[element_index(t.name)] = t.error or TaskTimeout(
                f"item {element_index(t.name)} did not run: the call timed out after {timeout:g}s"
                if timeout
                else f"item {element_index(t.name)} did not run",
                t.name,
                timeout,
            )
    results = [t.value if t.status in _DONE else None for t in kids]
    shown = "; ".join(f"[{k}] {type(err).__name__}: {err}" for k, err in list(errors.items())[:10])
    more = f"; ... and {len(errors) - 10} more" if len(errors) > 10 else ""
    indices = ", ".join(str(k) for k in errors)
    raise ParallelMapError(
        f"{len(errors)} of {counted(len(values), 'item')} failed "
        f"({'items' if len(errors) > 1 else 'item'} {indices}): {shown}{more}",
        errors,
        results,
    )
