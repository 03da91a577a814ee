"""Tasks in worker processes, one task at a time per process.

Functions, arguments and results cross the boundary with cloudpickle, so lambdas and
closures work. Each worker process has a feeder thread in the parent that pickles the
task, sends it, and waits for the answer, so nothing slow happens under the scheduler's
lock. Because every process runs one known task, a process that dies (``os._exit``, a
segfault, the OOM killer) fails only the task it was running, and ``cancel`` (a timeout,
fail-fast, Ctrl-C) kills just that process (told first, it sends what the call has
written so far: see ``_Worker.kill``); either way a new process takes its place on the
next submission. (``concurrent.futures.ProcessPoolExecutor`` cannot do this: one dead
worker breaks the whole pool and fails every task in flight.)
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from ..errors import (
    RemoteError,  # noqa: F401 (re-exported)
    UnpicklableError,  # noqa: F401 (re-exported)
    WorkerDied,  # noqa: F401 (re-exported)
)
from ..faults import Fault, guarded, log_fault
from . import Backend, Done, child_pythonpath

__all__ = ["ProcessBackend", "WorkerDied", "UnpicklableError", "RemoteError"]

# Run as a script, not as ``-m layerflow...``: the worker then starts without importing
# layerflow (half its start-up time); it imports layerflow only to report an odd error.
_WORKER = str(Path(__file__).with_name("_worker.py"))
#: how long a worker told to end may take to send its output before it is killed outright
_GRACE = 1.0
#: how long the pool's end waits for killed workers' output
_LAST_WORDS = 2.0


def find_unpicklable(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """Which part of a call cannot be pickled, for the error message."""
    import cloudpickle

    parts: list[tuple[str, Any]] = [("its function", fn)]
    parts += [(f"positional argument {k}", a) for k, a in enumerate(args)]
    parts += [(f"argument {key!r}", v) for key, v in kwargs.items()]
    for what, obj in parts:
        try:
            cloudpickle.dumps(obj)
        except Exception as e:
            shown = repr(obj)
            if len(shown) > 80:
                shown = shown[:77] + "..."
            return f"{what} ({type(obj).__name__} {shown}) cannot be pickled: {e}"
    return "the call cannot be pickled"


class _Job:
    """One attempt sent to a worker process: the handle ``submit`` returns."""

    __slots__ = ("worker", "cancelled")

    def __init__(self, worker: _Worker) -> None:
        self.worker = worker
        self.cancelled = False


class _Worker:
    """One process and the parent-side thread that feeds it."""

    def __init__(self, backend: ProcessBackend, *, warm: bool = False) -> None:
        self.backend = backend
        self.jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        if warm:
            self.jobs.put("start")  # start the process before the first task arrives
        self.process: subprocess.Popen[bytes] | None = None
        self.send: Connection | None = None
        self.conn: Connection | None = None
        self.killed = False
        self.gone = threading.Event()  # set once a killed worker's feeder has finished
        self.current: _Job | None = None  # the attempt running now (guarded by the lock)
        threading.Thread(
            target=guarded("process feeder", self._feed, backend.on_fault),
            name="layerflow-process-feeder",
            daemon=True,
        ).start()

    def _start_process(self) -> None:
        # A fresh interpreter, not multiprocessing: the user's script is never re-imported
        # (it needs no __main__ guard), and no process full of threads is forked.
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        env = dict(os.environ)
        env["PYTHONPATH"] = child_pythonpath()
        env["LAYERFLOW_PROCESS_WORKER"] = "1"  # lf.record's box (see metrics.py)
        try:
            self.process = subprocess.Popen(
                [sys.executable, _WORKER, str(to_child_r), str(from_child_w)],
                pass_fds=(to_child_r, from_child_w),
                env=env,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C is the parent's to handle, not the workers
            )
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self.send = Connection(to_child_w, readable=False)
        self.conn = Connection(from_child_r, writable=False)

    def _feed(self) -> None:
        from inspect import iscoroutinefunction

        import cloudpickle

        while True:
            job = self.jobs.get()
            if job is None:
                break
            if job == "start":
                with contextlib.suppress(OSError):  # tried again, and reported, with a task
                    self._start_process()
                continue
            name, fn, args, kwargs, on_done, handle, began = job
            with self.backend._lock:
                if handle.cancelled:  # cancelled while queued: it never runs
                    continue
                self.current = handle
            try:
                # the worker imports asyncio only for a coroutine function: it is told so
                payload = (b"\x01" if began is not None else b"\x00") + cloudpickle.dumps(
                    (fn, args, kwargs, iscoroutinefunction(fn))
                )
            except Exception:
                reason = find_unpicklable(fn, args, kwargs)
                self.backend._release(self)
                on_done(
                    False,
                    UnpicklableError(f"task {name!r} cannot be sent to a worker process: {reason}"),
                    0.0,
                )
                continue
            t0 = time.perf_counter()
            last: bytes | None = None
            try:
                if self.process is None:
                    self._start_process()
                self.send.send_bytes(payload)  # type: ignore[union-attr]
                if began is not None:  # the call starts now, after any cold start
                    self.conn.recv_bytes()  # type: ignore[union-attr]
                    began(time.perf_counter())
                answer = self.conn.recv_bytes()  # type: ignore[union-attr]
                while answer[:1] == b"\x01":  # killed: what the call wrote until then
                    last = answer[1:]
                    answer = self.conn.recv_bytes()  # type: ignore[union-attr]
            except (EOFError, OSError):
                self._died(name, on_done, time.perf_counter() - t0, last)
                return
            try:
                ok, value, seconds, metrics, cpu, output = cloudpickle.loads(answer)
            except Exception as e:  # the result arrived but cannot be unpickled here
                self.backend._release(self)
                on_done(False, UnpicklableError(f"task {name!r}: its result: {e}"), 0.0)
                continue
            # idle again before the scheduler hears of it, so its next submission reuses us
            self.backend._release(self)
            if output is None:
                on_done(ok, value, seconds, None, metrics, cpu)
            else:  # what the call printed in the worker
                on_done(ok, value, seconds, None, metrics, cpu, output)
            if self.killed:  # (its answer came before the notice: nothing more to wait for)
                self.gone.set()
        self._shutdown()

    def _died(self, name: str, on_done: Done, seconds: float, last: bytes | None = None) -> None:
        process = self.process
        code = None
        if process is not None:
            try:
                code = process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
        self._close_pipes()
        self.backend._forget(self)
        if self.killed:  # by layerflow: the scheduler has already reported the attempt
            try:
                if last is not None:  # but not what it wrote, which the worker sent as it died
                    output = pickle.loads(last)
                    on_done(False, WorkerDied("killed", code), seconds, None, None, None, output)
            finally:
                self.gone.set()
            return
        how = f"exit code {code}" if code is None or code >= 0 else f"signal {-code}"
        on_done(
            False,
            WorkerDied(
                f"the worker process running task {name!r} died ({how}); "
                "a new process takes its place",
                code,
            ),
            seconds,
        )

    def submit(self, job: tuple[Any, ...]) -> None:
        self.jobs.put(job)

    def kill(self) -> None:
        """Kill the process, and whatever the task started (the worker leads its own process
        group). It is told first (SIGUSR1): it sends what the call has written so far and
        ends itself; if it has not ended within ``_GRACE`` (stuck in C code), it is killed."""
        self.killed = True
        process = self.process
        if process is None or process.poll() is not None:
            self.gone.set()
            return
        try:
            os.kill(process.pid, signal.SIGUSR1)
        except OSError:
            self._kill_now()
            return
        timer = threading.Timer(_GRACE, self._kill_now)
        timer.daemon = True
        timer.start()

    def _kill_now(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, 9)
            except OSError:
                process.kill()

    def close(self) -> None:
        self.jobs.put(None)

    def _close_pipes(self) -> None:
        for conn in (self.send, self.conn):
            if conn is not None and not conn.closed:
                conn.close()

    def _shutdown(self) -> None:
        self._close_pipes()  # the child sees EOF and returns
        if self.process is not None:
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()


class ProcessBackend(Backend):
    """A pool of worker processes, started as needed, each running one task at a time.
    A call begins when its worker is ready (a cold start takes 40-225 ms), which it reports:
    the task's timeout counts from then."""

    begins_late = True
    times_from_begin = True

    def __init__(self, *, on_fault: Fault = log_fault, **_: Any) -> None:
        self.on_fault = on_fault
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self._killed: list[_Worker] = []  # killed while running a call

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
    ) -> _Job:
        with self._lock:
            worker = self._idle.pop() if self._idle else None
            if worker is None:
                worker = _Worker(self)
                self._all.add(worker)
        handle = _Job(worker)
        worker.submit((name, fn, args, kwargs, on_done, handle, began))
        return handle

    def capacity(self, limit: int | None) -> int:
        """One task per process: as many processes as cores, or the run's bound."""
        return limit if limit is not None else (os.cpu_count() or 1)

    def prepare(self, count: int) -> None:
        """Start the workers now: their start-up overlaps the layers before them."""
        self.warm(count)

    def warm(self, count: int) -> None:
        """Start ``count`` worker processes now, so their start-up overlaps other work."""
        with self._lock:
            for _ in range(count - len(self._all)):
                worker = _Worker(self, warm=True)
                self._all.add(worker)
                self._idle.append(worker)

    def _release(self, worker: _Worker) -> None:
        with self._lock:
            worker.current = None
            if worker in self._all:
                self._idle.append(worker)

    def _forget(self, worker: _Worker) -> None:
        with self._lock:
            self._all.discard(worker)
            if worker in self._idle:
                self._idle.remove(worker)

    def cancel(self, handle: _Job) -> None:
        """Stop that attempt: kill its process if it is running it now. The worker may
        already have finished it and taken the next attempt (its done-callback not yet
        heard by the scheduler): that next attempt is not this one's to kill."""
        worker = handle.worker
        with self._lock:
            handle.cancelled = True
            if worker.current is not handle:
                return
            worker.current = None
            self._killed.append(worker)
        self._forget(worker)
        worker.kill()

    def close(self) -> None:
        with self._lock:
            workers = list(self._all)
            self._all.clear()
            self._idle.clear()
            killed, self._killed = self._killed, []
        for w in workers:
            w.close()
        # the output of the attempts killed (a timeout, a stop) is the run's: heard before
        # the run's result is made (a worker sends it within milliseconds of its notice)
        deadline = time.perf_counter() + _LAST_WORDS
        for w in killed:
            w.gone.wait(max(0.0, deadline - time.perf_counter()))
