"""Values a backend kept where they ran (a Dask cluster), and bringing them back.

Which values stay on the cluster, and the futures that stand for them, is the Dask
backend's business (``backends/dask_values.py``: ``self.cluster``); here the run asks it
and applies what it reports: the values the caller wants, the numbers the tasks recorded
there, the workers' own timings, and the values that could not be brought back.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..errors import (
    LayerflowError,
    safe_str,
)
from ..events import (
    logger,
)
from ..metrics import add as add_metrics
from .state import (
    _CACHED,
    _FAILED,
    _REUSED,
    _SUCCEEDED,
)

if TYPE_CHECKING:  # State, with what every part declares (parts.py)
    from .state import State
else:  # for the type checker only
    State = object


class RemoteValues(State):
    """Values a backend kept where they ran (a Dask cluster), and bringing them back."""

    def _init_remote(self) -> None:
        """``cluster``: the record of the values that stay where they ran, kept by the
        backend that keeps them (``keeper``: Dask's); None when no pool keeps values."""
        self.cluster: Any = None
        if self.keeper is not None:
            g = self.graph
            self.cluster = self.keeper.values(
                [k == self.keeper_kind for k in self.kind],
                g.succs,
                {j for sources in g.map_source.values() for j in sources},
                needed_here=self.persist is not None or self.checkpoint is not None,
                keep=[i for i in range(self.n) if self.keep[i]] if self.release else None,
            )

    def _collect_remote(self) -> None:
        """After the run: bring back, in one round trip, the values the caller asked for
        that stayed on the cluster; forget the others (the cluster releases them)."""
        cluster = self.cluster
        if cluster is None or cluster.collected:
            return
        cluster.collected = True
        try:
            recorded = cluster.late_metrics()
        except Exception as e:  # the numbers are lost, the values need not be
            logger.warning("could not read the tasks' lf.record numbers from Dask: %s", e)
            recorded = []
        with self.lock:
            ran: dict[int, list[float]] = {}
            for i, box, seconds, output in recorded:
                if box:
                    add_metrics(self.metrics, i, box)
                if output:  # (as the output of the last attempt)
                    self.output.add(i, *output)
                if seconds is not None:
                    ran.setdefault(i, []).append(seconds)
            self._without_queue_time(ran)
            entries = [i for i in cluster.on_cluster if self.status[i] == _SUCCEEDED]
            cluster.on_cluster = []
            cluster.remote.clear()
            wanted = [(i, self.values[i]) for i in entries if cluster.wanted_at_end(self._owner(i))]
        got, lost = cluster.collect(wanted)
        with self.lock:
            for i in entries:
                self.values[i] = got.get(i)
                if i in lost:
                    self._lose(i, lost[i])
                elif i not in got and i < self.n:
                    self.released[i] = 1
            for m, kids in self.children.items():  # a map task's list of element values
                if self.kind[m] == self.keeper_kind and self.status[m] == _SUCCEEDED:
                    if cluster.wanted_at_end(m):
                        done = (_SUCCEEDED, _REUSED, _CACHED)  # skipped ones left out
                        self.values[m] = [self.values[k] for k in kids if self.status[k] in done]
                    elif cluster.stays(m):
                        self.values[m] = None
                        self.released[m] = 1
            self.end = time.perf_counter()

    def _without_queue_time(self, ran: dict[int, list[float]]) -> None:
        """Seen from here, a Dask attempt lasts from its submission to its callback, its
        wait in Dask's queue included; the workers timed each attempt themselves. Where
        every attempt of an entry was timed so, its duration is theirs, and its span in
        the timeline ends when it ended and starts that long before."""
        for i, times in ran.items():
            if len(times) != self.attempts[i] or self.status[i] < _SUCCEEDED:
                continue  # an attempt that was never timed (its worker died, say)
            seconds = sum(times)
            self.busy[i] = seconds
            if len(times) == 1:
                self.first_start[i] = max(self.first_start[i], self.last_end[i] - seconds)

    def _lose(self, i: int, error: BaseException) -> None:
        """A finished value could not be brought back from the cluster."""
        name = self.names[i]
        self.final_counts[self.status[i]] -= 1
        self.final_counts[_FAILED] += 1
        self.status[i] = _FAILED
        self.errors[i] = LayerflowError(
            f"task {name!r} finished on the Dask cluster, but its value could not be "
            f"brought back: {safe_str(error)}"
        )
        self.outcome = "failed"
        if self.cause < 0:
            self.cause, self.cause_error = i, self.errors[i]
