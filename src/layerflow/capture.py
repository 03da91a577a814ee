"""What each task printed and logged, kept per task and attempt (``TaskRun.logs``).

While a run goes, ``sys.stdout`` and ``sys.stderr`` are replaced by a tee and the root
logger gets one handler more (``redirect.py``: installed by the first run that starts, put
back by the last that ends, whatever ended it; meanwhile ``logging.basicConfig`` looks past
it, so a program that configures logging while a run goes still does). Neither keeps a table of
threads: each asks a context variable, ``SINK``, whom the code that writes belongs to. A
thread worker sets a ``Cell`` there once and points it at the task and attempt it runs
(three attribute stores per task, so a run whose tasks print nothing pays nothing
measurable; a thread abandoned after a timeout keeps writing into its own attempt), and so
does a sequential run's calling thread; a coroutine sets ``(logs, entry, attempt)`` in its
own context; code outside any task (the caller, layerflow's own threads between tasks,
threads a task starts itself) finds nothing there and writes to the real stream,
untouched. A ``StreamHandler`` that holds the terminal's stream when the first run starts
(``logging.basicConfig`` called at import, before the command line's run) is pointed at
the tee meanwhile (its own stream back when the last run ends, unless someone has changed
it since): what it writes goes where ``sys.stderr``'s writes go, above a live display, and
a task's record is kept as the handler formats it and shown once. A worker process or a
Dask worker captures in its own process
(:class:`Captured`) and sends the text back with the result. A process forked while runs
go (a task's ``multiprocessing`` pool) is nobody's task: it writes to the real streams.

Kept: the last ``LIMIT`` bytes per task (small writes joined into pieces of a few
kilobytes, each piece's own cost counted); what was cut is said in one line where it was
cut. What the terminal shows is the run's *echo*, chosen where the run is made
(:func:`echo`): ``"raw"`` (the Python API: output goes on to the terminal as it would
without layerflow, and is kept too), ``None`` (kept only) or a callable ``(task, line,
stream)`` that gets each whole line (the command line's: lines prefixed by the task's
name; a progress bar redrawn with ``\\r`` waits as its last drawing only, and a line
that never ends is passed on in parts of ``_LINE_CAP`` characters).

Not captured: what is written straight to a file descriptor (C code, a subprocess the task
starts itself with inherited streams), ``sys.stdout.buffer``, and output of threads that a
task starts itself (they are not the task's context).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from .outputtext import LIMIT, BoundedText, Captured, record_line

__all__ = [
    "LIMIT",
    "REAL",
    "SINK",
    "Captured",
    "Cell",
    "TaskLogs",
    "cell_in",
    "echo",
    "keep",
    "nobodys",
    "open_cell",
    "sink_record",
    "sink_write",
]


#: ``(task, line, stream)``: a whole line a task wrote, ``stream`` is "stdout" or "stderr"
LineEcho = Callable[[str, str, str], None]
Echo = LineEcho | str | None

# the run's echo, read when a run is made: "raw", None, or a LineEcho
_ECHO: contextvars.ContextVar[Echo] = contextvars.ContextVar("layerflow_echo", default="raw")
# whom the running code belongs to: a Cell, a (TaskLogs, entry) pair (a coroutine's) or a
# Captured (None: nobody's)
SINK: contextvars.ContextVar[Any] = contextvars.ContextVar("layerflow_sink", default=None)


@contextlib.contextmanager
def echo(mode: Echo) -> Iterator[None]:
    """Runs made inside this block show their tasks' output so: ``"raw"``, ``None`` or a
    callable taking ``(task, line, stream)``."""
    token = _ECHO.set(mode)
    try:
        yield
    finally:
        _ECHO.reset(token)


class TaskLogs:
    """What the tasks of one run wrote, by entry (``names[i]``; ``attempts[i]`` is the
    attempt running, unless the writer says which attempt it is: a thread's or a
    coroutine's fixes its attempt when it starts). ``echo`` as in the module docstring;
    ``parent``: the (logs, entry, attempt) of the task that started this run, which sees
    all of it."""

    def __init__(
        self,
        names: list[str],
        attempts: list[int],
        echo: Echo = "raw",
        parent: tuple[TaskLogs, int, int] | None = None,
    ) -> None:
        self.names = names
        self.attempts = attempts
        self.texts: dict[int, BoundedText] = {}
        self.lock = threading.Lock()
        self.echo = echo
        self.raw = echo == "raw" and parent is None
        self.parent = parent
        self.partial: dict[tuple[int, bool], _Line] = {}  # a line echoed once it is whole
        self.named: dict[str, str] = {}  # reused map elements' output, by name
        self.installed = False

    @classmethod
    def for_run(cls, names: list[str], attempts: list[int]) -> TaskLogs:
        """The logs of a run made now: the echo chosen around it, and the task it runs in."""
        sink = SINK.get()
        parent = None
        if isinstance(sink, Cell) and sink.i >= 0:
            parent = (sink.logs, sink.i, sink.a)
        elif type(sink) is tuple:
            parent = sink
        return cls(names, attempts, _ECHO.get(), parent)

    def echoes_lines(self) -> bool:
        """Whether the tasks' lines are shown as they come, by a line echo (this run's, or
        the run of the task that started it)."""
        if self.parent is not None:
            return self.parent[0].echoes_lines()
        return callable(self.echo)

    def write(self, i: int, text: str, err: bool, attempt: int = -1) -> bool:
        """Entry ``i`` wrote ``text`` (in ``attempt``; -1: the one running): kept, and
        echoed. True when the real stream must not get it too (anything but the raw
        echo)."""
        with self.lock:
            found = self.texts.get(i)
            if found is None:
                found = self.texts[i] = BoundedText()
            found.add(self.attempts[i] if attempt < 0 else attempt, text)
        if self.parent is not None:
            logs, k, a = self.parent
            return logs.write(k, text, err, a)
        if callable(self.echo):
            self._echo_lines(i, text, err)
        return not self.raw

    def add(self, i: int, chunks: list[tuple[bool, str]], cut: int = 0, attempt: int = -1) -> None:
        """Output entry ``i``'s attempt made elsewhere (a worker process), as (stderr?,
        text) chunks, and how many bytes it cut itself: kept, and echoed now. ``attempt``:
        which (-1: the one running)."""
        if not chunks and not cut:
            return
        if cut:
            with self.lock:
                found = self.texts.get(i)
                if found is None:
                    found = self.texts[i] = BoundedText()
                found.add(self.attempts[i] if attempt < 0 else attempt, cut)
        for err, text in chunks:
            if not self.write(i, text, err, attempt):
                real = REAL[err]
                stream = real if real is not None else (sys.stderr if err else sys.stdout)
                if stream is not None:
                    with contextlib.suppress(Exception):
                        stream.write(text)
                        stream.flush()

    def preset(self, i: int, text: str) -> None:
        """Entry ``i`` was reused from an earlier run: its output then is its output now."""
        if text:
            with self.lock:
                found = self.texts[i] = BoundedText()
                found.add(0, text)

    def preset_named(self, name: str, text: str) -> None:
        """As :meth:`preset`, for a map's element reused before it has an entry."""
        if text:
            self.named[name] = text

    def text(self, i: int) -> str:
        """Entry ``i``'s output ("" when it wrote nothing)."""
        found = self.texts.get(i)
        if found is None:
            return self.named.get(self.names[i], "") if self.named else ""
        with self.lock:
            return found.render(self.attempts[i] if i < len(self.attempts) else 1)

    def _echo_lines(self, i: int, text: str, err: bool) -> None:
        key = (i, err)
        whole: list[str] = []
        with self.lock:
            held = self.partial.get(key)
            if "\n" in text:
                lines = text.split("\n")
                if held is not None:
                    del self.partial[key]
                    lines[0] = held.text() + lines[0]
                rest = lines.pop()
                whole = lines
                if rest:
                    self.partial[key] = held = _Line()
                    held.add(rest)
            else:
                if held is None:
                    held = self.partial[key] = _Line()
                held.add(text)
                if held.size > _LINE_CAP:  # a line that never ends: echoed in parts
                    del self.partial[key]
                    whole = [held.text()]
        if whole:
            self._emit(self.names[i], whole, err)

    def _emit(self, name: str, lines: list[str], err: bool) -> None:
        echo = self.echo
        if not callable(echo):  # (only a callable echo is called here)
            return
        token = SINK.set(None)  # what the echo prints is nobody's output
        try:
            for line in lines:
                echo(name, line, "stderr" if err else "stdout")
        except Exception:  # a terminal gone (a closed pipe): the output is still kept
            pass
        finally:
            SINK.reset(token)

    def flush(self) -> None:
        """The run has ended: echo the lines still waiting for their end."""
        if not callable(self.echo):
            return
        with self.lock:
            pending, self.partial = self.partial, {}
        for (i, err), line in sorted(pending.items(), key=lambda item: item[0]):
            self._emit(self.names[i], [line.text()], err)

    def log_record(self, i: int, record: logging.LogRecord, attempt: int = -1) -> None:
        """A ``logging`` record of entry ``i``: ``LEVEL logger: message``."""
        self.write(i, record_line(record), record.levelno >= logging.WARNING, attempt)


