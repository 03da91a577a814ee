"""The store's database: its folder, schema and migrations, the connection, SQLite's errors made
readable, transactions."""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import sqlite3
import stat
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import (
    StoreError,
    safe_str,
)

if TYPE_CHECKING:
    pass


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
SCHEMA_VERSION = 8  # 4: elements; 5: items (lf.parallel_map's finished items); 6: results
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
        if db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
            db.rollback()  # another process was first
            return
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        for table, column, kind in _ADDED_COLUMNS:
            columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
            if column not in columns:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
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


DISK_FULL = frozenset((errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)))


def os_cause(error: OSError) -> str:
    """An OS error as people read it; a full disk (or quota) said so in plain words."""
    if error.errno in DISK_FULL:
        return f"the disk is full ({safe_str(error)})"
    return safe_str(error)


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


class Database:
    """The folder, the connection and its transactions; SQLite errors as StoreError."""

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
            if self._db.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
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

    def _chain(self, run_id: str) -> Iterator[str]:
        """``run_id`` and the runs it resumed, back along the chain."""
        seen: set[str] = set()
        current: str | None = run_id
        while current is not None and current not in seen:
            seen.add(current)
            yield current
            parent = self._read("SELECT resumed_from FROM runs WHERE run_id = ?", (current,))
            current = parent[0][0] if parent else None
