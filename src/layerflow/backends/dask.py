"""Tasks on a Dask cluster, through ``distributed.Client``.

The scheduler stays layerflow's: a task is submitted to Dask when layerflow starts it, as
one Dask task whose key is ``name-attempt-xxxxxx``. Upstream values that live on the cluster
are passed as Dask futures, so data moves from worker to worker; a value is brought back to
this process only when something here needs it (a task on another pool, a ``map`` over it,
the store, or the caller: those last ones are gathered together when the run ends).

Without an address or client, a local cluster is started on 127.0.0.1: the Dask scheduler
in this process and one worker process per core started as fresh interpreters (as the
process backend does), so the user's script is never re-imported and needs no main guard.
Its scheduler does not retry tasks whose worker died (``allowed-failures: 0``): layerflow's
own ``retries`` apply instead.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from ..errors import Cancelled, LayerflowError
from ..faults import Fault, guarded, injected, log_fault
from . import Backend, Done, install_command
from .dask_attempts import (
    LISTENING,
    ON_BEGIN,
    SUBMITTING,
    Attempt,
    explained,
    heard_began,
    split_futures,
    unpicklable,
)
from .dask_cluster import connect, warn_if_dask_retries
from .dask_values import ClusterValues
from .dask_worker import METRICS_TOPIC, STARTED_TOPIC, stop_unbegun
from .dask_worker import call as _call
from .dask_worker import call_once as _call_once
from .process import UnpicklableError

__all__ = ["DaskBackend", "import_distributed"]


def import_distributed() -> Any:
    """``distributed``, or a one-line error that says how to install it."""
    try:
        import distributed
    except ImportError:
        raise LayerflowError(
            f"Backend 'dask' is not available. Install it with: {install_command('dask')}"
        ) from None
    return distributed


class DaskBackend(Backend):
    """Runs tasks on a Dask cluster; ``cancel`` cancels the Dask future. A call begins when
    a worker takes it, and Dask cannot interrupt it once begun; values stay on the cluster
    until they are needed here.

    ``client``: an existing ``distributed.Client`` (left open at the end); ``address``: a
    scheduler to connect to (``tcp://host:8786``); neither: a local cluster for this run.
    """

    begins_late = True
    interrupts = False
    keeps_values = True

    def __init__(
        self,
        *,
        address: str | None = None,
        client: Any = None,
        on_fault: Fault = log_fault,
        **_: Any,
    ) -> None:
        distributed = import_distributed()
        self.own_client = client is None
        self.client, self.local = connect(distributed, address, client)
        self._on_fault = on_fault
        # a cluster that reruns a dead worker's tasks: each task checks before it begins
        self._reruns = self.local is None and warn_if_dask_retries(self.client) > 0
        self._killed = distributed.KilledWorker
        self._future = distributed.Future
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending: list[Attempt] = []
        self._tags: dict[str, Any] = {}  # attempt key -> the submitter's tag
        self._closed = False
        # values on their way here (see _arrived), and attempts a stop asks about (stop)
        self._arrivals: list[tuple[Attempt, Any, float]] = []
        self._fetching = False
        self._direct: bool | None = True
        self._stops: list[Attempt] = []
        threading.Thread(
            target=guarded("dask submit", self._send, on_fault),
            name="layerflow-dask-submit",
            daemon=True,
        ).start()

    def capacity(self, limit: int | None) -> int | None:
        """Ready tasks go to Dask at once (its queue hides each completion's round trip);
        only the run's bound limits them."""
        return limit

    def prepare(self, count: int) -> None:
        """The cluster is up already."""

    def values(
        self,
        on_dask: Sequence[bool],
        succs: Sequence[Sequence[int]],
        map_sources: set[int],
        *,
        needed_here: bool,
        keep: Sequence[int] | None,
    ) -> ClusterValues:
        """The record of which of a run's values stay on this cluster (see
        ``dask_values.py``)."""
        return ClusterValues(self, on_dask, succs, map_sources, needed_here=needed_here, keep=keep)

    def slots(self) -> int:
        """How many tasks the cluster runs at once (its worker threads, now): a task with
        a timeout waits here for one, so that its deadline does not count Dask's queue."""
        return max(1, sum(self.client.nthreads().values()))

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
        began: Callable[[float], None] | None = None,
    ) -> Attempt:
        """Queue one attempt; ``on_done(ok, value, seconds, future)`` is called when it
        ends: with the value itself when ``fetch`` (brought here before its end is
        reported, so that a worker's death cannot lose it), else with the future (the value
        stays on the cluster). Attempts queued together reach Dask as one graph. ``tag`` is
        what :meth:`metrics` names the attempt by; ``began(when)`` is told when a worker
        begins the call (after its wait in Dask's queue)."""
        attempt = Attempt(name, fn, args, kwargs, on_done, priority, fetch)
        attempt.tag = tag
        if began is not None:
            self._listen()
            attempt.began = began
            ON_BEGIN[attempt.key] = (began, self._on_fault)
        with self._lock:
            self._tags[attempt.key] = tag
            self._pending.append(attempt)
            if len(self._pending) == 1:
                self._wake.notify()
        return attempt

    def _listen(self) -> None:
        """Hear each attempt's begin from the workers (once per client; before the first
        graph that needs it, on the same stream, so no begin is missed)."""
        client_id = str(self.client.id)
        if client_id not in LISTENING:
            LISTENING.add(client_id)
            self.client.subscribe_topic(STARTED_TOPIC, heard_began)

    def _send(self) -> None:
        """The submitting thread: each batch of queued attempts becomes one graph per
        priority, one message to the scheduler (one per task would cost far more)."""
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                batch, self._pending = self._pending, []
            by_priority: dict[int, list[Attempt]] = {}
            for a in batch:
                if not a.cancelled:
                    by_priority.setdefault(a.priority, []).append(a)
            for priority, group in by_priority.items():
                try:
                    self._send_group(group, priority)
                except BaseException as e:  # whatever it was, these attempts end with it
                    for a in group:
                        if a.future is None:
                            a.fail(e)

    def _send_group(self, group: list[Attempt], priority: int) -> None:
        try:
            from dask.task_spec import Task, TaskRef
        except ImportError:  # dask before the task spec was public
            from dask._task_spec import Task, TaskRef

        import cloudpickle

        dsk = {}
        sendable = []
        for a in group:
            args, kwargs, slots, refs = split_futures(a.args, a.kwargs, self._future)
            try:  # opaque to the scheduler: only workers unpickle the user's code
                payload = cloudpickle.dumps((a.fn, args, kwargs))
            except Exception:
                a.fail(unpicklable(a))
                continue
            call = _call_once if self._reruns else _call
            dsk[a.key] = Task(a.key, call, a.key, payload, slots, *(TaskRef(r.key) for r in refs))
            sendable.append(a)
        if not sendable:
            return
        group = sendable
        try:
            futures = self._graph(dsk, [a.key for a in group], priority)
        except UnpicklableError:
            if len(group) == 1:
                group[0].fail(unpicklable(group[0]))
            else:  # one at a time, to fail only the attempts that cannot be sent
                for a in group:
                    self._send_group([a], priority)
            return
        except Exception as e:  # the cluster is gone
            for a in group:
                a.fail(e)
            return
        for a, future in zip(group, futures, strict=True):
            with self._lock:  # (a stop reads it under the lock: see stop)
                a.future = future
            if a.cancelled:
                self.cancel(a)
            future.add_done_callback(partial(self._done_reported, a))

    def _graph(self, dsk: dict[str, Any], keys: list[str], priority: int) -> list[Any]:
        SUBMITTING.local.active = True
        try:
            return self.client.get(dsk, keys, sync=False, priority=priority)
        except Exception as e:
            if "serialize" in str(e) or "pickle" in str(e):
                raise UnpicklableError(str(e)) from None
            raise
        finally:
            SUBMITTING.local.active = False

    def _done_reported(self, attempt: Attempt, future: Any) -> None:
        """``_done``, whose own failure is a fault of the run (Dask would only log it)."""
        try:
            injected("dask callback")
            self._done(attempt, future)
        except BaseException as e:
            self._on_fault("dask callback", e)

    def _done(self, attempt: Attempt, future: Any) -> None:
        """A Dask future ended (on Dask's callback thread)."""
        seconds = time.perf_counter() - attempt.t0
        status = future.status
        on_done = attempt.on_done
        told = ON_BEGIN.pop(attempt.key, None)  # (a begin not heard of by now never will be)
        if attempt.cancelled:
            return  # cancelled by layerflow (timeout, fail-fast, Ctrl-C): reported
        if status == "cancelled":  # not by us: the client lost the cluster, or a restart
            on_done(
                False,
                LayerflowError(
                    f"task {attempt.name!r} was cancelled on the Dask cluster, not by "
                    "layerflow: the client lost its scheduler, or the cluster was restarted"
                ),
                seconds,
            )
            return
        if status == "finished":
            if not attempt.fetch:
                on_done(True, future, seconds, future)
            else:
                self._arrived(attempt, future, seconds)
            return
        try:
            error = future.exception()
        except BaseException as e:  # the client lost the cluster
            error = e
        if isinstance(error, self._killed) and not attempt.requeued and not self._began(attempt):
            # only queued on the worker that died (allowed-failures: 0 fails every task
            # the worker held): not this task's fault, so it is sent again, once
            if told is not None:
                ON_BEGIN[attempt.key] = told
            self._resend(attempt)
            return
        on_done(False, explained(attempt.name, error, self._killed), seconds)

    def _arrived(self, attempt: Attempt, future: Any, seconds: float) -> None:
        """A finished attempt's value is brought here before its end is reported: a
        value reported cannot then be lost with its worker (Dask would compute it again,
        behind layerflow's back, or fail it if that worker died too). Values that finish
        together come in one round trip, on the client's event loop."""
        with self._lock:
            self._arrivals.append((attempt, future, seconds))
            if self._fetching:
                return
            self._fetching = True
        self.client.loop.add_callback(self._fetch_arrivals)

    async def _fetch_arrivals(self) -> None:
        try:
            injected("dask fetch")
            while True:
                with self._lock:
                    batch, self._arrivals = self._arrivals, []
                    if not batch:
                        self._fetching = False
                        return
                await self._fetch(batch)
        except BaseException as e:
            with self._lock:
                self._fetching = False
            self._on_fault("dask fetch", e)

    async def _fetch(self, batch: list[tuple[Attempt, Any, float]]) -> None:
        gather = self.client.gather
        futures = [f for _, f, _ in batch]
        try:  # straight from the workers (less work for the scheduler), else through it
            values = await gather(futures, direct=self._direct, asynchronous=True)
            results = [(True, v) for v in values]
        except Exception:  # cannot reach the workers from here, or a value is lost
            self._direct = None
            results = []
            for _, future, _ in batch:
                try:
                    results.append((True, (await gather([future], asynchronous=True))[0]))
                except Exception as e:  # lost, or cannot be unpickled here
                    results.append((False, e))
        for (attempt, future, seconds), (ok, value) in zip(batch, results, strict=True):
            if attempt.cancelled:
                continue
            if ok:
                attempt.on_done(True, value, seconds, future)
            else:
                attempt.on_done(False, value, seconds)

    def spare(self, handle: Attempt) -> None:
        """The run stops (fail-fast): an attempt that has not begun on a worker never will
        (it ends with ``Cancelled``); one that began finishes and reports its result, as a
        thread task does, since Dask cannot interrupt it (cancelling it would only throw
        away a result it computes anyway). The workers are asked on the client's loop."""
        with self._lock:
            self._stops.append(handle)
            if len(self._stops) > 1:
                return
        self.client.loop.add_callback(self._stop_unbegun)

    async def _stop_unbegun(self) -> None:
        try:
            with self._lock:
                stops, self._stops = self._stops, []
                unsent = {id(a) for a in stops if a.future is None}
                for a in stops:
                    if id(a) in unsent:  # not sent yet: it never will be (see _send)
                        a.cancelled = True
                sent = [a for a in stops if id(a) not in unsent]
            began: set[str] = set()
            if sent:
                try:
                    answers = await self.client.run(
                        stop_unbegun, [a.key for a in sent], on_error="return", asynchronous=True
                    )
                except Exception:  # cannot ask: each ends as the cluster says
                    answers = {"?": RuntimeError()}
                for answer in answers.values():
                    if isinstance(answer, BaseException):  # a worker cannot say: let all end
                        began.update(a.key for a in sent)
                    else:
                        began.update(answer)
            for a in stops:
                if a.key in began or (a.cancelled and id(a) not in unsent):
                    continue  # it runs on (or was given up on meanwhile: reported)
                self.cancel(a)
                error = Cancelled("the run stopped before this task began on a Dask worker")
                a.on_done(False, error, time.perf_counter() - a.t0)
        except BaseException as e:
            self._on_fault("dask callback", e)

    def _began(self, attempt: Attempt) -> bool:
        """Did a worker begin this attempt? (Its key is in the scheduler's event log.)"""
        try:
            events = self.client.get_events(STARTED_TOPIC)
        except Exception:  # cannot tell: as Dask says, it failed
            return True
        return any(msg == attempt.key for _, msg in events)

    def _resend(self, attempt: Attempt) -> None:
        """Queue an attempt again under a new key (its lf.record numbers under that key)."""
        with self._lock:
            if self._closed or attempt.cancelled:
                return
            self._tags.pop(attempt.key, None)
            told = ON_BEGIN.pop(attempt.key, None)
            attempt.key = f"{attempt.name}-{uuid.uuid4().hex}"
            self._tags[attempt.key] = attempt.tag
            if told is not None:
                ON_BEGIN[attempt.key] = told
            attempt.future = None
            attempt.requeued = True
            self._pending.append(attempt)
            if len(self._pending) == 1:
                self._wake.notify()

    def metrics(self) -> list[tuple[Any, dict[str, float], float | None, Any]]:
        """(tag, lf.record's numbers, seconds it ran on its worker, what it printed as
        ``capture.Captured.result`` gives it) of every attempt of this run that ended on a
        worker, read from the Dask scheduler's event log (a worker logs them before its
        task ends)."""
        if not self._tags:
            return []
        events = self.client.get_events(METRICS_TOPIC)
        out = []
        for _, msg in events:
            key = msg.get("key") if isinstance(msg, dict) else None
            if key in self._tags:
                seconds = msg.get("seconds")
                output = msg.get("output")
                out.append((self._tags[key], msg.get("metrics") or {}, seconds, output))
        return out

    def gather(self, values: list[Any]) -> list[Any]:
        """Bring values that stayed on the cluster here, in one round trip."""
        return self.client.gather(values, errors="raise")

    def cancel(self, handle: Attempt) -> None:
        """Give up on an attempt (a timeout, Ctrl-C): it ends here now, whatever the
        cluster does with it."""
        handle.cancelled = True
        ON_BEGIN.pop(handle.key, None)
        with self._lock:
            self._tags.pop(handle.key, None)  # its lf.record numbers do not count
        if handle.future is not None:
            # asynchronous: cancelling is a round trip to the scheduler, and the caller
            # holds the run's lock
            self.client.loop.add_callback(self.client._cancel, [handle.future])

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._wake.notify()
        if self.own_client:
            with contextlib.suppress(Exception):
                self.client.close(timeout=10)
        if self.local is not None:
            self.local.close()
