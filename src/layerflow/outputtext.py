"""One task's output as kept: per attempt, bounded to its last ``LIMIT`` bytes, saying
where it was cut (``TaskRun.logs`` is :meth:`BoundedText.render`'s text)."""

from __future__ import annotations

from collections import deque

__all__ = ["LIMIT", "BoundedText", "cut_note", "text_size"]

#: what is kept of one task's output: its last megabyte (the bytes of its UTF-8 text)
LIMIT = 1 << 20


def text_size(text: str) -> int:
    """The bytes of ``text`` in UTF-8 (its length, for ASCII, without encoding it)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "replace"))


def cut_note(count: int) -> str:
    """The line that stands where earlier output was cut."""
    return f"[… {count:,} earlier bytes cut …]\n"


class BoundedText:
    """One entry's output: per attempt, its chunks (text, or an int: that many bytes were
    cut there, by the process that captured it); bounded to the last ``LIMIT`` bytes,
    ``cut`` being what was dropped before the first chunk kept."""

    __slots__ = ("attempts", "cut", "size")

    def __init__(self) -> None:
        self.attempts: list[tuple[int, deque[str | int]]] = []
        self.size = 0
        self.cut = 0

    def add(self, attempt: int, text: str | int) -> None:
        if not self.attempts or self.attempts[-1][0] != attempt:
            self.attempts.append((attempt, deque()))
        self.attempts[-1][1].append(text)
        if type(text) is str:
            self.size += text_size(text)
            if self.size > LIMIT:
                self._trim()

    def _trim(self) -> None:
        """Drop the oldest output until the last ``LIMIT`` bytes are left, and the rest of
        the line the cut went through (a line is kept whole or not at all)."""
        excess = self.size - LIMIT
        mid_line = False
        while self.attempts and (excess > 0 or mid_line):
            chunks = self.attempts[0][1]
            first = chunks[0]
            if isinstance(first, int):
                chunks.popleft()
                self.cut += first
            elif excess <= 0:  # the cut went through this line: up to its end
                newline = first.find("\n")
                drop = first if newline < 0 else first[: newline + 1]
                self._drop(chunks, drop, first[len(drop) :])
                mid_line = newline < 0
            else:
                n = text_size(first)
                if n <= excess:
                    self._drop(chunks, first, "")
                    mid_line = not first.endswith("\n")
                else:
                    data = first.encode("utf-8", "replace")
                    kept = data[excess:].decode("utf-8", "ignore")
                    self._drop(chunks, first[: len(first) - len(kept)], kept)
                    mid_line = not data[:excess].endswith(b"\n")
                excess = self.size - LIMIT
            if not chunks:
                del self.attempts[0]

    def _drop(self, chunks: deque[str | int], gone: str, rest: str) -> None:
        """The first chunk loses ``gone``, keeping ``rest``."""
        n = text_size(gone)
        self.size -= n
        self.cut += n
        if rest:
            chunks[0] = rest
        else:
            chunks.popleft()

    def render(self, attempts: int) -> str:
        """The text: a cut note where output was cut; with more than one attempt, a line
        ``── attempt N ──`` before each attempt's output."""
        parts = [cut_note(self.cut)] if self.cut else []
        for attempt, chunks in self.attempts:
            if attempts > 1:
                if parts and not parts[-1].endswith("\n"):
                    parts.append("\n")
                parts.append(f"── attempt {attempt} ──\n")
            for chunk in chunks:
                if isinstance(chunk, int):
                    if parts and not parts[-1].endswith("\n"):
                        parts.append("\n")
                    parts.append(cut_note(chunk))
                else:
                    parts.append(chunk)
        return "".join(parts)
