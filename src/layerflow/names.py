"""The names of a map's elements, ``task[k]``: read back wherever a name is all there is
(a stored run, an event, a report's rows). Imports nothing of layerflow's."""

from __future__ import annotations

__all__ = ["element_index", "element_of", "owner_of"]


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
