"""The model: :class:`Task` (one declared step) and :class:`Graph` (tasks resolved to indices).

A ``Task`` keeps what the user declared, names unresolved, so tasks may be declared in any
order (``task``; a function's parameters are read once, ``signature``). ``GraphBuilder.build``
resolves every name at once, collects every problem (missing dependencies, cycles, missing
inputs) and raises them together, before anything runs (``builder``). A built graph is
int-indexed lists: tasks ``0..n-1`` in declaration order, ``deps[i]`` and ``succs[i]`` as
sequences of indices, ``layer[i]`` and a topological ``order``; planning and the scheduler
work on these, never on names (``indexed``).
"""

from .builder import GraphBuilder
from .indexed import Graph, gc_paused
from .signature import positional_args, signature_of
from .task import EXECUTORS, Task, TaskGroup

__all__ = [
    "EXECUTORS",
    "Graph",
    "GraphBuilder",
    "Task",
    "TaskGroup",
    "gc_paused",
    "positional_args",
    "signature_of",
]
