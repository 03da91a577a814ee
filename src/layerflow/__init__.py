"""layerflow: run a graph of tasks and parallelize whatever is independent, automatically.

Declare what depends on what (parameters named after upstream tasks); layerflow works out
what can run at the same time, runs it, and reports how much faster that was.
"""

from __future__ import annotations

from .backends.process import RemoteError, UnpicklableError, WorkerDied
from .errors import (
    CycleError,
    DuplicateTaskError,
    InvalidOptionError,
    LayerflowError,
    MissingDependencyError,
    MissingInputError,
    RunInterrupted,
    TaskFailed,
    TaskTimeout,
)
from .events import Event, LayerEvent, RunEvent, TaskEvent
from .flow import Flow
from .graph import Task
from .limits import DEFAULT_MAX_WORKERS, LayerReport, RateLimit, RateLimited
from .metrics import record
from .parallel import ParallelMapError, parallel_map
from .pipeline import CommandFailed, Pipeline, PipelineError, load_pipeline, step_type
from .plan import Plan, WhatIf
from .progress import Progress
from .result import Attempt, NoValueError, RunResult, TaskRun, Wait

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MAX_WORKERS",
    "Attempt",
    "CommandFailed",
    "CycleError",
    "DuplicateTaskError",
    "Event",
    "Flow",
    "InvalidOptionError",
    "LayerEvent",
    "LayerReport",
    "LayerflowError",
    "MissingDependencyError",
    "MissingInputError",
    "NoValueError",
    "ParallelMapError",
    "Pipeline",
    "PipelineError",
    "Plan",
    "Progress",
    "RateLimit",
    "RateLimited",
    "RemoteError",
    "RunEvent",
    "RunInterrupted",
    "RunResult",
    "Task",
    "TaskEvent",
    "TaskFailed",
    "TaskRun",
    "TaskTimeout",
    "UnpicklableError",
    "Wait",
    "WhatIf",
    "WorkerDied",
    "load_pipeline",
    "parallel_map",
    "record",
    "step_type",
]
