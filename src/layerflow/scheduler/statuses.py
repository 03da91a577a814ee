"""A task's status in the engine, as a small int (``state.status[i]``), and the name a
``RunResult`` shows for each: read by the engine's parts and by what watches a run (the
heartbeat of ``layerflow ui``). The state machine is drawn in ``state.py``."""

from __future__ import annotations

__all__ = [
    "CACHED",
    "CANCELLED",
    "FAILED",
    "MAPPED",
    "PENDING",
    "READY",
    "RETRY_WAIT",
    "REUSED",
    "RUNNING",
    "SKIPPED",
    "STATUS_NAMES",
    "STORING",
    "SUCCEEDED",
    "WAITING_STATES",
]

# not begun or not ended
PENDING, READY, RUNNING, RETRY_WAIT, MAPPED, STORING = range(6)
# ended
SUCCEEDED, FAILED, SKIPPED, CANCELLED, REUSED, CACHED = range(6, 12)

#: what a RunResult says for each code: a task waiting to retry is pending again, a map
#: whose elements run and a result being stored are running
STATUS_NAMES = [
    "pending",
    "pending",
    "running",
    "pending",
    "running",
    "running",
    "succeeded",
    "failed",
    "skipped",
    "cancelled",
    "reused",
    "cached",
]
#: not begun: a stop cancels them
WAITING_STATES = (PENDING, READY, RETRY_WAIT)
