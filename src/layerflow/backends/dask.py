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
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from ..errors import LayerflowError
from ..faults import Fault, guarded, log_fault
from . import Done, child_pythonpath, install_command
from .dask_values import ClusterValues
from .process import UnpicklableError, WorkerDied, find_unpicklable

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


class _Submitting(logging.Filter):
    """Drops distributed's own log record of a call it could not pickle while layerflow
    is submitting it: the task fails with an ``UnpicklableError`` that says the same."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.local, "active", False)


_SUBMITTING = _Submitting()
logging.getLogger("distributed.protocol.pickle").addFilter(_SUBMITTING)


_METRICS_TOPIC = "layerflow-metrics"
#: a worker logs each attempt's key here as it begins: when a worker dies, an attempt that
#: had not begun there was only queued on it and is sent again (see ``DaskBackend._done``)
_STARTED_TOPIC = "layerflow-started"


#: schedulers already looked at (one warning per scheduler and process)
_CHECKED: set[str] = set()


def _warn_if_dask_retries(client: Any) -> None:
    """A cluster layerflow did not start may run a task again on another worker when its
    worker dies (Dask's ``allowed-failures``, 3 by default), behind layerflow's back: a
    task that kills its worker then kills several, and its values with them. Said once."""
    address = str(getattr(client.scheduler, "address", "?"))
    if address in _CHECKED:
        return
    _CHECKED.add(address)
    try:  # (a lambda travels by value: the scheduler need not have layerflow installed)
        allowed = client.run_on_scheduler(
            lambda dask_scheduler: int(getattr(dask_scheduler, "allowed_failures", 0))
        )
    except Exception:  # cannot ask: nothing to say
        return
    if allowed:
        logging.getLogger("layerflow").warning(
            "the Dask scheduler at %s runs a task again on another worker when its worker "
            "dies (allowed-failures: %d), before layerflow hears of it: a task that kills "
            "its worker kills up to %d, and the values kept on them are lost. Leave retries "
            "to layerflow: start the scheduler with DASK_DISTRIBUTED__SCHEDULER__ALLOWED_"
            "FAILURES=0 (layerflow's own local cluster does)",
            address,
            allowed,
            allowed + 1,
        )


def _call(
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

    from ..errors import MissingOnWorker
    from ..metrics import CURRENT_BOX

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

    worker = distributed.get_worker()
    worker.log_event(_STARTED_TOPIC, key)
    box: dict[str, float] = {}
    reset = CURRENT_BOX.set(box)
    t0 = time.perf_counter()
    try:
        return _call_with(fn, args, kwargs, slots, upstream)
    finally:
        CURRENT_BOX.reset(reset)
        # the attempt's own time (what the client sees also counts Dask's queue)
        seconds = time.perf_counter() - t0
        worker.log_event(_METRICS_TOPIC, {"key": key, "metrics": box, "seconds": seconds})


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


def _split(
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


class _Attempt:
    """One attempt of a task on the cluster: what to send, and its Dask future once sent."""

    __slots__ = (
        *("name", "fn", "args", "kwargs", "on_done", "priority", "fetch", "key", "t0"),
        *("future", "cancelled", "tag", "requeued"),
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

    def fail(self, error: BaseException) -> None:
        """It could not be sent: it ends now, with ``error``."""
        if not self.cancelled:
            self.on_done(False, error, time.perf_counter() - self.t0)


def _unpicklable(a: _Attempt) -> UnpicklableError:
    return UnpicklableError(
        f"task {a.name!r} cannot be sent to the Dask cluster: "
        f"{find_unpicklable(a.fn, a.args, a.kwargs)}"
    )


class _LocalCluster:
    """A Dask scheduler in this process and ``n`` worker processes on 127.0.0.1."""

    def __init__(self, n: int) -> None:
        import dask
        import distributed

        settings = {
            "distributed.scheduler.allowed-failures": 0,  # layerflow's retries decide
            # with every worker gone, a task fails after a minute rather than waits forever
            "distributed.scheduler.no-workers-timeout": "60s",
        }
        with dask.config.set(settings):
            self.cluster = distributed.LocalCluster(
                n_workers=0,
                processes=True,
                host="127.0.0.1",
                scheduler_port=0,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            )
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (kept open for the cluster's life)
        env = dict(os.environ)
        # the workers import the user's modules by the same paths as this process
        env["PYTHONPATH"] = child_pythonpath()
        env.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "distributed.cli.dask_worker",
                self.cluster.scheduler_address,
                "--nworkers",
                str(n),
                "--nthreads",
                "1",
                "--host",
                "127.0.0.1",
                "--no-dashboard",
                "--death-timeout",
                "30",  # a worker whose run was killed does not outlive it by long
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
            start_new_session=True,  # Ctrl-C is this process's to handle
        )
        self.address = self.cluster.scheduler_address

    def failure(self) -> str:
        """The end of the workers' log, for an error message."""
        self.log.seek(0)
        tail = self.log.read().decode(errors="replace").strip().splitlines()[-5:]
        return "\n".join(tail)

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(self.process.pid, 9)
            self.process.wait()
        with contextlib.suppress(Exception):
            self.cluster.close(timeout=10)
        self.log.close()


class DaskBackend:
    """Runs tasks on a Dask cluster; ``cancel`` cancels the Dask future.

    ``client``: an existing ``distributed.Client`` (left open at the end); ``address``: a
    scheduler to connect to (``tcp://host:8786``); neither: a local cluster for this run.
    """

    def __init__(
        self,
        *,
        address: str | None = None,
        client: Any = None,
        on_fault: Fault = log_fault,
        **_: Any,
    ) -> None:
        distributed = import_distributed()
        self.local: _LocalCluster | None = None
        self.own_client = client is None
        if client is not None:
            if not isinstance(client, distributed.Client):
                raise LayerflowError(
                    f"client= must be a distributed.Client, got {type(client).__name__}"
                )
            self.client = client
        elif address is not None:
            try:
                self.client = distributed.Client(address, timeout=30)
            except (OSError, TimeoutError) as e:
                raise LayerflowError(
                    f"cannot connect to the Dask scheduler at {address}: {e}. Is `dask "
                    f"scheduler` running there, and is the address tcp://HOST:PORT?"
                ) from None
        else:
            n = os.cpu_count() or 1
            self.local = _LocalCluster(n)
            try:
                self.client = distributed.Client(self.local.address, timeout=30)
                self.client.wait_for_workers(n, timeout=120)
            except Exception as e:
                log = self.local.failure()
                self.local.close()
                raise LayerflowError(
                    f"could not start a local Dask cluster: {e}" + (f"\n{log}" if log else "")
                ) from None
            except BaseException:  # Ctrl-C while it starts: no cluster left behind
                self.local.close()
                raise
        self._on_fault = on_fault
        if self.local is None:
            _warn_if_dask_retries(self.client)
        self._killed = distributed.KilledWorker
        self._future = distributed.Future
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending: list[_Attempt] = []
        self._tags: dict[str, Any] = {}  # attempt key -> the submitter's tag
        self._closed = False
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

    def threads(self) -> int:
        """How many tasks the cluster runs at once (its worker threads, now)."""
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
    ) -> _Attempt:
        """Queue one attempt; ``on_done(ok, value, seconds, future)`` is called when it
        ends: with the value itself when ``fetch``, else with the future (the value stays
        on the cluster). Attempts queued together reach Dask as one graph. ``tag`` is what
        :meth:`metrics` names the attempt by."""
        attempt = _Attempt(name, fn, args, kwargs, on_done, priority, fetch)
        attempt.tag = tag
        with self._lock:
            self._tags[attempt.key] = tag
            self._pending.append(attempt)
            if len(self._pending) == 1:
                self._wake.notify()
        return attempt

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
            by_priority: dict[int, list[_Attempt]] = {}
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

    def _send_group(self, group: list[_Attempt], priority: int) -> None:
        try:
            from dask.task_spec import Task, TaskRef
        except ImportError:  # dask before the task spec was public
            from dask._task_spec import Task, TaskRef

        import cloudpickle

        dsk = {}
        sendable = []
        for a in group:
            args, kwargs, slots, refs = _split(a.args, a.kwargs, self._future)
            try:  # opaque to the scheduler: only workers unpickle the user's code
                payload = cloudpickle.dumps((a.fn, args, kwargs))
            except Exception:
                a.fail(_unpicklable(a))
                continue
            dsk[a.key] = Task(a.key, _call, a.key, payload, slots, *(TaskRef(r.key) for r in refs))
            sendable.append(a)
        if not sendable:
            return
        group = sendable
        try:
            futures = self._graph(dsk, [a.key for a in group], priority)
        except UnpicklableError:
            if len(group) == 1:
                group[0].fail(_unpicklable(group[0]))
            else:  # one at a time, to fail only the attempts that cannot be sent
                for a in group:
                    self._send_group([a], priority)
            return
        except Exception as e:  # the cluster is gone
            for a in group:
                a.fail(e)
            return
        for a, future in zip(group, futures, strict=True):
            a.future = future
            if a.cancelled:
                self.cancel(a)
            future.add_done_callback(partial(self._done_reported, a))

    def _graph(self, dsk: dict[str, Any], keys: list[str], priority: int) -> list[Any]:
        _SUBMITTING.local.active = True
        try:
            return self.client.get(dsk, keys, sync=False, priority=priority)
        except Exception as e:
            if "serialize" in str(e) or "pickle" in str(e):
                raise UnpicklableError(str(e)) from None
            raise
        finally:
            _SUBMITTING.local.active = False

    def _done_reported(self, attempt: _Attempt, future: Any) -> None:
        """``_done``, whose own failure is a fault of the run (Dask would only log it)."""
        try:
            self._done(attempt, future)
        except BaseException as e:
            self._on_fault("dask callback", e)

    def _done(self, attempt: _Attempt, future: Any) -> None:
        """A Dask future ended (on Dask's callback thread)."""
        seconds = time.perf_counter() - attempt.t0
        status = future.status
        on_done = attempt.on_done
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
                return
            try:
                value = future.result()
            except BaseException as e:  # lost, or cannot be unpickled here
                on_done(False, e, seconds)
                return
            on_done(True, value, seconds, future)
            return
        try:
            error = future.exception()
        except BaseException as e:  # the client lost the cluster
            error = e
        if isinstance(error, self._killed) and not attempt.requeued and not self._began(attempt):
            # only queued on the worker that died (allowed-failures: 0 fails every task
            # the worker held): not this task's fault, so it is sent again, once
            self._resend(attempt)
            return
        on_done(False, self._explain(attempt.name, error), seconds)

    def _began(self, attempt: _Attempt) -> bool:
        """Did a worker begin this attempt? (Its key is in the scheduler's event log.)"""
        try:
            events = self.client.get_events(_STARTED_TOPIC)
        except Exception:  # cannot tell: as Dask says, it failed
            return True
        return any(msg == attempt.key for _, msg in events)

    def _resend(self, attempt: _Attempt) -> None:
        """Queue an attempt again under a new key (its lf.record numbers under that key)."""
        with self._lock:
            if self._closed or attempt.cancelled:
                return
            self._tags.pop(attempt.key, None)
            attempt.key = f"{attempt.name}-{uuid.uuid4().hex}"
            self._tags[attempt.key] = attempt.tag
            attempt.future = None
            attempt.requeued = True
            self._pending.append(attempt)
            if len(self._pending) == 1:
                self._wake.notify()

    def _explain(self, name: str, error: BaseException) -> BaseException:
        """A worker that died becomes ``WorkerDied`` naming the worker and Dask's reason."""
        if isinstance(error, self._killed):
            worker = getattr(getattr(error, "last_worker", None), "address", "?")
            died = WorkerDied(
                f"task {name!r}: the Dask worker {worker} died while running it "
                f"(KilledWorker: {error})",
                None,
            )
            died.__cause__ = error
            return died
        return error

    def metrics(self) -> list[tuple[Any, dict[str, float], float | None]]:
        """(tag, lf.record's numbers, seconds it ran on its worker) of every attempt of this
        run that ended on a worker, read from the Dask scheduler's event log (a worker logs
        them before its task ends)."""
        if not self._tags:
            return []
        events = self.client.get_events(_METRICS_TOPIC)
        out = []
        for _, msg in events:
            key = msg.get("key") if isinstance(msg, dict) else None
            if key in self._tags:
                seconds = msg.get("seconds")
                out.append((self._tags[key], msg.get("metrics") or {}, seconds))
        return out

    def gather(self, values: list[Any]) -> list[Any]:
        """Bring values that stayed on the cluster here, in one round trip."""
        return self.client.gather(values, errors="raise")

    def cancel(self, handle: _Attempt) -> None:
        handle.cancelled = True
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
