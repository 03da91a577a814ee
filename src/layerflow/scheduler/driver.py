"""Driving a run: options checked, state built, run to the end, outcome raised."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from ..errors import (
    RunInterrupted,
    TaskFailed,
    safe_str,
)
from ..events import (
    LogObserver,
    Observer,
    logger,
)
from ..options import RunOptions
from ..otel import tracing as otel_tracing
from ..plan import Plan
from ..progress import Progress
from ..progress import resolve as resolve_progress
from ..result import RunResult
from .run import Run


def _observers(on_event: Observer | None, shown: Progress | None) -> list[Observer]:
    observers: list[Observer] = []
    if on_event is not None:
        observers.append(on_event)
    if shown is not None:
        lines = shown.observer()  # None for the live display, which reads snapshot()
        if lines is not None:
            observers.append(lines)
    elif logger.isEnabledFor(20):  # logging.INFO: plain progress lines through logging
        observers.append(LogObserver())
    return observers


def prepare(
    plan: Plan,
    inputs: Mapping[str, Any],
    options: RunOptions,
    *,
    outputs: list[int] | None = None,
    loop: Any = None,
    recorder: Any = None,
) -> Run:
    """Build the run's state from ``options`` (checked when they were made). ``recorder``
    connects the run to a store: its ``preset`` values are reused, its ``persist`` makes
    results durable."""
    shown = resolve_progress(options.progress)
    live = shown if shown is not None and shown.is_live() else None
    if live is not None:
        live.claim()  # before anything opens: a display shows one run at a time
    try:
        run = _made(plan, inputs, options, shown, outputs, loop, recorder)
    except BaseException:
        if live is not None:
            live.release()
        raise
    run.live = live
    return run


def _made(
    plan: Plan,
    inputs: Mapping[str, Any],
    options: RunOptions,
    shown: Progress | None,
    outputs: list[int] | None,
    loop: Any,
    recorder: Any,
) -> Run:
    tracing = otel_tracing()  # None unless LAYERFLOW_OTEL asks for spans
    observers = _observers(options.on_event, shown)
    if tracing is not None:
        observers.append(tracing.observe)
    run = Run(
        plan,
        inputs,
        options,
        keep=outputs,
        observers=observers,
        loop=loop,
        preset=recorder.preset if recorder is not None else None,
        persist=recorder.persist if recorder is not None else None,
        lookup=recorder.lookup if recorder is not None and recorder.caching else None,
        reuse=recorder.reuse_elements if recorder is not None else None,
        reusable=recorder.element_presets if recorder is not None else (),
        items=recorder.items if recorder is not None else None,
    )
    if tracing is not None:
        run._init_telemetry(tracing)  # the run's span opens, calls are wrapped
    if recorder is not None:
        recorder.attach(run.names, run.parent, run.output)
    return run


def outcome(run: Run, recorder: Any = None) -> RunResult:
    """The run's result (recorded in the store, if any), or the exception ``flow.run``
    raises for it."""
    result = run.result()
    if recorder is not None:
        recorder.end(result, run)
    if result.status == "interrupted":
        raise RunInterrupted("the run was interrupted (Ctrl-C); finished results are kept", result)
    # a failure raises under fail-fast; one of no task's (a checkpoint's error, a fault in
    # layerflow's own thread) raises always, but a run timeout follows fail_fast
    if result.status == "failed" and (run.fail_fast or (run.cause < 0 and not run.run_timed_out)):
        cause = run.cause_error
        if run.cause >= 0:
            name = run.names[run.cause]
            attempts = run.attempts[run.cause]
            tries = f" after {attempts} attempts" if attempts > 1 else ""
            said = f": {safe_str(cause)}" if cause is not None else ""
            message = f"task {name!r} failed{tries}{said}"
        else:
            name = None
            message = safe_str(cause) if cause is not None else "the run failed"
        raise TaskFailed(message, name, result) from cause
    return result


def _begin(run: Run, recorder: Any) -> None:
    """Record the run's start; a store that cannot take it (read-only, full) ends the run
    before anything started, its pools released."""
    try:
        recorder.watch(run)  # heartbeats from its start: layerflow ui shows it live
        recorder.begin(run.run_id, run.wall0, run.perf0)
    except BaseException:
        run.close_unstarted()
        raise


def execute(
    plan: Plan,
    inputs: Mapping[str, Any],
    options: RunOptions,
    *,
    outputs: list[int] | None = None,
    recorder: Any = None,
) -> RunResult:
    """Run a validated plan in the calling thread; raise as ``flow.run`` does."""
    return execute_run(plan, inputs, options, outputs=outputs, recorder=recorder)[0]


def execute_run(
    plan: Plan,
    inputs: Mapping[str, Any],
    options: RunOptions,
    *,
    outputs: list[int] | None = None,
    recorder: Any = None,
) -> tuple[RunResult, Run]:
    """``execute``, also giving the ended run's state (``lf.dask.get`` reads its values
    list: through ``RunResult`` 100,000 values would build a ``TaskRun`` each)."""
    try:
        run = prepare(plan, inputs, options, outputs=outputs, recorder=recorder)
        if recorder is not None:
            _begin(run, recorder)
        try:
            run.execute()
        except KeyboardInterrupt:  # after the run had ended: record it, let Ctrl-C through
            if recorder is not None:
                recorder.end(run.result(), run)
            raise
        return outcome(run, recorder), run
    finally:
        if recorder is not None:
            recorder.close()


async def execute_async(
    plan: Plan,
    inputs: Mapping[str, Any],
    options: RunOptions,
    *,
    outputs: list[int] | None = None,
    recorder: Any = None,
) -> RunResult:
    """Run a validated plan from a coroutine: coroutine tasks on the caller's event loop,
    the others on their pools; the caller's loop is never blocked."""
    import asyncio

    loop = asyncio.get_running_loop()
    try:
        run = prepare(plan, inputs, options, outputs=outputs, loop=loop, recorder=recorder)
        return await _execute_async(run, loop, recorder)
    finally:
        if recorder is not None:
            recorder.close()


async def _execute_async(run: Run, loop: Any, recorder: Any) -> RunResult:
    import asyncio

    if recorder is not None:
        _begin(run, recorder)
    finished = loop.create_future()

    def done() -> None:
        loop.call_soon_threadsafe(lambda: finished.done() or finished.set_result(None))

    run.on_done = done
    try:
        run.start()
        await asyncio.shield(finished)
        if run.keeper is not None:  # values to bring back: a blocking round trip, off the loop
            await loop.run_in_executor(None, run._collect_remote)
    except asyncio.CancelledError:
        run.interrupt()
        # results being stored (milliseconds): waited for off the caller's loop, so that
        # nothing finished is lost; a second cancel gives up waiting
        with contextlib.suppress(asyncio.CancelledError):
            await loop.run_in_executor(None, run.settle)
        run.close()
        if recorder is not None:  # the run row says "interrupted", not "running"
            recorder.end(run.result(), run)
        raise
    except BaseException:
        run.close()
        raise
    run.close()
    return outcome(run, recorder)
