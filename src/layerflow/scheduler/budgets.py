"""Budgets: a ceiling on what a run may spend of any number the tasks ``lf.record``.

``budget={"cost": 5.00, "tokens": 2_000_000}``. A task's estimate is its declared cost of
that name (``rate_limit={"tokens": 1200}``; no rate limit of that name is needed); before
it starts, what has been spent, plus the estimates of the attempts running, plus its own,
must stay within the budget. When a start would cross it, or what was spent reaches it, the
run stops cleanly: nothing new starts, the running tasks finish (their results are kept, in
the store too), and the run ends with status ``"stopped"`` and the reason. Resuming it with
a larger budget continues from there; the budget counts what this run spends, not what
earlier runs did.

Fields: ``budget`` (name -> ceiling), ``spent`` (name -> recorded so far in this run),
``committed`` (name -> estimates of running attempts), ``estimates`` (entry -> what its
running attempt committed), ``stop_reason``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..events import logger
from ..limits import task_costs
from .state import _CANCELLED, _WAITING_STATES

if TYPE_CHECKING:  # State, with what every part declares (parts.py)
    from .state import State
else:  # for the type checker only
    State = object


class Budgets(State):
    """Budgets: a ceiling on what a run may spend of any number the tasks record."""

    def _init_budgets(self, budget: Mapping[str, float] | None, limits: Mapping[str, Any]) -> None:
        """Budgets and the tasks' estimates: a declared cost named after a budget is an
        estimate (``est``); it is also a rate-limit cost only if such a limit exists."""
        self.budget = {k: float(v) for k, v in (budget or {}).items()}
        self.est: list[dict[str, float] | None] = []
        if self.budget:
            for i, c in enumerate(self.cost):
                self.est.append({k: v for k, v in c.items() if k in self.budget} if c else None)
                if c and any(k not in limits for k in c):
                    self.cost[i] = {k: v for k, v in c.items() if k in limits} or None
        self.spent = dict.fromkeys(self.budget, 0.0)
        self.committed = dict.fromkeys(self.budget, 0.0)
        self.estimates: dict[int, dict[str, float]] = {}
        self.stop_reason: str | None = None
        self.budget_stopped = False  # the run stopped because a budget was reached

    def _within_budget(self, i: int) -> dict[str, float] | None:
        """May entry ``i`` start without crossing a budget? Its estimates if so (to
        :meth:`_commit` once it is admitted); None if not, and the run stops. Lock held."""
        cost = self.est[self._owner(i)] or {}  # a map's elements: their task's estimate
        mine = {}
        for name, ceiling in self.budget.items():
            estimate = cost.get(name, 0.0)
            ahead = self.spent[name] + self.committed[name]
            if ahead + estimate > ceiling + 1e-9 or self.spent[name] >= ceiling - 1e-9:
                shown = f" (its estimate {estimate:g})" if estimate else ""
                self._budget_stop(
                    f"budget {name} {ceiling:g}: {self.spent[name]:g} spent, "
                    f"{self.committed[name]:g} committed by running tasks; "
                    f"{self.names[i]!r}{shown} would cross it"
                )
                return None
            if estimate:
                mine[name] = estimate
        return mine

    def _commit(self, i: int, mine: dict[str, float]) -> None:
        """Entry ``i`` starts: its estimates count as spent until it reports the truth."""
        for name, estimate in mine.items():
            self.committed[name] += estimate
        if mine:
            self.estimates[i] = mine

    def _charge(
        self,
        i: int,
        used: Mapping[str, float] | None,
        *,
        abandoned: bool = False,
        refused: bool = False,
    ) -> None:
        """Entry ``i``'s attempt ended having recorded ``used``: its estimates give way to
        what it spent, and an estimate of a name it did not record counts as spent; a
        budget reached stops the run. An attempt given up on (a timeout, a stop) is charged
        its estimates: a thread goes on, and what it spends is never heard of. An attempt
        ``refused`` by push-back (a 429, an overload) spent only what it recorded: the
        provider did not serve it."""
        mine = self.estimates.pop(i, {})
        for name, estimate in mine.items():
            self.committed[name] -= estimate
        if abandoned:
            used = mine
        elif mine and not refused:
            used = {**mine, **used} if used else mine
        if not used:
            return
        for name, ceiling in self.budget.items():
            if name in used:
                self.spent[name] += used[name]
                if self.spent[name] >= ceiling - 1e-9:
                    self._budget_stop(
                        f"budget {name} {ceiling:g} reached: {self.spent[name]:g} spent"
                    )

    def _budget_settled(self) -> None:
        """At the run's end: a budget reached by its last tasks stopped nothing (no task
        was cancelled), so the run did all its work: it succeeded."""
        if self.outcome == "stopped" and self.budget_stopped and not self.final_counts[_CANCELLED]:
            self.outcome = "succeeded"
            self.stop_reason = None

    def _budget_stop(self, reason: str) -> None:
        """No new start: the run ends "stopped" for ``reason`` (unless it already failed or
        is stopping for another reason)."""
        if self.stopping or not self.left:  # (the run's last task ended: nothing to stop)
            return
        if self._nothing_left_to_start():  # (e.g. the last result is still being stored)
            return
        self.stop_reason = reason
        if self.outcome == "succeeded":
            self.outcome = "stopped"
            self.budget_stopped = True
        self._stop(reason)

    def _nothing_left_to_start(self) -> bool:
        """Is every entry that has not ended running, being stored, or waiting only to be
        skipped (an input skipped itself)? Then reaching a budget stops nothing."""
        skip = self.pending_skip
        return not any(st in _WAITING_STATES and i not in skip for i, st in enumerate(self.status))

    def budget_report(self) -> dict[str, dict[str, float]]:
        """Per budget: its ceiling and what the run spent."""
        return {
            name: {"budget": ceiling, "spent": self.spent[name]}
            for name, ceiling in self.budget.items()
        }

    def _warn_unrecorded(self) -> None:
        """At the end: a budget, or a rate limit on tokens, that tasks declared and ran
        under but that nothing recorded was enforced on estimates (or not at all): say so,
        and how to record it."""
        if not self.started or not (self.budget or self.gate.active):
            return
        names = dict.fromkeys(self.budget, "budget")
        limits = self.gate.windows.keys() | self.gate.adaptive.keys()
        for j in {self._owner(i) for i in self.started}:
            for name in task_costs(self.spec[j].rate_limit) or ():
                if name in limits and name not in names and "token" in name.lower():
                    names[name] = "rate limit"
        recorded: set[str] = set()
        for metrics in self.metrics.values():
            recorded.update(metrics)
        for name, kind in names.items():
            if name in recorded:
                continue
            counted = (
                "counted nothing"
                if kind == "budget" and not any(e and name in e for e in self.est)
                else "counted the tasks' estimates instead"
            )
            if "token" in name.lower():
                how = (
                    f"lf.usage_from(response, {name!r}) or lf.usage({name!r}, n) in the task, "
                    f"or lf.track_usage(tokens={name!r}) once per process for the openai, "
                    "anthropic and litellm clients"
                )
            else:
                how = f"lf.usage({name!r}, n) in the task"
            logger.warning(
                "%s %r: no task recorded %r during the run, so it %s. Record what each "
                "task spends: %s",
                kind,
                name,
                name,
                counted,
                how,
            )
