"""The run store: a folder with a SQLite database (runs, task runs, cache keys, small
results) and result files for large results, so that nothing finished is lost and a run
can resume where it stopped.

Results that finish close together are made durable together (group commit,
:meth:`Store.save_results`): small ones go into the database beside their rows, large ones
into files of their own (written atomically: write, fsync, rename), and the batch's rows are
committed in one transaction with one sync. The run counts a task as done only once its
batch is committed, so whatever a crash interrupts, every result that a later task could
have used is on disk. The folder is created readable by its owner only, and a folder that
another user can write to is refused: its results are unpickled, and unpickling runs code.

The items an ``lf.parallel_map`` finishes inside a task are kept the same way
(:meth:`Store.save_items`), so that a retry or a resumed run calls only the others.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import pickle
import socket
import sqlite3
import stat
import statistics
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from .errors import (
    RecordedError,  # noqa: F401 (re-exported)
    ResultNotStored,  # noqa: F401 (re-exported)
    StoreError,  # noqa: F401 (re-exported)
    safe_str,
)
from .names import element_of

if TYPE_CHECKING:
    from .result import RunResult

__all__ = [
    "Finished",
    "Pruned",
    "RecordedError",
    "Store",
    "StoreError",
    "default_store_path",
]

DEFAULT_FOLDER = ".layerflow"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    flow TEXT,
    started_at REAL,
    finished_at REAL,
    status TEXT,
    tasks INTEGER,
    resumed_from TEXT,
    critical_path TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_flow ON runs (flow, started_at);
CREATE TABLE IF NOT EXISTS task_runs (
    run_id TEXT,
    name TEXT,
    status TEXT,
    attempts INTEGER,
    started_at REAL,
    finished_at REAL,
    duration REAL,
    error TEXT,
    key TEXT,
    result TEXT,
    traceback TEXT,
    layer INTEGER,
    needs TEXT,
    position INTEGER,
    PRIMARY KEY (run_id, name)
);
CREATE INDEX IF NOT EXISTS task_runs_by_name ON task_runs (name, status);
CREATE TABLE IF NOT EXISTS cache (
    key TEXT PRIMARY KEY,
    name TEXT,
    result TEXT,
    created_at REAL
);
CREATE TABLE IF NOT EXISTS attempts (
    run_id TEXT,
    name TEXT,
    attempt INTEGER,
    started_at REAL,
    finished_at REAL,
    outcome TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS attempts_by_run ON attempts (run_id);
CREATE TABLE IF NOT EXISTS waits (
    run_id TEXT,
    name TEXT,
    kind TEXT,
    reason TEXT,
    started_at REAL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS waits_by_run ON waits (run_id);
CREATE TABLE IF NOT EXISTS blobs (
    name TEXT PRIMARY KEY,
    data BLOB
);
CREATE TABLE IF NOT EXISTS elements (
    run_id TEXT,
    task TEXT,
    data BLOB,
    files TEXT
);
CREATE INDEX IF NOT EXISTS elements_by_run ON elements (run_id, task);
CREATE TABLE IF NOT EXISTS items (
    key TEXT,
    run_id TEXT,
    result TEXT,
    PRIMARY KEY (key, run_id)
);
CREATE INDEX IF NOT EXISTS items_by_run ON items (run_id);
CREATE TABLE IF NOT EXISTS results (
    run_id TEXT,
    data BLOB,
    files TEXT,
    inline INTEGER
);
CREATE INDEX IF NOT EXISTS results_by_run ON results (run_id);
CREATE TABLE IF NOT EXISTS graphs (
    run_id TEXT PRIMARY KEY,
    data TEXT
);
CREATE TABLE IF NOT EXISTS task_logs (
    run_id TEXT,
    name TEXT,
    logs TEXT,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS live (
    run_id TEXT PRIMARY KEY,
    at REAL,
    pid INTEGER,
    host TEXT,
    data TEXT
);
"""

