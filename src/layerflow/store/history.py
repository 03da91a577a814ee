"""Runs read back: the list of runs, one run's tasks, a whole ``RunResult``
(``load_run``), and the past durations that rank tasks and predict runs."""

from __future__ import annotations

import json
import pickle
import statistics
from typing import TYPE_CHECKING, Any

from ..errors import (
    RecordedError,
    StoreError,
)
from ..names import element_of

if TYPE_CHECKING:
    from ..result import RunResult

from .runs import Runs

#: how many of a flow's latest runs its history (the durations that rank ready tasks and
#: predict runs) is taken from
HISTORY_RUNS = 10


class History(Runs):
    """Runs read back: the list, one run's tasks, a whole run, past durations."""

    def runs(self, limit: int = 50) -> list[dict[str, Any]]:
        """The latest runs, newest first."""
        rows = self._read(
            "SELECT run_id, flow, started_at, finished_at, status, tasks, metrics FROM runs "
            "ORDER BY started_at DESC LIMIT ?",
            (limit,),
        )
        keys = ("run_id", "flow", "started_at", "finished_at", "status", "tasks", "metrics")
        out = [dict(zip(keys, row, strict=True)) for row in rows]
        for r in out:
            r["metrics"] = json.loads(r["metrics"]) if r["metrics"] else {}
        return out

    def tasks_of(self, run_id: str) -> list[dict[str, Any]]:
        """Every task row of a run."""
        rows = self._read(
            "SELECT name, status, attempts, started_at, finished_at, duration, error, "
            "traceback FROM task_runs WHERE run_id = ? "
            "ORDER BY started_at IS NULL, started_at, name",
            (run_id,),
        )
        keys = (
            "name",
            "status",
            "attempts",
            "started_at",
            "finished_at",
            "duration",
            "error",
            "traceback",
        )
        tasks = [dict(zip(keys, row, strict=True)) for row in rows]
        named = {t["name"] for t in tasks}
        added = [
            dict(
                zip(
                    keys,
                    (name, "succeeded", 1, started, started + seconds, seconds, None, None),
                    strict=True,
                )
            )
            for name, (_, _, _, started, seconds) in self._packed(run_id).items()
            if started is not None and name not in named
        ]  # tasks that succeeded at once: in their packed results only
        for task, data in self._read(
            "SELECT task, data FROM elements WHERE run_id = ?", (run_id,)
        ):  # a map's elements that succeeded at once: in their packed results only
            for index, _, _, _, started, seconds in pickle.loads(data):
                name = f"{task}[{index}]"
                if started is not None and name not in named:
                    added.append(
                        dict(
                            zip(
                                keys,
                                (
                                    name,
                                    "succeeded",
                                    1,
                                    started,
                                    started + seconds,
                                    seconds,
                                    None,
                                    None,
                                ),
                                strict=True,
                            )
                        )
                    )
        if added:
            tasks.extend(added)
            tasks.sort(key=lambda t: (t["started_at"] is None, t["started_at"] or 0, t["name"]))
        return tasks

    def load_run(self, run_id: str) -> RunResult:
        """A recorded run as a :class:`RunResult` (for its report and trace): statuses,
        timings, attempts, waits, layers and edges; errors as :class:`RecordedError`; no
        values (they stay in their result files). A run recorded by an earlier version has
        no attempts, waits or edges: each task that ran becomes one attempt."""
        from ..result import Attempt, RunResult, TaskRun, Wait, assign_lanes

        found = self._read(
            "SELECT flow, started_at, finished_at, status, critical_path FROM runs "
            "WHERE run_id = ?",
            (run_id,),
        )
        if not found:
            raise StoreError(f"no run {run_id!r} in the store {self.folder}; see layerflow runs")
        flow, run_start, run_end, status, critical = found[0]
        rows = self._read(
            "SELECT name, status, attempts, started_at, finished_at, duration, error, layer, "
            "needs, metrics, traceback FROM task_runs WHERE run_id = ? ORDER BY position, rowid",
            (run_id,),
        )
        graph = self._read("SELECT data FROM graphs WHERE run_id = ?", (run_id,))
        if graph:  # its tasks, layers and edges, and rows only where more than a result
            rows = self._with_graph(run_id, rows, json.loads(graph[0][0]))
        tasks: dict[str, TaskRun] = {}
        edges: list[tuple[str, str]] = []
        # graph tasks have a needs list; map subtasks (and every task of an old run) none
        recorded_needs = any(row[8] is not None for row in rows)
        by_layer: dict[int, list[str]] = {}
        for name, st, tries, started, finished, duration, error, layer, needs, numbers, tb in rows:
            if needs is not None or not recorded_needs:
                by_layer.setdefault(layer or 0, []).append(name)
            if isinstance(needs, str):
                needs = json.loads(needs)
            tasks[name] = TaskRun(
                name,
                st,
                None,
                RecordedError(error, tb) if error is not None else None,
                tries or 0,
                started,
                finished,
                duration or 0.0,
                layer or 0,
                json.loads(numbers) if numbers else {},
            )
            edges.extend((up, name) for up in needs or ())
        spans = self._read(
            "SELECT name, attempt, started_at, finished_at, outcome, error FROM attempts "
            "WHERE run_id = ? ORDER BY started_at, finished_at",
            (run_id,),
        )
        # a task that succeeded at its first attempt has no attempt row (nor had any task
        # of an earlier version's run): its one span is its own start and end
        spanned = {span[0] for span in spans}
        old = not recorded_needs  # an earlier version's run: a span for each task that ran
        spans.extend(
            (t.name, t.attempts or 1, t.started_at, t.finished_at, t.status, None)
            for t in tasks.values()
            if t.started_at is not None
            and t.finished_at is not None
            and t.name not in spanned
            and (old or t.attempts)  # a map task's own row spans its elements: no attempt
        )
        spans.sort(key=lambda s: (s[2], s[3]))
        held = self._read(
            "SELECT name, kind, reason, started_at, finished_at FROM waits WHERE run_id = ? "
            "ORDER BY started_at, finished_at",
            (run_id,),
        )
        wait_lanes = assign_lanes([(w[3], w[4]) for w in held])
        waits = [Wait._make((*w, lane)) for w, lane in zip(held, wait_lanes, strict=True)]
        if self._read("SELECT 1 FROM elements WHERE run_id = ? LIMIT 1", (run_id,)):
            tasks, spans = self._with_elements(run_id, tasks, spans, TaskRun)
        for name, text in self.logs_of(run_id).items():
            if name in tasks:
                tasks[name].logs = text
        lanes = assign_lanes([(s[2], s[3]) for s in spans])
        attempts = [Attempt._make((*span, lane)) for span, lane in zip(spans, lanes, strict=True)]
        ends = [t.finished_at for t in tasks.values() if t.finished_at is not None]
        return RunResult(
            run_id=run_id,
            flow_name=flow or None,
            status=status,
            tasks=tasks,
            order=[a.task for a in attempts if a.attempt == 1],
            layers=[by_layer[k] for k in sorted(by_layer)],
            critical_path=json.loads(critical) if critical else [],
            started_at=run_start,
            finished_at=run_end or max(ends, default=run_start),
            timeline=(attempts, waits),
            edges=edges,
        )

    def _with_graph(
        self, run_id: str, rows: list[tuple[Any, ...]], graph: dict[str, Any]
    ) -> list[tuple[Any, ...]]:
        """A run's task rows in its graph's order, each with its layer and the names it
        needs (a list) from the run's graph; the graph tasks that succeeded at once, which
        have no row, made from their packed results; an element's row after its task's."""
        names, layers, deps = graph["names"], graph["layers"], graph["needs"]
        by_name = {row[0]: row for row in rows}
        graph_names = set(names)
        elements: dict[str, list[tuple[Any, ...]]] = {}
        for row in rows:
            if row[0] not in graph_names:
                element = element_of(row[0])
                elements.setdefault(element[0] if element else "", []).append(row)
        packed = self._packed(run_id)
        out: list[tuple[Any, ...]] = []
        for k, name in enumerate(names):
            needs = [names[j] for j in deps[k]]
            own = by_name.get(name)
            if own is not None:
                out.append((*own[:7], layers[k], needs, *own[9:]))
            else:
                found = packed.get(name)
                if found is None or found[3] is None:
                    continue  # neither ran nor recorded: the run did not end (or no result)
                started, seconds = found[3], found[4]
                out.append(
                    (name, "succeeded", 1, started, started + seconds, seconds, None)
                    + (layers[k], needs, None, None)
                )
            out.extend(elements.pop(name, ()))
        for rest in elements.values():  # an element whose task is not in the graph
            out.extend(rest)
        return out

    def _with_elements(
        self, run_id: str, tasks: dict[str, Any], spans: list[Any], make: Any
    ) -> tuple[dict[str, Any], list[Any]]:
        """The run's map elements that succeeded at their first attempt have no row of their
        own (their packed results say when they ran): each added after its task."""
        added: dict[str, list[tuple[int, Any]]] = {}
        for task, data in self._read("SELECT task, data FROM elements WHERE run_id = ?", (run_id,)):
            owner = tasks.get(task)
            for index, _, _, _, started, seconds in pickle.loads(data):
                name = f"{task}[{index}]"
                if name in tasks or started is None:
                    continue  # recorded with a row of its own, or reused (it has a row)
                layer = owner.layer if owner is not None else 0
                t = make(
                    name, "succeeded", None, None, 1, started, started + seconds, seconds, layer, {}
                )
                added.setdefault(task, []).append((index, t))
                spans.append((name, 1, started, started + seconds, "succeeded", None))
        if not added:
            return tasks, spans
        spans.sort(key=lambda s: (s[2], s[3]))
        for name in list(tasks):  # the elements that have rows join them, in index order
            element = element_of(name)
            if element is not None and element[0] in added:
                added[element[0]].append((element[1], tasks.pop(name)))
        merged: dict[str, Any] = {}
        for name, t in tasks.items():
            merged[name] = t
            for _, element in sorted(added.pop(name, ()), key=lambda e: e[0]):
                merged[element.name] = element
        for rest in added.values():  # a task without a row of its own (should not be)
            for _, element in sorted(rest, key=lambda e: e[0]):
                merged[element.name] = element
        return merged, spans

    def durations(self, flow: str | None) -> dict[str, float]:
        """Median duration of each task over the latest runs of ``flow`` (``HISTORY_RUNS``)
        where it succeeded: what the tasks take now, read in the same time however long
        the store's history grows."""
        latest = self._read(
            "SELECT run_id FROM runs WHERE flow = ? ORDER BY started_at DESC LIMIT ?",
            (flow or "", HISTORY_RUNS),
        )
        seen: dict[str, list[float]] = {}
        for (run_id,) in latest:
            # a task that succeeded at once is in its packed results only; a row says more
            mine = {
                name: found[4]
                for name, found in self._packed(run_id).items()
                if found[3] is not None
            }
            mine.update(
                self._read(
                    "SELECT name, duration FROM task_runs WHERE run_id = ? AND status = "
                    "'succeeded' AND duration IS NOT NULL",
                    (run_id,),
                )
            )
            for name, duration in mine.items():
                seen.setdefault(name, []).append(duration)
        return {name: statistics.median(values) for name, values in seen.items()}
