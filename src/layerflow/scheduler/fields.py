"""What the run's state holds, declared once for the type checker.

``Run`` is assembled from mixins (``transitions``, ``admission``, ``layers`` ...), each a
policy over one shared state; every mixin reads fields that another sets up and calls
transitions that another defines. ``RunFields`` declares all of them, with their types, so
that each mixin can be checked alone: every mixin (and ``State``) derives from it. It adds
nothing at run time: the annotations make no attributes, and the methods are declared only
for the checker. The meaning of each field is in ``state.py``'s docstring.
"""

from __future__ import annotations

import contextvars
import queue
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..errors import ResultNotStored, Skip, TaskTimeout
    from ..events import EventBus
    from ..graph import Graph, Task, TaskGroup
    from ..limits import Adaptive, Gate, LayerReport, RateLimit
    from ..plan import Plan
    from ..policy import LayerBarrier
    from ..progress import Progress
    from ..pushback import PushBack
    from .timer import Timer


class RunFields:
    """Every field of a run's state and every transition the mixins call one another by."""

    # the graph and the plan
    plan: Plan
    graph: Graph
    n: int
    mode: str
    fail_fast: bool
    run_timeout: float | None
    run_timed_out: bool
    run_id: str
    rng: random.Random
    loop: Any
    context: contextvars.Context
    limit: int
    thread_cap: int
    keys: list[int]
    depth_base: list[int] | None
    inline: bool

    # per entry
    names: list[str]
    spec: list[Task]
    layer: list[int]
    kind: list[int]
    fns: list[Callable[..., Any]]
    consts: list[dict[str, Any] | None]
    args: list[tuple[tuple[str, int], ...]]
    positional: list[Any]
    need: list[Mapping[str, float] | None]
    cost: list[dict[str, float] | None]
    pushbacks: list[int]
    status: list[int]
    token: list[int]
    values: list[Any]
    errors: list[BaseException | None]
    attempts: list[int]
    first_start: list[float]
    last_end: list[float]
    busy: list[float]
    seq: list[int]
    handle: list[Any]
    parent: list[int]

    # run-wide
    lock: threading.Lock
    cond: threading.Condition
    done: threading.Event
    on_done: Callable[[], None] | None
    waiting: list[int]
    succs: list[list[int]]
    ready: list[list[int]]
    ready_threads: list[int]
    ready_foreign: list[list[int]]
    left: int
    running: int
    running_kind: list[int]
    perf0: float
    end: float
    wall0: float
    stopping: bool
    exiting: bool
    outcome: str
    cause: int
    cause_error: BaseException | None
    store_failed: int
    pending_skip: dict[int, Any]
    stop_reason: str | None

    # thread workers (workers.py)
    threads: int
    idle: int
    avg_task: float
    progress: int
    last_take: float
    watching: bool

    # layers (layers.py)
    layered: bool
    barrier: LayerBarrier
    layer_seen: bytearray
    layer_names: list[tuple[str, ...]] | None
    checkpoint: Callable[[LayerReport], Any] | None
    checkpoint_asked: int

    # map (fanout.py)
    map_left: dict[int, int]
    children: dict[int, list[int]]
    elem_wait: dict[int, int]
    streams: dict[int, list[int]]
    stream_from: dict[int, tuple[int, ...]]
    streamable: bytearray

    # recording (recording.py) and telemetry (telemetry.py)
    started: list[int]
    spans: list[tuple[int, int, float, float, BaseException | None]]
    metrics: dict[int, dict[str, float]]
    final_counts: list[int]
    live: Progress | None
    tracing: Any
    untraced: list[Callable[..., Any]]
    cpu_times: dict[int, float]
    cpu_foreign: dict[int, float]

    # values no longer needed
    release: bool
    keep: bytearray
    users_left: list[int]
    released: bytearray
    track_users: bool

    # budgets (budgets.py) and admission (admission.py)
    budget: dict[str, float]
    spent: dict[str, float]
    committed: dict[str, float]
    estimates: dict[int, dict[str, float]]
    est: list[dict[str, float] | None]
    budget_stopped: bool
    gate: Gate
    gated: bool
    rate_wake: float
    parked_since: dict[int, tuple[str, Any, float]]
    waits: list[tuple[int, str, Any, float, float]]
    in_order: bool
    order_hold: bool
    order_held_by: int
    blocked_dask: list[tuple[int, int]]

    # groups (groups.py) and deadlines (deadlines.py)
    group_deadline: dict[TaskGroup, float]
    stopped_groups: set[TaskGroup]
    timer: Timer | None

    # store, cache, resume
    preset: dict[int, Any]
    predicted: Any
    given_limits: tuple[Any, ...]
    persist: Callable[[Sequence[tuple[int, Any, float, float, Any]]], list[Any]] | None
    lookup: Callable[[int, tuple[Any, ...], dict[str, Any]], tuple[bool, Any]] | None
    reuse: Callable[[int, list[tuple[int, tuple[Any, ...]]]], dict[int, Any]] | None
    reusable: frozenset[int]
    io_jobs: queue.SimpleQueue[Any] | None
    storing: int
    stored: threading.Condition
    items: Any

    # events
    bus: EventBus | None
    emit: Callable[[Any], None] | None

    # pools (pools.py) and the Dask cluster (remote.py)
    backends: list[Any]
    kind_cap: list[int]
    dask: Any
    dask_threads: int
    cluster: Any
    has_foreign: bool
    only_foreign: int

    # faults (faults.py)
    begun: bool

    if TYPE_CHECKING:

        def _init_admission(
            self, pools: Mapping[str, float], limits: Mapping[str, RateLimit | Adaptive]
        ) -> None: ...
        def _admit(self, i: int) -> bool: ...
        def _requeue(self, parked: list[tuple[int, int]]) -> None: ...
        def _release_units(
            self,
            i: int,
            ok: bool,
            error: Any,
            now: float,
            used: Mapping[str, float] | None,
            abandoned: bool = False,
        ) -> None: ...
        def _offer_room(self) -> None: ...
        def _on_rate_wake(self) -> None: ...
        def _init_budgets(
            self, budget: Mapping[str, float] | None, limits: Mapping[str, Any]
        ) -> None: ...
        def _within_budget(self, i: int) -> dict[str, float] | None: ...
        def _commit(self, i: int, mine: dict[str, float]) -> None: ...
        def _charge(
            self,
            i: int,
            used: Mapping[str, float] | None,
            *,
            abandoned: bool = False,
            refused: bool = False,
        ) -> None: ...
        def _budget_settled(self) -> None: ...
        def _budget_stop(self, reason: str) -> None: ...
        def _warn_unrecorded(self) -> None: ...
        def _timer(self) -> Timer: ...
        def _on_task_deadline(self, i: int, token: int) -> None: ...
        def _timeout_error(self, i: int) -> TaskTimeout: ...
        def _on_run_deadline(self) -> None: ...
        def _init_fanout(self) -> None: ...
        def _try_stream(self, m: int) -> None: ...
        def _expand(self, m: int) -> None: ...
        def _known_items(
            self, m: int, lists: list[tuple[str, list[int] | None, Sequence[Any] | None]], k: int
        ) -> list[tuple[int, tuple[Any, ...]]]: ...
        def _map_error(self, m: int, message: str) -> None: ...
        def _fan_out(
            self,
            m: int,
            lists: list[tuple[str, list[int] | None, Sequence[Any] | None]],
            k: int,
            reused: dict[int, Any],
        ) -> None: ...
        def _element_ended(self, s: int, c: int) -> None: ...
        def _element_dead(self, e: int, up: int) -> None: ...
        def _map_done(self, m: int) -> None: ...
        def _map_nothing(self, m: int) -> None: ...
        def _element_item(self, e: int) -> tuple[Any, ...]: ...
        def _element_info(self, e: int) -> tuple[str, tuple[Any, ...], int]: ...
        def _map_failed(self, m: int, error: BaseException) -> None: ...
        def _fault(self, where: str, error: BaseException) -> None: ...
        def _take_up_faults(self) -> bool: ...
        def _fault_locked(self, where: str, error: BaseException) -> None: ...
        def _lost(self, i: int, fault: BaseException, reason: str) -> None: ...
        def _end_late(self) -> None: ...
        def _end_now(self) -> None: ...
        def _init_groups(self) -> None: ...
        def _group_started(self, t: Task, now: float) -> None: ...
        def _on_group_deadline(self, group: TaskGroup) -> None: ...
        def _stop_group(self, group: TaskGroup, i: int) -> None: ...
        def _fails_fast(self, i: int) -> bool: ...
        def _in_stopped_group(self, i: int) -> bool: ...
        def _init_layers(
            self, mode: str, checkpoint: Callable[[LayerReport], Any] | None
        ) -> None: ...
        def _layer_started(self, li: int) -> None: ...
        def _layer_done(self, li: int) -> None: ...
        def _ask_checkpoint(self, li: int) -> None: ...
        def _open_next_layer(self) -> None: ...
        def _best_foreign(self) -> tuple[int, int]: ...
        def _foreign_first(self, key: int) -> bool: ...
        def _pump(self) -> None: ...
        def _look_up_then_submit(
            self, i: int, token: int, kind: int, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> None: ...
        def _begin_hint(self, i: int, token: int) -> dict[str, Any]: ...
        def _began(self, i: int, token: int, when: float) -> None: ...
        def _submit(
            self, i: int, token: int, kind: int, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> None: ...
        def _init_recording(self) -> None: ...
        def _counts(self) -> dict[str, int]: ...
        def _static_durations(self) -> list[float]: ...
        def _init_remote(self) -> None: ...
        def _collect_remote(self) -> None: ...
        def _without_queue_time(self, ran: dict[int, list[float]]) -> None: ...
        def _lose(self, i: int, error: BaseException) -> None: ...
        def _try_again(self, i: int, error: BaseException) -> bool: ...
        def _retryable(self, i: int, error: BaseException) -> bool: ...
        def _push_back(self, i: int, error: BaseException, push: PushBack) -> None: ...
        def _wait_to_retry(self, i: int, when: float) -> None: ...
        def _on_retry(self, i: int, token: int) -> None: ...
        def _skipped(self, i: int, skip: Skip) -> None: ...
        def _skip_now(self, i: int, skip: Skip) -> None: ...
        def _skip_it(self, s: int, skip: Skip) -> None: ...
        def _skip_consumers(self, i: int) -> None: ...
        def _init_store_io(self) -> None: ...
        def _init_scopes(self, items: Any) -> None: ...
        def _wait_for_store(self) -> None: ...
        def _io_put(self, job: tuple[Any, ...]) -> None: ...
        def _off_lock(
            self, work: Callable[[], Any], then: Callable[[Any, BaseException | None], None]
        ) -> None: ...
        def _store_result(
            self,
            i: int,
            value: Any,
            t0: float,
            t1: float,
            then: Callable[[ResultNotStored | None], None] | None = None,
        ) -> None: ...
        def _stored(self, i: int, value: Any, error: ResultNotStored | None) -> None: ...
        def _release_held(
            self,
            i: int,
            value: Any,
            then: Callable[[ResultNotStored | None], None] | None,
            error: ResultNotStored | None,
        ) -> None: ...
        def _succeed_durably(self, i: int, value: Any, t0: float, t1: float) -> None: ...
        def _io_loop(self) -> None: ...
        def _close_store_io(self) -> None: ...
        def _persist(self, batch: Sequence[tuple[int, Any, float, float, Any]]) -> list[Any]: ...
        def _store_stop(self, i: int, error: ResultNotStored) -> None: ...
        def _not_stored_either(self, i: int, error: ResultNotStored) -> ResultNotStored: ...
        def _init_telemetry(self, tracing: Any) -> None: ...
        def _traced(self, fn: Callable[..., Any], e: int) -> Callable[..., Any]: ...
        def _trace_elements(self, m: int, kids: list[int]) -> None: ...
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
            cached: bool = False,
            used: dict[str, float] | None = None,
        ) -> bool: ...
        def _foreign_done(
            self,
            i: int,
            token: int,
            ok: bool,
            value: Any,
            seconds: float,
            ref: Any = None,
            metrics: dict[str, float] | None = None,
            cpu: float | None = None,
        ) -> None: ...
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
        ) -> bool: ...
        def _succeed(self, i: int, value: Any, status: int = ...) -> None: ...
        def _fail(self, i: int, error: BaseException) -> None: ...
        def _skip_downstream(self, i: int) -> None: ...
        def _finalize(self, i: int) -> None: ...
        def _release(self, j: int) -> None: ...
        def _maybe_release(self, j: int) -> None: ...
        def _stop(self, reason: str) -> None: ...
        def _cancel_running(self, j: int, reason: str) -> None: ...
        def _cancel_waiting(self, i: int, reason: str) -> None: ...
        def _abandon(
            self, i: int, error: BaseException | None, *, fail: bool, reason: str = ""
        ) -> None: ...
        def _finish_run(self) -> None: ...
        def _kick(self) -> None: ...
        def _kick_locked(self) -> None: ...
        def _init_workers(self) -> None: ...
        def _next(self) -> int: ...
        def _watch(self) -> None: ...
        def _on_watch(self, progress: int) -> None: ...
        def _dispatch(self) -> None: ...
        def _worker(self) -> None: ...
        def _serve(self) -> None: ...
        def _loop(self, i: int, token: int, box: dict[str, float]) -> None: ...
        def _init_entries(
            self, inputs: Mapping[str, Any], backend: str, address: str | None, client: Any
        ) -> None: ...
        def _task_event(self, kind: str, i: int, **fields: Any) -> None: ...
        def _call_args(
            self, i: int, remote: bool = False
        ) -> tuple[tuple[Any, ...], dict[str, Any]]: ...
        def _owner(self, i: int) -> int: ...
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
        ) -> int: ...
        def budget_report(self) -> dict[str, dict[str, float]]: ...
        def interrupt(self) -> None: ...
