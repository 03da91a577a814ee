"""The core transitions: a task becomes ready, starts, ends, succeeds or fails, is
finalized; the run stops, is interrupted or finishes. Each mutates the state of
``state.py`` and is called with the run's lock held.

Task-selection policy (the keys of ``Plan.keys()``): among ready tasks, higher ``priority``
first, then the longest remaining path to a sink (critical path first), then declaration
order. A Dask graph's plan (``Plan.depth_first``) keeps priority first but then takes what
the latest finish made ready, as Dask's local schedulers do: ``_make_ready`` sets the key.
``max_workers`` bounds the tasks running at once over all pools together.
"""

from __future__ import annotations

import heapq
import time
from typing import TYPE_CHECKING, Any

from ..backends import LONG_TASK
from ..errors import ResultNotStored, Skip, safe_str
from ..events import logger
from ..metrics import add as add_metrics
from ..policy import KEY_BASE
from .state import (
    _CACHED,
    _CANCELLED,
    _FAILED,
    _PENDING,
    _READY,
    _REUSED,
    _RUNNING,
    _SKIPPED,
    _SUCCEEDED,
    _THREAD,
    _UNSTOPPABLE,
    _WAITING_STATES,
)
from .storage import _BACKLOG

if TYPE_CHECKING:  # State, with what every part declares (parts.py)
    from .state import State
else:  # for the type checker only
    State = object

#: how long a worker process may take to begin a call (start, imports, unpickling) before
#: its task's timeout counts anyway: a worker stuck there must not hang the run
COLD_START = 10.0


