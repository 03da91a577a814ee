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

The store is one class built in layers, each a module: ``database`` (the folder, the
schema and its migrations, the connection, SQLite's errors made readable), ``results``
(group commit, result files, map elements), ``items`` (``lf.parallel_map``'s items, the
cache keys), ``runs`` (a run's start, heartbeat and end), ``history`` (runs read back,
past durations) and ``pruning``.
"""

from ..errors import RecordedError, ResultNotStored, StoreError
from .database import DEFAULT_FOLDER, SCHEMA_VERSION, default_store_path
from .history import HISTORY_RUNS
from .pruning import Pruned, Pruning
from .results import INLINE_MAX, Finished, pickled

__all__ = [
    "DEFAULT_FOLDER",
    "Finished",
    "HISTORY_RUNS",
    "INLINE_MAX",
    "Pruned",
    "RecordedError",
    "SCHEMA_VERSION",
    "ResultNotStored",
    "Store",
    "StoreError",
    "default_store_path",
    "pickled",
]


class Store(Pruning):
    """A run store in ``folder`` (created, owner-only, when missing).

    Every database error comes out as a :class:`StoreError` naming the database, what is
    wrong with it (``kind``) and what to do; a failed write is rolled back whole.
    """
