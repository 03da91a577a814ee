"""Tasks' output as the command line shows it: live lines prefixed by the task's name,
the end of a failed task's output, and a stored run's output (``layerflow show --logs``)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping

from .capture import LineEcho

__all__ = ["line_echo", "tail", "titled"]

#: lines of a failed task's output shown with its error
TAIL_LINES = 10


def line_echo(all_on_stderr: bool = False) -> LineEcho:
    """Each whole line a task writes, as ``task | line``: its stdout's on stdout (unless
    ``all_on_stderr``), its stderr's on stderr, the streams as they are when it is written
    (a live display's own, which shows lines above itself); one lock: lines of tasks side
    by side never mix."""
    lock = threading.Lock()

    def echo(task: str, line: str, stream: str) -> None:
        target = sys.stderr if stream == "stderr" or all_on_stderr else sys.stdout
        if "\r" in line:  # a progress bar redrawn in place: its last state
            drawn = [part for part in line.split("\r") if part]
            line = drawn[-1] if drawn else ""
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
