"""The user's own part of a failed task's traceback.

A task's exception passes through layerflow's workers, the standard library's executors,
threads and event loop, and (for the process backend) a worker process: none of those frames
help the person whose code failed. :func:`format_failure` keeps only the user's frames,
the last few by default, and the exception itself, with its causes.

A worker process sends its frames along with the exception (``_layerflow_frames``), since a
traceback object does not survive pickling.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import traceback
from pathlib import Path

from .errors import RecordedError, safe_str

__all__ = ["format_failure", "traceback_text", "user_frames", "FRAMES_ATTRIBUTE"]

#: where a worker process puts the frames of an exception it sends back
FRAMES_ATTRIBUTE = "_layerflow_frames"

Frame = tuple[str, int | None, str, str | None]  # file, line, function, source line

_NOT_THE_USERS = tuple(
    str(Path(p).resolve().parent) + os.sep
    for p in (__file__, concurrent.futures.__file__, asyncio.__file__)
) + (str(Path(threading.__file__).resolve()),)


def _theirs(filename: str) -> bool:
    try:
        path = str(Path(filename).resolve())
    except (OSError, ValueError):
        return True
    if path.startswith(_NOT_THE_USERS):
        return False
    # a Dask worker's own frames (not imported here: only recognised by where they live)
    return not any(f"{os.sep}{lib}{os.sep}" in path for lib in ("distributed", "dask"))


def user_frames(error: BaseException) -> list[Frame]:
    """The frames of ``error``'s traceback that are the user's (outermost first)."""
    sent = getattr(error, FRAMES_ATTRIBUTE, None)
    if sent is not None:
        frames = [tuple(f) for f in sent]
    else:
        frames = [
            (f.filename, f.lineno, f.name, f.line)
            for f in traceback.extract_tb(error.__traceback__)
        ]
    return [f for f in frames if _theirs(f[0])]


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and what caused it, the first cause first (as Python prints them)."""
    chain: list[BaseException] = []
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen and len(chain) < 10:
        seen.add(id(e))
        chain.append(e)
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
    return chain[::-1]


def format_failure(error: BaseException, *, last: int | None = 3) -> str:
    """The user's frames of ``error`` (the ``last`` few; ``None``: all, with the exceptions
    that caused it) and the exception, as Python prints a traceback."""
    chain = _chain(error) if last is None else [error]
    parts: list[str] = []
    for k, e in enumerate(chain):
        if k:
            parts.append(
                "\nThe above exception was the direct cause of the following exception:\n"
                if chain[k].__cause__ is chain[k - 1]
                else "\nDuring handling of the above exception, another exception occurred:\n"
            )
        frames = user_frames(e)
        shown = frames if last is None else frames[-last:]
        if shown:
            hidden = len(frames) - len(shown)
            more = f" ({hidden} earlier {'frame' if hidden == 1 else 'frames'} not shown)"
            parts.append("Traceback (most recent call last)" + (more if hidden else "") + ":")
            for file, line, name, source in shown:
                parts.append(f'  File "{file}", line {line}, in {name}')
                if source:
                    parts.append(f"    {source.strip()}")
        try:
            if type(e).__module__.startswith("layerflow"):  # ours: its name is enough
                parts.append(f"{type(e).__name__}: {e}")
            else:
                parts.append("".join(traceback.format_exception_only(type(e), e)).rstrip())
        except Exception:  # an exception whose str() fails: still say what it was
            parts.append(type(e).__name__)
    return "\n".join(parts)


def traceback_text(error: BaseException | None) -> str | None:
    """What a run records and a report shows of a task's error: the user's frames, all of
    them, and the error with its causes; an error loaded from the store is what was
    recorded; None for no error."""
    if error is None:
        return None
    if isinstance(error, RecordedError):
        return error.traceback or str(error)
    try:
        return format_failure(error, last=None)
    except Exception:  # an exception that cannot even be formatted
        return safe_str(error)
