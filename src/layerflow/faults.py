"""The threads layerflow starts, guarded: an exception that escapes one is reported, never lost.

A run owns threads of its own: thread workers, the timer, the store's writer, the
checkpoint's caller, the event deliverer, and a backend's feeders or event loop. A task's
own errors are caught where the task is called, so an exception that escapes a thread's
body is layerflow's bug, or something in the process broke a module layerflow uses (a
user's ``queue.py`` imported as ``queue``). Before this module such a thread died silently
and its run waited forever for it. Now each body runs through :func:`guarded`, which hands
the exception to the run (``scheduler/faults.py``): it stops, and fails with an error that
names the thread.

``INJECT`` is the test hook: a thread whose name is a key raises that exception as it starts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("layerflow")

#: test hook: thread name -> the exception such a thread raises as it starts
INJECT: dict[str, BaseException] = {}

Fault = Callable[[str, BaseException], None]


def log_fault(where: str, error: BaseException) -> None:
    """The fallback when no run listens: say it loudly."""
    logger.error("layerflow's %s thread failed", where, exc_info=error)


def injected(where: str) -> None:
    """The test hook, for code that is not a thread's body (a callback on a thread a
    library owns): raise what ``INJECT`` holds for ``where``."""
    if INJECT and where in INJECT:
        raise INJECT[where]


def guarded(where: str, body: Callable[..., Any], on_fault: Fault) -> Callable[..., None]:
    """``body`` as a thread target: what escapes it goes to ``on_fault(where, error)``."""

    def run(*args: Any) -> None:
        try:
            if INJECT and where in INJECT:
                raise INJECT[where]
            body(*args)
        except BaseException as e:
            try:
                on_fault(where, e)
            except BaseException:  # the report itself broke: at least it is said
                log_fault(where, e)

    return run