#: the longest line held for the echo until its end comes: more is echoed as it is
_LINE_CAP = 64 * 1024


class _Line:
    """The start of a line the echo waits for the end of: its writes, joined once it
    ends. A progress bar redrawn in place (``\\r``) keeps only its last drawing."""

    __slots__ = ("parts", "size")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text)
        if "\r" in text:
            line = "".join(self.parts)
            start = line.rstrip("\r").rfind("\r")  # (a last, empty drawing: not one)
            if start >= 0:
                line = line[start + 1 :]
            self.parts = [line]
            self.size = len(line)

    def text(self) -> str:
        return "".join(self.parts)


class Cell:
    """A thread worker's: the task it runs now (``i``, -1 between tasks) and its attempt
    (``a``, set before ``i``: a thread abandoned after a timeout goes on writing into the
    attempt it ran, not into the next)."""

    __slots__ = ("a", "i", "logs")

    def __init__(self, logs: TaskLogs) -> None:
        self.logs = logs
        self.i = -1
        self.a = -1

    def write(self, text: str, err: bool) -> bool:
        i = self.i
        return i >= 0 and self.logs.write(i, text, err, self.a)

    def record(self, record: logging.LogRecord) -> bool:
        if self.i < 0:
            return False
        self.logs.log_record(self.i, record, self.a)
        return True


