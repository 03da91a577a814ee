"""Results made durable: small ones in the database, large ones in files (written
atomically), a batch of them committed together (group commit); map elements; loading values."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ..errors import (
    ResultNotStored,
    StoreError,
    safe_str,
)

if TYPE_CHECKING:
    pass

from .database import DISK_FULL, Database, os_cause

#: pickled results up to this size live in the database, committed with their rows; larger
#: ones get files of their own. SQLite reads small BLOBs faster than files (its own
#: measurements put the turn near 100 kB), and a batch of them costs one sync, not one each
#: the statement that keeps a task's output (with its result, or at the run's end)
SAVE_LOGS = "INSERT OR REPLACE INTO task_logs (run_id, name, logs) VALUES (?, ?, ?)"
INLINE_MAX = 64 * 1024


def pickled(value: Any) -> bytes:
    """``value`` as bytes: the one way values become bytes in the store (and in the keys
    the recorder hashes)."""
    return pickle.dumps(value, protocol=5)


def _not_pickled(name: str, error: Exception) -> None:
    """Task ``name``'s result cannot be pickled: said with a warning (None: no bytes)."""
    from ..events import logger

    logger.warning(
        "the result of task %r cannot be pickled (%s), so it is not stored; a resumed run "
        "will run it again",
        name,
        safe_str(error),
    )


class Finished(NamedTuple):
    """A succeeded task to make durable (:meth:`Store.save_results`): its ``name``, resume
    ``key``, ``value``, ``started`` (epoch seconds), ``seconds``, and the ``cache_key`` it
    is cached under, if it uses the cache; for a map's element, its ``element`` index and
    its task's name (``owner``). (A tuple: one is made per result, 100,000 in a big run.)"""

    name: str
    key: str
    value: Any
    started: float
    seconds: float
    cache_key: str | None = None
    #: a map's element: its place in its task's list (its task is ``owner``), else -1
    element: int = -1
    owner: str = ""


