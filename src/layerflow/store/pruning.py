"""What the store holds (``usage``) and removing old runs with the results nothing
left uses (``prune``)."""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import (
    StoreError,
)

if TYPE_CHECKING:
    pass

from .history import History


@dataclass(frozen=True)
class Pruned:
    """What :meth:`Store.prune` removed: the ``runs`` (ids), how many results (``files``:
    result files and results kept in the database), the bytes ``freed``, and how many old
    runs it kept because they are still running."""

    runs: list[str]
    files: int
    freed: int
    still_running: int


class Pruning(History):
    """What the store holds, and removing old runs."""

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
