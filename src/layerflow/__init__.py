"""layerflow: run a graph of tasks and parallelize whatever is independent, automatically.

Declare what depends on what (parameters named after upstream tasks); layerflow works out
what can run at the same time, runs it, and reports how much faster that was.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import pushback
from .adaptive import Adaptive
from .errors import (
    CycleError,
    DuplicateTaskError,
    GroupTimeout,
    InvalidOptionError,
    LayerflowError,
    MapError,
    MissingDependencyError,
    MissingInputError,
    MissingOnWorker,
    RemoteError,
    ResultNotStored,
    RunInterrupted,
    Skip,
    StoreError,
    TaskFailed,
    TaskTimeout,
    UnpicklableError,
    WorkerDied,
)
from .events import Event, LayerEvent, RunEvent, TaskEvent
from .flow import Flow
from .graph import Task, TaskGroup
from .limits import DEFAULT_MAX_WORKERS, LayerReport, RateLimit, RateLimited
from .metrics import record, usage
from .parallel import ParallelMapError, parallel_map
from .pipeline import CommandFailed, Pipeline, PipelineError, load_pipeline, step_type
from .plan import Plan, WhatIf
from .progress import Progress
from .result import Attempt, NoValueError, RunResult, TaskRun, Wait
from .tracking import track_usage, usage_from

if TYPE_CHECKING:
    from . import dask as dask

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
    "MapError",
    "MissingDependencyError",
    "MissingInputError",
    "NoValueError",
    "ParallelMapError",
    "Pipeline",
    "PipelineError",
    "Plan",
    "Progress",
    "Adaptive",
    "RateLimit",
    "RateLimited",
    "RemoteError",
    "RunEvent",
    "RunInterrupted",
    "RunResult",
    "Skip",
    "Task",
    "TaskGroup",
    "TaskEvent",
    "TaskFailed",
    "TaskRun",
    "TaskTimeout",
    "StoreError",
    "GroupTimeout",
    "ResultNotStored",
    "UnpicklableError",
    "Wait",
    "WhatIf",
    "MissingOnWorker",
    "WorkerDied",
    "load_pipeline",
    "parallel_map",
    "pushback",
    "record",
    "usage",
    "usage_from",
    "track_usage",
    "step_type",
]


def __getattr__(name: str) -> object:
    """``lf.dask`` imports ``layerflow.dask`` (and Dask) on first use, not at import time."""
    if name == "dask":
        import importlib

        return importlib.import_module(".dask", __name__)
    raise AttributeError(f"module 'layerflow' has no attribute {name!r}")
