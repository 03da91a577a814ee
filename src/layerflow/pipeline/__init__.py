"""YAML pipelines: reading a file, checking it, and the :class:`Flow` it becomes."""

from .commands import stop_commands
from .loader import (
    CommandFailed,
    Pipeline,
    PipelineError,
    load_pipeline,
    on_import_path,
    step_type,
    step_types,
)

__all__ = [
    "CommandFailed",
    "Pipeline",
    "PipelineError",
    "load_pipeline",
    "on_import_path",
    "step_type",
    "step_types",
    "stop_commands",
]
