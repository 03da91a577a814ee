"""Progress while a run goes: a live display on a terminal or in a notebook, plain lines
otherwise.

The live display does not listen to events: it reads the run's state a few times a second
(:meth:`Run.snapshot`), so a 100,000-task run pays for a handful of refreshes, not for an
event per task. Plain lines (DESIGN section 4) come from events, one per line, as a log does.

In a notebook (Jupyter, VS Code, Colab) stderr is no terminal, but two lines per task would
flood the cell: there the live display is one output, updated in place a few times a
second through IPython's ``display(..., display_id=True)`` (no widget library needed), and
its last frame, with the run's closing line, stays as the run's summary.
"""

from __future__ import annotations

import contextlib
import io
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import IO, Any

from .errors import InvalidOptionError
from .events import LogObserver, Observer, logger

__all__ = ["Held", "Progress"]

REFRESH_PER_SECOND = 2  # a fixed rate, never per event: each refresh takes the GIL

# live displays drawn now in this process, and sys.stdout/sys.stderr before the first: each
# display puts its own streams in place and the ones it found back when it stops, so two
# that overlap (threads, asyncio.gather of run_async) would leave the first's stale ones
_LIVE = [0]
_BEFORE: list[Any] = [None, None]
_LIVE_LOCK = threading.Lock()
SHOWN_RUNNING = 10  # tasks listed as running, the longest-running first


