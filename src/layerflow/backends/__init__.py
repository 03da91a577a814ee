"""Backends that run tasks in workers layerflow does not drive itself.

The thread backend is not here: its workers are layerflow's own threads, which call the
scheduler's transitions directly (see ``scheduler.py``). The others adapt a foreign pool
to one small interface, and report each attempt's end through a callback that the
scheduler turns into the same transition:

``submit(name, fn, args, kwargs, on_done) -> handle``
    Start ``fn(*args, **kwargs)``; later call ``on_done(ok, value_or_error, seconds)``
    exactly once from any thread (unless the attempt was cancelled).
``cancel(handle)``
    Stop a running attempt (cancel the coroutine, kill the worker process); its
    ``on_done`` may or may not still be called, and the scheduler ignores it.
``close()``
    Release the pool at the end of the run.

Policy (what starts when, retries, timeouts, limits) stays in the scheduler.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["Backend", "Done"]

Done = Callable[[bool, Any, float], None]


class Backend(Protocol):
    """What the scheduler needs from a pool it does not drive itself."""

    def submit(
        self,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        on_done: Done,
    ) -> Any: ...

    def cancel(self, handle: Any) -> None: ...

    def close(self) -> None: ...
