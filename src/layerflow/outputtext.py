"""One task's output as kept: per attempt, bounded to about its last ``LIMIT`` bytes
(small writes joined into pieces, a large one split, each piece charged for what it costs
besides its text), saying where it was cut (``TaskRun.logs`` is
:meth:`BoundedText.render`'s text)."""

from __future__ import annotations

import logging
from collections import deque

__all__ = [
    "HELD",
    "LIMIT",
    "OVERHEAD",
    "PIECE",
    "BoundedText",
    "Captured",
    "cut_note",
    "pieces",
    "record_line",
    "tail",
    "text_size",
]

#: what is kept of one task's output: its last megabyte (the bytes of its UTF-8 text)
LIMIT = 1 << 20


def text_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "replace"))


#: output is kept in pieces of about this many characters: small writes are joined into
#: one (a ``print`` is two writes: a piece each would cost far more than its text), a
#: large write is split (so that cutting the oldest output costs a piece, never a
#: megabyte)
PIECE = 8192
#: the small writes held before they are joined into a piece, at most
HELD = 512
#: what a kept piece costs besides its text (the object, its slot): counted in the bound
OVERHEAD = 64


def pieces(text: str) -> list[str]:
    """``text`` in pieces of at most ``PIECE`` characters, each ending at a newline
    when one is in its second half."""
    found = []
    start, n = 0, len(text)
    while n - start > PIECE:
        end = start + PIECE
        newline = text.rfind("\n", start + PIECE // 2, end)
        if newline >= 0:
            end = newline + 1
        found.append(text[start:end])
        start = end
    found.append(text[start:])
    return found


def tail(text: str, limit: int) -> str:
    """The end of ``text``, at most ``limit`` bytes of it (whole characters)."""
    kept = text[-limit:]  # (at least as many bytes as characters)
    if kept.isascii():
        return kept
    return kept.encode("utf-8", "replace")[-limit:].decode("utf-8", "ignore")


def cut_note(count: int) -> str:
    """The line that stands where earlier output was cut."""
    return f"[… {count:,} earlier bytes cut …]\n"


class BoundedText:
    """One entry's output: per attempt, its chunks (text, or an int: that many bytes were
    cut there, by the process that captured it); bounded to the last ``LIMIT`` bytes,
    counting ``OVERHEAD`` per chunk (cut down to ``LIMIT - _SLACK`` when over, so that
    small writes do not each cut), ``cut`` being what was dropped before the first chunk
    kept. Small writes wait in ``held`` until they make a piece."""

    __slots__ = ("attempts", "count", "cut", "held", "held_attempt", "held_len", "size")

    #: how far under ``LIMIT`` a cut goes
    _SLACK = LIMIT // 16

    def __init__(self) -> None:
        self.attempts: list[tuple[int, deque[str | int]]] = []
        self.size = 0  # bytes of text kept (held included)
        self.count = 0  # chunks kept
        self.cut = 0
        self.held: list[str] = []
        self.held_len = 0
        self.held_attempt = 0

    def add(self, attempt: int, text: str | int) -> None:
        if attempt != self.held_attempt:
            self._join()
            self.held_attempt = attempt
        if type(text) is not str:
            self._join()
            self._chunks(attempt).append(text)
            self.count += 1
            return
        n = len(text)
        if n < PIECE:
            held = self.held
            held.append(text)
            self.held_len += n
            self.size += n if text.isascii() else text_size(text)
            if self.held_len >= PIECE or len(held) >= HELD:
                self._join()
        else:
            self._join()
            if n > LIMIT:
                text = self._only(text)
            if text:  # (nothing is left of a line longer than the bound)
                cut = pieces(text)
                self._chunks(attempt).extend(cut)
                self.count += len(cut)
                self.size += text_size(text)
        if self.size + self.count * OVERHEAD > LIMIT:
            self._join()
            self._trim()

    def _chunks(self, attempt: int) -> deque[str | int]:
        """Where ``attempt``'s output goes (a timed-out attempt's thread may still write
        while the next attempt runs)."""
        for a, chunks in reversed(self.attempts):
            if a == attempt:
                return chunks
        chunks = deque()
        self.attempts.append((attempt, chunks))
        return chunks

    def _join(self) -> None:
        """The held writes, one chunk now."""
        if self.held:
            self._chunks(self.held_attempt).append("".join(self.held))
            self.count += 1
            self.held.clear()
            self.held_len = 0

    def _only(self, text: str) -> str:
        """One write longer than everything kept: all earlier output is cut, and the
        write's own beginning, to its last ``LIMIT`` bytes (from a line's start)."""
        for _, chunks in self.attempts:
            for chunk in chunks:
                self.cut += chunk if isinstance(chunk, int) else text_size(chunk)
        self.attempts.clear()
        self.size = self.count = 0
        kept = tail(text, LIMIT - self._SLACK)
        if text[-len(kept) - 1] != "\n":  # the cut went through a line: up to its end
            newline = kept.find("\n")
            kept = kept[newline + 1 :] if newline >= 0 else ""
        self.cut += text_size(text) - text_size(kept)
        return kept

    def _trim(self) -> None:
        """Drop the oldest output until at most ``LIMIT - _SLACK`` bytes are left, and the
        rest of the line the cut went through (a line is kept whole or not at all)."""
        target = LIMIT - self._SLACK
        mid_line = False
        while self.attempts:
            excess = self.size + self.count * OVERHEAD - target
            if excess <= 0 and not mid_line:
                break
            chunks = self.attempts[0][1]
            if not chunks:
                del self.attempts[0]
                continue
            first = chunks[0]
            if isinstance(first, int):
                chunks.popleft()
                self.count -= 1
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
                else:  # (a piece: a few kilobytes at most)
                    data = first.encode("utf-8", "replace")
                    kept = data[excess:].decode("utf-8", "ignore")
                    self._drop(chunks, first[: len(first) - len(kept)], kept)
                    mid_line = not data[:excess].endswith(b"\n")
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
            self.count -= 1

    def render(self, attempts: int) -> str:
        """The text: a cut note where output was cut; with more than one attempt, a line
        ``── attempt N ──`` before each attempt's output."""
        self._join()
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


def record_line(record: logging.LogRecord) -> str:
    """A logging record as kept: ``LEVEL logger: message``, and its traceback."""
    try:
        text = f"{record.levelname} {record.name}: {record.getMessage()}\n"
    except Exception as e:  # a bad format string: say so, as logging would
        text = f"{record.levelname} {record.name}: {record.msg!r} (bad arguments: {e})\n"
    if record.exc_info and record.exc_info[1] is not None:
        text += _FORMATTER.formatException(record.exc_info) + "\n"
    elif record.exc_text:
        text += record.exc_text + "\n"
    return text


_FORMATTER = logging.Formatter()


class Captured:
    """Everything one call writes, kept in its own process (a Dask task): ``chunks`` as
    (stderr?, text), bounded like a task's (its last ``limit`` bytes, counting
    ``OVERHEAD`` per chunk; ``cut`` bytes dropped); nothing goes on to the real streams.
    Small writes to one stream wait in ``held`` until they make a piece."""

    __slots__ = ("chunks", "cut", "held", "held_err", "held_len", "limit", "size")

    def __init__(self, limit: int = LIMIT) -> None:
        self.chunks: deque[tuple[bool, str]] = deque()
        self.size = 0  # bytes of text kept (held included)
        self.cut = 0
        self.limit = limit
        self.held: list[str] = []
        self.held_len = 0
        self.held_err = False

    def write(self, text: str, err: bool) -> bool:
        n = len(text)
        if err != self.held_err or n >= PIECE:
            self._join()
            self.held_err = err
        if n < PIECE:
            self.held.append(text)
            self.held_len += n
            self.size += n if text.isascii() else text_size(text)
            if self.held_len >= PIECE or len(self.held) >= HELD:
                self._join()
        else:
            size = text_size(text)
            if size > self.limit:  # only its end can be kept: the rest is cut now
                for _, chunk in self.chunks:
                    self.cut += text_size(chunk)
                self.chunks.clear()
                self.size = 0
                kept = tail(text, self.limit)
                self.cut += size - text_size(kept)
                text, size = kept, text_size(kept)
            self.chunks.extend((err, piece) for piece in pieces(text))
            self.size += size
        if self.size + len(self.chunks) * OVERHEAD > self.limit:
            self._join()
            self._trim()
        return True

    def _join(self) -> None:
        if self.held:
            self.chunks.append((self.held_err, "".join(self.held)))
            self.held.clear()
            self.held_len = 0

    def _trim(self) -> None:
        """Drop the oldest output until at most seven eighths of ``limit`` are left."""
        chunks = self.chunks
        excess = self.size + len(chunks) * OVERHEAD - (self.limit - self.limit // 8)
        while excess > 0 and chunks:
            err, first = chunks[0]
            n = text_size(first)
            if n <= excess:
                chunks.popleft()
                gone = n
                excess -= OVERHEAD
            else:  # (a piece: a few kilobytes at most)
                kept = first.encode("utf-8", "replace")[excess:].decode("utf-8", "ignore")
                chunks[0] = (err, kept)
                gone = n - text_size(kept)
            self.size -= gone
            self.cut += gone
            excess -= gone

    def record(self, record: logging.LogRecord) -> bool:
        return self.write(record_line(record), record.levelno >= logging.WARNING)

    def result(self) -> tuple[list[tuple[bool, str]], int] | None:
        """What to send back: (chunks, cut), or None when the call wrote nothing."""
        self._join()
        if not self.chunks and not self.cut:
            return None
        return list(self.chunks), self.cut
