"""Backends: the pools tasks run on, behind one small interface, looked up by name.

``thread`` is the engine's own: its workers are layerflow's threads, which call the
scheduler's transitions directly (``scheduler/workers.py``), because handing each task to a
pool and each completion back costs two thread hand-offs (20-100 us) per task. Every other
backend adapts a pool layerflow does not drive itself to :class:`Backend`, and reports each
attempt's end through one callback that the scheduler turns into the same transition:
``process``, ``async``, ``dask``, and ``sequential``, the synchronous executor that
``mode="sequential"`` runs plain functions on (the calling thread makes the queued calls:
``caller.py``; it is a mode's pool, not a ``backend=`` a run accepts).

``submit(name, fn, args, kwargs, on_done, *, priority=0, fetch=True, tag=None) -> handle``
    Start ``fn(*args, **kwargs)``; later call ``on_done(ok, value_or_error, seconds, ref=None,
    metrics=None, cpu=None)`` exactly once, from any thread, unless the attempt was cancelled
    (``ref``: where the value stays, for a cluster; ``metrics``: what the task gave
    ``lf.record``; ``cpu``: its CPU seconds, when the backend measures them).
    ``priority``, ``fetch`` and ``tag`` are hints a backend may ignore; ``began`` (given to a
    backend that ``begins_late``) is called with the ``perf_counter`` time at which the
    call really began.
``cancel(handle)``
    Stop that attempt (cancel the coroutine, kill the worker process); its ``on_done`` may
    or may not still be called, and the scheduler ignores it.
``close()``
    Release the pool at the end of the run.
``capacity(limit)``, ``prepare(count)``
    How many attempts it takes at once under the run's bound (``limit``, None for none;
    None back: no bound of its own), and a chance to start ``count`` workers before the
    first task arrives.

What a backend can do is asked of it, never guessed from its name (the class attributes
and methods of :class:`Backend`, with the defaults most pools have):

``begins_late``
    Its calls begin a while after submission (a worker process's cold start, a cluster's
    queue) and it reports when through ``began``: rate windows count from then.
``times_from_begin``
    A task's timeout counts from that report too (a backstop covers a worker that never
    begins). Otherwise a task with a timeout waits for one of ``slots()`` to be free, so
    that its deadline never counts a queue the scheduler cannot see.
``interrupts``
    ``cancel`` stops a running call (a coroutine, a worker process). Where it cannot, a run
    that stops calls ``spare(handle)``: a call that has not begun never will, one that
    began runs to its end and its result is kept.
``keeps_values`` and ``values(...)``
    Values may stay where they ran: the backend gives the run a record of which do, and of
    the futures that stand for them (``dask_values.ClusterValues``); the scheduler asks it
    whether to fetch a value, passes its futures downstream, and collects at the end.

Backends are imported only when a run uses them (:func:`open_backend`); a missing optional
one says how to install it. Policy (what starts when, retries, timeouts, limits) stays in the
scheduler.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol

from ..errors import InvalidOptionError, LayerflowError, did_you_mean
from ..faults import log_fault

__all__ = [
    "Backend",
    "Done",
    "BACKENDS",
    "LONG_TASK",
    "SIGNAL_POLL",
    "install_command",
    "open_backend",
    "sync_call",
]

Done = Callable[..., None]

#: a task longer than this has its CPU time read (two clock reads, about 1 us; the GIL note
#: of ``RunResult.cpu_note`` needs it) and reported as ``cpu``; a short one never pays for it
LONG_TASK = 0.005

#: the longest the run's own thread waits at once. The kernel hands a process's SIGINT to any
#: of its threads; taken by another one, Python only flags it for the main thread, which an
#: untimed wait never looks at: the Ctrl-C would be noticed only at the run's end.
SIGNAL_POLL = 0.2


class Backend(Protocol):
    """What the scheduler needs from a pool it does not drive itself, and what that pool
    can do (see the module docstring). A backend subclasses it for the defaults."""

    begins_late: ClassVar[bool] = False
    times_from_begin: ClassVar[bool] = False
    interrupts: ClassVar[bool] = True
    keeps_values: ClassVar[bool] = False

    def submit(
        self,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        on_done: Done,
        *,
        priority: int = 0,
        fetch: bool = True,
        tag: Any = None,
    ) -> Any: ...

    def cancel(self, handle: Any) -> None: ...

    def close(self) -> None: ...

    def capacity(self, limit: int | None) -> int | None: ...

    def prepare(self, count: int) -> None: ...

    def slots(self) -> int | None:
        """How many calls run at once, for a task with a timeout to wait for a free one;
        None: a submitted call begins at once (or is timed from when it begins)."""
        return None

    def spare(self, handle: Any) -> None:
        """The run stops and ``cancel`` cannot stop a running call (``interrupts`` is
        False): keep that call from beginning if it has not begun."""

    def values(self, *args: Any, **kwargs: Any) -> Any:
        """The record of the values that stay where they ran (``keeps_values``)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no values")


