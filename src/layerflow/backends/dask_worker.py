"""What runs on a Dask worker: one attempt's call, and the fail-fast stop of attempts that
have not begun.

A Dask worker runs a task it was sent to the end: cancelling a running task only throws its
result away. So when a run stops (fail-fast), layerflow asks every worker which of its
attempts have begun (:func:`stop_unbegun`): those finish and keep their results, as a
thread task does; the others never begin, wherever Dask sends them. One lock per worker
process makes the answer and the begin exclusive: an attempt either began before the
question or never will.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

__all__ = ["call", "call_once", "stop_unbegun"]

#: a worker logs each attempt's key here as it begins: the client hears it (a rate limit's
#: window counts from then), and when a worker dies, an attempt that had not begun there
#: was only queued on it and is sent again (see ``DaskBackend._done``)
STARTED_TOPIC = "layerflow-started"
METRICS_TOPIC = "layerflow-metrics"
#: what is kept of a Dask attempt's output: it travels through the Dask scheduler's event
#: log (which keeps many thousand events), so less than a local task's megabyte
OUTPUT_LIMIT = 64 * 1024

_GATE = threading.Lock()
#: attempts running here; attempts that ended here, newest last; attempts told not to begin
#: (the last two bounded: an old key is long settled)
_RUNNING: set[str] = set()
_ENDED: OrderedDict[str, None] = OrderedDict()
_STOPPED: OrderedDict[str, None] = OrderedDict()
_KEEP = 20_000


def _remember(keys: OrderedDict[str, None], key: str) -> None:
    keys[key] = None
    if len(keys) > _KEEP:
        keys.popitem(last=False)


def stop_unbegun(keys: list[str]) -> list[str]:
    """Run on each worker when a run stops: the keys among ``keys`` that began here; the
    others will not begin here (their call raises ``Cancelled`` instead)."""
    began = []
    with _GATE:
        for key in keys:
            if key in _RUNNING or key in _ENDED:
                began.append(key)
            else:
                _remember(_STOPPED, key)
    return began


def call(
    key: str,
    payload: bytes,
    slots: tuple[tuple[str | int, int], ...],
    *upstream: Any,
) -> Any:
    """Runs on a Dask worker. ``payload`` is the pickled call (function, arguments): bytes
    to the Dask scheduler, which so never needs the user's modules (only workers unpickle
    it). ``upstream`` are the values of the Dask tasks this one uses (Dask resolves them);
    ``slots`` says where each goes: a keyword (a name) or a position (an int), and an index
    into a list there (a ``map`` task's list), or -1. Numbers the task gives ``lf.record``
    go back through the Dask scheduler's event log (its value may never come back here)."""
    import cloudpickle
    import distributed

    from ..errors import Cancelled, MissingOnWorker
    from ..metrics import CURRENT_BOX
    from ..redirect import capturing

    try:
        fn, args, kwargs = cloudpickle.loads(payload)
    except ImportError as e:  # the task's code is not importable on this worker
        module = getattr(e, "name", None) or str(e)
        raise MissingOnWorker(
            f"task {key!r}: the Dask worker cannot import {module!r}, which the task's code "
            f"needs ({e}). Make it importable where the workers run: install it there, or "
            f"start them with its folder on PYTHONPATH (PYTHONPATH=/path/to/pipeline dask "
            f"worker ...)",
            module,
        ) from None

    with _GATE:
        if key in _STOPPED:
            raise Cancelled("the run stopped before this task began")
        _RUNNING.add(key)
    worker = distributed.get_worker()
    worker.log_event(STARTED_TOPIC, key)
    box: dict[str, float] = {}
    reset = CURRENT_BOX.set(box)
    t0 = time.perf_counter()
    try:
        with capturing(OUTPUT_LIMIT) as output:  # what it prints: back with its numbers
            return _call_with(fn, args, kwargs, slots, upstream)
    finally:
        with _GATE:
            _RUNNING.discard(key)
            _remember(_ENDED, key)
        CURRENT_BOX.reset(reset)
        # the attempt's own time (what the client sees also counts Dask's queue)
        seconds = time.perf_counter() - t0
        message = {"key": key, "metrics": box, "seconds": seconds}
        if output.result() is not None:
            message["output"] = output.result()
        worker.log_event(METRICS_TOPIC, message)


def call_once(
    key: str,
    payload: bytes,
    slots: tuple[tuple[str | int, int], ...],
    *upstream: Any,
) -> Any:
    """:func:`call`, on a cluster that runs a task again on another worker when its worker
    dies (``allowed-failures`` above 0, a cluster layerflow did not start): an attempt
    whose worker died while running it is not run again behind layerflow's back (a task
    that kills its worker would kill worker after worker); it fails with ``WorkerDied``,
    and the task's own ``retries`` decide. Costs one round trip to the scheduler."""
    import distributed

    from ..errors import WorkerDied

    try:  # (a lambda travels by value: the scheduler need not have layerflow installed)
        died = distributed.get_client().run_on_scheduler(
            lambda dask_scheduler, key: getattr(dask_scheduler.tasks.get(key), "suspicious", 0),
            key=key,
        )
    except Exception:  # cannot ask: run it, as Dask would
        died = 0
    if died:
        name = key.rsplit("-", 1)[0]
        raise WorkerDied(
            f"task {name!r}: the Dask worker running it died, and the cluster sent it to "
            f"another worker ({died} died so far); layerflow runs it again only as its "
            f"retries say",
            None,
        )
    return call(key, payload, slots, *upstream)


def _call_with(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    slots: tuple[tuple[str | int, int], ...],
    upstream: tuple[Any, ...],
) -> Any:
    if not slots:
        return fn(*args, **kwargs)
    positional, named = list(args), dict(kwargs)
    copied: set[str | int] = set()
    for (where, k), value in zip(slots, upstream, strict=True):
        box: Any = positional if isinstance(where, int) else named
        if k < 0:
            box[where] = value
        else:
            if where not in copied:  # the list is the caller's: fill a copy
                box[where] = list(box[where])
                copied.add(where)
            box[where][k] = value
    return fn(*positional, **named)
