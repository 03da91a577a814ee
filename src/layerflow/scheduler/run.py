"""The run: state, transitions and policies assembled; starting and ending it."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..backends import SIGNAL_POLL
from ..events import (
    RunEvent,
    final_line,
    logger,
)
from ..faults import guarded
from ..redirect import install as install_capture
from ..redirect import uninstall as uninstall_capture
from .admission import Admission
from .budgets import Budgets
from .deadlines import Deadlines
from .fanout import FanOut
from .faults import Faults
from .groups import Groups
from .layers import Layers
from .pools import ForeignPools
from .recording import Recording
from .remote import RemoteValues
from .retries import Retries
from .skips import Skips
from .state import (
    _ASYNC,
    _CALLER,
    _PENDING,
    _REUSED,
    _RUNNING,
    State,
)
from .storage import StoreIO
from .telemetry import Telemetry
from .transitions import Transitions
from .workers import ThreadWorkers

if TYPE_CHECKING:
    from ..options import RunOptions
    from ..plan import Plan

#: how long an interrupted run waits for its last batch of results to be stored (a store
#: locked by another process may take up to its busy timeout; past this, they are lost)
_SETTLE = 35.0


class Run(
    ThreadWorkers,
    ForeignPools,
    RemoteValues,
    Recording,
    FanOut,
    Layers,
    Deadlines,
    Groups,
    Retries,
    Skips,
    StoreIO,
    Telemetry,
    Budgets,
    Admission,
    Faults,
    Transitions,
    State,
):
    """The run: state, transitions and policies assembled; its pools; starting and ending it."""

    def __init__(self, plan: Plan, inputs: Mapping[str, Any], options: RunOptions, **parts: Any):
        """The state (checked whole first), then the pools it needs (``pools.py``)."""
        super().__init__(plan, inputs, options, **parts)
        try:
            self._open_pools(options)
        except BaseException:
            if self.bus is not None:
                self.bus.close()
            raise
        # the run's clock starts once its pools are up (a local Dask cluster takes seconds)
        self.wall0 = time.time()
        self.perf0 = self.end = time.perf_counter()

    def start(self) -> None:
        """Queue the tasks without dependencies and start the pools (lock not held)."""
        if self.live is not None:
            self.live.start(self)
        if not self.output.installed:  # tasks' output captured from now until ``close``
            # (after the live display has put its own stream in place, whose lines it shows
            # above itself: the raw echo writes there; and taken off before it stops)
            self.output.installed = True
            install_capture()
        if self.emit:
            self.emit(RunEvent("run_started", None, time.time(), self.run_id, total=self.n))
        with self.lock:
            if self._take_up_faults():
                return
            if self.run_timeout is not None:
                self._timer().add(self.perf0 + self.run_timeout, self._on_run_deadline)
            for i in self.preset:  # all reused before any is released: none runs again
                self.status[i] = _REUSED
            for i in self.graph.order:  # resumed tasks first: their users may be ready
                if i in self.preset:
                    self._succeed(i, self.preset[i], _REUSED)
            for i in range(self.n):
                if not self.waiting[i] and self.status[i] == _PENDING:
                    self._make_ready(i)
            if not self.left:
                self._finish_run()
            elif self.backends[_ASYNC] is not None and self.ready[_ASYNC]:
                # Start coroutines from the loop's own thread: there a submission creates
                # the asyncio task directly, and completions never wait for this thread.
                if self.ready_threads:
                    self._dispatch()
                self.backends[_ASYNC].loop.call_soon_threadsafe(
                    guarded("async loop", self._kick_locked, self._fault)
                )
            else:
                self._kick()

    def execute(self) -> None:
        """Run to the end (or to a stop) in the calling thread."""
        caller = self.backends[_CALLER]
        try:
            if caller is not None:  # sequential: this thread makes the calls itself
                self.on_done = caller.stop
            self.start()
            if caller is not None:
                caller.serve()
            self._wait_for_end()
        except KeyboardInterrupt:
            if self.done.is_set():
                raise  # the run had ended: the Ctrl-C is the caller's
            self.interrupt()
            self.settle()
        finally:
            self.close()

    def interrupt(self) -> None:
        """Ctrl-C: stop starting, give up on running attempts, keep what finished."""
        with self.lock:
            if self.left == 0:
                return
            self.outcome = "interrupted"
            self.stopping = True
            err = KeyboardInterrupt("interrupted")
            for i in range(len(self.status)):
                if self.status[i] == _RUNNING:
                    self._abandon(i, err, fail=False, reason="the run was interrupted")
            self._stop("the run was interrupted")

    def settle(self) -> None:
        """After an interrupt: wait for the results still being stored (a batch commit,
        milliseconds), so that every task that finished is kept and shown as succeeded. A
        second Ctrl-C gives up waiting."""
        self._wait_for_end(_SETTLE)

    def _wait_for_end(self, seconds: float | None = None) -> None:
        """Until the run has ended (or ``seconds`` have passed), in ``SIGNAL_POLL`` steps:
        a Ctrl-C another thread took is raised here, between them."""
        deadline = None if seconds is None else time.perf_counter() + seconds
        while not self.done.wait(SIGNAL_POLL):
            if deadline is not None and time.perf_counter() > deadline:
                return

    def close_unstarted(self) -> None:
        """Release the pools, the event thread and the display of a run that never
        started."""
        if self.live is not None:
            self.live.release()
        for backend in self.backends:
            if backend is not None:
                backend.close()
        if self.bus is not None:
            self.bus.close()

    def close(self) -> None:
        """Report the end to observers and release the pools."""
        try:
            self._collect_remote()
        except Exception as e:
            logger.error("could not bring the run's values back from the Dask cluster: %s", e)
        if self.output.installed:  # the streams as they were (the last run to end)
            self.output.installed = False
            uninstall_capture()
            self.output.flush()
        if self.live is not None:
            self.live.stop(
                final_line(
                    self.outcome,
                    self._counts(),
                    len(self.names),
                    self.end - self.perf0,
                    sum(self.busy),
                )
            )
        for backend in self.backends:  # each on its own: one that fails keeps none open
            if backend is not None:
                try:
                    backend.close()
                except Exception:
                    logger.exception("could not close the run's %s pool", type(backend).__name__)
        self._warn_unrecorded()  # after the live display has stopped: its own line
        if self.bus is not None:
            self.emit(  # type: ignore[misc]
                RunEvent(
                    "run_finished",
                    None,
                    time.time(),
                    self.run_id,
                    total=len(self.names),
                    status=self.outcome,
                    duration=self.end - self.perf0,
                    sequential_estimate=sum(self.busy),
                    counts=self._counts(),
                )
            )
            self.bus.close()