class Results(Database):
    """Results made durable in batches (group commit), map elements, values read back."""

    # --- results ---------------------------------------------------------------------------

    def _save_bytes(self, run_id: str, key: str, data: bytes) -> str:
        """Write a large result's file atomically (write, fsync, rename); its name."""
        name = f"{run_id}-{key}.pkl"  # a run's own file: a later run never overwrites it
        path = self.results / name
        tmp = self.results / f".{key}.{run_id}.{threading.get_ident()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return name

    def _sync_results(self) -> None:
        """Make the renames of new result files durable (fsync of their folder)."""
        with contextlib.suppress(OSError):
            folder = os.open(self.results, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)

    def load_value(self, name: str | bytes) -> Any:
        """A stored result: from the database when it is small, else from its file (a
        result packed with others, from :meth:`finished_results`, is its own bytes)."""
        if isinstance(name, bytes):
            return pickle.loads(name)
        found = self._read("SELECT data FROM blobs WHERE name = ?", (name,))
        if found:
            return pickle.loads(found[0][0])
        with open(self.results / name, "rb") as f:
            return pickle.load(f)

    def load_bytes(self, name: str | bytes) -> bytes:
        """A stored result's pickled bytes, not loaded (for an unpickler of one's own)."""
        if isinstance(name, bytes):
            return name
        found = self._read("SELECT data FROM blobs WHERE name = ?", (name,))
        if found:
            return bytes(found[0][0])
        return (self.results / Path(name).name).read_bytes()

    def has_value(self, name: str) -> bool:
        """Whether the result ``name`` is still there (in the database or as a file)."""
        if self._read("SELECT 1 FROM blobs WHERE name = ?", (name,)):
            return True
        return (self.results / name).exists()

    def save_results(
        self, run_id: str, batch: Sequence[Finished], logs: Sequence[tuple[str, str]] = ()
    ) -> list[ResultNotStored | None]:
        """Make a batch of succeeded tasks durable together: large results in files of their
        own (each synced), then the batch in one transaction, committed with one sync.
        Returns, in order, None for each task now stored and the :class:`ResultNotStored` to
        fail it with otherwise. A value that cannot be pickled is recorded without its
        result (a resumed run runs it again).

        A commit's cost follows the pages it dirties, so the batch's results are packed: the
        tasks' in one ``results`` row (name, key, pickled value or result file, started,
        seconds each), a map's elements in one ``elements`` row per map task. A task that
        uses the cache gets a row of its own and a named result, which its cache entry
        names. ``logs``: (name, text) of what the batch's tasks printed, kept with them."""
        errors: list[ResultNotStored | None] = [None] * len(batch)
        blobs: list[tuple[str, bytes]] = []
        rows: list[tuple[Any, ...]] = []
        caches: list[tuple[str, str, str, float]] = []
        files: list[str] = []
        tasks: list[tuple[Any, ...]] = []  # packed: this batch's results row
        task_files: list[str] = []
        inline_count = 0
        packed: dict[str, list[tuple[Any, ...]]] = {}  # a map's elements, per map task
        packed_files: dict[str, list[str]] = {}
        dumps = pickle.dumps
        for k, (name, key, value, started, seconds, cache_key, element, owner) in enumerate(batch):
            try:
                data: bytes | None = dumps(value, 5)
            except Exception as e:
                _not_pickled(name, e)
                data = None
            inline = file = None
            if data is not None and len(data) > INLINE_MAX:
                try:
                    file = self._save_bytes(run_id, key, data)
                except OSError as e:
                    errors[k] = self._not_stored(name, e)
                    continue
                files.append(file)
            else:
                inline = data
            if cache_key is None:
                if data is None:  # no key: a resumed run runs it again
                    key = ""
                if element < 0:
                    tasks.append((name, key, inline, file, started, seconds))
                    if file is not None:
                        task_files.append(file)
                    elif inline is not None:
                        inline_count += 1
                    continue
                entries = packed.get(owner)
                if entries is None:
                    entries = packed[owner] = []
                entries.append((element, key, inline, file, started, seconds))
                if file is not None:
                    packed_files.setdefault(owner, []).append(file)
                continue
            result = file
            if inline is not None:
                # named in the order stored, not by key: new rows go to the end of the
                # blobs index instead of a page each
                result = f"{run_id}-{self._names}{next(self._sequence):010d}.pkl"
                blobs.append((result, inline))
            rows.append((run_id, name, started, started + seconds, seconds, key, result))
            if result is not None:
                caches.append((cache_key, name, result, time.time()))
        if not rows and not packed and not tasks:
            return errors
        if files:  # their renames durable too, before rows that name them are
            self._sync_results()
        # the common batch is one row (its tasks', or one map's elements): one statement
        single = not rows and (not tasks or not packed) and len(packed) <= 1 and not logs
        try:
            with self._transaction(begin=not single, synced=True) as db:
                # (the connection syncs every commit: one sync of the log for the batch)
                if blobs:
                    db.executemany("INSERT OR REPLACE INTO blobs (name, data) VALUES (?, ?)", blobs)
                if rows:
                    db.executemany(
                        "INSERT OR REPLACE INTO task_runs (run_id, name, status, attempts, "
                        "started_at, finished_at, duration, key, result) "
                        "VALUES (?, ?, 'succeeded', 1, ?, ?, ?, ?, ?)",
                        rows,
                    )
                    db.executemany(
                        "INSERT OR REPLACE INTO cache (key, name, result, created_at) "
                        "VALUES (?, ?, ?, ?)",
                        caches,
                    )
                if tasks:
                    db.execute(
                        "INSERT INTO results (run_id, data, files, inline) VALUES (?, ?, ?, ?)",
                        (
                            run_id,
                            pickled(tasks),
                            json.dumps(task_files) if task_files else None,
                            inline_count,
                        ),
                    )
                if packed:
                    self._insert_elements(db, run_id, packed, packed_files)
                if logs:
                    db.executemany(SAVE_LOGS, ((run_id, *row) for row in logs))
                if not single:
                    db.commit()
        except StoreError as e:
            for name in files:  # no row names them: they would only take up room
                with contextlib.suppress(OSError):
                    os.unlink(self.results / name)
            for k, item in enumerate(batch):
                if errors[k] is None:
                    error = errors[k] = ResultNotStored(
                        f"task {item.name!r} finished, but its result could not be stored: {e}",
                        path=e.path,
                        kind=e.kind,
                    )
                    error.__cause__ = e
        return errors

    def _packed(self, run_id: str) -> dict[str, tuple[Any, ...]]:
        """The task results ``run_id`` stored packed (:meth:`save_results`): name -> (key,
        pickled value or None, result file or None, started or None, seconds or None)."""
        found: dict[str, tuple[Any, ...]] = {}
        for (data,) in self._read("SELECT data FROM results WHERE run_id = ?", (run_id,)):
            for name, *rest in pickle.loads(data):
                found[name] = rest
        return found

    def _not_stored(self, name: str, error: OSError) -> ResultNotStored:
        failure = ResultNotStored(
            f"task {name!r} finished, but its result could not be stored in "
            f"{self.results}: {os_cause(error)}. Free disk space or repair the store "
            f"folder, then run again with --resume (finished results stored so far are kept)",
            path=self.results,
            kind="full" if error.errno in DISK_FULL else "io",
        )
        failure.__cause__ = error
        return failure

    @staticmethod
    def _insert_elements(
        db: sqlite3.Connection,
        run_id: str,
        packed: dict[str, list[tuple[Any, ...]]],
        files: dict[str, list[str]],
    ) -> None:
        """One row per map task: its elements as (index, key, pickled value or None, result
        file or None, started, seconds), and the files they name (for pruning)."""
        db.executemany(
            "INSERT INTO elements (run_id, task, data, files) VALUES (?, ?, ?, ?)",
            [
                (
                    run_id,
                    task,
                    pickled(entries),
                    json.dumps(files[task]) if task in files else None,
                )
                for task, entries in packed.items()
            ],
        )

    def finished_elements(self, run_id: str) -> dict[str, dict[int, tuple[str, Any, Any]]]:
        """The map elements stored by ``run_id`` and the runs it resumed, back along the
        chain: task -> {index: (key, pickled value or None, result file or None)}, the
        latest run's first."""
        found: dict[str, dict[int, tuple[str, Any, Any]]] = {}
        for current in self._chain(run_id):
            for task, data in self._read(
                "SELECT task, data FROM elements WHERE run_id = ?", (current,)
            ):
                mine = found.setdefault(task, {})
                for index, key, value, file, *_ in pickle.loads(data):
                    if key:
                        mine.setdefault(index, (key, value, file))
        return found

    def load_element(self, value: bytes | None, file: str | None) -> Any:
        """An element's stored result, from :meth:`finished_elements`."""
        if value is not None:
            return pickle.loads(value)
        with open(self.results / str(file), "rb") as f:
            return pickle.load(f)

    def record_reused_elements(
        self, run_id: str, task: str, entries: Sequence[tuple[int, str, Any, Any]]
    ) -> None:
        """A resumed run reuses these elements of ``task`` (index, key, pickled value or
        None, file or None): they are this run's too from now on."""
        files = [f for *_, f in entries if f is not None]
        rows = [(index, key, value, file, None, None) for index, key, value, file in entries]
        with self._transaction() as db:
            self._insert_elements(db, run_id, {task: rows}, {task: files} if files else {})
            db.commit()

    def finished_results(self, run_id: str) -> dict[str, tuple[str, str | bytes]]:
        """Tasks with a stored result in ``run_id`` or in the runs it resumed, back along the
        chain (a resumed run that crashed before it recorded them still has them): name ->
        (key, result), the latest run's first. The result is its name (in the database or a
        file), or, packed with its batch, its pickled bytes: :meth:`load_value` takes both."""
        if not self._read("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)):
            raise StoreError(f"no run {run_id!r} in the store {self.folder}; see layerflow runs")
        found: dict[str, tuple[str, str | bytes]] = {}
        seen: set[str] = set()
        current: str | None = run_id
        while current is not None and current not in seen:
            seen.add(current)
            rows = self._read(
                "SELECT name, key, result FROM task_runs WHERE run_id = ? AND result IS NOT "
                "NULL AND status IN ('succeeded', 'reused', 'cached')",
                (current,),
            )
            for name, key, result in rows:
                found.setdefault(name, (key, result))
            for name, (key, value, file, *_) in self._packed(current).items():
                if key:
                    found.setdefault(name, (key, value if value is not None else file))
            parent = self._read("SELECT resumed_from FROM runs WHERE run_id = ?", (current,))
            current = parent[0][0] if parent else None
        return found

    def record_reused(self, run_id: str, rows: Iterable[tuple[str, str, str | bytes]]) -> list[str]:
        """At a resumed run's start: the results it reuses (name, key, result as
        :meth:`finished_results` gives it), so that they are this run's too the moment it
        starts, whatever happens to it later. Returns the results' names, in order (one
        that was packed with its batch is named now)."""
        named: list[tuple[str, str, str]] = []
        blobs: list[tuple[str, bytes]] = []
        for name, key, result in rows:
            if isinstance(result, bytes):
                data, result = result, f"{run_id}-{self._names}{next(self._sequence):010d}.pkl"
                blobs.append((result, data))
            named.append((name, key, result))
        with self._transaction() as db:
            db.executemany("INSERT OR REPLACE INTO blobs (name, data) VALUES (?, ?)", blobs)
            db.executemany(
                "INSERT OR REPLACE INTO task_runs (run_id, name, status, key, result) "
                "VALUES (?, ?, 'reused', ?, ?)",
                [(run_id, *row) for row in named],
            )
            db.commit()
        return [row[2] for row in named]

    def stored_element(self, run_id: str, task: str, index: int) -> Any:
        """The stored value of element ``index`` of map task ``task`` in ``run_id`` (or the
        runs it resumed); ``KeyError`` when none was stored."""
        key, value, file = self.finished_elements(run_id)[task][index]
        return self.load_element(value, file)
