"""Dask: which values stay on the cluster, and the futures that stand for them.

A Dask task's value comes back to this process only when something here needs it (the
caller, the store, a task on another pool, a ``map``), and then as soon as it is computed:
a value reported cannot be lost with its worker. A downstream Dask task gets its future,
so the data moves from worker to worker, and a value nobody here wants never comes back.
The scheduler asks this object what to do and tells it what happened; it never touches the
run's state:

- :meth:`fetch_now`: bring task ``i``'s value back as soon as it is computed?
- :meth:`arrived`: an attempt ended on the cluster with this future (and maybe its value);
- :meth:`substitute`: the arguments of a Dask task, upstream values replaced by futures;
- :meth:`drop`: a value's last user has finished, so the cluster may release it;
- :meth:`collect`: at the end, the values the caller asked for, in one round trip.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["ClusterValues"]

# when a Dask task's value comes back here: at once, at the end of the run, or never
_FETCH_NOW, _FETCH_AT_END, _STAYS_REMOTE = range(3)


class ClusterValues:
    """The futures of one run's values on a Dask cluster, and when each comes back.

    ``on_dask[i]``: graph task ``i`` runs on Dask; ``succs``: its downstream tasks;
    ``map_sources``: tasks that a ``map`` fans out over; ``needed_here``: the store or a
    checkpoint reads every value; ``keep``: the outputs the caller named (None: all).
    """

    def __init__(
        self,
        backend: Any,
        on_dask: Sequence[bool],
        succs: Sequence[Sequence[int]],
        map_sources: set[int],
        *,
        needed_here: bool,
        keep: Sequence[int] | None,
    ) -> None:
        self.backend = backend
        self.remote: dict[int, Any] = {}  # entry -> the future of its value on the cluster
        self.on_cluster: list[int] = []  # entries whose value was not brought back
        self.collected = False
        wanted = set(keep) if keep is not None else None
        self.mode = bytearray(len(on_dask))
        for i, dask in enumerate(on_dask):
            if not dask:
                continue
            if needed_here or i in map_sources or any(not on_dask[s] for s in succs[i]):
                self.mode[i] = _FETCH_NOW
            elif wanted is None or i in wanted:
                # wanted by the caller: brought here as it finishes, not at the end, so
                # that a worker's death cannot lose it (Dask would compute it again, behind
                # layerflow's back, or fail it if a second worker died)
                self.mode[i] = _FETCH_NOW
            else:
                self.mode[i] = _STAYS_REMOTE

    def fetch_now(self, task: int) -> bool:
        """Does graph task ``task`` (or its map's elements) need its value here at once?"""
        return self.mode[task] == _FETCH_NOW

    def wanted_at_end(self, task: int) -> bool:
        """Does the caller want graph task ``task``'s value brought back at the end?"""
        return self.mode[task] == _FETCH_AT_END

    def stays(self, task: int) -> bool:
        """Is graph task ``task``'s value never brought back (released on the cluster)?"""
        return self.mode[task] == _STAYS_REMOTE

    def arrived(self, i: int, value: Any, ref: Any) -> None:
        """Entry ``i``'s attempt succeeded on the cluster; ``value is ref`` when its value
        stayed there."""
        self.remote[i] = ref
        if value is ref:
            self.on_cluster.append(i)

    def ref(self, j: int, children: Mapping[int, list[int]]) -> Any:
        """What stands for entry ``j``'s value on the cluster (a future, or for a ``map``
        task the list of its elements' futures); None when it is not there."""
        ref = self.remote.get(j)
        if ref is None and j in children:
            kids = children[j]
            if kids and all(k in self.remote for k in kids):
                return [self.remote[k] for k in kids]
        return ref

    def substitute(
        self,
        kwargs: dict[str, Any],
        args: Sequence[tuple[str, int]],
        children: Mapping[int, list[int]],
    ) -> None:
        """Replace, in ``kwargs``, each upstream value that is on the cluster by its future."""
        if not self.remote:
            return
        for param, j in args:
            ref = self.ref(j, children)
            if ref is not None:
                kwargs[param] = ref

    def drop(self, j: int, children: Mapping[int, list[int]]) -> None:
        """Nobody will read entry ``j``'s copy on the cluster again: let Dask release it."""
        if self.remote:
            self.remote.pop(j, None)
            for k in children.get(j, ()):
                self.remote.pop(k, None)

    def late_metrics(self) -> list[tuple[Any, dict[str, float], float | None, Any]]:
        """(entry, ``lf.record``'s numbers, seconds on its worker, what it printed) of
        each attempt, read from the cluster after the run."""
        return self.backend.metrics()

    def collect(self, entries: list[tuple[int, Any]]) -> tuple[dict[int, Any], dict[int, Any]]:
        """Bring back ``(entry, future)`` values in one round trip: (values by entry, the
        error of each that could not be brought back)."""
        got: dict[int, Any] = {}
        lost: dict[int, BaseException] = {}
        if not entries:
            return got, lost
        try:
            values = self.backend.gather([ref for _, ref in entries])
            return dict(zip((i for i, _ in entries), values, strict=True)), lost
        except Exception:  # find which: one at a time
            for i, ref in entries:
                try:
                    got[i] = self.backend.gather([ref])[0]
                except Exception as e:  # its value is lost, and so is the cluster's
                    lost[i] = e
        return got, lost
