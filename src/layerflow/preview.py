"""Values as a person reads them at the end of a run: pretty-printed, and cut so that a
large one (a long text, a table, an array) never floods the terminal.

A large container is cut *before* it is formatted (a list of millions of numbers costs as
much as one of a few thousand): only as many items, and as much of each text, as the
preview can show are copied, the rest counted in a ``... (N more)`` placeholder."""

from __future__ import annotations

import collections
import pprint
from typing import Any

__all__ = ["preview", "sinks"]

MAX_LINES = 20
MAX_CHARS = 2000
_DEPTH = 20  # containers nested deeper are shown as ...
_CONTAINERS: tuple[type, ...] = (list, tuple, set, frozenset, collections.deque, dict)
_CONTAINERS += (collections.OrderedDict, collections.defaultdict, collections.Counter)


class _More:
    """The placeholder of what a cut container left out; sorts after everything."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text

    def __lt__(self, other: object) -> bool:
        return False

    def __gt__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return id(self)


class _Cut:
    """A copy of a value with at most ``chars`` / 2 items per container and ``chars``
    characters per text (enough to fill ``chars``), and 8 * ``chars`` items and characters
    of text in all (what a deep value costs to format)."""

    def __init__(self, chars: int) -> None:
        self.each = max(chars // 2, 1)
        self.text = chars + 100
        self.budget = 8 * chars
        self.cut = False
        self.path: set[int] = set()  # the containers being copied (a value may hold itself)

    def __call__(self, value: Any, depth: int = 0) -> Any:
        kind = type(value)
        if kind in (str, bytes, bytearray):
            allowed = min(max(self.budget, 0) + 100, self.text)
            self.budget -= len(value) + 1
            if len(value) > allowed:
                self.cut = True
                return value[:allowed]
            return value
        self.budget -= 1
        if kind not in _CONTAINERS:  # (a class of one's own keeps its own repr)
            return value
        if depth >= _DEPTH or id(value) in self.path:
            self.cut = True
            return _More("...")
        self.path.add(id(value))
        try:
            return self._copy(value, kind, depth + 1)
        finally:
            self.path.discard(id(value))

    def _copy(self, value: Any, kind: type, depth: int) -> Any:
        items: list[Any] = []
        pairs = value.items() if isinstance(value, dict) else value
        for item in pairs:
            if self.budget <= 0 or len(items) >= self.each:
                break
            if isinstance(value, dict):
                items.append((self(item[0], depth), self(item[1], depth)))
            else:
                items.append(self(item, depth))
        left = len(value) - len(items)
        more = _More(f"... ({left:,} more)") if left else None
        if more is not None:
            self.cut = True
        if isinstance(value, dict):
            if more is not None and kind is not collections.Counter:  # (sorted by count)
                items.append((_More("..."), more))
            if isinstance(value, collections.defaultdict):
                return collections.defaultdict(value.default_factory, items)
            if kind in (collections.OrderedDict, collections.Counter):
                return kind(dict(items))
            return dict(items)
        if more is not None:
            items.append(more)
        if kind is collections.deque:
            return collections.deque(items)
        return kind(items)


def preview(value: Any, *, lines: int = MAX_LINES, chars: int = MAX_CHARS) -> str:
    """Text as it is; anything else pretty-printed; at most ``lines`` lines and ``chars``
    characters, with a note of how much was left out."""
    cut = _Cut(chars)
    try:
        plain = isinstance(value, str) and value.strip() != ""  # '' shows as ''
        text = value if plain else pprint.pformat(cut(value), width=96, compact=True)
    except Exception as e:  # a value whose repr fails
        text = f"<{type(value).__name__}: cannot be shown: {e}>"
    shown = text[:chars]
    rows = shown.split("\n")
    cut_lines = len(rows) > lines
    if cut_lines:
        shown = "\n".join(rows[:lines])
    if len(shown) < len(text):
        if cut.cut:  # what is left of the copy is not all that is left of the value
            more = "more not shown"
        else:
            left = text.count("\n", len(shown)) if cut_lines else 0
            more = f"{left} more lines" if left else f"{len(text) - len(shown):,} more characters"
        shown += f"\n... ({more})"
    return shown


def sinks(names: list[str], edges: list[tuple[str, str]]) -> list[str]:
    """The names that nothing downstream uses, in ``names``' order: a run's results."""
    upstream = {a for a, _ in edges}
    return [n for n in names if n not in upstream]
