"""OpenTelemetry spans, when a run asks for them (``otel.py``): the tasks' calls wrapped.

As ``storage._init_scopes`` tags calls with a store, ``_init_telemetry`` wraps each call
that runs in this process (thread, calling-thread and coroutine tasks) once, before the
run starts, so that each attempt runs in its span; a map's elements are wrapped as they
are added (``fanout``). A run without spans wraps nothing: ``tracing`` stays None and no
call costs more. Process and Dask attempts get their spans from the run's events alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .state import _ASYNC, _UNSTOPPABLE

if TYPE_CHECKING:  # State, with what every part declares (parts.py)
    from .state import State
else:  # for the type checker only
    State = object


class Telemetry(State):
    """OpenTelemetry spans, when a run asks for them: the tasks' calls wrapped."""

    #: the run's ``otel.Tracing``, or None (no spans); ``untraced``: the calls before
    #: wrapping, from which each map element's is wrapped
    tracing: Any = None

    def _init_telemetry(self, tracing: Any) -> None:
        """Open the run's span and wrap every call (before the run starts)."""
        self.tracing = tracing
        tracing.bind(self)
        # in place: with a store, ``fns`` tags each call as it is read (storage.py)
        self.untraced = list(self.fns)
        for i, fn in enumerate(self.untraced):
            self.fns[i] = self._traced(fn, i)

    def _traced(self, fn: Callable[..., Any], e: int) -> Callable[..., Any]:
        """Entry ``e``'s call ``fn``, in its attempt's span if it runs here."""
        kind = self.kind[e]
        if kind in _UNSTOPPABLE or kind == _ASYNC:
            return self.tracing.wrap(fn, e, kind == _ASYNC)
        return fn

    def _trace_elements(self, m: int, kids: list[int]) -> None:
        """Map task ``m``'s new elements, each in spans of its own name."""
        for e in kids:  # (with a store, tagged with its own entry as it is read)
            self.fns[e] = self._traced(self.untraced[m], e)