class Progress:
    """How a run shows its progress (``flow.run(progress=...)``).

    ``live=None`` chooses by the stream: a live display when it is a terminal (or, with no
    ``stream`` given, in a notebook: one output updated in place), plain lines otherwise;
    ``live=True``/``False`` forces one. ``stream`` defaults to stderr.
    ``progress=True`` is ``Progress()``. ``groups`` (steps by group name) adds a line when a
    group starts and one when it is done, with its time against its sequential time.
    """

    def __init__(
        self,
        stream: IO[str] | None = None,
        *,
        live: bool | None = None,
        final: bool = True,
        groups: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.stream = stream
        self.live = live
        self.groups = groups  # a YAML parallel_group's steps, for the group's own lines
        self.final = final  # print the closing line (the command line prints its own)
        self._display: Any = None
        self._run: Any = None
        # the refresh of a terminal's display, paused while a question is asked (``paused``):
        # the lock keeps a refresh, a pause and the end of the display apart
        self._lock = threading.Lock()
        self._held: Held | None = None
        self._stopped: threading.Event | None = None
        self._final = False  # the run has ended: the last frame is its summary
        self._predicted: float | None = None
        self._claimed = False  # a run shows itself here (one at a time: ``claim``)

    def _out(self) -> IO[str]:
        return self.stream if self.stream is not None else sys.stderr

    def is_live(self) -> bool:
        """Whether this shows a live display (else plain lines)."""
        if self.live is not None:
            return self.live
        if self.stream is None and in_notebook():
            return True
        isatty = getattr(self._out(), "isatty", None)
        return bool(isatty and isatty())

    def claim(self) -> None:
        """A run is to be shown live here, from its start until :meth:`stop` (or
        :meth:`release`, if it never starts): one at a time, since one display shows one
        run. Another run while it goes is an error that says what to do."""
        with self._lock:
            if self._claimed:
                raise InvalidOptionError(
                    "this lf.Progress is showing another run: give each run that goes at "
                    "the same time a Progress of its own (or progress=True)"
                )
            self._claimed = True

    def release(self) -> None:
        """The run that claimed this display has ended (:meth:`stop`) or never started:
        another may claim it."""
        with self._lock:
            self._claimed = False

    def observer(self) -> Observer | None:
        """The event observer for plain lines (None for the live display)."""
        if self.is_live():
            return None
        out = self._out()
        closed: list[bool] = []  # the reader went away (a pipe into `head`): stop printing, quietly

        def emit(line: str, level: int) -> None:
            if closed:
                return
            try:
                print(line, file=out, flush=True)
            except (BrokenPipeError, ValueError):  # ValueError: the stream was closed
                closed.append(True)

        return LogObserver(emit, self.groups, final=self.final)

    # --- the live display, driven by the run -------------------------------------------

    def start(self, run: Any) -> None:
        """Show the live display of ``run`` (a ``scheduler.Run``) until :meth:`stop`."""
        self._run = run
        if run.predicted is not None:  # past durations: the run's own prediction, off its path
            threading.Thread(target=self._predict, args=(run.predicted,), daemon=True).start()
        self._final = False
        if self.stream is None and in_notebook():
            self._display = _NotebookDisplay(self.render)
            return
        from rich.console import Console
        from rich.live import Live

        console = Console(file=self._out(), force_terminal=self.live or None)
        live = Live(
            get_renderable=self.render,
            console=console,
            auto_refresh=False,  # refreshed by a thread of ours, which a question can pause
            transient=False,  # the last frame stays: the run's summary
        )
        with self._lock:
            self._display = live
            self._held = None
            with _LIVE_LOCK:
                if not _LIVE[0]:
                    _BEFORE[:] = [sys.stdout, sys.stderr]
                _LIVE[0] += 1
            try:
                live.__enter__()
            except BaseException:
                _last_live_stopped()
                raise
            self._stopped = threading.Event()
        threading.Thread(
            target=self._refresh,
            args=(live, self._stopped),
            name="layerflow-progress",
            daemon=True,
        ).start()

    def _refresh(self, live: Any, stopped: threading.Event) -> None:
        """Redraw ``live`` at ``REFRESH_PER_SECOND`` until it stops; not while it is held."""
        while not stopped.wait(1 / REFRESH_PER_SECOND):
            with self._lock:
                if self._display is live and self._held is None and not stopped.is_set():
                    live.refresh()

    def _predict(self, predicted: Any) -> None:
        try:
            self._predicted = predicted()
        except Exception:  # a prediction is a nicety; the display goes on without it
            self._predicted = None

    def stop(self, line: str | None = None) -> None:
        """Leave the display's last frame on the screen as the run's summary (what finished,
        how), then print the run's closing ``line``."""
        if isinstance(self._display, _NotebookDisplay):
            self._final = True
            self._display.close(line if self.final else None)  # stderr would show it in red
            self._display = None
            self.release()
            return
        with self._lock:
            if self._stopped is not None:
                self._stopped.set()
                self._stopped = None
            if self._held is not None:  # a question still waits (Ctrl-C): the end goes under it
                self._let_go(self._held)
            if self._display is not None:
                self._final = True
                self._display.refresh()
                self._display.__exit__(None, None, None)
                self._display = None
                _last_live_stopped()
        self.release()
        if line and self.final:
            print(line, file=self._out(), flush=True)

    @contextlib.contextmanager
    def paused(self) -> Iterator[Held | None]:
        """Hold the live display still while a person is asked something (``--checkpoint``'s
        question): the frame is drawn as it is now and refreshed no more, and the block gets
        the terminal (a :class:`Held`) to write the question on, under the frame, and to read
        the answer from, as it is typed. Then the held frame is taken away, the question and
        its answer stay where they are, and the display goes on under them.

        The display's streams stay in place all along (rich's, wrapped by the tasks' output
        capture: ``Live.stop`` would put back the streams of before the capture, and a task
        of the next layer would print past it). The block gets None when no live display
        is drawn on a terminal (plain lines, a notebook, the run not started or ended): the
        caller asks as it would without one."""
        held = self._hold()
        try:
            yield held
        finally:
            if held is not None:
                with self._lock:
                    if self._held is held:  # (else the display has ended meanwhile)
                        self._let_go(held)
                        self._display.refresh()  # the current frame at once, under the answer

    def _hold(self) -> Held | None:
        with self._lock:
            live = self._display
            if live is None or isinstance(live, _NotebookDisplay) or self._held is not None:
                return None
            console = live.console
            if not console.is_terminal or console.is_dumb_terminal:
                return None
            live.refresh()  # the frame as it is now; the cursor at the end of its last line
            console.pop_render_hook()  # (the live display's) a line printed meanwhile: no frame
            shape = getattr(live._live_render, "_shape", None)
            self._held = held = Held(console.file, console.width, shape[1] if shape else 0)
            console.show_cursor(True)
            held.write("\n")  # the question on a line of its own, under the frame
            # what is printed meanwhile (a thread a task started, a warning) waits: on the
            # question's line it would break it, and the frame would be taken away wrongly
            console.file = held.aside
            return held

    def _let_go(self, held: Held) -> None:
        """The display goes on after a question (the lock held): the held frame is taken
        away, the next is drawn under the question and its answer. (Were the frame's top
        no more on the screen, the frame stays: what is above it is not for us to delete.)"""
        live = self._display
        console = live.console
        console.file = held.stream
        if held.column:  # the answer's line not ended (end of input, Ctrl-C)
            held.write("\n")
        up = held.rows + held.height - 1  # from under the answer to the frame's top line
        if held.height and up < console.height:
            # up to the frame, delete its lines (those under them move up), back down
            down = f"\x1b[{held.rows - 1}B" if held.rows > 1 else ""
            held.stream.write(f"\r\x1b[{up}A\x1b[{held.height}M{down}")
            held.stream.flush()
        aside = held.aside.getvalue()
        if aside:  # printed while the question waited: under it now, above the display
            held.stream.write(aside)
            held.stream.flush()
        live._live_render._shape = None  # the next frame starts here: nothing above to erase
        console.show_cursor(False)
        console.push_render_hook(live)
        self._held = None

    def render(self) -> Any:
        """The display's current picture: a bar of finished over known tasks, the elapsed
        time and ETA, counts by status, the tasks running (attempt, time) and the tasks
        waiting for a pool or a rate limit. Plain text, so that a refresh costs a
        millisecond or two, not the run's time."""
        from rich.text import Text

        snap = self._run.snapshot(SHOWN_RUNNING)
        counts = snap["counts"]
        done = sum(counts.values())
        total = snap["total"]
        elapsed = snap["elapsed"]
        text = Text()
        text.append(_bar(done, total), style="green" if not counts.get("failed") else "red")
        if self._final:
            text.append(f" {done}/{total} done", style="bold")
            text.append(f"  {_clock(elapsed)}  " + (_tally(counts) or "nothing ran"))
            return text
        running, waiting = snap["running_count"], snap["waiting_count"]
        text.append(f" {done}/{total} done, {running} running", style="bold")
        text.append(f", {waiting} waiting" if waiting else "")
        text.append(f"  {_clock(elapsed)}")
        eta = self._eta(elapsed, done, total)
        text.append(f"  {eta}" if eta else "")
        tally = _tally(counts)
        if tally:
            text.append(f"\n  {tally}", style="dim")
        now = time.time()
        for name, started, attempt, allowed in snap["running"]:
            tries = f"  attempt {attempt}/{allowed}" if allowed > 1 else ""
            text.append(f"\n  running {name}  {_clock(now - started)}{tries}")
        if running > len(snap["running"]):
            text.append(f"\n  ... and {running - len(snap['running'])} more running")
        for name, kind, limit, since in snap["waiting"]:
            what = "pool" if kind == "pool" else "rate limit"
            text.append(
                f"\n  waiting {name}  for {what} {limit!r}  {_clock(now - since)}",
                style="yellow",
            )
        if waiting > len(snap["waiting"]):
            text.append(f"\n  ... and {waiting - len(snap['waiting'])} more waiting")
        return text

    def _eta(self, elapsed: float, done: int, total: int) -> str:
        if self._predicted is not None:  # from past runs' durations
            left = self._predicted - elapsed
            return f"ETA {left:.0f}s (from past runs)" if left > 0 else "ETA any moment now"
        if done and total > done:  # no history: as fast as so far
            return f"ETA {elapsed / done * (total - done):.0f}s"
        return ""


class Held:
    """The terminal while the live display holds still (:meth:`Progress.paused`): what is
    written here and typed in answer, on lines under the held frame. It counts the lines
    they take (``rows``, from the frame's last one; ``column`` on the last) so that the
    frame can be taken away from above them after."""

    def __init__(self, stream: IO[str], width: int, height: int) -> None:
        self.stream = stream
        self.width = max(1, width)
        self.height = height  # the held frame's lines
        self.rows = 0
        self.column = 0
        self.aside = io.StringIO()  # what the display's streams got meanwhile

    def write(self, text: str) -> None:
        """``text`` on the terminal, now (no markup: ``[y/N]`` is shown as it is)."""
        self.stream.write(text)
        self.stream.flush()
        self._moved(text)

    def readline(self) -> str:
        """A line the person types (the terminal shows it as it is typed), without its end;
        EOFError when the input has ended."""
        line = sys.stdin.readline()
        if not line:
            raise EOFError
        self._moved(line if line.endswith("\n") else line + "\n")
        return line.rstrip("\r\n")

    def _moved(self, text: str) -> None:
        """Where the cursor went after ``text`` (plain text: no escape sequences)."""
        from rich.cells import cell_len

        for ch in text:
            if ch == "\n":
                self.rows += 1
                self.column = 0
            elif ch == "\r":
                self.column = 0
            else:
                width = cell_len(ch)
                if self.column + width > self.width:  # the terminal wraps it to the next line
                    self.rows += 1
                    self.column = width
                else:
                    self.column += width


def _last_live_stopped() -> None:
    """A live display stopped: the last of those drawn at once puts back the streams from
    before the first, if what is in place now is one of theirs (a display's proxy, or a
    capture tee no run uses any more: overlapping displays stop in any order), and leaves
    a stream someone else put in place alone."""
    from rich.file_proxy import FileProxy

    from .redirect import idle_tee

    with _LIVE_LOCK:
        _LIVE[0] -= 1
        if _LIVE[0]:
            return
        for k, name in enumerate(("stdout", "stderr")):
            now = getattr(sys, name)
            if now is not _BEFORE[k] and (isinstance(now, FileProxy) or idle_tee(now)):
                setattr(sys, name, _BEFORE[k])
        _BEFORE[:] = [None, None]


def in_notebook() -> bool:
    """Whether this runs in a notebook's kernel (Jupyter, VS Code, Colab): IPython is
    loaded and its shell is a kernel's, not a terminal's."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:
        return False
    kind = type(shell)
    return kind.__name__ == "ZMQInteractiveShell" or "google.colab" in kind.__module__


class _Frame:
    """One picture of the progress display, as a notebook shows plain text."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


class _NotebookDisplay:
    """The live display as one notebook output, updated in place from a thread of its own
    (the run holds the cell) at ``REFRESH_PER_SECOND``."""

    def __init__(self, render: Any) -> None:
        from IPython.display import display

        self.render = render
        self.handle = display(_Frame("starting..."), display_id=True)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._refresh, name="layerflow-progress", daemon=True)
        self.thread.start()

    def _refresh(self) -> None:
        while not self.stopped.wait(1 / REFRESH_PER_SECOND):
            self.update()

    def update(self, line: str | None = None) -> None:
        try:
            text = self.render().plain
            self.handle.update(_Frame(f"{text}\n{line}" if line else text))
        except Exception:  # a display is a nicety: the run goes on without it
            logger.debug("the notebook progress display failed", exc_info=True)

    def close(self, line: str | None) -> None:
        """Stop refreshing; the last frame (and the run's closing ``line``) stays."""
        self.stopped.set()
        self.thread.join()
        self.update(line)


def _bar(done: int, total: int, width: int = 24) -> str:
    filled = round(width * done / total) if total else width
    return "━" * filled + "╌" * (width - filled)


def _clock(seconds: float) -> str:
    """Elapsed time as people read it: 4.2s, 3m05s, 1h02m."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def _tally(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {k}" for k, n in counts.items() if n)


def resolve(progress: bool | Progress) -> Progress | None:
    """``flow.run``'s ``progress`` option as a :class:`Progress` (None for none)."""
    if isinstance(progress, Progress):
        return progress
    return Progress() if progress else None
