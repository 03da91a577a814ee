"""A running run's heartbeat: about once a second, what it is doing, written to its store.

A store learns of a run's results as their batches commit (``scheduler/storage.py``), but
not which tasks are running, waiting for a pool or a rate limit, retrying, or failed: the
run records those at its end. ``layerflow ui`` shows them live from this: one thread per
process reads each watched run's state without its lock (as the progress display does, a
moment behind at worst) and writes it with :meth:`Store.save_live`, one unsynced row
update per run per beat, whatever the number of tasks. A run that ends within ``FIRST``
seconds writes no beat at all; a run that is killed leaves its last beat, whose age (and
its process, gone) tells ``layerflow ui`` that it crashed.

What a beat reads is bounded: the status list copied once (C speed, about a millisecond per
100,000 tasks), then only the entries that are neither pending nor done, up to
``MAX_LISTED`` per status, and the latest ``MAX_SPANS`` failed attempts and waits. Only the
failed tasks listed carry a traceback, each formatted once; failed attempts carry their
error's text.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from typing import Any

from .errors import safe_str
from .events import logger
from .scheduler.statuses import (
    CACHED,
    CANCELLED,
    FAILED,
    MAPPED,
    RETRY_WAIT,
    RUNNING,
    SKIPPED,
    STATUS_NAMES,
)
from .tracebacks import format_failure

__all__ = ["FIRST", "INTERVAL", "SIMULATED", "Watched", "run_options", "watch"]

INTERVAL = 1.0  # seconds between beats
FIRST = 0.5  # the first beat, after the run's start
MAX_LISTED = 500  # entries listed per status
MAX_SPANS = 2000  # failed attempts and waits listed (the latest)
SIMULATED = 2000  # runs of up to this many tasks are simulated to say what bound them

# the page's name of each of the scheduler's status codes: its own, but a task waiting to
# retry is "retrying"
_NAMES = tuple("retrying" if code == RETRY_WAIT else name for code, name in enumerate(STATUS_NAMES))
#: statuses whose tasks are listed one by one (succeeded ones are in the stored results; those
#: being stored, thousands in a fast run, only counted: they are there a moment later)
_LISTED = (RUNNING, MAPPED, RETRY_WAIT, FAILED, SKIPPED, CANCELLED, CACHED)


def _limit_text(kind: str, what: Any) -> str:
    names = ", ".join(repr(k) for k in what) if isinstance(what, Mapping) else repr(what)
    return f"pool {names}" if kind == "pool" else f"rate limit {names}"


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def run_options(run: Any) -> dict[str, Any]:
    """What a run was given that its pictures explain it by (JSON-safe): ``max_workers``,
    ``mode``, ``resources``, ``rate_limits``, ``budget``, and per task the pools and rate
    limits it uses (``limits``: only the tasks that use any; only for runs of up to
    ``SIMULATED`` tasks, which the page simulates to say what bound them)."""
    max_workers, mode, resources, rate_limits = run.given_limits
    limits = {}
    for t in run.spec[: run.n] if run.n <= SIMULATED else ():
        if t.resources or t.rate_limit is not None:
            limits[t.name] = {
                "resources": _jsonable(t.resources or {}),
                "rate_limit": _jsonable(t.rate_limit),
            }
    return {
        "max_workers": max_workers,
        "mode": mode,
        "resources": _jsonable(resources or {}),
        "rate_limits": _jsonable(rate_limits or {}),
        "budget": _jsonable(run.budget or {}),
        "limits": limits,
    }


class Watched:
    """One run kept told to its store until :meth:`stop`."""

    def __init__(self, store: Any, run_id: str, run: Any) -> None:
        self.store = store
        self.run_id = run_id
        self.run = run
        self.due = time.monotonic() + FIRST
        self.lock = threading.Lock()  # held by a beat: stop() waits for it
        self.stopped = False
        self._last: str | None = None  # the state last written
        self._tracebacks: dict[int, tuple[BaseException, str]] = {}  # entry -> error, its tb

    def stop(self) -> None:
        """No beat from now on (one under way is waited for)."""
        _BEAT.remove(self)
        with self.lock:
            self.stopped = True
            self.run = None  # nothing of the run kept past its end
            self._tracebacks = {}

    def beat(self) -> None:
        """Write the run's state (only the heartbeat's time when it did not change)."""
        data = json.dumps(self.state(), separators=(",", ":"))
        self.store.save_live(self.run_id, None if data == self._last else data)
        self._last = data

    def _traceback(self, k: int, error: BaseException, known: dict[int, Any]) -> str:
        """Entry ``k``'s failure as the store keeps it at the end (the user's frames only),
        formatted once (a few milliseconds each, holding the interpreter): kept in ``known``,
        this beat's tracebacks, from the last beat's."""
        found = self._tracebacks.get(k)
        if found is not None and found[0] is error:
            tb = found[1]
        else:
            try:
                tb = format_failure(error, last=None)
            except Exception:
                tb = safe_str(error)
        known[k] = (error, tb)
        return tb

    def state(self) -> dict[str, Any]:
        """The run's state as the page reads it (epoch seconds throughout)."""
        from .records import outcome_of

        run = self.run
        status = bytearray(run.status)  # one copy: the lists change meanwhile
        names, attempts, errors = run.names, run.attempts, run.errors
        first, last, busy = run.first_start, run.last_end, run.busy
        offset = run.wall0 - run.perf0
        counts: dict[str, int] = {}
        for code, name in enumerate(_NAMES):
            found = status.count(code)
            if found:
                counts[name] = counts.get(name, 0) + found
        parked = dict(run.parked_since)
        if parked:
            counts["waiting"] = len(parked)
            counts["pending"] = max(counts.get("pending", 0) - len(parked), 0)
        tasks: dict[str, list[Any]] = {}
        tracebacks: dict[int, tuple[BaseException, str]] = {}  # the failed tasks listed
        for code in _LISTED:
            k, listed = status.find(code), 0
            while k >= 0 and listed < MAX_LISTED:
                started = first[k] + offset if attempts[k] else None
                error, tb = None, None
                if code == FAILED and errors[k] is not None:
                    error = safe_str(errors[k])
                    tb = self._traceback(k, errors[k], tracebacks)
                tasks[names[k]] = [
                    _NAMES[code],
                    attempts[k],
                    started,
                    last[k] + offset if attempts[k] else None,  # running: this attempt's start
                    busy[k],
                    error,
                    tb,
                ]
                listed += 1
                k = status.find(code, k + 1)
        self._tracebacks = tracebacks
        spans = [  # a failed attempt's error as text only: the timeline's tooltips
            [
                names[i],
                attempt,
                t0 + offset,
                t1 + offset,
                outcome_of(error),
                None if error is None else safe_str(error),
            ]
            for i, attempt, t0, t1, error in run.spans[-MAX_SPANS:]
        ]
        waits = [
            [names[i], kind, _limit_text(kind, what), t0 + offset, t1 + offset]
            for i, kind, what, t0, t1 in run.waits[-MAX_SPANS:]
        ]
        waits += [
            [names[i], kind, _limit_text(kind, what), since + offset, None]
            for i, (kind, what, since) in list(parked.items())[:MAX_LISTED]
        ]
        state: dict[str, Any] = {
            "entries": len(status),
            "counts": counts,
            "tasks": tasks,
            "spans": spans,
            "waits": waits,
            "stopping": bool(run.stopping),
            "stop_reason": getattr(run, "stop_reason", None),
        }
        if run.budget:
            state["budget"] = run.budget_report()
        return state


