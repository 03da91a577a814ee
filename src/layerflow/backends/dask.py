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
from collections.abc import Callable
from typing import Any

from ..errors import LayerflowError
from . import Done
from .process import UnpicklableError, WorkerDied, _find_unpicklable

__all__ = ["DaskBackend", "import_distributed", "INSTALL_HINT"]

INSTALL_HINT = "Backend 'dask' is not available. Install it with: pip install 'layerflow[dask]'"


def import_distributed() -> Any:
    """``distributed``, or a one-line error that says how to install it."""
    try:
        import distributed
    except ImportError:
        raise LayerflowError(INSTALL_HINT) from None
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


def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Runs on a Dask worker (upstream futures in ``args``/``kwargs`` arrive resolved).
    The call is wrapped so that a task's own parameters (``key``, ``priority``, ...) never
    collide with ``Client.submit``'s."""
    return fn(*args, **kwargs)


class _LocalCluster:
    """A Dask scheduler in this process and ``n`` worker processes on 127.0.0.1."""

    def __init__(self, n: int) -> None:
        import dask
        import distributed

        with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
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
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
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

    def __init__(self, *, address: str | None = None, client: Any = None) -> None:
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
        self._killed = distributed.KilledWorker

    def threads(self) -> int:
        """How many tasks the cluster runs at once (its worker threads)."""
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
    ) -> Any:
        """Submit one attempt. ``on_done(ok, value, seconds, future)`` is called when it
        ends: with the value itself when ``fetch``, else with the future (the value stays
        on the cluster)."""
        key = f"{name}-{uuid.uuid4().hex[:8]}"
        t0 = time.perf_counter()
        _SUBMITTING.local.active = True
        try:
            future = self.client.submit(
                _call, fn, args, kwargs, key=key, priority=priority, retries=0, pure=False
            )
        except Exception as e:
            if "serialize" not in str(e) and "pickle" not in str(e):
                raise
            raise UnpicklableError(
                f"task {name!r} cannot be sent to the Dask cluster: "
                f"{_find_unpicklable(fn, args, kwargs)}"
            ) from None
        finally:
            _SUBMITTING.local.active = False

        def done(fut: Any) -> None:
            seconds = time.perf_counter() - t0
            status = fut.status
            if status == "cancelled":
                return  # cancelled by layerflow (timeout, fail-fast, Ctrl-C): reported
            if status == "finished":
                if not fetch:
                    on_done(True, fut, seconds, fut)
                    return
                try:
                    value = fut.result()
                except BaseException as e:  # lost, or cannot be unpickled here
                    on_done(False, e, seconds)
                    return
                on_done(True, value, seconds, fut)
                return
            try:
                error = fut.exception()
            except BaseException as e:  # the client lost the cluster
                error = e
            on_done(False, self._explain(name, error), seconds)

        future.add_done_callback(done)
        return future

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

    def gather(self, values: list[Any]) -> list[Any]:
        """Bring values that stayed on the cluster here, in one round trip."""
        return self.client.gather(values, errors="raise")

    def cancel(self, handle: Any) -> None:
        # asynchronous: cancelling is a round trip to the scheduler, and the caller holds
        # the run's lock
        self.client.loop.add_callback(self.client._cancel, [handle])

    def close(self) -> None:
        if self.own_client:
            with contextlib.suppress(Exception):
                self.client.close(timeout=10)
        if self.local is not None:
            self.local.close()