_SAVE_LOGS = "INSERT OR REPLACE INTO task_logs (run_id, name, logs) VALUES (?, ?, ?)"

#: pickled results up to this size live in the database, committed with their rows; larger
#: ones get files of their own. SQLite reads small BLOBs faster than files (its own
#: measurements put the turn near 100 kB), and a batch of them costs one sync, not one each
INLINE_MAX = 64 * 1024

#: how many of a flow's latest runs its history (the durations that rank ready tasks and
#: predict runs) is taken from
HISTORY_RUNS = 10

# Columns added after the first version: added when a store written by an earlier version
# lacks them (NULL in its old rows, which the report then does without).
_ADDED_COLUMNS = (
    ("task_runs", "traceback", "TEXT"),
    ("task_runs", "layer", "INTEGER"),
    ("task_runs", "needs", "TEXT"),  # JSON list of the task's upstream names
    ("task_runs", "position", "INTEGER"),  # place in the run's task order (declaration)
    ("runs", "critical_path", "TEXT"),  # JSON list of names
    ("task_runs", "metrics", "TEXT"),  # JSON object: what the task gave lf.record
    ("runs", "metrics", "TEXT"),  # JSON object: the run's sums
)

#: stored in the database's ``user_version``: a store at this version has every table and
#: column above, so opening it checks nothing more (bump it when either list changes)
_SCHEMA_VERSION = 8  # 4: elements; 5: items (lf.parallel_map's finished items); 6: results
# (tasks' results packed per batch) and graphs (a run's tasks, layers and edges, once);
# 7: task_logs (what each task printed and logged); 8: live (a running run's heartbeat and
# state, for ``layerflow ui``)


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a database to this version's schema: its tables, and the columns that earlier
    versions lack (NULL in their old rows). One transaction that takes the write lock first
    (another process migrating the same store meanwhile is waited for, then seen to have
    done it), with one sync."""
    db.execute("BEGIN IMMEDIATE")
    try:
        if db.execute("PRAGMA user_version").fetchone()[0] >= _SCHEMA_VERSION:
            db.rollback()  # another process was first
            return
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        for table, column, kind in _ADDED_COLUMNS:
            columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
            if column not in columns:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        db.commit()
    except BaseException:
        db.rollback()
        raise


def default_store_path() -> Path:
    """``$LAYERFLOW_STORE``, else ``.layerflow`` in the working directory."""
    return Path(os.environ.get("LAYERFLOW_STORE") or DEFAULT_FOLDER)


def _check_folder(folder: Path) -> None:
    info = folder.stat()
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise StoreError(
            f"refusing to use the store {folder}: other users can write to it, and its "
            f"result files are loaded with pickle (which runs code). Fix: chmod 700 {folder}"
        )
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise StoreError(
            f"refusing to use the store {folder}: it belongs to another user (uid "
            f"{info.st_uid}). Use a store of your own: --store PATH or LAYERFLOW_STORE"
        )


def _owner_only(path: Path) -> None:
    """Take group and other permissions away (a file the owner made read-only stays so)."""
    with contextlib.suppress(OSError):
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            os.chmod(path, mode & 0o700)


def _writable(path: Path) -> bool:
    """Whether this user may write the database, its WAL files and its folder."""
    files = (path, Path(f"{path}-wal"), Path(f"{path}-shm"))
    return os.access(path.parent, os.W_OK) and all(
        os.access(f, os.W_OK) for f in files if f.exists()
    )


_FULL = frozenset((errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)))


def _os_cause(error: OSError) -> str:
    """An OS error as people read it; a full disk (or quota) said so in plain words."""
    if error.errno in _FULL:
        return f"the disk is full ({safe_str(error)})"
    return safe_str(error)


def pickled(value: Any) -> bytes:
    """``value`` as bytes: the one way values become bytes in the store (and in the keys
    the recorder hashes)."""
    return pickle.dumps(value, protocol=5)


def _not_pickled(name: str, error: Exception) -> None:
    """Task ``name``'s result cannot be pickled: said with a warning (None: no bytes)."""
    from .events import logger

    logger.warning(
        "the result of task %r cannot be pickled (%s), so it is not stored; a resumed run "
        "will run it again",
        name,
        safe_str(error),
    )


