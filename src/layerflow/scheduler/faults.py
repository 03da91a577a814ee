"""A fault in a thread the run owns: the run stops and fails, saying which thread broke.

Called by :func:`layerflow.faults.guarded` when an exception escapes a run's thread, and by
the timer and the store's writer when a callback they run under the lock raises. The run
then behaves as after Ctrl-C (running attempts given up, nothing new starts, finished
results kept), except that it ends ``failed`` and ``flow.run`` raises ``TaskFailed`` whose
message names the thread and the error. Results waiting for a store writer that died are
cancelled: they never reached the disk. Whatever the state, ``done`` is set: a fault is
never a hang: results already handed to a store writer that is alive are waited for
(a bounded time), and otherwise cancelled, with their events.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import InternalError, safe_str
from ..events import logger
from .state import _MAPPED, _RUNNING, _STORING, _SUCCEEDED

if TYPE_CHECKING:  # State, with what every part declares (parts.py)
    from .state import State
else:  # for the type checker only
    State = object

#: how long a faulted run waits for results being stored before it ends anyway
_SETTLE = 10.0

#: the store writer's thread name (its pending results are lost with it)
STORE_THREAD = "store"


class Faults(State):
    """The run's answer to a fault in one of its own threads."""

    #: set as the run starts: a fault before that waits for ``_take_up_faults``
    begun = False

    def _fault(self, where: str, error: BaseException) -> None:
        """A thread of the run's died with ``error`` (lock not held). A pool's thread may
        die before the run starts (while ``Run.__init__`` opens it): that fault waits in
        ``early_faults`` for :meth:`_take_up_faults`."""
        logger.error("layerflow's %s thread failed", where, exc_info=error)
        with self.lock:  # (the state, lock included, is built before any pool opens)
            if self.begun:
                self._fault_locked(where, error)
            else:
                self.__dict__.setdefault("early_faults", []).append((where, error))

    def _take_up_faults(self) -> bool:
        """At the start (lock held): True if a thread died before it; the run then ends."""
        self.begun = True
        early = self.__dict__.get("early_faults")
        if early:
            self._fault_locked(*early[0])
        return bool(early)

    def _fault_locked(self, where: str, error: BaseException) -> None:
        """As :meth:`_fault`, with the lock held."""
        if self.done.is_set():
            return
        fault = InternalError(
            f"layerflow's {where} thread failed ({safe_str(error)}), so the run was stopped; "
            "results that finished are kept. This is a bug in layerflow, unless something "
            "replaced a module it uses: please report it with the traceback logged above"
        )
        fault.__cause__ = error
        self.outcome = "failed"
        self.cause, self.cause_error = -1, fault
        self.stopping = True
        reason = f"layerflow's {where} thread failed"
        for i, status in enumerate(self.status):  # each on its own: one may fail to stop
            if status == _RUNNING:
                _quietly(self._abandon, i, fault, fail=False, reason=reason)
        _quietly(self._stop, reason)
        if where == STORE_THREAD or self.io_jobs is None:
            # the store's writer is gone: what waits for it never reaches the disk
            for i, status in enumerate(self.status):
                if status in (_STORING, _MAPPED):
                    _quietly(self._lost, i, fault, reason)
            self.storing = 0
            self.stored.notify_all()
            self._end_now()
        elif self.left:  # the writer lands its batch and the run ends; if not, it is ended
            timer = threading.Timer(_SETTLE, self._end_late)
            timer.daemon = True
            timer.start()

    def _lost(self, i: int, fault: BaseException, reason: str) -> None:
        """Entry ``i`` waited for a store writer that died: cancelled, with the fault."""
        self.errors[i] = fault
        self._cancel_waiting(i, reason)

    def _end_late(self) -> None:
        """A faulted run that did not end by itself: what is left is cancelled."""
        with self.lock:
            if self.done.is_set():
                return
            fault = self.cause_error or InternalError("the run was stopped")
            for i, status in enumerate(self.status):
                if status < _SUCCEEDED:
                    _quietly(self._lost, i, fault, "the run was stopped")
            self._end_now()

    def _end_now(self) -> None:
        if self.done.is_set():
            return
        try:
            self._finish_run()
        except Exception:
            logger.exception("layerflow could not end the run cleanly")
            self.done.set()
            if self.on_done is not None:
                self.on_done()


def _quietly(call: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """A step of stopping a faulted run: its own failure is logged, the rest goes on."""
    try:
        call(*args, **kwargs)
    except Exception:
        logger.exception("layerflow could not stop part of the run cleanly")
