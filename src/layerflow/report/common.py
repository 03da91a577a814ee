"""What the report's parts share: what they read of a run, the caps on what is drawn,
escaping (``layerflow.markup``), writing a file."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..errors import ReportError, safe_str
from ..markup import Markup, esc, join, num, pattern, tag, void
from ..names import duration as secs
from ..records import Attempt, TaskRun, Wait

__all__ = [
    "Attempt",
    "Caps",
    "Markup",
    "pattern",
    "REPORT_CAPS",
    "Run",
    "Shape",
    "TaskRun",
    "Wait",
    "chain",
    "check_writable",
    "clip",
    "error_text",
    "esc",
    "join",
    "longest_first",
    "num",
    "owner",
    "secs",
    "tag",
    "void",
    "write_file",
]


# What the report reads of a run, as protocols rather than an import of result.py: result.py
# imports this package (run.to_html), so importing it back, even for the type checker only,
# would be an import cycle. A layerflow.result.RunResult is a Run: mypy checks it where
# result.py and the ui pass one in, and checks every read here against these members.
class Shape(Protocol):
    """What the graph reads: a run's or a plan's tasks, layers and edges."""

    @property
    def tasks(self) -> Mapping[str, TaskRun]: ...
    @property
    def layers(self) -> list[list[str]]: ...
    @property
    def edges(self) -> list[tuple[str, str]]: ...
    @property
    def critical_path(self) -> list[str]: ...


class Run(Shape, Protocol):
    """What the report reads of a finished or live run: a :class:`layerflow.RunResult`."""

    @property
    def run_id(self) -> str: ...
    @property
    def flow_name(self) -> str | None: ...
    @property
    def status(self) -> str: ...
    @property
    def started_at(self) -> float: ...
    @property
    def finished_at(self) -> float: ...
    @property
    def duration(self) -> float: ...
    @property
    def attempts(self) -> list[Attempt]: ...
    @property
    def waits(self) -> list[Wait]: ...
    @property
    def labels(self) -> Mapping[str, str]: ...
    @property
    def details(self) -> dict[str, str]: ...
    @property
    def stop_reason(self) -> str | None: ...
    @property
    def bound_by(self) -> str | None: ...
    @property
    def budget(self) -> dict[str, dict[str, float]]: ...
    @property
    def cpu(self) -> dict[str, float]: ...
    @property
    def metrics(self) -> dict[str, float]: ...
    @property
    def sequential_estimate(self) -> float: ...
    @property
    def speedup(self) -> float: ...
    def counts(self) -> dict[str, int]: ...
    def cpu_note(self) -> str | None: ...


MAX_BARS = 10_000  # attempts drawn on the timeline
MAX_LANES = 300  # worker lanes drawn (an unbounded async run can have thousands)
MAX_WAIT_LANES = 60
MAX_NODES = 400  # graph nodes drawn
MAX_PER_LAYER = 40
MAX_LAYERS = 40
MAX_EDGES = 3_000
MAX_ROWS = 5_000  # table rows
MAX_GROUPS = 200  # rows of the table of task groups (labels)


@dataclass(frozen=True)
class Caps:
    """How much the timeline and the graph draw at most: the report's, and a notebook's
    smaller ones (``notebook.py``)."""

    bars: int = MAX_BARS
    lanes: int = MAX_LANES
    wait_lanes: int = MAX_WAIT_LANES
    labels: int = 3000
    nodes: int = MAX_NODES
    per_layer: int = MAX_PER_LAYER
    layers: int = MAX_LAYERS
    edges: int = MAX_EDGES


REPORT_CAPS = Caps()


def check_writable(path: str | os.PathLike[str]) -> Path:
    """The path, if a file can be created there; otherwise a :class:`ReportError` that
    says what is wrong and what to do (checked before a run, so it fails before running)."""
    p = Path(path)
    folder = p.parent
    if p.is_dir():
        raise ReportError(f"cannot write {p}: it is a folder; give a file name, e.g. {p}/run.html")
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise ReportError(
            f"cannot write {p}: the folder {folder} {what}; create it first "
            f"(mkdir -p {folder}) or choose another path"
        )
    return p


def write_file(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` as UTF-8; a :class:`ReportError` that says why if it cannot."""
    p = check_writable(path)
    try:
        p.write_text(text, encoding="utf-8")
    except OSError as e:
        raise ReportError(f"cannot write {p}: {e.strerror or e}") from None
    return p


def error_text(error: BaseException | None) -> str:
    """An error as people read it; one loaded from the store is its recorded text."""
    if error is None:
        return ""
    from ..errors import RecordedError

    return str(error) if isinstance(error, RecordedError) else safe_str(error)


def owner(run: Shape, name: str) -> TaskRun | None:
    """The task's record, or for a map subtask ``m[3]`` without one, its map task's."""
    t = run.tasks.get(name)
    if t is None and name.endswith("]"):
        t = run.tasks.get(name.rsplit("[", 1)[0])
    return t


# --- HTML report ----------------------------------------------------------------------------


def clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def longest_first(items: list[Any], keep: Callable[[Any], bool], limit: int) -> list[Any]:
    """At most ``limit`` items: those ``keep`` says first, then the longest."""
    if len(items) <= limit:
        return items
    ranked = sorted(items, key=lambda x: (not keep(x), -(x.finished_at - x.started_at)))
    return ranked[:limit]


def chain(names: list[str], n: int = 8) -> str:
    if len(names) <= 2 * n:
        shown = names
    else:
        shown = [*names[:n], f"… {len(names) - 2 * n} more …", *names[-n:]]
    return " → ".join(shown)