# SQLite's primary result codes (an error's code & 0xFF) that say what is wrong with a store
_SQLITE_KINDS = {
    5: "locked",  # SQLITE_BUSY: another process held it past the busy timeout
    6: "locked",
    8: "read-only",
    10: "io",
    11: "damaged",  # SQLITE_CORRUPT
    13: "full",
    14: "io",  # SQLITE_CANTOPEN
    26: "damaged",  # SQLITE_NOTADB
}


@dataclass(frozen=True)
class Pruned:
    """What :meth:`Store.prune` removed: the ``runs`` (ids), how many results (``files``:
    result files and results kept in the database), the bytes ``freed``, and how many old
    runs it kept because they are still running."""

    runs: list[str]
    files: int
    freed: int
    still_running: int


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


class Store:
    """A run store in ``folder`` (created, owner-only, when missing).

    Every database error comes out as a :class:`StoreError` naming the database, what is
    wrong with it (``kind``) and what to do; a failed write is rolled back whole.
    """

    def __init__(self, folder: str | os.PathLike[str] | None = None) -> None:
        self.folder = Path(folder) if folder is not None else default_store_path()
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create the store {self.folder}: {e}") from None
        _check_folder(self.folder)
        self.results = self.folder / "results"
        try:
            self.results.mkdir(mode=0o700, exist_ok=True)
        except OSError as e:
            raise StoreError(
                f"the store {self.folder} cannot keep results in {self.results}: {e}. It "
                f"must be a folder: move what is there away, or use another --store"
            ) from None
        _check_folder(self.results)
        self.path = self.folder / "state.db"
        self._lock = threading.Lock()
        # small results' names: this object's own prefix, then a count (unique in the run)
        self._names = uuid.uuid4().hex[:8]
        self._sequence = itertools.count()
        self._connection: sqlite3.Connection | None = None
        try:
            self._create_or_check()
            if self._db.execute("PRAGMA user_version").fetchone()[0] < _SCHEMA_VERSION:
                _migrate(self._db)  # an earlier version's store: once
        except sqlite3.Error as e:
            raise self._failed(e) from e
        for name in ("state.db", "state.db-wal", "state.db-shm"):
            _owner_only(self.folder / name)

    def _create_or_check(self) -> None:
        """Create a missing database whole; refuse an empty one. SQLite takes a 0-byte file
        for a new database, so a truncated store would silently become an empty one; ours
        are built under another name and linked into place, never seen at 0 bytes."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = None
        except OSError as e:
            raise StoreError(
                f"cannot read the store database {self.path}: {e}", path=self.path, kind="io"
            ) from None
        if size == 0:
            raise StoreError(
                f"the store database {self.path} is empty (0 bytes): it was probably "
                f"truncated (a full disk, a copy cut short), and the runs it recorded are "
                f"gone. layerflow does not start a new history over it on its own: restore it "
                f"from a backup, or remove it (rm {self.path}) to start a new one. The result "
                f"files in {self.results} are kept, but a new database does not know them, so "
                f"--resume runs those tasks again",
                path=self.path,
                kind="empty",
            )
        if size is not None:
            return
        new = self.folder / f".state.db.{os.getpid()}.{threading.get_ident()}.new"
        try:
            db = sqlite3.connect(new)
            try:
                db.execute("PRAGMA journal_mode=WAL")  # kept in the file's header
                _migrate(db)
            finally:
                db.close()
            os.chmod(new, 0o600)
            # never over a database another process made meanwhile; where there are no
            # hard links, SQLite creates it in place below
            with contextlib.suppress(OSError):
                os.link(new, self.path)
        finally:
            for leftover in (new, Path(f"{new}-wal"), Path(f"{new}-shm")):
                with contextlib.suppress(OSError):
                    leftover.unlink()

    def _connect(self) -> sqlite3.Connection:
        # transactions are begun explicitly (``_transaction``): a batch of results that is
        # one row is then one statement, which leaves the GIL once. Each time the sqlite3
        # module leaves it, getting it back from a busy worker can take up to the switch
        # interval (5 ms); with implicit transactions a batch left it five times
        db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA busy_timeout=30000")
        # WAL is a property of the file: set once. Switching takes an exclusive lock that
        # SQLite does not wait for, so while other runs open the store it is retried
        deadline = time.monotonic() + 30
        while db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            try:
                db.execute("PRAGMA journal_mode=WAL")
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        # commits synced unless said otherwise (``_transaction``): a result counts as done
        # once it is on disk, and a batch of them is then one statement, not three
        db.execute("PRAGMA synchronous=FULL")
        return db

    @property
    def _db(self) -> sqlite3.Connection:
        """The connection (callers hold ``_lock``); opened again after :meth:`close`."""
        db = self._connection
        if db is None:
            db = self._connection = self._connect()
        return db

    def close(self) -> None:
        """Close the database connection (a later use opens it again)."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def _failed(self, error: sqlite3.Error) -> StoreError:
        """``error`` as a :class:`StoreError` that says what is wrong and what to do, the
        transaction it interrupted rolled back (so the store keeps only whole writes).
        Called with ``_lock`` held."""
        if self._connection is not None:
            with contextlib.suppress(sqlite3.Error):
                self._connection.rollback()
        code = getattr(error, "sqlite_errorcode", None)
        kind = _SQLITE_KINDS.get(code & 0xFF) if isinstance(code, int) else None
        db, cause = self.path, safe_str(error)
        if kind in (None, "io") and not _writable(db):
            kind = "read-only"  # SQLite may only say it cannot open the file
        if kind == "full":
            text = (
                f"the store database {db} is full ({cause}): there is no room left on its "
                f"disk. Free disk space (layerflow runs --prune removes old runs), then run "
                f"again with --resume: every result stored so far is kept"
            )
        elif kind == "damaged":
            text = (
                f"the store database {db} is damaged ({cause}). Move it away (mv {db} "
                f"{db}.damaged) or restore it from a backup; the next run then starts a new "
                f"history. The result files stay in {self.results}, but a new database does "
                f"not know them, so --resume runs those tasks again"
            )
        elif kind == "read-only":
            text = (
                f"the store database {db} cannot be written ({cause}): it, its WAL files "
                f"or its folder are read-only for this user. Make them writable (chmod u+w "
                f"{self.folder} {db}*), or record elsewhere with --store PATH"
            )
        elif kind == "locked":
            text = (
                f"the store database {db} stayed locked by another process for 30 s "
                f"({cause}). Wait for the other run to end, or use another --store PATH"
            )
        elif kind == "io":
            text = (
                f"the store database {db} could not be read or written ({cause}): check "
                f"the disk and the file, then try again"
            )
        else:
            text = f"the store database {db} is unusable: {cause}"
        return StoreError(text, path=db, kind=kind)

    @contextlib.contextmanager
    def _transaction(
        self, begin: bool = True, synced: bool = False
    ) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock, for statements committed together (``begin``
        False: for one statement, which commits itself). Only ``synced`` commits wait for
        the disk (results: done means on disk); the others are safe from a crash of the
        process, which is what a run's start and end need (a lost end only leaves a run
        to --resume)."""
        with self._lock:
            try:
                db = self._db
                if not synced:
                    db.execute("PRAGMA synchronous=NORMAL")
                if begin:
                    db.execute("BEGIN")
                yield db
                if db.in_transaction:  # (every caller commits: this is a safety net)
                    db.commit()
            except sqlite3.Error as e:
                raise self._failed(e) from e
            except BaseException:  # not the database's fault: still nothing half-written
                with contextlib.suppress(sqlite3.Error):
                    self._db.rollback()
                raise
            finally:
                if not synced and self._connection is not None:
                    with contextlib.suppress(sqlite3.Error):
                        self._connection.execute("PRAGMA synchronous=FULL")

    def _write(self, sql: str, args: Iterable[Any]) -> None:
        with self._transaction(begin=False) as db:
            db.execute(sql, tuple(args))

    def _read(self, sql: str, args: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, tuple(args)).fetchall()
            except sqlite3.Error as e:
                raise self._failed(e) from e

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
                    db.executemany(_SAVE_LOGS, ((run_id, *row) for row in logs))
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
            f"{self.results}: {_os_cause(error)}. Free disk space or repair the store "
            f"folder, then run again with --resume (finished results stored so far are kept)",
            path=self.results,
            kind="full" if error.errno in _FULL else "io",
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

    def _chain(self, run_id: str) -> Iterator[str]:
        """``run_id`` and the runs it resumed, back along the chain."""
        seen: set[str] = set()
        current: str | None = run_id
        while current is not None and current not in seen:
            seen.add(current)
            yield current
            parent = self._read("SELECT resumed_from FROM runs WHERE run_id = ?", (current,))
            current = parent[0][0] if parent else None

    # --- parallel_map items ---------------------------------------------------------------

    def save_items(self, run_id: str, rows: Sequence[tuple[str, bytes]]) -> None:
        """Make finished ``lf.parallel_map`` items durable together: (key, pickled result)
        rows of run ``run_id``, as :meth:`save_results` stores results (small ones in the
        database, large ones in files), committed with one sync. Raises
        :class:`StoreError`; nothing of the batch is kept then."""
        blobs: list[tuple[str, bytes]] = []
        found: list[tuple[str, str, str]] = []
        files: list[str] = []
        try:
            for key, data in rows:
                if len(data) <= INLINE_MAX:
                    result = f"{run_id}-{key}.pkl"
                    blobs.append((result, data))
                else:
                    result = self._save_bytes(run_id, key, data)
                    files.append(result)
                found.append((key, run_id, result))
        except OSError as e:
            for name in files:
                with contextlib.suppress(OSError):
                    os.unlink(self.results / name)
            raise StoreError(
                f"finished parallel_map items could not be stored in {self.results}: "
                f"{_os_cause(e)}",
                path=self.results,
                kind="full" if e.errno in _FULL else "io",
            ) from e
        if files:
            self._sync_results()
        try:
            with self._transaction(synced=True) as db:  # done means on disk, as for results
                db.executemany("INSERT OR REPLACE INTO blobs (name, data) VALUES (?, ?)", blobs)
                db.executemany(
                    "INSERT OR REPLACE INTO items (key, run_id, result) VALUES (?, ?, ?)", found
                )
                db.commit()
        except StoreError:
            for name in files:  # no row names them
                with contextlib.suppress(OSError):
                    os.unlink(self.results / name)
            raise

    def lineage(self, run_id: str) -> list[str]:
        """``run_id`` and the runs it resumed, back along the chain, newest first."""
        return list(self._chain(run_id))

    def find_items(self, runs: Sequence[str], keys: Sequence[str]) -> dict[str, Any]:
        """Of the items ``keys``, those that one of ``runs`` (a run first, then the runs it
        resumed) stored: key -> result. Those stored by an earlier run of the chain are
        recorded as the first run's too, so that pruning the earlier run keeps them. A
        result that cannot be read is left out (its item is called again)."""
        rank = {run: k for k, run in enumerate(runs)}
        best: dict[str, tuple[int, str, bytes | None]] = {}
        wanted = list(dict.fromkeys(keys))
        for start in range(0, len(wanted), 500):  # under SQLite's limit on parameters
            chunk = wanted[start : start + 500]
            rows = self._read(
                "SELECT items.key, items.run_id, items.result, blobs.data FROM items "
                "LEFT JOIN blobs ON blobs.name = items.result "
                f"WHERE items.key IN ({', '.join('?' * len(chunk))})",
                chunk,
            )
            for key, run, result, data in rows:
                k = rank.get(run)
                if k is not None and (key not in best or k < best[key][0]):
                    best[key] = (k, result, data)
        found: dict[str, Any] = {}
        adopted: list[tuple[str, str, str]] = []
        for key, (k, result, data) in best.items():
            try:
                if data is not None:
                    found[key] = pickle.loads(data)
                else:
                    with open(self.results / result, "rb") as f:
                        found[key] = pickle.load(f)
            except Exception:  # a missing or unreadable result: called again
                continue
            if k:
                adopted.append((key, runs[0], result))
        if adopted:
            with self._transaction() as db:
                db.executemany(
                    "INSERT OR IGNORE INTO items (key, run_id, result) VALUES (?, ?, ?)", adopted
                )
                db.commit()
        return found

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
            db.executemany(_SAVE_LOGS, ((run_id, *row) for row in logs))
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
                db.executemany(_SAVE_LOGS, ((run_id, *row) for row in logs))
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

    def stored_element(self, run_id: str, task: str, index: int) -> Any:
        """The stored value of element ``index`` of map task ``task`` in ``run_id`` (or the
        runs it resumed); ``KeyError`` when none was stored."""
        key, value, file = self.finished_elements(run_id)[task][index]
        return self.load_element(value, file)

    def load_run(self, run_id: str) -> RunResult:
        """A recorded run as a :class:`RunResult` (for its report and trace): statuses,
        timings, attempts, waits, layers and edges; errors as :class:`RecordedError`; no
        values (they stay in their result files). A run recorded by an earlier version has
        no attempts, waits or edges: each task that ran becomes one attempt."""
        from .result import Attempt, RunResult, TaskRun, Wait, assign_lanes

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

    # --- cache -----------------------------------------------------------------------------

    def cache_get(self, key: str) -> str | None:
        """The result file cached under ``key``, if any."""
        rows = self._read("SELECT result FROM cache WHERE key = ?", (key,))
        if rows and self.has_value(rows[0][0]):
            return rows[0][0]
        return None

    def cache_put(self, key: str, name: str, result: str) -> None:
        """Remember a result under a cache key."""
        self._write(
            "INSERT OR REPLACE INTO cache (key, name, result, created_at) VALUES (?, ?, ?, ?)",
            (key, name, result, time.time()),
        )

    # --- size and pruning -----------------------------------------------------------------

    def usage(self) -> dict[str, int]:
        """What the store holds: ``runs``, ``result_files`` (results, whether in the
        database or in files of their own), and ``bytes`` on disk (the database with its
        WAL, and the result files)."""
        runs = self._read("SELECT COUNT(*) FROM runs")[0][0]
        files = self._read(
            "SELECT (SELECT COUNT(*) FROM blobs) + (SELECT COALESCE(SUM(inline), 0) FROM results)"
        )[0][0]
        size = 0
        for name in ("state.db", "state.db-wal", "state.db-shm"):
            with contextlib.suppress(OSError):
                size += (self.folder / name).stat().st_size
        with contextlib.suppress(OSError), os.scandir(self.results) as entries:
            for entry in entries:
                if entry.name.endswith(".pkl"):
                    with contextlib.suppress(OSError):
                        size += entry.stat().st_size
                        files += 1
        return {"runs": runs, "result_files": files, "bytes": size}

    def prune(self, keep: int | None = None, older_than: float | None = None) -> Pruned:
        """Remove old runs: those past the ``keep`` newest and/or started more than
        ``older_than`` seconds ago (both given: runs that are both), never one still running.
        Their rows go (their ``parallel_map`` items too), and every result (file or in the
        database) that no remaining run, item or cache entry refers to."""
        if keep is None and older_than is None:
            raise ValueError("prune needs keep or older_than")
        if (keep is not None and keep < 0) or (older_than is not None and not older_than >= 0):
            raise ValueError(f"keep and older_than must be >= 0, got {keep!r}, {older_than!r}")
        # the files first: any of them was written after its run's row was committed, so
        # the rows read next know the run of every file listed here (one of a run that
        # starts meanwhile is not listed, hence not touched)
        try:
            with os.scandir(self.results) as entries:
                listed = [e.name for e in entries if e.name.endswith(".pkl")]
        except OSError as e:
            raise StoreError(
                f"cannot list the result files of the store {self.folder}: {e}",
                path=self.results,
                kind="io",
            ) from None
        runs = self._read("SELECT run_id, started_at, status FROM runs ORDER BY started_at DESC")
        candidates = runs[keep:] if keep is not None else runs
        if older_than is not None:
            cutoff = time.time() - older_than
            candidates = [r for r in candidates if (r[1] or 0.0) < cutoff]
        gone = {r[0] for r in candidates if r[2] != "running"}
        still_running = sum(1 for r in candidates if r[2] == "running")
        if not gone:
            return Pruned([], 0, 0, still_running)
        rows = self._read(
            "SELECT run_id, result FROM task_runs WHERE result IS NOT NULL "
            "UNION ALL SELECT run_id, result FROM items"
        )
        used = {result for run_id, result in rows if run_id not in gone}
        for run_id, names in self._read(
            "SELECT run_id, files FROM elements WHERE files IS NOT NULL UNION ALL "
            "SELECT run_id, files FROM results WHERE files IS NOT NULL"
        ):
            if run_id not in gone:
                used.update(json.loads(names))
        used.update(r[0] for r in self._read("SELECT result FROM cache"))
        kept = {r[0] for r in runs} - gone
        files = freed = 0
        # the files before the rows: on a full disk, deleting rows needs room in the WAL
        # that deleting files makes; if the rows then cannot go, the next prune does it
        for name in listed:
            owner = name[:-4].rpartition("-")[0]  # "<run id>-<key>.pkl", or "cache-<key>"
            if name in used or owner in kept:
                continue
            path = self.results / name
            try:
                size = path.stat().st_size
                path.unlink()
            except OSError:
                continue
            files += 1
            freed += size
        ids = [(run_id,) for run_id in sorted(gone)]
        # a result in the database is committed with its row: one no row refers to is gone
        orphans = (
            "FROM blobs WHERE name NOT IN (SELECT result FROM task_runs WHERE result IS NOT "
            "NULL) AND name NOT IN (SELECT result FROM cache WHERE result IS NOT NULL) "
            "AND name NOT IN (SELECT result FROM items)"
        )
        with self._transaction() as db:
            packed, packed_size = 0, 0
            for run_id in ids:  # results packed with their batch go with their rows
                n, used_bytes = db.execute(
                    "SELECT COALESCE(SUM(inline), 0), COALESCE(SUM(LENGTH(data)), 0) FROM "
                    "results WHERE run_id = ?",
                    run_id,
                ).fetchone()
                packed += n
                packed_size += used_bytes
            for table in (
                "task_runs",
                "results",
                "graphs",
                "elements",
                "items",
                "attempts",
                "waits",
                "task_logs",
                "live",
                "runs",
            ):
                db.executemany(f"DELETE FROM {table} WHERE run_id = ?", ids)
            count, size = db.execute(f"SELECT COUNT(*), SUM(LENGTH(data)) {orphans}").fetchone()
            count += packed
            size = (size or 0) + packed_size
            db.execute(f"DELETE {orphans}")
            db.commit()
        return Pruned(sorted(gone), files + count, freed + (size or 0), still_running)

    def cache_clear(self) -> int:
        """Forget every cached result; return how many there were."""
        with self._transaction() as db:
            n = db.execute("SELECT COUNT(*) FROM cache").fetchone()[0]
            db.execute("DELETE FROM cache")
            db.commit()
        return n