class _Beat:
    """The process's heartbeat thread and the runs it watches."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.watched: list[Watched] = []
        self.thread: threading.Thread | None = None

    def add(self, watched: Watched) -> None:
        with self.cond:
            self.watched.append(watched)
            if self.thread is None or not self.thread.is_alive():  # (none in a forked child)
                self.thread = threading.Thread(
                    target=self._loop, name="layerflow-heartbeat", daemon=True
                )
                self.thread.start()
            self.cond.notify()

    def remove(self, watched: Watched) -> None:
        with self.cond:
            if watched in self.watched:
                self.watched.remove(watched)

    def _loop(self) -> None:
        while True:
            with self.cond:
                while not self.watched:
                    self.cond.wait()
                now = time.monotonic()
                due = min(w.due for w in self.watched)
                if due > now:
                    self.cond.wait(due - now)
                    continue
                ready = [w for w in self.watched if w.due <= now]
                for w in ready:
                    w.due = now + INTERVAL
            for w in ready:
                with w.lock:
                    if w.stopped:
                        continue
                    try:
                        w.beat()
                    except Exception:  # a heartbeat is a nicety: never the run's failure
                        logger.debug("could not record run %s live", w.run_id, exc_info=True)


_BEAT = _Beat()


def watch(store: Any, run_id: str, run: Any) -> Watched:
    """Keep ``store`` told of ``run`` (a ``scheduler.Run``) until the result's ``stop()``."""
    watched = Watched(store, run_id, run)
    _BEAT.add(watched)
    return watched
