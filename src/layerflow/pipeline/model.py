"""What the loader knows: a step as read (:class:`Step`) and the file so far (:class:`Context`).

The loader's modules are free functions over these two; nothing else is shared between them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .problems import Problems

__all__ = ["Context", "Source", "Step"]

#: where a step's input comes from in ai-content-pipeline's format (``formats.chain``):
#: ``("flow",)``, ``("step", NAME)`` or ``("merge", STRATEGY, [sources])``
Source = tuple[Any, ...]


@dataclass
class Step:
    """One step, validated, before it becomes a task."""

    name: str
    line: int | None
    data: dict[str, Any]
    kind: str  # "run", "call" or "group"
    group: str | None = None
    fn: Callable[..., Any] | None = None
    refs: set[str] = field(default_factory=set)  # step names its templates use
    input_refs: set[str] = field(default_factory=set)  # flow inputs its templates use
    uses_input: bool = False  # reads the flow input "input" (no input_from)
    # foreach: ("step", NAME), ("input", NAME) or ("list", ""); None: not a foreach step
    foreach: tuple[str, str] | None = None
    foreach_line: int | None = None
    # ai-content-pipeline's format: where the step's input comes from (see
    # formats.source_names), None for layerflow's rule (input_from, else the flow input)
    source: Source | None = None
    prompt_from: str | None = None  # the prompt_generation step whose prompt it may ask for
    strategy: str = "collect_all"  # a group member's: what its group passes on
    made: str | None = None  # how layerflow made up the name of an unnamed step, for people


@dataclass
class Context:
    """Loading one file: where it is, the problems found so far, and what is learnt on the way."""

    path: Path
    problems: Problems
    #: ai-content-pipeline's format: why the file is read in it (None: layerflow's)
    acp: str | None = None
    #: why it is read as layerflow's (for a key of that other format found in it)
    why_layerflow: str = ""
    #: that format's top-level settings, and the top-level key its input comes from
    config: dict[str, Any] = field(default_factory=dict)
    input_key: str | None = None
    group_names: set[str] = field(default_factory=set)
    import_paths: set[str] = field(default_factory=set)  # folders its modules came from
    #: flow input -> (the first step whose templates use it, the line)
    input_lines: dict[str, tuple[str, int | None]] = field(default_factory=dict)
    dropped: set[str] = field(default_factory=set)  # steps refused for their own problems

    @property
    def file(self) -> str:
        """The file's path as problems name it."""
        return self.problems.file
