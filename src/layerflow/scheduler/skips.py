"""Skips: ``lf.Skip`` raised in a task ends it skipped, which is no failure.

What needs a skipped task's value is skipped too (with an ``lf.Skip`` that says why), and
so on down the values; a task only ordered after it (``after=``, a YAML pipeline's ``order:
sequence``) starts as it would after a success. A skipped map element leaves its task's
list, and the later stages of its chain are skipped (``fanout.py``); with a store, an
element's skip is stored like a result, so a resumed run skips it again without calling it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import Skip
from .state import _PENDING, _RUNNING, _SKIPPED, _STORING

if TYPE_CHECKING:  # State, with what every part declares (parts.py)
    from .state import State
else:  # for the type checker only
    State = object


class Skips(State):
    """Skips: ``lf.Skip`` raised in a task ends it skipped, which is no failure."""

    def _skipped(self, i: int, skip: Skip) -> None:
        """Entry ``i`` raised ``lf.Skip``: it ends skipped, not failed, and so does what
        needs it (a skipped element leaves its task's list, and its chain ends)."""
        if i >= self.n and self.persist is not None and self.status[i] == _RUNNING:
            # an element's skip is its result: stored, so a resumed run skips it again
            # without calling it, and the elements after it keep their places
            self.status[i] = _STORING

            def then(error: BaseException | None) -> None:
                self._skip_now(i, skip)

            self._store_result(i, skip, self.first_start[i], self.last_end[i], then)
            return
        self._skip_now(i, skip)

    def _skip_now(self, i: int, skip: Skip) -> None:
        """Entry ``i`` ends skipped, and so does what needs its value."""
        self._skip_it(i, skip)
        if i < self.n:
            self._skip_consumers(i)

    def _skip_it(self, s: int, skip: Skip) -> None:
        self.status[s] = _SKIPPED
        self.errors[s] = skip
        if self.emit:
            self._task_event("task_skipped", s, reason=skip.reason, error=skip)
        self._finalize(s)

    def _skip_consumers(self, i: int) -> None:
        """Task ``i`` skipped itself, which is no failure: what needs its value is skipped
        (with an ``lf.Skip`` saying why), and so on down the values; a task only ordered
        after one of them (``after``, a YAML pipeline's ``order: sequence``) starts as it
        would after a success."""
        status, waiting, args = self.status, self.waiting, self.graph.args
        stack = [i]
        while stack:
            j = stack.pop()
            for s in self.succs[j]:
                if status[s] != _PENDING:
                    continue
                if any(src == j for _, src in args[s]):
                    skip = self.pending_skip.setdefault(
                        s, Skip(f"upstream {self.names[j]!r} was skipped")
                    )
                    waiting[s] -= 1
                    if waiting[s]:  # its other inputs may still fail: then it ends skipped
                        continue  # as downstream of a failure, and so do those after it
                    del self.pending_skip[s]
                    self._skip_it(s, skip)
                    stack.append(s)
                else:
                    waiting[s] -= 1
                    if not waiting[s]:
                        self._make_ready(s)
                    elif self.stream_from and self.streamable[s]:
                        self._try_stream(s)
