"""The names of a map's elements, ``task[k]``: read back wherever a name is all there is
(a stored run, an event, a report's rows); and counts of things as people read them
(``1 task``, ``2 tasks``) and durations (``1.30 ms``, ``2m 05s``); a new run's id.
Imports nothing of layerflow's."""

from __future__ import annotations

import time
import uuid

__all__ = ["counted", "duration", "element_index", "element_of", "new_run_id", "owner_of"]


def new_run_id() -> str:
    """A run's id: when it started, and 6 random hex digits (``20261207-151200-3fa2c1``)."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``1 task``, ``0 tasks``, ``3 tasks`` (``plural``: when it is not ``noun + "s"``)."""
    return f"{n} {noun}" if n == 1 else f"{n} {plural or noun + 's'}"


def element_of(name: str) -> tuple[str, int] | None:
    """``(task, k)`` for the name of a map's element, ``task[k]``; None for any other name."""
    if not name.endswith("]"):
        return None
    owner, bracket, index = name[:-1].rpartition("[")
    if not bracket or not owner or not index.isdigit():
        return None
    return owner, int(index)


def element_index(name: str) -> int:
    """``k`` of the name of a map's element, ``task[k]`` (-1 for any other name)."""
    found = element_of(name)
    return found[1] if found is not None else -1


def owner_of(name: str) -> str:
    """The map task whose element ``name`` is (``""``: not an element's name)."""
    found = element_of(name)
    return found[0] if found is not None else ""


def duration(s: float | None) -> str:
    """Seconds as people read them, in one style everywhere: three significant digits and
    a unit (14.0 µs, 1.30 ms, 800 ms, 1.00 s, 2m 05s); ``-`` for None (not measured)."""
    if s is None:
        return "-"
    if s == 0:
        return "0"
    if s >= 60:
        m, sec = divmod(round(s), 60)
        return f"{m}m {sec:02d}s"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if s >= scale or unit == "µs":
            v = s / scale
            return f"{v:.3g} {unit}" if v >= 100 else f"{v:#.3g} {unit}".replace(". ", " ")
    return f"{s:.3g} s"  # pragma: no cover (the loop returns)
