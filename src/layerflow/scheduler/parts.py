"""What each part of a run reads of the others, declared once for a type checker.

(What ``State`` itself calls of the parts, their ``_init_*``, is declared in ``State``.)

A run is one object assembled from mixins (``run.py``): ``State`` holds the fields set when
it starts, and each policy module adds its own fields (in its ``_init_*``) and transitions.
A mixin reads fields and calls transitions that other mixins define; :class:`RunParts`
declares those, so that mypy and an IDE can follow ``self.x`` in every part. It exists only
for the type checker (each mixin subclasses it under ``TYPE_CHECKING``, ``object`` at run
time): nothing here runs, and the hot path is unchanged.

Keep it in step with the mixins: a method's signature here is the one its module defines
(mypy reports a difference), and a field is declared here once another module reads it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from ..errors import ResultNotStored, Skip, TaskTimeout
from ..graph import Task, TaskGroup
from ..limits import Gate, LayerReport
from ..policy import LayerBarrier
from ..progress import Progress
from .state import State

__all__ = ["RunParts", "Timers"]


class Timers(Protocol):
    """The run's timer thread (``deadlines.Timer``): callbacks at a time."""

    def add(self, when: float, callback: Callable[..., None], *args: Any) -> None: ...

    def close(self) -> None: ...


