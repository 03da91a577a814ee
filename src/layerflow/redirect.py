"""While runs go: ``sys.stdout`` and ``sys.stderr`` replaced by tees, the root logger's
handler that keeps a task's records, ``logging.basicConfig`` that looks past it, console
handlers pointed at the tees, and a forked child put back to the real streams. Whose the
running code is, and what a task's logs keep, is ``capture.py``'s (see its docstring).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

from .capture import (
    LIMIT,
    REAL,
    SINK,
    Captured,
    Cell,
    sink_record,
    sink_write,
)

__all__ = ["capturing", "idle_tee", "install", "shown_as_task_output", "uninstall"]


@contextlib.contextmanager
def capturing(limit: int = LIMIT) -> Iterator[Captured]:
    """Capture what the code in this block writes, in this context (a worker's call)."""
    box = Captured(limit)
    install()
    token = SINK.set(box)
    try:
        yield box
    finally:
        SINK.reset(token)
        uninstall()


def shown_as_task_output(record: logging.LogRecord) -> bool:
    """Whether ``record``, being logged now, is shown as a line of a task's output: a task
    logs it, in a run whose tasks' lines are echoed (the command line's ``task | ...``),
    and the record reaches the handler that keeps it. A handler that shows records itself
    may leave such a record to the echo, which shows it once, with the task's name."""
    sink = SINK.get()
    if isinstance(sink, Cell):
        if sink.i < 0:  # a worker between tasks
            return False
        logs = sink.logs
    elif type(sink) is tuple:
        logs = sink[0]
    else:  # nobody's, or a worker process's (whose echo is the parent's, unknown here)
        return False
    if not logs.echoes_lines():
        return False
    found: Any = logging.getLogger(record.name)
    while found is not None:
        if _HANDLER in found.handlers:
            return True
        found = found.parent if found.propagate else None
    return False


class _Tee:
    """``sys.stdout``/``sys.stderr`` while runs go: a task's writes to its logs, anything
    else (and a task's under the raw echo) to the stream it replaced."""

    def __init__(self, real: Any, err: bool) -> None:
        self._real = real
        self._err = err

    def write(self, text: str) -> int:
        sink = SINK.get()
        if sink is not None and type(text) is str and text and sink_write(sink, text, self._err):
            return len(text)
        return self._real.write(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._real.flush()

    def __getattr__(self, name: str) -> Any:  # encoding, isatty, fileno, buffer, ...
        return getattr(self._real, name)


class _Handler(logging.Handler):
    """On the root logger while runs go: a task's records to its logs."""

    def emit(self, record: logging.LogRecord) -> None:
        sink = SINK.get()
        others = self._others(record)
        if sink is not None and any(_to_tee(h, record) for h in others):
            return  # another handler writes it to sys.stdout/stderr: kept as it writes it
        kept = sink is not None and sink_record(sink, record)
        raw = type(sink) is tuple and sink[0].raw or isinstance(sink, Cell) and sink.logs.raw
        if kept and not raw:
            return  # kept, and not shown
        # anybody's but a task's, or a task's under the raw echo: shown as it would have
        # been without this handler (logging's last resort, when no other handler takes it)
        last = logging.lastResort
        if last is None or record.levelno < last.level or others:
            return
        real = REAL[True]
        if real is not None:
            with contextlib.suppress(Exception):
                real.write(last.format(record) + "\n")

    def _others(self, record: logging.LogRecord) -> list[logging.Handler]:
        """The other handlers the record goes to, as logging finds them."""
        found: list[logging.Handler] = []
        logger: Any = logging.getLogger(record.name)
        while logger is not None:
            found.extend(h for h in logger.handlers if h is not self)
            logger = logger.parent if logger.propagate else None
        return found


def _to_tee(handler: logging.Handler, record: logging.LogRecord) -> bool:
    """Does ``handler`` write ``record`` to one of our streams (a ``StreamHandler`` made
    while a run went, holding the ``sys.stderr`` of then, or one :func:`_to_tees` pointed
    there)?"""
    return (
        isinstance(handler, logging.StreamHandler)
        and isinstance(handler.stream, _Tee)
        and record.levelno >= handler.level
        and bool(handler.filter(record))  # (a filter that drops it: the record is ours)
    )


_HANDLER = _Handler()
_LOCK = threading.Lock()
_USERS = 0
# the handlers pointed at a tee by install: (handler, its own stream, the tee)
_MOVED: list[tuple[logging.StreamHandler[Any], Any, _Tee]] = []
_BASIC_CONFIG = logging.basicConfig  # logging's own (put back by the last uninstall)


def _basic_config(**kwargs: Any) -> None:
    """``logging.basicConfig`` while runs go: it configures nothing when the root logger
    has a handler already, and ours is one: so it is taken off while the call looks."""
    root = logging.getLogger()
    ours = _HANDLER in root.handlers
    if ours:
        root.removeHandler(_HANDLER)
    try:
        _BASIC_CONFIG(**kwargs)
    finally:
        if ours:
            root.addHandler(_HANDLER)


_basic_config.__doc__ = f"{_BASIC_CONFIG.__doc__}\n(layerflow: {_basic_config.__doc__})"


def install() -> None:
    """Capture from now on (each call is undone by one :func:`uninstall`)."""
    global _USERS
    with _LOCK:
        _USERS += 1
        if _USERS > 1:
            return
        for err, name in ((False, "stdout"), (True, "stderr")):
            real = getattr(sys, name)
            if real is not None and not isinstance(real, _Tee):
                REAL[err] = real
                setattr(sys, name, _Tee(real, err))
        _to_tees()
        logging.getLogger().addHandler(_HANDLER)
        if logging.basicConfig is _BASIC_CONFIG:
            logging.basicConfig = _basic_config


def uninstall() -> None:
    """Undo one :func:`install`: the last puts the streams back (unless someone has
    replaced them meanwhile: theirs stay) and takes the handler off."""
    global _USERS
    with _LOCK:
        _USERS -= 1
        if _USERS > 0:
            return
        _USERS = 0
        for err, name in ((False, "stdout"), (True, "stderr")):
            now = getattr(sys, name)
            if isinstance(now, _Tee):
                setattr(sys, name, now._real)
            REAL[err] = None
        _from_tees()
        logging.getLogger().removeHandler(_HANDLER)
        if logging.basicConfig is _basic_config:
            logging.basicConfig = _BASIC_CONFIG


def idle_tee(stream: Any) -> bool:
    """Whether ``stream`` is a tee while no run captures (one a live display put back)."""
    with _LOCK:
        return isinstance(stream, _Tee) and not _USERS


def _terminal(real: Any) -> list[Any]:
    """``real`` (a stream a tee replaced) and the streams it writes to: what a live
    display's proxy (rich's ``FileProxy``) wraps, the terminal's own stream."""
    found: list[Any] = []
    for _ in range(3):  # (a proxy of a proxy at most: and no loop on odd objects)
        if real is None or any(real is seen for seen in found):
            break
        found.append(real)
        real = getattr(real, "rich_proxied_file", None)
    return found


def _to_tees() -> None:
    """Point the console handlers that write to the terminal's streams (a ``StreamHandler``
    ``logging.basicConfig`` made before the run) at the tees, as ``sys.stderr``'s writes
    go: above a live display, which they would otherwise write through, and a task's
    record kept as the handler formats it, shown once (``_to_tee``). Files and other
    streams are left alone."""
    tees = {
        id(stream): tee
        for tee in (sys.stdout, sys.stderr)
        if isinstance(tee, _Tee)
        for stream in _terminal(tee._real)
    }
    if not tees:
        return
    loggers: list[Any] = [logging.getLogger()]
    with contextlib.suppress(RuntimeError):  # (a logger made meanwhile: the root's then)
        loggers.extend(list(logging.Logger.manager.loggerDict.values()))
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):  # (a PlaceHolder has none)
            stream = getattr(handler, "stream", None)
            # (the streams in tees are alive: their ids are theirs; a handler on two
            # loggers is moved once: then its stream is the tee)
            tee = tees.get(id(stream)) if stream is not None else None
            if (
                tee is None
                or not isinstance(handler, logging.StreamHandler)
                or isinstance(handler, logging.FileHandler)
            ):
                continue
            try:
                handler.setStream(tee)
            except Exception:  # (a stream that cannot flush, a handler without a setter)
                continue
            _MOVED.append((handler, stream, tee))


def _from_tees() -> None:
    """The handlers :func:`_to_tees` moved get their own streams back (those still on
    the tee: one given another stream meanwhile keeps it)."""
    moved = _MOVED[:]
    _MOVED.clear()
    for handler, stream, tee in moved:
        handler.acquire()
        try:
            if handler.stream is tee:
                with contextlib.suppress(Exception):
                    tee.flush()
                handler.stream = stream
        finally:
            handler.release()


def _forked() -> None:
    """In a child process forked while runs go (a task's ``multiprocessing`` pool): the
    child is not a task, whatever it inherited; it writes to the real streams."""
    global _LOCK, _USERS
    _LOCK = threading.Lock()  # (another thread may have held it at the fork)
    SINK.set(None)
    if _USERS:
        _USERS = 1
        uninstall()


if hasattr(os, "register_at_fork"):  # (not on Windows)
    os.register_at_fork(after_in_child=_forked)
