"""OpenTelemetry spans for a run: ``LAYERFLOW_OTEL=1``, or ``layerflow run --otel``.

With the OpenTelemetry API installed and a tracer provider configured, a run is one span
(named ``run FLOW``, a child of whatever span is current where ``flow.run`` is called) and
each task attempt one span under it, named after the task (``chunk[3]`` for a map's
element). Attributes, all under ``layerflow.``: ``run_id``, ``task``, ``attempt``,
``layer``, ``executor`` (thread, async, process, dask, sequential), ``status``
(succeeded, failed, retrying: this attempt failed and another follows, skipped,
cancelled), ``waited`` and ``wait.pool.NAME`` / ``wait.rate_limit.NAME`` (seconds held
before the attempt started), and ``metric.NAME`` for every number the attempt gave
``lf.record`` or ``lf.usage``. A failed attempt has the exception recorded on its span
and an error status.

Nothing of this touches a run that does not ask for it: this module imports
opentelemetry only when asked, and the scheduler's hot path is the same either way. When
asked, the functions of the tasks that run in this process (threads, coroutines, the
calling thread) are wrapped once at the run's start (``scheduler/telemetry.py``): the
wrapper opens the attempt's span and makes it current in the context the task runs in,
so the spans a task's own instrumented clients make (httpx, openai, ...) nest under it.
Everything else is read from the run's events and records on the event thread: when
an attempt ended and how, its waits and its metrics. A worker process or a Dask worker
cannot share this process's context, so their attempts get their span from those
events alone, around the attempt as the scheduler saw it; a Dask attempt's at the run's
end, when its ``lf.record`` numbers come back from the cluster.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from .errors import InvalidOptionError, safe_str
from .events import Event, logger

__all__ = ["ENV", "Tracing", "requested", "tracing"]

#: the environment variable that turns spans on (``--otel`` sets it for its run)
ENV = "LAYERFLOW_OTEL"
_ON = frozenset({"1", "true", "yes", "on"})
_OFF = frozenset({"", "0", "false", "no", "off"})
INSTALL = "pip install 'layerflow[otel]'"

_warned = threading.Event()  # "no tracer provider" is said once per process


def requested() -> bool:
    """Whether ``LAYERFLOW_OTEL`` asks for spans (``1``/``true``/``yes``/``on``)."""
    value = os.environ.get(ENV)
    if value is None:
        return False
    word = value.strip().lower()
    if word in _ON:
        return True
    if word in _OFF:
        return False
    raise InvalidOptionError(
        f"{ENV}={value!r} is not understood: set it to 1 for OpenTelemetry spans, 0 for none"
    )


def available() -> str | None:
    """None when spans can be made; else why not, said for people."""
    try:
        from opentelemetry import trace
    except ImportError:
        return f"the OpenTelemetry API is not installed: {INSTALL}"
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return (
            "no OpenTelemetry tracer provider is configured, so spans would go nowhere: "
            "set one with opentelemetry.trace.set_tracer_provider(...) before the run, or "
            "start the program under opentelemetry-instrument"
        )
    return None


def tracing() -> Tracing | None:
    """The run's tracing, if ``LAYERFLOW_OTEL`` asks for it; None otherwise. Spans asked
    for without the API installed are an error; without a provider, a warning (once)."""
    if not requested():
        return None
    why = available()
    if why is not None:
        if why.startswith("the OpenTelemetry API"):
            raise InvalidOptionError(f"{ENV}=1 asks for spans, but {why} (or unset {ENV})")
        if not _warned.is_set():
            _warned.set()
            logger.warning("%s=1, but %s", ENV, why)
        return None
    return Tracing()


class Tracing:
    """One run's spans: the run's, and one per task attempt (see the module docstring).
    ``observe`` is an event observer; ``wrap`` wraps a task's function."""

    def __init__(self) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace import Status, StatusCode

        from . import __version__

        self._trace = trace
        self._attach, self._detach = context.attach, context.detach
        self._error = lambda text: Status(StatusCode.ERROR, text)
        self.tracer = trace.get_tracer("layerflow", __version__)
        # (task name, attempt) -> the span a wrapper opened, or the start of an attempt
        # whose span is made at its end (a worker process's, a Dask worker's)
        self.open: dict[tuple[str, int], Any] = {}
        self.began: dict[tuple[str, int], float] = {}
        self.entries: dict[str, int] = {}
        self.seen: dict[int, dict[str, float]] = {}  # metrics already put on a span
        self.waits_of: dict[int, list[tuple[str, Any, float, float]]] = {}
        self.waits_read = 0
        self.deferred: list[tuple[Any, str]] = []  # Dask attempts' ends (see _end_attempt)
        self.run: Any = None
        self.span: Any = None

    def bind(self, run: Any) -> None:
        """Open the run's span (a child of the caller's current span) for ``run``, built
        and not yet started."""
        self.run = run
        self.offset = run.wall0 - run.perf0  # perf_counter reading -> epoch seconds
        flow = run.graph.flow_name
        self.span = self.tracer.start_span(
            f"run {flow}" if flow else "run",
            start_time=_ns(run.wall0),
            attributes={
                "layerflow.run_id": run.run_id,
                "layerflow.flow": flow or "",
                "layerflow.tasks": len(run.names),
                "layerflow.mode": run.mode,
            },
        )
        self.parent = self._trace.set_span_in_context(self.span)

    def wrap(self, fn: Callable[..., Any], e: int, is_async: bool) -> Callable[..., Any]:
        """``fn`` (entry ``e``'s call), each call in its attempt's span, made current for
        the call (each task runs in a context copy of its own)."""
        name, attempts, open_spans = self.run.names[e], self.run.attempts, self.open
        start, parent = self.tracer.start_span, self.parent
        in_context, attach, detach = self._trace.set_span_in_context, self._attach, self._detach

        if is_async:

            async def traced_async(*args: Any, **kwargs: Any) -> Any:
                span = start(name, context=parent)
                open_spans[name, attempts[e]] = span
                token = attach(in_context(span))
                try:
                    return await fn(*args, **kwargs)
                finally:
                    detach(token)

            return traced_async

        def traced(*args: Any, **kwargs: Any) -> Any:
            span = start(name, context=parent)
            open_spans[name, attempts[e]] = span
            token = attach(in_context(span))
            try:
                return fn(*args, **kwargs)
            finally:
                detach(token)

        return traced

    # --- from the run's events (on its event thread) ----------------------------------------

    def observe(self, event: Event) -> None:
        """An event observer: attempts' ends close their spans, the run's end the run's."""
        kind = event.kind
        if kind == "task_started":
            self.began[event.task, event.attempt] = event.time  # type: ignore[index, attr-defined]
        elif kind in _ENDS:
            self._end_attempt(event, _ENDS[kind])
        elif kind == "run_finished":
            self._end_run(event)

    def _entry(self, name: str) -> int:
        entries = self.entries
        e = entries.get(name)
        if e is None:  # a map's elements are added as the run goes
            names = self.run.names
            for k in range(len(entries), len(names)):
                entries[names[k]] = k
            e = entries.get(name, -1)
        return e

    def _end_attempt(self, event: Any, status: str, deferred: bool = False) -> None:
        run, e = self.run, self._entry(event.task)
        if not deferred and e >= 0 and run.kind[e] == _DASK_KIND:
            # a Dask task's lf.record numbers come back with the run's end: its spans then
            self.deferred.append((event, status))
            return
        key = (event.task, event.attempt)
        span = self.open.pop(key, None)
        began = self.began.pop(key, None)
        if span is None:
            if began is None:
                return  # it never started: skipped or cancelled while waiting, a map's end
            span = self.tracer.start_span(event.task, context=self.parent, start_time=_ns(began))
        end = event.time
        if status == "succeeded" and e >= 0:  # not when it was stored, which may be later
            end = min(end, run.last_end[e] + self.offset)
        attributes: dict[str, Any] = {
            "layerflow.run_id": run.run_id,
            "layerflow.task": event.task,
            "layerflow.attempt": event.attempt,
            "layerflow.layer": event.layer,
            "layerflow.status": status,
        }
        if e >= 0:
            attributes["layerflow.executor"] = _EXECUTORS[run.kind[e]]
            attributes.update(self._waits(e))
            if not (deferred and status == "retrying"):  # (a Dask attempt's: the last one's)
                attributes.update(self._metrics(e))
        span.set_attributes(attributes)
        error = event.error
        if error is not None and status in ("failed", "retrying"):
            span.record_exception(error)
            span.set_status(self._error(safe_str(error)))
        span.end(end_time=_ns(end))

    def _waits(self, e: int) -> dict[str, float]:
        """What entry ``e`` waited for before its attempt, from the run's wait records."""
        records = self.run.waits
        for i, what, which, since, until in records[self.waits_read : len(records)]:
            self.waits_of.setdefault(i, []).append((what, which, since, until))
            self.waits_read += 1
        out: dict[str, float] = {}
        total = 0.0
        for what, which, since, until in self.waits_of.pop(e, ()):
            key = f"layerflow.wait.{what}.{which}"
            out[key] = out.get(key, 0.0) + (until - since)
            total += until - since
        if out:
            out["layerflow.waited"] = total
        return out

    def _metrics(self, e: int) -> dict[str, float]:
        """This attempt's ``lf.record`` numbers: the entry's, less what earlier attempts
        already put on their spans."""
        now = dict(self.run.metrics.get(e) or {})
        before = self.seen.get(e)
        if now:
            self.seen[e] = now
        out = {}
        for k, v in now.items():
            if before is not None:
                v -= before.get(k, 0)
                if not v:
                    continue
            out[f"layerflow.metric.{k}"] = v
        return out

    def _end_run(self, event: Any) -> None:
        for attempt, status in self.deferred:
            self._end_attempt(attempt, status, deferred=True)
        self.deferred.clear()
        run, span = self.run, self.span
        end = _ns(run.end + self.offset)
        for key, left in list(self.open.items()):  # attempts whose end was never reported
            left.set_attribute("layerflow.status", "unknown")
            left.end(end_time=end)
            del self.open[key]
        attributes: dict[str, Any] = {
            "layerflow.status": event.status,
            "layerflow.sequential_estimate": event.sequential_estimate or 0.0,
        }
        for status, count in event.counts.items():
            attributes[f"layerflow.count.{status}"] = count
        totals: dict[str, float] = {}
        for metrics in list(run.metrics.values()):
            for k, v in metrics.items():
                totals[k] = totals.get(k, 0) + v
        attributes.update((f"layerflow.metric.{k}", v) for k, v in totals.items())
        if run.stop_reason:
            attributes["layerflow.stop_reason"] = run.stop_reason
        span.set_attributes(attributes)
        if event.status == "failed":
            cause = run.cause_error
            what = f": {safe_str(cause)}" if cause is not None else ""
            who = f"task {run.names[run.cause]!r} failed" if run.cause >= 0 else "the run failed"
            span.set_status(self._error(who + what))
        span.end(end_time=end)


#: an event that ends an attempt, and the status its span gets
_ENDS = {
    "task_succeeded": "succeeded",
    "task_failed": "failed",
    "task_retrying": "retrying",
    "task_skipped": "skipped",
    "task_cancelled": "cancelled",
}
_EXECUTORS = ("thread", "async", "process", "dask", "sequential")  # by the scheduler's kind
_DASK_KIND = _EXECUTORS.index("dask")


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)