def open_cell(logs: TaskLogs) -> Cell:
    """Give the calling thread's context a cell (a thread worker, before its first task)."""
    cell = Cell(logs)
    SINK.set(cell)
    return cell


def cell_in(context: contextvars.Context, logs: TaskLogs) -> Cell:
    """A cell in ``context`` (the run's copy of its caller's: the calling thread's calls of
    a sequential run run in copies of it, one at a time, and say whose they are there)."""
    cell = Cell(logs)
    context.run(SINK.set, cell)
    return cell


@contextlib.contextmanager
def nobodys() -> Iterator[None]:
    """What the code in this block writes is nobody's output, whichever thread runs it (the
    command line's own lines, said from a task's thread too): it goes to the streams as
    they are, not into a task's logs."""
    token = SINK.set(None)
    try:
        yield
    finally:
        SINK.reset(token)


def keep(text: str, err: bool = False) -> None:
    """Keep ``text`` as output of the running task without showing it under the raw echo
    (a ``run:`` step's command output, which the step captured rather than printed); a
    line echo still gets it. Outside a task, nothing happens (but a worker process's call
    keeps it: its streams are captured)."""
    if not text:
        return
    if not text.endswith("\n"):
        text += "\n"
    sink = SINK.get()
    if sink is not None:
        sink_write(sink, text, err)  # (never writes to a real stream itself: the tee does)
        return
    stream = sys.stderr if err else sys.stdout
    if getattr(stream, "layerflow_capture", False):  # a worker process's call
        stream.write(text)


#: the streams the tees replaced (stdout, stderr) while runs go (``redirect.py``), else None
REAL: list[Any] = [None, None]


def sink_write(sink: Any, text: str, err: bool) -> bool:
    """``sink`` (``SINK``'s value, not None) takes ``text``: True when the real stream must
    not get it too."""
    if type(sink) is tuple:
        return sink[0].write(sink[1], text, err, sink[2])
    return sink.write(text, err)


def sink_record(sink: Any, record: logging.LogRecord) -> bool:
    """``sink`` takes a logging record: True if it was a task's."""
    if type(sink) is tuple:
        sink[0].log_record(sink[1], record, sink[2])
        return True
    return sink.record(record)
