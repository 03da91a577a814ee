"""One run's link to the store: which results a resumed run reuses, which it persists, and
how the run ends on record; what identifies each task's result (resume and cache keys) is
``keys.py``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import heartbeat
from .errors import ResultNotStored, StoreError, safe_str
from .heartbeat import run_options
from .keys import SCALARS, fingerprint, fingerprint_of, flow_key, task_keys, value_digest
from .names import element_of
from .store import Finished, Store, pickled
from .tracebacks import traceback_text

if TYPE_CHECKING:
    from .graph import Graph
    from .result import RunResult

__all__ = ["Recorder", "RunItems", "fingerprint_of", "flow_key", "task_keys", "value_digest"]


class Recorder:
    """Connects one run to a store: what to reuse (resume), what to persist, the end."""

    def __init__(
        self,
        store: Store,
        graph: Graph,
        inputs: Mapping[str, Any],
        resume: bool | str | None,
        cache: bool = False,
        *,
        owns_store: bool = False,
    ) -> None:
        self.store = store
        self.owns_store = owns_store  # opened for this run: closed when it ends
        self.graph = graph
        self.flow = flow_key(graph)
        self.keys = task_keys(graph, inputs)
        # which tasks use the cache (cache=True on the run, or on the task)
        self.cache_on = [cache or t.cache for t in graph.tasks]
        self.caching = any(self.cache_on)
        self.cache_keys: dict[int, str] = {}  # task -> the key it will be cached under
        self.fingerprints = [fingerprint(t) for t in graph.tasks] if self.caching else []
        self.preset: dict[int, Any] = {}
        # task -> its result (name, or bytes until begin() records it as this run's)
        self.preset_files: dict[int, Any] = {}
        # map task -> {element index: (key, pickled value, or result file)} that an earlier
        # run finished
        self.element_presets: dict[int, dict[int, tuple[str, Any, Any]]] = {}
        self.element_files: dict[str, str] = {}  # element name -> result file it reused
        self.element_rows: set[str] = set()  # elements stored with a row of their own
        self._element_hashes: dict[int, Any] = {}  # map task -> sha256 of its key
        # the run's entries (names, and each map element's task), once the run is built
        self.names: list[str] = list(graph.names)
        self.parent: list[int] = []
        self.resumed_from: str | None = None
        self.run_id = ""
        self.offset = 0.0
        self.output: Any = None  # the run's capture.TaskLogs, once attached
        self.logs_kept: set[int] = set()  # entries whose output is stored
        self.run: Any = None  # the run's state (watch), for its heartbeat
        self.watched: heartbeat.Watched | None = None
        self.items = RunItems(self)
        if resume:
            run_id = store.latest_unfinished(self.flow) if resume is True else str(resume)
            if run_id is not None:
                self.resumed_from = run_id
                self._find_finished(store.finished_results(run_id))
                self._find_elements(store.finished_elements(run_id))

    def _find_finished(self, finished: dict[str, tuple[str, Any]]) -> None:
        """What a resumed run reuses: tasks whose key is unchanged, loaded now; the
        elements of map tasks it will run, by index (checked when their task expands)."""
        graph, store = self.graph, self.store
        for i, name in enumerate(graph.names):
            found = finished.get(name)
            if found is None or found[0] != self.keys[i]:
                continue  # not finished then, or changed since: run it again
            try:
                self.preset[i] = store.load_value(found[1])
            except Exception:  # a missing or unreadable file: run it again
                continue
            self.preset_files[i] = found[1]
        mapped = graph.map_args
        for name, (key, file) in finished.items():  # elements that used the cache
            element = element_of(name)
            if element is None:
                continue
            m = graph.index.get(element[0], -1)
            if m in mapped and m not in self.preset:
                self.element_presets.setdefault(m, {})[element[1]] = (key, None, ("blob", file))

    def _find_elements(self, finished: dict[str, dict[int, tuple[str, Any, Any]]]) -> None:
        """The elements an earlier run stored (packed, per map task): by map task."""
        for task, elements in finished.items():
            m = self.graph.index.get(task, -1)
            if m in self.graph.map_args and m not in self.preset:
                mine = self.element_presets.setdefault(m, {})
                for index, found in elements.items():
                    mine.setdefault(index, found)

    def attach(self, names: list[str], parent: list[int], output: Any = None) -> None:
        """The run's own lists of entry names and map parents (map elements are appended
        to them as tasks expand): how an element is named and keyed; ``output``, what its
        tasks print (``capture.TaskLogs``), kept with their results."""
        self.names = names
        self.parent = parent
        self.output = output

    def element_key(self, m: int, index: int, item: tuple[Any, ...]) -> str:
        """Element ``index`` of map task ``m``, given ``item``: its task's key, its place
        and the values it was given (an element given something else runs again)."""
        base = self._element_hashes.get(m)
        if base is None:  # its task's key hashed once, however many elements it has
            base = self._element_hashes[m] = hashlib.sha256(self.keys[m].encode())
        h = base.copy()
        h.update(b"[%d]" % index)
        if len(item) == 1 and type(item[0]) in SCALARS:  # value_digest, without reordering
            h.update(hashlib.sha256(pickled(item)).hexdigest().encode())
        else:
            h.update(value_digest(item).encode())
        return h.hexdigest()

    def reuse_elements(self, m: int, known: list[tuple[int, tuple[Any, ...]]]) -> dict[int, Any]:
        """Of map task ``m``'s elements whose values are ``known`` (index, item), those an
        earlier run finished with the same values: index -> value, recorded as this run's
        at once (a crash of this run must not lose them)."""
        presets = self.element_presets.get(m, {})
        found: dict[int, Any] = {}
        rows, entries = [], []
        name = self.graph.names[m]
        for index, item in known:
            preset = presets.get(index)
            if preset is None or preset[0] != self.element_key(m, index, item):
                continue
            key, data, file = preset
            try:
                if isinstance(file, tuple):  # a cached element's row: (blob, its name)
                    found[index] = self.store.load_value(file[1])
                    rows.append((f"{name}[{index}]", key, file[1]))
                    self.element_files[rows[-1][0]] = file[1]
                else:
                    found[index] = self.store.load_element(data, file)
                    entries.append((index, key, data, file))
            except Exception:  # a missing or unreadable result: run it again
                continue
        if rows:
            self.store.record_reused(self.run_id, rows)
        if entries:
            self.store.record_reused_elements(self.run_id, name, entries)
        if found and self.resumed_from is not None and self.output is not None:
            self._reuse_element_logs([f"{name}[{index}]" for index in found])
        return found

    def _reuse_element_logs(self, names: list[str]) -> None:
        """Reused elements keep the output they had (see ``_reuse_logs``)."""
        found = self.store.logs_of(self.resumed_from, names)  # type: ignore[arg-type]
        if found:
            self.store.save_logs(self.run_id, list(found.items()))
            for element, text in found.items():
                self.output.preset_named(element, text)

    def close(self) -> None:
        """The run has ended: close the store's connection if the run opened the store."""
        self._unwatch()
        if self.owns_store:
            self.store.close()

    def watch(self, run: Any) -> None:
        """Keep the store told of ``run`` (a ``scheduler.Run``) while it goes, from its start
        (:meth:`begin`) to its end: a heartbeat with its state every second or so
        (``heartbeat.py``), so that ``layerflow ui`` shows it live."""
        self.run = run

    def _unwatch(self) -> None:
        # the run holds this recorder (persist, lookup): dropping the run here leaves no
        # cycle, so that a 100,000-task run's state is freed when the run returns, not by
        # a later full collection that the next runs would pay for
        watched, self.watched, self.run = self.watched, None, None
        if watched is not None:
            watched.stop()

    def begin(self, run_id: str, wall0: float, perf0: float) -> None:
        """The run has an id now: record its start, with its graph (and, once
        :meth:`watch` was called, its options, and a heartbeat from now on)."""
        self.run_id = run_id
        self.offset = wall0 - perf0
        graph = self.graph
        shape: dict[str, Any] = {
            "names": graph.names,
            "layers": graph.layer[: len(graph)],
            "needs": graph.deps,
        }
        if self.run is not None:
            shape["options"] = run_options(self.run)
        self.store.begin_run(run_id, self.flow, len(graph), self.resumed_from, graph=shape)
        if self.run is not None:
            self.watched = heartbeat.watch(self.store, run_id, self.run)
        if self.preset_files:  # durable now: a crash of this run must not lose them
            names = self.graph.names
            reused = list(self.preset_files.items())
            named = self.store.record_reused(
                run_id, [(names[i], self.keys[i], f) for i, f in reused]
            )
            self.preset_files = {i: name for (i, _), name in zip(reused, named, strict=True)}
            self._reuse_logs(run_id)

    def _reuse_logs(self, run_id: str) -> None:
        """A reused task's output is what it printed when it ran: this run's too."""
        if self.resumed_from is None or self.output is None:
            return
        names = self.graph.names
        found = self.store.logs_of(self.resumed_from, (names[i] for i in self.preset_files))
        if not found:
            return
        self.store.save_logs(run_id, list(found.items()))
        for i in self.preset_files:
            text = found.get(names[i])
            if text:
                self.output.preset(i, text)
                self.logs_kept.add(i)

    def persist(
        self, batch: Sequence[tuple[int, Any, float, float, Any]]
    ) -> list[ResultNotStored | None]:
        """Tasks and map elements succeeded, as (entry, value, start, end, element) on the
        run's clock, ``element`` being (name, the values it was given, index) for a map's
        element:
        make them durable together, each with its cache entry when it uses the cache. In
        order, None for each entry now stored, else the error to fail it with (see
        :meth:`Store.save_results`)."""
        names, keys, parent = self.graph.names, self.keys, self.parent
        n = len(keys)
        cache_keys = self.cache_keys
        pop = cache_keys.pop
        offset = self.offset
        items = []
        new = tuple.__new__
        for i, value, t0, t1, element in batch:
            if i < n:  # (a Finished made as a tuple: its __new__ is Python code)
                cache_key = pop(i, None) if cache_keys else None
                items.append(
                    new(
                        Finished,
                        (names[i], keys[i], value, t0 + offset, t1 - t0, cache_key, -1, ""),
                    )
                )
                continue
            m = parent[i]
            name, item, index = element
            key = self.element_key(m, index, item)
            cache_key = pop(i, None)
            if cache_key is not None:  # stored as a task row, beside its cache entry
                self.element_rows.add(name)
            items.append(
                new(Finished, (name, key, value, t0 + offset, t1 - t0, cache_key, index, names[m]))
            )
        logs = []
        output = self.output
        if output is not None and output.texts:  # a run whose tasks print nothing: no cost
            for entry in batch:
                text = output.text(entry[0])
                if text:
                    logs.append((self.names[entry[0]], text))
                    self.logs_kept.add(entry[0])
        if not logs:
            return self.store.save_results(self.run_id, items)
        errors = self.store.save_results(self.run_id, items, logs=logs)
        if logs and any(e is not None for e in errors):  # not stored: kept at the end
            for entry, error in zip(batch, errors, strict=True):
                if error is not None:
                    self.logs_kept.discard(entry[0])
        return errors

    def lookup(self, i: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[bool, Any]:
        """Before task ``i`` runs: a cached result for exactly this call, if there is one.
        The key is the task's name, its code, and the values it is called with (a map's
        element: its task's name and code, and its own values, so that a list that gains
        an element computes only that one)."""
        owner = i if i < len(self.cache_on) else self.parent[i]  # an element: its task's
        if not self.cache_on[owner]:
            return False, None
        h = hashlib.sha256()
        h.update(self.graph.names[owner].encode())
        h.update(self.fingerprints[owner].encode())
        try:
            h.update(value_digest(args, strict=True).encode())
            h.update(value_digest(sorted(kwargs.items()), strict=True).encode())
        except Exception:  # values that cannot be pickled cannot be compared: no cache
            return False, None
        key = h.hexdigest()
        try:
            found = self.store.cache_get(key)
        except StoreError:  # a cache that cannot be read is a miss (the run says the rest)
            found = None
        if found is not None:
            try:
                value = self.store.load_value(found)
            except Exception:  # an unreadable file: compute it again
                found = None
            else:
                if i == owner:
                    self.preset_files[i] = found
                else:
                    self.element_files[self.names[i]] = found
                return True, value
        self.cache_keys[i] = key
        return False, None

    def end(self, result: RunResult, run: Any) -> None:
        """Every task's final state, its attempts and waits, and the run's (``run``: the
        ended run's state, ``scheduler.Run``).

        A task that succeeded at its first attempt with nothing for ``lf.record`` needs no
        row: its packed result says when it ran (``Store.load_run`` reads it from there,
        with its layer and edges from the run's graph, recorded once); 100,000 rows are
        seconds. Nor is the run's whole timeline built: only the others' attempts."""
        self._unwatch()  # no heartbeat after the end
        graph = self.graph
        names, n = self.names, len(self.keys)
        once, attempts, waits, metrics = run.for_store()
        with_metrics, element_rows = run.metrics, self.element_rows
        layer, deps = run.layer, graph.deps
        tasks = result.tasks
        rows = []
        for i, name in enumerate(names):
            if once[i] and not with_metrics.get(i) and (i < n or name not in element_rows):
                continue
            t = tasks[name]
            rows.append(
                (
                    name,
                    t.status,
                    t.attempts,
                    t.started_at,
                    t.finished_at,
                    t.duration,
                    safe_str(t.error) if t.error is not None else None,
                    self.keys[i] if i < n else None,
                    self.preset_files.get(i) if i < n else self.element_files.get(name),
                    traceback_text(t.error),
                    layer[i],
                    json.dumps([graph.names[j] for j in deps[i]]) if i < n else None,
                    json.dumps(t.metrics) if t.metrics else None,
                )
            )
        logs = []
        output = self.output
        if output is not None:  # what tasks printed that was not kept with a result
            kept = self.logs_kept
            for i in list(output.texts):
                if i not in kept:
                    text = output.text(i)
                    if text:
                        logs.append((names[i], text))
            # (reused elements' output is stored already, by ``_reuse_element_logs``)
        try:
            self.store.end_run(
                self.run_id,
                result.status,
                rows,
                attempts=(a[:6] for a in attempts),
                waits=(w[:5] for w in waits),
                critical_path=result.critical_path,
                started_at=result.started_at,
                finished_at=result.finished_at,
                metrics=metrics,
                graph=None,  # recorded at the start (begin)
                logs=logs,
            )
        except StoreError as e:
            self._end_briefly(result, e)

    def _end_briefly(self, result: RunResult, error: StoreError) -> None:
        """The whole end could not be written (rolled back): the run's status at least, one
        row changed in place, which needs no new room. If not even that, the error says so;
        the run stays "running" in the store, which ``--resume`` takes as unfinished."""
        try:
            self.store.mark_ended(self.run_id, result.status, result.finished_at)
        except StoreError as again:
            why = f" ({result.stop_reason})" if result.stop_reason else ""
            after = (  # a damaged store's own message says what to do instead
                ""
                if again.kind == "damaged"
                else ". The store still lists the run as running; every result it stored is "
                "kept, and --resume reuses them"
            )
            failure = StoreError(
                f"the run {self.run_id} ended {result.status}{why}, but the store could not "
                f"record its end: {again}{after}",
                path=again.path,
                kind=again.kind,
            )
            failure.result = result
            raise failure from error
        if not any(isinstance(t.error, ResultNotStored) for t in result.tasks.values()):
            # (when results could not be stored, the run's own error already says why)
            from .events import logger

            logger.warning(
                "run %s ended %s, but only its status could be recorded, not its tasks' "
                "details: %s",
                self.run_id,
                result.status,
                error,
            )


class RunItems:
    """The ``lf.parallel_map`` items finished inside the tasks of one run with a store
    (``parallel.py`` keys them, ``store.py`` keeps them): found along the run's resume
    chain, so that a retry or a resumed run reuses them, and a new run does not."""

    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder
        self._lineage: list[str] | None = None

    def owner(self, entry: int) -> tuple[str, str]:
        """Entry ``entry``'s name and resume key (a map element: its task's key)."""
        r = self._recorder
        n = len(r.keys)
        return r.names[entry], r.keys[entry if entry < n else r.parent[entry]]

    def _runs(self) -> list[str]:
        """This run, then the runs it resumed (read once: the chain does not change)."""
        if self._lineage is None:
            r = self._recorder
            before = r.store.lineage(r.resumed_from) if r.resumed_from else []
            self._lineage = [r.run_id, *before]
        return self._lineage

    def find(self, keys: Sequence[str]) -> dict[str, Any]:
        """Of the items ``keys``, the results this run or the runs it resumed stored."""
        return self._recorder.store.find_items(self._runs(), keys) if keys else {}

    def save(self, rows: Sequence[tuple[str, bytes]]) -> None:
        """Make finished items (key, pickled result) durable, as this run's."""
        self._recorder.store.save_items(self._recorder.run_id, rows)