class RunParts(State):
    """``State`` and what the mixins add to it, as the other mixins read it."""

    # fields a mixin sets in its _init_* and another reads (the module that sets them)
    budget: dict[str, float]  # budgets.py
    checkpoint: Callable[[LayerReport], Any] | None  # layers.py
    cpu_foreign: dict[int, float]  # workers.py
    cpu_times: dict[int, float]  # workers.py
    barrier: LayerBarrier  # layers.py
    final_counts: list[int]  # recording.py
    gate: Gate  # admission.py
    gated: bool  # admission.py
    in_order: bool  # admission.py
    io_jobs: queue.SimpleQueue[Any] | None  # storage.py
    items: Any  # storage.py: the store's items of lf.parallel_map, or None
    layered: bool  # layers.py
    live: Progress | None  # recording.py
    map_left: dict[int, int]  # fanout.py
    metrics: dict[int, dict[str, float]]  # recording.py
    order_hold: bool  # admission.py, retries.py, transitions.py
    order_held_by: int  # admission.py, retries.py, transitions.py
    parked_since: dict[int, tuple[str, Any, float]]  # admission.py
    spans: list[tuple[int, int, float, float, BaseException | None]]  # recording.py
    started: list[int]  # recording.py
    stop_reason: str | None  # budgets.py, layers.py, storage.py
    stored: threading.Condition  # storage.py
    storing: int  # storage.py, faults.py
    stream_from: dict[int, tuple[int, ...]]  # fanout.py
    streamable: bytearray  # fanout.py
    streams: dict[int, list[int]]  # fanout.py
    threads: int  # workers.py
    tracing: Any  # telemetry.py: an otel tracing, or None
    waits: list[tuple[int, str, Any, float, float]]  # admission.py

    # transitions and policies one mixin defines and others call

    # admission.py: Admission
    def _admit(self, i: int) -> bool: ...
    def _requeue(self, parked: list[tuple[int, int]]) -> None: ...
    def _release_units(
        self,
        i: int,
        ok: bool,
        error: Any,
        now: float,
        used: Mapping[str, float] | None,
        abandoned: bool = ...,
    ) -> None: ...
    def _offer_room(self) -> None: ...

    # budgets.py: Budgets
    def _within_budget(self, i: int) -> dict[str, float] | None: ...
    def _commit(self, i: int, mine: dict[str, float]) -> None: ...
    def _charge(
        self,
        i: int,
        used: Mapping[str, float] | None,
        *,
        abandoned: bool = ...,
        refused: bool = ...,
    ) -> None: ...
    def _budget_settled(self) -> None: ...
    def budget_report(self) -> dict[str, dict[str, float]]: ...
    def _warn_unrecorded(self) -> None: ...

    # deadlines.py: Deadlines
    def _timer(self) -> Timers: ...
    def _on_task_deadline(self, i: int, token: int) -> None: ...
    def _timeout_error(self, i: int) -> TaskTimeout: ...
    def _on_run_deadline(self) -> None: ...

    # fanout.py: FanOut
    def _try_stream(self, m: int) -> None: ...
    def _expand(self, m: int) -> None: ...
    def _element_ended(self, s: int, c: int) -> None: ...
    def _map_done(self, m: int) -> None: ...
    def _element_info(self, e: int) -> tuple[str, tuple[Any, ...], int]: ...

    # faults.py: Faults
    def _take_up_faults(self) -> bool: ...
    def _fault_locked(self, where: str, error: BaseException) -> None: ...

    # groups.py: Groups
    def _group_started(self, t: Task, now: float) -> None: ...
    def _stop_group(self, group: TaskGroup, i: int) -> None: ...
    def _fails_fast(self, i: int) -> bool: ...
    def _in_stopped_group(self, i: int) -> bool: ...

    # layers.py: Layers
    def _layer_started(self, li: int) -> None: ...
    def _layer_done(self, li: int) -> None: ...

    # pools.py: ForeignPools
    def _foreign_first(self, key: int) -> bool: ...
    def _pump(self) -> None: ...

    # recording.py: Recording
    def _counts(self) -> dict[str, int]: ...

    # remote.py: RemoteValues
    def _collect_remote(self) -> None: ...

    # retries.py: Retries
    def _try_again(self, i: int, error: BaseException) -> bool: ...

    # skips.py: Skips
    def _skipped(self, i: int, skip: Skip) -> None: ...
    def _skip_now(self, i: int, skip: Skip) -> None: ...

    # storage.py: StoreIO
    def _wait_for_store(self) -> None: ...
    def _off_lock(
        self, work: Callable[[], Any], then: Callable[[Any, BaseException | None], None]
    ) -> None: ...
    def _store_result(
        self,
        i: int,
        value: Any,
        t0: float,
        t1: float,
        then: Callable[[ResultNotStored | None], None] | None = ...,
    ) -> None: ...
    def _succeed_durably(self, i: int, value: Any, t0: float, t1: float) -> None: ...
    def _close_store_io(self) -> None: ...
    def _store_stop(self, i: int, error: ResultNotStored) -> None: ...
    def _not_stored_either(self, i: int, error: ResultNotStored) -> ResultNotStored: ...

    # telemetry.py: Telemetry
    def _init_telemetry(self, tracing: Any) -> None: ...
    def _trace_elements(self, m: int, kids: list[int]) -> None: ...

    # transitions.py: Transitions
    def _make_ready(self, i: int) -> None: ...
    def _start(self, i: int) -> None: ...
    def _record(
        self,
        i: int,
        token: int,
        ok: bool,
        value: Any,
        t0: float,
        t1: float,
        cached: bool = ...,
        used: dict[str, float] | None = ...,
    ) -> bool: ...
    def complete(
        self,
        i: int,
        token: int,
        ok: bool,
        value: Any,
        t0: float,
        t1: float,
        cached: bool = ...,
        used: dict[str, float] | None = ...,
    ) -> int: ...
    def _foreign_done(
        self,
        i: int,
        token: int,
        ok: bool,
        value: Any,
        seconds: float,
        ref: Any = ...,
        metrics: dict[str, float] | None = ...,
        cpu: float | None = ...,
    ) -> None: ...
    def _succeed(self, i: int, value: Any, status: int = ...) -> None: ...
    def _fail(self, i: int, error: BaseException) -> None: ...
    def _skip_downstream(self, i: int) -> None: ...
    def _finalize(self, i: int) -> None: ...
    def _stop(self, reason: str) -> None: ...
    def _cancel_running(self, j: int, reason: str) -> None: ...
    def _cancel_waiting(self, i: int, reason: str) -> None: ...
    def _abandon(
        self, i: int, error: BaseException | None, *, fail: bool, reason: str = ...
    ) -> None: ...
    def interrupt(self) -> None: ...
    def _finish_run(self) -> None: ...
    def _kick(self) -> None: ...
    def _kick_locked(self) -> None: ...

    # workers.py: ThreadWorkers
    def _next(self) -> int: ...
    def _dispatch(self) -> None: ...
    def _loop(self, i: int, token: int, box: dict[str, float], cell: Any) -> None: ...
