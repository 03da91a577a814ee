"""``lf.parallel_map`` inside a task of a run with a store: finished items are kept.

Each item is keyed by the task that calls ``parallel_map`` (its name and resume key; a map
element's own name and its task's key), the function's code, the item's value, and how
often this attempt of the task asked for that item before (so a task that calls twice, or
polls, gets each call's own results back). Items are found only along the run's resume chain
(``recorder.RunItems``): a retry of the task, or a resumed run, calls only the items that did
not finish; a new run calls them all.

``parallel_map``'s own run is given an :class:`ItemBook` as its recorder: the engine's
group commit (``scheduler/storage.py``) then makes each item durable as it finishes, before
the item counts as done, whatever pool runs it, and the items found stored end at once as
``"reused"``, as a resumed map's elements do.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .errors import ResultNotStored, StoreError, safe_str
from .events import logger
from .recorder import fingerprint_of, value_digest
from .store import pickled

if TYPE_CHECKING:
    from .flow import Flow
    from .result import RunResult
    from .taskscope import Scope

__all__ = ["ItemBook", "run_kept"]


def item_keys(scope: Scope, fn: Callable[..., Any], values: Sequence[Any]) -> list[str | None]:
    """Each item's key (None for an item whose value cannot be pickled: not kept)."""
    name, task_key = scope.items.owner(scope.entry)
    base = hashlib.sha256()
    for part in (name, task_key, fingerprint_of(fn)):
        base.update(part.encode())
        base.update(b"\0")
    counts = scope.counts
    keys: list[str | None] = []
    for value in values:
        try:
            digest = value_digest(value, strict=True)  # never two values alike by their repr
        except Exception:
            keys.append(None)
            continue
        h = base.copy()
        h.update(digest.encode())
        same = h.hexdigest()
        seen = counts.get(same, 0)  # the n-th time this attempt asks: the n-th result
        counts[same] = seen + 1
        h.update(b"#%d" % seen)
        keys.append(h.hexdigest())
    return keys


class ItemBook:
    """The recorder of ``parallel_map``'s own run (the engine's duck-typed interface, see
    ``scheduler/driver.py``): it reuses the items found stored and stores the others."""

    caching = False
    lookup = None
    items = None  # the items' own calls are not scoped: they keep nothing of their own

    def __init__(self, scope: Scope, fn: Callable[..., Any], values: Sequence[Any], m: int):
        self.kept = scope.items
        self.keys = item_keys(scope, fn, values)
        try:
            found = self.kept.find([k for k in self.keys if k is not None])
        except StoreError:  # a store that cannot be read finds nothing (storing says why)
            found = {}
        self.found = {k: found[key] for k, key in enumerate(self.keys) if key in found}
        self.preset: dict[int, Any] = {}
        self.element_presets = {m: None} if self.found else {}
        self._warned = False

    def attach(self, names: list[str], parent: list[int], output: Any = None) -> None:
        """Nothing to follow: items are known by their index (and what they print is the
        calling task's output)."""

    def watch(self, run: Any) -> None:
        """No heartbeat of its own: the calling task's run has one."""

    def begin(self, run_id: str, wall0: float, perf0: float) -> None:
        """Nothing to record: the items belong to the calling task's run."""

    def reuse_elements(self, m: int, known: list[tuple[int, tuple[Any, ...]]]) -> dict[int, Any]:
        """The items found stored (by index): they end at once, as ``"reused"``."""
        return {k: self.found[k] for k, _ in known if k in self.found}

    def persist(
        self, batch: Sequence[tuple[int, Any, float, float, Any]]
    ) -> list[ResultNotStored | None]:
        """Items that finished together: stored together, as the calling run's. The list
        of items and the map's whole list are not kept (they are the caller's)."""
        rows: list[tuple[str, bytes]] = []
        placed: list[tuple[int, int]] = []  # (place in the batch, item)
        for k, (_, value, _, _, element) in enumerate(batch):
            if element is None:
                continue
            index = element[2]
            key = self.keys[index]
            if key is None:
                continue
            try:
                rows.append((key, pickled(value)))
            except Exception as e:
                if not self._warned:
                    self._warned = True
                    logger.warning(
                        "a parallel_map item's result cannot be pickled (%s), so it is not "
                        "stored; a retry calls that item again",
                        safe_str(e),
                    )
                continue
            placed.append((k, index))
        errors: list[ResultNotStored | None] = [None] * len(batch)
        if rows:
            try:
                self.kept.save(rows)
            except StoreError as e:  # not durable: not done, as a task's result would be
                for k, index in placed:
                    error = errors[k] = ResultNotStored(
                        f"parallel_map item {index} finished, but it could not be stored: {e}",
                        path=e.path,
                        kind=e.kind,
                    )
                    error.__cause__ = e
        return errors

    def end(self, result: RunResult, run: Any = None) -> None:
        """Nothing to record: the calling task's run records its end."""

    def close(self) -> None:
        """The store is the calling run's: it stays open."""


def run_kept(
    flow: Flow, scope: Scope, fn: Callable[..., Any], values: Sequence[Any], **options: Any
) -> RunResult:
    """Run ``parallel_map``'s flow (``items`` and ``map`` over it) keeping its items."""
    from .options import RunOptions
    from .scheduler import execute

    plan = flow.plan({})
    book = ItemBook(scope, fn, values, plan.graph.index["map"])
    return execute(plan, {}, RunOptions.of(**options), recorder=book)
