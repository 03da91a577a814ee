"""The ``layerflow`` command: run, plan, graph and validate a pipeline; read the run store.

Exit codes: 0 success, 1 a task failed, 2 invalid input or usage, 130 interrupted.
Nothing below this package knows about the command line. ``app`` is the command group;
``run``, ``inspect`` (plan, graph, validate) and ``history`` (runs, show, ui, cache) add
their commands to it; ``common`` is what they share; ``present`` writes every line a person
reads (which stream, what ``--json`` and ``-q`` leave out).
"""

from . import history, inspect, run  # noqa: F401 (each adds its commands to main)
from .app import main
from .common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "main"]
