"""A run's record: its start (the graph), its heartbeat while it goes, its end (every
task's row, attempts, waits, output), and the latest unfinished run of a flow."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..names import element_of

if TYPE_CHECKING:
    pass

from .items import Items
from .results import SAVE_LOGS


class Runs(Items):
    """A run's record: begun, heartbeat, ended, its output."""

    # --- runs ------------------------------------------------------------------------------

    def begin_run(
        self,
        run_id: str,
        flow: str | None,
        tasks: int,
        resumed_from: str | None,
        *,
        graph: dict[str, Any] | None = None,
    ) -> None:
        """Record that a run started (status ``running`` until it ends), in one commit: with
        its ``graph`` (``names``, ``layers``, ``needs``: see :meth:`end_run`), so that its
        tasks can be shown while it runs, and the process running it (see :meth:`live`)."""
        now = time.time()
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO runs (run_id, flow, started_at, status, tasks, "
                "resumed_from) VALUES (?, ?, ?, 'running', ?, ?)",
                (run_id, flow or "", now, tasks, resumed_from),
            )
            if graph is not None:
                db.execute(
                    "INSERT OR REPLACE INTO graphs (run_id, data) VALUES (?, ?)",
                    (run_id, json.dumps(graph)),
                )
            db.execute(
                "INSERT OR REPLACE INTO live (run_id, at, pid, host, data) "
                "VALUES (?, ?, ?, ?, NULL)",
                (run_id, now, os.getpid(), socket.gethostname()),
            )
            db.commit()

    def save_live(self, run_id: str, data: str | None) -> None:
        """A running run's heartbeat: now, and its state as JSON when it changed (None:
        unchanged). Not synced: a crash loses a heartbeat, never a result."""
        self._write(
            "UPDATE live SET at = ?, data = COALESCE(?, data) WHERE run_id = ?",
            (time.time(), data, run_id),
        )

    def live(self, run_id: str) -> dict[str, Any] | None:
        """What a running run last said of itself: ``at`` (its latest heartbeat, epoch
        seconds), ``pid`` and ``host`` (the process running it) and ``state`` (the JSON
        object ``heartbeat.py`` writes, or None before its first); None once it ended."""
        found = self._read("SELECT at, pid, host, data FROM live WHERE run_id = ?", (run_id,))
        if not found:
            return None
        at, pid, host, data = found[0]
        return {"at": at, "pid": pid, "host": host, "state": json.loads(data) if data else None}

    def task_counts(self, run_id: str) -> dict[str, int]:
        """How many of an ended run's tasks (its graph's, not a map's elements) ended in each
        status, without loading the run: a task that succeeded at once has no row."""
        found = self._read("SELECT tasks FROM runs WHERE run_id = ?", (run_id,))
        counts: dict[str, int] = {}
        seen = 0
        for name, status in self._read(
            "SELECT name, status FROM task_runs WHERE run_id = ?", (run_id,)
        ):
            if element_of(name) is None:
                counts[status] = counts.get(status, 0) + 1
                seen += 1
        rest = (found[0][0] or 0) - seen if found else 0
        if rest > 0:
            counts["succeeded"] = counts.get("succeeded", 0) + rest
        return counts

    def has_run(self, run_id: str) -> bool:
        """Whether the store has a run ``run_id``."""
        return bool(self._read("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)))

    def run_graph(self, run_id: str) -> dict[str, Any] | None:
        """A run's tasks, layers and edges as :meth:`begin_run` recorded them, if it did."""
        found = self._read("SELECT data FROM graphs WHERE run_id = ?", (run_id,))
        return json.loads(found[0][0]) if found else None

    def end_run(
        self,
        run_id: str,
        status: str,
        rows: Iterable[tuple[Any, ...]],
        *,
        attempts: Iterable[tuple[Any, ...]] = (),
        waits: Iterable[tuple[Any, ...]] = (),
        critical_path: list[str] | None = None,
        started_at: float | None = None,
        finished_at: float | None = None,
        metrics: dict[str, float] | None = None,
        graph: dict[str, list[Any]] | None = None,
        logs: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Record the tasks' final states (``rows``, in the run's task order: name,
        status, attempts, started, finished, duration, error, key, result file, traceback,
        layer, needs, metrics as JSON), its ``attempts`` (name, attempt, started, finished,
        outcome, error) and ``waits`` (name, kind, reason, started, finished), the run's
        status, times (the run's own clock when given, so its wall time excludes this
        write) and summed ``metrics``. With its ``graph`` (``names``, ``layers`` and
        ``needs``, each task's upstream indices), ``rows`` need not hold the tasks that
        succeeded at their first attempt with nothing to add to their packed results.
        ``logs``: (name, text) of what tasks printed, those not stored with their results."""
        with self._transaction() as db:
            if graph is not None:
                db.execute(
                    "INSERT OR REPLACE INTO graphs (run_id, data) VALUES (?, ?)",
                    (run_id, json.dumps(graph)),
                )
            db.executemany(
                "INSERT INTO task_runs (run_id, name, status, attempts, started_at, "
                "finished_at, duration, error, key, result, traceback, layer, needs, metrics, "
                "position) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (run_id, name) DO UPDATE SET status = excluded.status, "
                "attempts = excluded.attempts, started_at = excluded.started_at, "
                "finished_at = excluded.finished_at, duration = excluded.duration, "
                "error = excluded.error, traceback = excluded.traceback, "
                "layer = excluded.layer, needs = excluded.needs, position = excluded.position, "
                "metrics = excluded.metrics, "
                "result = COALESCE(excluded.result, task_runs.result)",
                ((run_id, *row, k) for k, row in enumerate(rows)),
            )
            # ended once; deleting first keeps a second end from doubling the rows
            db.execute("DELETE FROM attempts WHERE run_id = ?", (run_id,))
            db.executemany(
                "INSERT INTO attempts (run_id, name, attempt, started_at, finished_at, "
                "outcome, error) VALUES (?, ?, ?, ?, ?, ?, ?)",
                ((run_id, *row) for row in attempts),
            )
            db.executemany(SAVE_LOGS, ((run_id, *row) for row in logs))
            db.execute("DELETE FROM waits WHERE run_id = ?", (run_id,))
            db.executemany(
                "INSERT INTO waits (run_id, name, kind, reason, started_at, finished_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                ((run_id, *row) for row in waits),
            )
            db.execute("DELETE FROM live WHERE run_id = ?", (run_id,))
            db.execute(
                "UPDATE runs SET status = ?, started_at = COALESCE(?, started_at), "
                "finished_at = ?, critical_path = ?, metrics = ? WHERE run_id = ?",
                (
                    status,
                    started_at,
                    finished_at if finished_at is not None else time.time(),
                    json.dumps(critical_path) if critical_path is not None else None,
                    json.dumps(metrics) if metrics else None,
                    run_id,
                ),
            )
            db.commit()

    def mark_ended(self, run_id: str, status: str, finished_at: float | None = None) -> None:
        """Only the run's status and end (when :meth:`end_run` cannot be written)."""
        self._write(
            "UPDATE runs SET status = ?, finished_at = ? WHERE run_id = ?",
            (status, finished_at if finished_at is not None else time.time(), run_id),
        )

    def save_logs(self, run_id: str, logs: Sequence[tuple[str, str]]) -> None:
        """Keep (name, text) of what tasks printed, as this run's."""
        if logs:
            with self._transaction() as db:
                db.executemany(SAVE_LOGS, ((run_id, *row) for row in logs))
                db.commit()

    def logs_of(self, run_id: str, names: Iterable[str] | None = None) -> dict[str, str]:
        """What the tasks of ``run_id`` printed and logged, by name (those that printed
        nothing are not there); ``names``: of those tasks only."""
        rows = self._read("SELECT name, logs FROM task_logs WHERE run_id = ?", (run_id,))
        found = {name: text for name, text in rows if text}
        if names is not None:
            found = {name: found[name] for name in names if name in found}
        return found

    def latest_unfinished(self, flow: str | None) -> str | None:
        """The most recent run of ``flow``, if it did not succeed (a run that a later run
        finished is not unfinished any more)."""
        rows = self._read(
            "SELECT run_id, status FROM runs WHERE flow = ? ORDER BY started_at DESC LIMIT 1",
            (flow or "",),
        )
        return rows[0][0] if rows and rows[0][1] != "succeeded" else None
