"""The engine: one documented state object (``state.py``), its core transitions
(``transitions.py``), and one module per policy over that state:

- ``admission``: may a ready task start now (resource pools, rate windows);
- ``retries``: trying a failed attempt again, and push-back (``lf.RateLimited``);
- ``deadlines``: task and run timeouts, on one timer thread;
- ``groups``: a ``TaskGroup``'s time limit, and its fail-fast that stops only the group;
- ``layers``: layer events, the barrier of ``layered`` runs, checkpoints;
- ``fanout``: ``map`` subtasks added at run time, streamed element by element;
- ``skips``: ``lf.Skip``, and what a skip skips;
- ``storage``: store I/O (results and elements in batches, cache lookups) off the lock;
- ``telemetry``: OpenTelemetry spans when asked for (``otel.py``): the calls wrapped at start;
- ``recording``: the ``RunResult`` and the snapshots progress displays read;
- ``workers``: the thread backend, whose workers call the transitions themselves;
- ``pools``: submission to the pools layerflow does not drive (loop, processes, Dask);
- ``remote``: values a backend kept where they ran, brought back at the end;
- ``run``: all of it assembled; ``driver``: options checked, run to the end, outcome.
"""

from ..backends import BACKENDS
from .driver import execute, execute_async, execute_run, outcome, prepare
from .run import Run

__all__ = ["Run", "execute", "execute_async", "execute_run", "outcome", "prepare", "BACKENDS"]
