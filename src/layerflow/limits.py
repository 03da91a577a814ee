"""Bounds on concurrency: the worker bound every backend shares."""

from __future__ import annotations

from .errors import InvalidOptionError

__all__ = ["DEFAULT_MAX_WORKERS", "resolve_max_workers"]

#: With ``max_workers=None`` every ready task may start, but no run holds more than this
#: many worker threads: tasks are mostly I/O (API calls, subprocesses), so the bound is far
#: above the core count, yet low enough that a 10,000-wide layer does not start 10,000 threads.
DEFAULT_MAX_WORKERS = 64


def resolve_max_workers(max_workers: int | None) -> int:
    """The number of worker slots for a run; validates the user's value."""
    if max_workers is None:
        return DEFAULT_MAX_WORKERS
    if not isinstance(max_workers, int) or isinstance(max_workers, bool) or max_workers < 1:
        raise InvalidOptionError(
            f"max_workers must be a whole number >= 1 or None, got {max_workers!r}"
        )
    return max_workers
