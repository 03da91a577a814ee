"""Task groups (``lf.TaskGroup``, a YAML ``parallel_group``): a time limit for the whole
group, and a fail-fast of the group's own that stops the group, not the run.

Fields: ``group_deadline`` (group -> when its time is up, set at its first start),
``stopped_groups`` (groups a failure stopped: a ``Cancelled`` from one of their tasks is a
cancel, not a failure).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import GroupTimeout
from ..graph import Task, TaskGroup
from .state import _CANCELLED, _FAILED, _RUNNING, _WAITING_STATES

if TYPE_CHECKING:  # State, with what every part declares (parts.py)
    from .state import State
else:  # for the type checker only
    State = object


class Groups(State):
    """Group deadlines and group-only fail-fast."""

    def _init_groups(self) -> None:
        self.group_deadline: dict[TaskGroup, float] = {}
        self.stopped_groups: set[TaskGroup] = set()

    def _group_started(self, t: Task, now: float) -> None:
        """A task of a group with a time limit starts: the group's clock starts with its
        first task. Mutates; lock held."""
        group = t.group
        if group is not None and group.timeout is not None and group not in self.group_deadline:
            self.group_deadline[group] = now + group.timeout
            self._timer().add(now + group.timeout, self._on_group_deadline, group)

    def _on_group_deadline(self, group: TaskGroup) -> None:
        """A group's time is up: what is still running in it fails, and so does what has
        not started (its time is spent); the group's fail_fast decides the rest."""
        limit = group.timeout
        for i in range(len(self.status)):
            if self.spec[i].group is not group:
                continue
            st = self.status[i]
            err = GroupTimeout(
                f"group {group.name!r} timed out after {limit:g}s with {self.names[i]!r} "
                "unfinished",
                self.names[i],
                limit,
            )
            if st == _RUNNING:
                self._abandon(i, err, fail=True)
            elif st in _WAITING_STATES:
                self._fail(i, err)
        self._offer_room()  # room its members were handed goes to those still waiting

    def _stop_group(self, group: TaskGroup, i: int) -> None:
        """Entry ``i`` of ``group`` failed and the group is fail-fast while the run is not:
        the group's unfinished tasks are cancelled, and what needs them is skipped; the rest
        of the run goes on. Mutates; lock held."""
        self.stopped_groups.add(group)
        reason = f"{self.names[i]!r} failed in group {group.name!r}"
        members = [j for j in range(len(self.status)) if self.spec[j].group is group]
        for j in members:
            st = self.status[j]
            if st == _RUNNING:
                self._cancel_running(j, reason)
            elif st in _WAITING_STATES:
                self._cancel_waiting(j, reason)
        for j in [i, *members]:
            if j < self.n and self.status[j] in (_FAILED, _CANCELLED):
                self._skip_downstream(j)
        self._offer_room()  # room its members were handed goes to those still waiting

    def _fails_fast(self, i: int) -> bool:
        """Does a failure of entry ``i`` stop what is left (its group's, or the run's)?"""
        group = self.spec[i].group
        if group is None or group.fail_fast is None:
            return self.fail_fast
        return group.fail_fast

    def _in_stopped_group(self, i: int) -> bool:
        group = self.spec[i].group
        return group is not None and group in self.stopped_groups
