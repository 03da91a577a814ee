"""A Dask attempt as the client side sees it: what is sent (its futures taken out of the
call), what a worker's "began" event tells, and the log filter that keeps distributed quiet
about a call layerflow reports itself."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from ..faults import Fault
from . import Done
from .process import UnpicklableError, WorkerDied, find_unpicklable

__all__ = [
    "LISTENING",
    "ON_BEGIN",
    "SUBMITTING",
    "Attempt",
    "explained",
    "heard_began",
    "split_futures",
    "unpicklable",
]


class Submitting(logging.Filter):
    """Drops distributed's own log record of a call it could not pickle while layerflow
    is submitting it: the task fails with an ``UnpicklableError`` that says the same."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.local, "active", False)


SUBMITTING = Submitting()
logging.getLogger("distributed.protocol.pickle").addFilter(SUBMITTING)


def split_futures(
    args: tuple[Any, ...], kwargs: dict[str, Any], future: type
) -> tuple[tuple[Any, ...], dict[str, Any], tuple[tuple[str | int, int], ...], list[Any]]:
    """Take the Dask futures out of a call: (args, kwargs, slots, futures) for ``_call``.
    Only top-level arguments and lists of futures (a ``map`` task's value) are looked at:
    that is where the scheduler puts upstream values. A future's place holds None (the
    value arrives as one of ``_call``'s own arguments), so it is not sent twice."""
    slots: list[tuple[str | int, int]] = []
    refs: list[Any] = []
    places: list[tuple[str | int, Any]] = [*enumerate(args), *kwargs.items()]
    emptied: dict[str | int, Any] = {}
    for where, value in places:
        if isinstance(value, future):
            slots.append((where, -1))
            refs.append(value)
            emptied[where] = None
        elif isinstance(value, list) and value and all(isinstance(v, future) for v in value):
            for k, v in enumerate(value):
                slots.append((where, k))
                refs.append(v)
            emptied[where] = [None] * len(value)
    if emptied:
        args = tuple(emptied.get(k, a) for k, a in enumerate(args))
        kwargs = {k: emptied.get(k, v) for k, v in kwargs.items()}
    return args, kwargs, tuple(slots), refs


#: attempt key -> what to tell when its worker says the call began (a rate limit's window
#: counts from then, see ``DaskBackend.submit``); ids of the clients that listen for it
ON_BEGIN: dict[str, tuple[Callable[[float], None], Fault]] = {}
LISTENING: set[str] = set()


def heard_began(event: tuple[float, Any]) -> None:
    """On the client's event loop: a worker began an attempt. Heard a few milliseconds
    after it began, which only makes a rate limit's window stricter."""
    told = ON_BEGIN.pop(event[1], None) if isinstance(event[1], str) else None
    if told is not None:
        began, on_fault = told
        try:
            began(time.perf_counter())
        except BaseException as e:
            on_fault("dask callback", e)


class Attempt:
    """One attempt of a task on the cluster: what to send, and its Dask future once sent."""

    __slots__ = (
        *("name", "fn", "args", "kwargs", "on_done", "priority", "fetch", "key", "t0"),
        *("future", "cancelled", "tag", "requeued", "began"),
    )

    def __init__(
        self,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        on_done: Done,
        priority: int,
        fetch: bool,
    ) -> None:
        self.name, self.fn, self.args, self.kwargs = name, fn, args, kwargs
        self.on_done, self.priority, self.fetch = on_done, priority, fetch
        self.key = f"{name}-{uuid.uuid4().hex}"
        self.t0 = time.perf_counter()
        self.future: Any = None
        self.cancelled = False
        self.tag: Any = None
        self.requeued = False  # sent again once after a worker died before it began
        self.began: Callable[[float], None] | None = None  # told when its call begins

    def fail(self, error: BaseException) -> None:
        """It could not be sent: it ends now, with ``error``."""
        if not self.cancelled:
            self.on_done(False, error, time.perf_counter() - self.t0)


def unpicklable(a: Attempt) -> UnpicklableError:
    return UnpicklableError(
        f"task {a.name!r} cannot be sent to the Dask cluster: "
        f"{find_unpicklable(a.fn, a.args, a.kwargs)}"
    )


def explained(name: str, error: BaseException, killed: type[BaseException]) -> BaseException:
    """A worker that died (Dask's ``killed``: ``KilledWorker``) becomes ``WorkerDied``
    naming the worker and Dask's reason; any other error stays itself."""
    if isinstance(error, killed):
        worker = getattr(getattr(error, "last_worker", None), "address", "?")
        died = WorkerDied(
            f"task {name!r}: the Dask worker {worker} died while running it "
            f"(KilledWorker: {error})",
            None,
        )
        died.__cause__ = error
        return died
    return error
