"""The scheduling policy, written once: the scheduler runs it and ``Plan.simulate`` replays it.

- **Ready order.** A ready entry waits in a heap under one int: its policy part times
  :data:`KEY_BASE` plus its index, so a heap step compares ints, not tuples, and a ``map``
  can add entries (indices past the graph's) while the run goes on. :func:`ranked_keys`:
  higher priority first, then the longer remaining path, then declaration order.
- **Sequential order** (``mode="sequential"``): :func:`sequence_keys` gives each task its
  position in the plan's order (or a seed's), and a task its limits hold back holds the
  queue: nothing overtakes it (:func:`holds_queue`).
- **The layer barrier** (``mode="layered"``, or a checkpoint): :class:`LayerBarrier` holds
  a ready entry of a layer that is not open yet; a layer opens when every task of the
  layers before it has ended.

Nothing here takes a lock or reads a clock: the callers own both.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["KEY_BASE", "LayerBarrier", "holds_queue", "ranked_keys", "sequence_keys"]

#: Ready-queue keys are ``policy * KEY_BASE + entry index``: one int compare per heap step,
#: and room for the entries a ``map`` adds while the run goes on.
KEY_BASE = 1 << 40


def ranked_keys(priority: Sequence[int], rank: Sequence[int]) -> list[int]:
    """Keys for the ready heap, smaller first: higher ``priority``, then higher ``rank``
    (the remaining path), then lower index (declaration order)."""
    rmax = max(rank, default=0)
    pmax = max(priority, default=0)
    span = rmax + 1
    return [
        ((pmax - p) * span + (rmax - r)) * KEY_BASE + i
        for i, (p, r) in enumerate(zip(priority, rank, strict=True))
    ]


def sequence_keys(order: Iterable[int], n: int) -> list[int]:
    """Keys that make the ready heap yield tasks in ``order`` (``mode="sequential"``)."""
    keys = [0] * n
    for pos, i in enumerate(order):
        keys[i] = pos * KEY_BASE + i
    return keys


def holds_queue(mode: str) -> bool:
    """Whether a task its limits hold back holds every task after it: in sequential mode
    the run's order is the plan's, so nothing may overtake; otherwise others pass it."""
    return mode == "sequential"


class LayerBarrier:
    """The barrier of a layered run: entries of a layer that is not open yet are held.

    ``current`` is the open layer; ``left[k]`` counts the tasks of layer ``k`` not ended
    yet; ``held[k]`` the ready entries layer ``k`` holds back. The caller says when a task
    ended (:meth:`ended`) and when to open the next layer (:meth:`open_next`), so that it
    can ask a checkpoint in between.
    """

    __slots__ = ("current", "left", "held")

    def __init__(self, layer: Iterable[int], n_layers: int, *, holding: bool = True) -> None:
        """``layer``: each task's layer; ``holding=False`` counts without holding (a run that
        is not layered still reports its layers' ends)."""
        self.current = 0
        self.left = [0] * n_layers
        for li in layer:
            self.left[li] += 1
        # a run that is not layered counts its layers (for the layer events) but holds nothing
        self.held: list[list[int]] = [[] for _ in range(n_layers)] if holding else []

    def hold(self, i: int, li: int) -> bool:
        """Hold ready entry ``i`` of layer ``li`` if that layer is not open; True if held."""
        if li != self.current:
            self.held[li].append(i)
            return True
        return False

    def ended(self, li: int) -> bool:
        """Count the end of a task of layer ``li``; True if that ended the layer."""
        self.left[li] -= 1
        return not self.left[li]

    @property
    def last(self) -> bool:
        """Whether the open layer is the last one."""
        return self.current >= len(self.left) - 1

    def open_next(self) -> list[int]:
        """Open the next layer; the entries it held, which may start now."""
        self.current += 1
        held, self.held[self.current] = self.held[self.current], []
        return held
