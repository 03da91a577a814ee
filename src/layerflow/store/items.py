"""The items an ``lf.parallel_map`` finishes inside a stored run's task, and the cache keys."""

from __future__ import annotations

import contextlib
import os
import pickle
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import (
    StoreError,
)

if TYPE_CHECKING:
    pass

from .database import DISK_FULL, os_cause
from .results import INLINE_MAX, Results


class Items(Results):
    """``lf.parallel_map``'s finished items, and the cache keys."""

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
                f"finished parallel_map items could not be stored in {self.results}: {os_cause(e)}",
                path=self.results,
                kind="full" if e.errno in DISK_FULL else "io",
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

    def cache_clear(self) -> int:
        """Forget every cached result; return how many there were."""
        with self._transaction() as db:
            n = db.execute("SELECT COUNT(*) FROM cache").fetchone()[0]
            db.execute("DELETE FROM cache")
            db.commit()
        return n