class Transitions(State):
    """The core transitions: a task becomes ready, starts, ends, succeeds, fails, is"""

    def _make_ready(self, i: int) -> None:
        """Entry ``i`` may start: hold it behind a layer barrier, expand it, or queue it."""
        if self.pending_skip and i in self.pending_skip:
            # an input was skipped and the others ended well: it ends skipped, no failure
            self._skip_now(i, self.pending_skip.pop(i))
            return
        self.status[i] = _READY
        if self.layered and self.barrier.hold(i, self.layer[i]):
            return  # its layer is not open yet
        if i < self.n and i in self.graph.map_source:
            self._expand(i)
        else:
            if self.depth_base is not None:  # Dask's order: the latest finish's tasks first
                self.keys[i] = (self.depth_base[i] + self.left * self.n) * KEY_BASE + i
            heapq.heappush(self.ready[self.kind[i]], self.keys[i])

    def _start(self, i: int) -> None:
        """Record that entry ``i`` starts an attempt now."""
        now = time.perf_counter()
        self.status[i] = _RUNNING
        self.token[i] += 1  # a new attempt: whatever was timed for the last one is stale
        self.running += 1
        self.running_kind[self.kind[i]] += 1
        a = self.attempts[i] = self.attempts[i] + 1
        if a == 1:
            self.first_start[i] = now
            self.started.append(i)
            self.seq[i] = len(self.started)
        self.last_end[i] = now  # start of the current attempt until it ends
        t = self.spec[i]
        if t.timeout is not None:
            # a worker process's call is timed from when it begins (``pools._began``);
            # until then only a backstop, for a worker stuck before the call
            late = COLD_START if self.times_from_begin[self.kind[i]] else 0.0
            self._timer().add(now + t.timeout + late, self._on_task_deadline, i, self.token[i])
        if t.group is not None:
            self._group_started(t, now)
        if self.emit:
            self._layer_started(self.layer[i])
            self._task_event("task_started", i)

    def _record(
        self,
        i: int,
        token: int,
        ok: bool,
        value: Any,
        t0: float,
        t1: float,
        cached: bool = False,
        used: dict[str, float] | None = None,
    ) -> bool:
        """Entry ``i``'s attempt ended; False when the attempt had been abandoned. ``used``:
        what the attempt gave ``lf.record`` (real costs on its rate limits)."""
        if token != self.token[i]:
            return False  # abandoned: its slot was given away, its result is stale
        if cached and isinstance(value, Skip):  # a skip is stored as the element's result
            ok, cached = False, False
        self.running -= 1
        self.running_kind[self.kind[i]] -= 1
        if self.blocked_slot:
            self._free_slot(self.kind[i])
        self.handle[i] = None
        self.busy[i] += t1 - t0
        self.last_end[i] = t1
        limit = self.spec[i].timeout
        if limit is not None and t1 - t0 > limit:  # ended past its deadline: still a timeout
            ok, value = False, self._timeout_error(i)
        if not ok:
            self.spans.append((i, self.attempts[i], t0, t1, value))
        if not ok:
            self._fail(i, value)
        elif self.persist is not None and not cached:
            self._succeed_durably(i, value, t0, t1)  # done once its result is on disk
        else:
            self._succeed(i, value, _CACHED if cached else _SUCCEEDED)
        if self.gated:
            # after the outcome: the room goes to entries still waiting once everything
            # this end caused (a group stopped, a retry queued) has happened
            self._release_units(i, ok, value, t1, used)
        return True

    def complete(
        self,
        i: int,
        token: int,
        ok: bool,
        value: Any,
        t0: float,
        t1: float,
        cached: bool = False,
        used: dict[str, float] | None = None,
    ) -> int:
        """A thread worker's task ended: record it and return the worker's next task
        (-1: the worker exits)."""
        if not self._record(i, token, ok, value, t0, t1, cached, used):
            return -1
        if self.storing > _BACKLOG:  # the store is behind: let it catch up first
            self._wait_for_store()
        if self.has_foreign:
            self._pump()
        return self._next()

    def _foreign_done(
        self,
        i: int,
        token: int,
        attempt: int,
        ok: bool,
        value: Any,
        seconds: float,
        ref: Any = None,
        metrics: dict[str, float] | None = None,
        cpu: float | None = None,
        output: tuple[list[tuple[bool, str]], int] | None = None,
    ) -> None:
        """A backend's done-callback: the same transition as a thread worker's. ``ref`` is
        where the value stays on a cluster (a Dask future); ``value is ref`` when it was
        not brought back here; ``cpu`` the attempt's CPU seconds, when the backend knows
        them (a worker process does); ``output`` what the attempt wrote there (as
        ``capture.Captured.result`` gives it) in ``attempt`` (the one submitted: a killed
        worker's output may arrive once the next attempt runs)."""
        t1 = time.perf_counter()
        if self.caller_cell.i == i:  # the calling thread's call has ended: output is nobody's
            self.caller_cell.i = -1
        if output is not None:  # before its end is recorded: a retry's is the next attempt
            self.output.add(i, *output, attempt=attempt)
        if cpu is not None and seconds > LONG_TASK:  # as for threads: long tasks only
            self.cpu_foreign[i] = cpu
        with self.lock:
            if metrics or ref is not None:
                if self._ended(i, token, ok, value, seconds, t1, ref, metrics):
                    self._kick()
            elif self._record(i, token, ok, value, t1 - seconds, t1, used=metrics):
                self._kick()

    def _ended(
        self,
        i: int,
        token: int,
        ok: bool,
        value: Any,
        seconds: float,
        t1: float,
        ref: Any,
        metrics: dict[str, float] | None,
    ) -> bool:
        """A foreign attempt's end, its result durable if it needs to be. Lock held."""
        if metrics and token == self.token[i]:
            add_metrics(self.metrics, i, metrics)
        if ref is not None and ok and token == self.token[i]:
            self.cluster.arrived(i, value, ref)
        return self._record(i, token, ok, value, t1 - seconds, t1, used=metrics)

    def _succeed(self, i: int, value: Any, status: int = _SUCCEEDED) -> None:
        self.status[i] = status
        self.values[i] = value
        self.errors[i] = None  # an earlier attempt's error is history
        if self.emit:
            kind = {_SUCCEEDED: "task_succeeded", _REUSED: "task_reused"}.get(status, "task_cached")
            self._task_event(kind, i, duration=self.busy[i])
        if i < self.n:
            waiting = self.waiting
            states = self.status
            streaming = self.stream_from
            for s in self.succs[i]:
                waiting[s] -= 1
                if not waiting[s] and states[s] == _PENDING:
                    self._make_ready(s)
                elif streaming and self.streamable[s]:
                    self._try_stream(s)  # a map over a map: may start element by element
        self._finalize(i)

    def _fail(self, i: int, error: BaseException) -> None:
        """Entry ``i``'s attempt failed with ``error``: cancelled, tried again (see
        ``retries``), or failed for good, and then fail-fast or continue decides the rest."""
        if isinstance(error, Skip):
            self._skipped(i, error)
            return
        if self._try_again(i, error):
            return
        if isinstance(error, ResultNotStored) and self.store_failed >= 0:
            error = self._not_stored_either(i, error)
        t = self.spec[i]
        self.status[i] = _FAILED
        self.errors[i] = error
        if self.emit:
            self._task_event("task_failed", i, error=error, duration=self.busy[i])
        if self.cause < 0:
            self.cause = i
            self.cause_error = error
        if self.outcome != "interrupted":  # a Ctrl-C stays one (a late store error after it)
            self.outcome = "failed"
        if isinstance(error, ResultNotStored):
            self._store_stop(i, error)
            return
        # (at the run's deadline every running task fails with its own TaskTimeout: none
        # of them is a fail-fast failure that cancels the others)
        fail_fast = self._fails_fast(i) and not self.run_timed_out
        if fail_fast and not self.fail_fast:  # a group's own fail-fast: the run goes on
            self._finalize(i)
            self._stop_group(t.group, i)  # type: ignore[arg-type]
            return
        if fail_fast:
            self.stopping = True  # before anything below can start a task or ask a checkpoint
        self._finalize(i)
        if fail_fast:
            reason = f"{self.names[i]!r} failed"
            for j in [j for j, st in enumerate(self.status) if st == _RUNNING]:
                self._cancel_running(j, reason)
            self._stop(reason)
        elif i < self.n:
            self._skip_downstream(i)

    def _skip_downstream(self, i: int) -> None:
        """Continue-on-failure: everything that needs ``i`` will never run."""
        status = self.status
        stack = [i]
        while stack:
            j = stack.pop()
            for s in self.succs[j]:
                if status[s] == _PENDING:
                    if self.streams and self._streams_past(j, s):
                        continue  # it still runs the chains that did not fail
                    status[s] = _SKIPPED
                    if self.emit:
                        self._task_event(
                            "task_skipped", s, reason=f"upstream {self.names[j]!r} did not succeed"
                        )
                    self._finalize(s)
                    stack.append(s)

    def _finalize(self, i: int) -> None:
        """Entry ``i`` reached a final state: count it, end its layer or its map, release."""
        self.final_counts[self.status[i]] += 1
        if i == self.order_held_by:  # it held a sequential queue for its retry: no more
            self.order_hold = False
            self.order_held_by = -1
        m = self.parent[i]
        if m >= 0:
            if m in self.streams:  # the elements that stream from this one
                self._element_ended(m, i)
            self.map_left[m] -= 1
            if not self.map_left[m]:
                self._map_done(m)
        else:
            li = self.layer[i]
            left = self.barrier.left  # LayerBarrier.ended, inline: once per task
            left[li] -= 1
            if not left[li]:
                self._layer_done(li)
            if self.track_users:
                users = self.users_left
                for j in self.graph.deps[i]:
                    users[j] -= 1
                    if not users[j]:
                        self._release(j)
                if not users[i]:
                    self._release(i)
        self.left -= 1
        if not self.left:
            self._finish_run()

    def _release(self, j: int) -> None:
        """Entry ``j``'s last user has finished."""
        if self.cluster is not None:
            self.cluster.drop(j, self.children)
        if self.release:
            self._maybe_release(j)

    def _maybe_release(self, j: int) -> None:
        """Drop a value nobody will read again (only when ``outputs`` were named). A value
        still being computed is dropped when it arrives, not before."""
        if (
            not self.users_left[j]
            and not self.keep[j]
            and self.status[j] >= _SUCCEEDED
            and not self.released[j]
        ):
            self.values[j] = None
            self.released[j] = 1

    def _stop(self, reason: str) -> None:
        """No more starts: every entry not running now is cancelled."""
        self.stopping = True
        for ready in self.ready:
            ready.clear()
        status = self.status
        i = 0
        while i < len(status):  # (cancelling may end a layer, whose maps then expand)
            if status[i] in _WAITING_STATES:
                self._cancel_waiting(i, reason)
            i += 1

    def _cancel_running(self, j: int, reason: str) -> None:
        """Stop entry ``j``'s running attempt if it can be stopped: a coroutine or a worker
        process is cancelled; a thread cannot be, nor a call a Dask worker began, so the run
        waits for it and keeps its result, unless its task knows how to stop itself (a
        shell step kills its command).
        A call queued in the calling thread (sequential) but not yet made is not made: it
        ends as ``Cancelled``, as a thread worker's does."""
        kind, handle = self.kind[j], self.handle[j]
        if kind not in _UNSTOPPABLE:
            if self.interrupts[kind] or handle is None:  # (None: not yet handed over)
                self._abandon(j, None, fail=False, reason=reason)
            else:  # a call that began runs on and keeps its result; one that did not
                self.backends[kind].spare(handle)  # never begins (it ends as Cancelled)
            return
        if handle is not None:  # a call queued in the calling thread is not made
            self.backends[kind].spare(handle)
        cancel = self.spec[j].cancel
        if cancel is not None:
            try:
                cancel()
            except Exception:
                logger.exception("could not stop task %r", self.names[j])

    def _cancel_waiting(self, i: int, reason: str) -> None:
        """Entry ``i`` has not started and never will."""
        self.status[i] = _CANCELLED
        if self.emit:
            self._task_event("task_cancelled", i, reason=reason)
        self._finalize(i)

    def _abandon(
        self, i: int, error: BaseException | None, *, fail: bool, reason: str = ""
    ) -> None:
        """Give up on entry ``i``'s running attempt. A coroutine is cancelled and a worker
        process killed; a thread cannot be killed, so it is left to finish on its own and
        its slot goes to a fresh worker."""
        now = time.perf_counter()
        kind = self.kind[i]
        self.token[i] += 1
        self.running -= 1
        self.running_kind[kind] -= 1
        if self.blocked_slot:
            self._free_slot(kind)
        if self.gated:  # abandoned (a timeout, a stop): not push-back, not a success
            self._release_units(i, False, error, now, None, abandoned=True)
        if kind == _THREAD:
            self.threads -= 1
        elif self.handle[i] is not None:
            self.backends[kind].cancel(self.handle[i])
            self.handle[i] = None
        self.spans.append((i, self.attempts[i], self.last_end[i], now, error))
        self.busy[i] += now - self.last_end[i]
        self.last_end[i] = now
        if fail and error is not None:
            self._fail(i, error)
        else:
            self.status[i] = _CANCELLED
            self.errors[i] = error
            if self.emit:
                why = reason or (safe_str(error) if error is not None else "stopped")
                self._task_event("task_cancelled", i, reason=why)
            self._finalize(i)
        self._kick()

    def _finish_run(self) -> None:
        if self.budget:
            self._budget_settled()
        self.end = time.perf_counter()
        self._close_store_io()
        self.exiting = True
        self.cond.notify_all()
        if self.timer is not None:
            self.timer.close()
        self.done.set()
        if self.on_done is not None:
            self.on_done()

    def _kick(self) -> None:
        """After a change: start what may start now."""
        if self.has_foreign:
            self._pump()
        if self.ready_threads:
            self._dispatch()

    def _kick_locked(self) -> None:
        with self.lock:
            self._kick()
