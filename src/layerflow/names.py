"""The names of a map's elements, ``task[k]``: read back wherever a name is all there is
(a stored run, an event, a report's rows); and counts of things as people read them
(``1 task``, ``2 tasks``). Imports nothing of layerflow's."""

from __future__ import annotations

__all__ = ["counted", "element_index", "element_of", "owner_of"]


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
