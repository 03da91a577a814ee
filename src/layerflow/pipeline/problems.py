"""Problems found in a pipeline file, each with the file, its line and the step.

The loader collects every problem and raises once (a :class:`PipelineError` listing them
in file order), so that one round shows everything to fix. A problem is found at a path in
the document (``("steps", 2, "run")``): its line is that node's, or the closest enclosing
node's that has one (the reader gives the line of every key and item).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import PipelineError
from .reading import Path_

__all__ = ["Problem", "Problems", "short"]

#: ``(file, line, message)``, as :attr:`PipelineError.problems` lists them
Problem = tuple[str, int | None, str]


class Problems:
    """Every problem found in one file so far."""

    def __init__(
        self, file: str, lines: Mapping[Path_, int] | None = None, found: Iterable[Problem] = ()
    ) -> None:
        self.file = file
        #: the line of every key and item of the document, by path
        self.lines: Mapping[Path_, int] = lines or {}
        self.found: list[Problem] = list(found)

    def __bool__(self) -> bool:
        return bool(self.found)

    def line_at(self, at: Path_) -> int | None:
        """The line of ``at``, or of the closest enclosing node that has one."""
        while at:
            if at in self.lines:
                return self.lines[at]
            at = at[:-1]
        return self.lines.get(())

    def add(self, at: Path_, message: str, step: str | None = None) -> None:
        """A problem at the path ``at`` of the document, in ``step`` if given."""
        self.add_line(self.line_at(at), message, step)

    def add_line(self, line: int | None, message: str, step: str | None = None) -> None:
        """A problem at ``line``, in ``step`` if given."""
        where = f"step {step!r}: " if step else ""
        self.found.append((self.file, line, where + message))

    def error(self) -> PipelineError:
        """The error that reports them: in file order, each once."""
        unique = list(dict.fromkeys(self.found))
        return PipelineError(sorted(unique, key=lambda p: (p[0] != self.file, p[1] or 0)))


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters: a problem quotes, never floods."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
