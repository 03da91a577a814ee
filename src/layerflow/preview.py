"""Values as a person reads them at the end of a run: pretty-printed, and cut so that a
large one (a long text, a table, an array) never floods the terminal."""

from __future__ import annotations

import pprint
from typing import Any

__all__ = ["preview", "sinks"]

MAX_LINES = 20
MAX_CHARS = 2000


def preview(value: Any, *, lines: int = MAX_LINES, chars: int = MAX_CHARS) -> str:
    """Text as it is; anything else pretty-printed; at most ``lines`` lines and ``chars``
    characters, with a note of how much was left out."""
    try:
        plain = isinstance(value, str) and value.strip() != ""  # '' shows as ''
        text = value if plain else pprint.pformat(value, width=96, compact=True)
    except Exception as e:  # a value whose repr fails
        text = f"<{type(value).__name__}: cannot be shown: {e}>"
    shown = text[:chars]
    rows = shown.split("\n")
    cut_lines = len(rows) > lines
    if cut_lines:
        shown = "\n".join(rows[:lines])
    if len(shown) < len(text):
        left = text.count("\n", len(shown)) if cut_lines else 0
        more = f"{left} more lines" if left else f"{len(text) - len(shown):,} more characters"
        shown += f"\n... ({more})"
    return shown


def sinks(names: list[str], edges: list[tuple[str, str]]) -> list[str]:
    """The names that nothing downstream uses, in ``names``' order: a run's results."""
    upstream = {a for a, _ in edges}
    return [n for n in names if n not in upstream]
