"""Tasks' output as the command line shows it: live lines prefixed by the task's name,
the end of a failed task's output, and a stored run's output (``layerflow show --logs``)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import IO

from .capture import LineEcho

__all__ = ["line_echo", "tail", "titled"]

#: lines of a failed task's output shown with its error
TAIL_LINES = 10


def line_echo(out: IO[str], err: IO[str]) -> LineEcho:
    """Each whole line a task writes, as ``task | line``: its stdout's on ``out``, its
    stderr's on ``err`` (one lock: lines of tasks side by side never mix)."""
    lock = threading.Lock()

    def echo(task: str, line: str, stream: str) -> None:
        target = err if stream == "stderr" else out
        with lock:
            target.write(f"{task} | {line}\n")
            target.flush()

    return echo


def tail(text: str, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of ``text``, saying how many came before."""
    found = text.rstrip("\n").splitlines()
    if len(found) <= lines:
        return "\n".join(found)
    return f"[… {len(found) - lines} earlier lines …]\n" + "\n".join(found[-lines:])


def titled(logs: Mapping[str, str]) -> str:
    """Several tasks' output, each after a line naming its task."""
    parts = []
    for name, text in logs.items():
        parts.append(f"── {name} ──\n{text}" + ("" if text.endswith("\n") else "\n"))
    return "".join(parts)