def child_pythonpath() -> str:
    """``sys.path`` as a child process's PYTHONPATH, so that it imports the user's modules by
    the same paths: ``''`` (the current folder, under ``python -c`` or a REPL) as that folder."""
    return os.pathsep.join(p or os.getcwd() for p in sys.path)


def install_command(extra: str) -> str:
    """How to install layerflow's optional ``extra``: from the clone that layerflow runs
    from (an editable install), or else from the package index."""
    root = Path(__file__).resolve().parents[3]  # src/layerflow/backends/ -> the clone
    if (root / "pyproject.toml").is_file() and (root / "src" / "layerflow").is_dir():
        where = "." if Path.cwd().resolve() == root else str(root)
        return f"pip install -e '{where}[{extra}]'"
    return f"pip install 'layerflow[{extra}]'"


#: name -> ("module:Class", the optional extra it needs); thread is the engine's own;
#: sequential is what ``mode="sequential"`` runs plain functions on (the caller's thread)
_REGISTRY: dict[str, tuple[str | None, str | None]] = {
    "thread": (None, None),
    "process": ("layerflow.backends.process:ProcessBackend", None),
    "async": ("layerflow.backends.aio:AsyncBackend", None),
    "dask": ("layerflow.backends.dask:DaskBackend", "dask"),
    "sequential": ("layerflow.backends.caller:CallerThread", None),
}

#: the backend names a run accepts (``backend=``), in the order the docs list them
BACKENDS: tuple[str, ...] = ("thread", "process", "async", "dask")


def open_backend(
    name: str,
    *,
    loop: Any = None,
    context: Any = None,
    address: str | None = None,
    client: Any = None,
    on_fault: Callable[[str, BaseException], None] | None = None,
) -> Backend:
    """Start backend ``name`` for one run; its module is imported only now. ``on_fault``
    hears of an exception that escapes one of the backend's own threads (``faults.py``)."""
    if name not in _REGISTRY:
        raise InvalidOptionError(
            f"backend must be one of {', '.join(_REGISTRY)}, got {name!r}."
            f"{did_you_mean(str(name), _REGISTRY)}"
        )
    target, install = _REGISTRY[name]
    if target is None:
        raise InvalidOptionError(f"backend {name!r} is the engine's own; it is not opened")
    module, _, cls = target.partition(":")
    try:
        backend_class = getattr(importlib.import_module(module), cls)
    except ImportError as e:
        how = f" Install it with: {install_command(install)}" if install else ""
        raise LayerflowError(f"Backend {name!r} is not available ({e}).{how}") from None
    return backend_class(
        loop=loop, context=context, address=address, client=client, on_fault=on_fault or log_fault
    )


def sync_call(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A coroutine function run to completion in a worker thread (``executor="thread"``)."""
    import asyncio

    def call(*args: Any, **kwargs: Any) -> Any:
        return asyncio.run(fn(*args, **kwargs))

    return call
