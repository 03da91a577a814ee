"""The one way the command line speaks to a person: every line it writes goes through a
:class:`Presenter`, which owns the streams and their rules.

- ``say``: text for people, on stdout; with ``--json`` on stderr (stdout carries only the
  JSON); with ``-q`` nothing.
- ``data``: what the person asked for (JSON, a graph in DOT, a stored value, logs), always
  on stdout and as it is.
- ``failure``: what went wrong in a run, which ``-q`` still shows (on stderr then).
- ``warning`` and ``error``: on stderr as ``warning: ...`` / ``error: ...``; ``-q`` hides
  warnings, never errors. ``aside``: a remark that must stay off stdout.

The text itself is built where its facts are (``result``, ``events``, ``progress``,
``logview``); the blocks that only the command line shows are built here.
"""

from __future__ import annotations

import logging
import sys
import textwrap
import traceback
from typing import IO, Any

import click

from ..capture import LineEcho, nobodys
from ..errors import ResultNotStored, Skip
from ..events import final_line
from ..logview import line_echo, tail
from ..names import owner_of
from ..preview import preview, sinks
from ..progress import Held, Progress
from ..redirect import shown_as_task_output
from ..result import RunResult, budget_line, format_metrics
from ..tracebacks import format_failure

#: sinks shown at the end of a run; --output shows any
MAX_RESULTS = 10
#: names listed in one "Skipped (...)" or "Cancelled (...)" line before "and N more"
MAX_NAMED = 20


def indented(text: str, by: int = 2) -> str:
    """``text`` under the line that introduces it (a traceback, an output's tail)."""
    return textwrap.indent(text, " " * by)


class Presenter:
    """Where the command line's text goes: ``json`` (``--json``), ``quiet`` (``-q``) and
    ``verbose`` (``-v``: plain progress lines, whole tracebacks) set the rules."""

    def __init__(self, *, json: bool = False, quiet: bool = False, verbose: bool = False):
        self.json = json
        self.quiet = quiet
        self.verbose = verbose
        #: the run's progress display (given by ``run``): a question holds it still
        self.display: Progress | None = None

    # --- the streams ----------------------------------------------------------------------

    @property
    def stream(self) -> IO[str]:
        """The stream for people (looked up when used: a test may swap ``sys.stdout``)."""
        return sys.stderr if self.json else sys.stdout

    @property
    def live(self) -> bool:
        """Whether a run shows a live display (a terminal, and no ``-v``)."""
        return self.stream.isatty() and not self.verbose

    def _echo(self, text: str, err: bool = False, nl: bool = True) -> None:
        """``text`` on stderr or stdout: on the stream as it is now, and as nobody's output.

        A live display has put its own streams in place (rich's, wrapped by the tasks'
        output capture), which show each line above the display. ``click.echo`` left to
        itself would not write to them: their ``encoding`` is None, so click writes to a
        text wrapper of its own around the terminal's file, under the display, whose next
        refresh leaves a stale frame line and wipes the text. And a line said in a task's
        thread (a warning layerflow logs there) is the command line's, not the task's."""
        with nobodys():
            click.echo(text, nl=nl, file=sys.stderr if err else sys.stdout)

    def say(self, text: str = "") -> None:
        """A line for people (nothing with ``-q``)."""
        if not self.quiet:
            self._echo(text, err=self.json)

    def data(self, text: str, nl: bool = True) -> None:
        """What was asked for, on stdout whatever the mode."""
        self._echo(text, nl=nl)

    def failure(self, text: str = "") -> None:
        """A line about a failure: shown even with ``-q``, on stderr then."""
        self._echo(text, err=self.quiet or self.json)

    def aside(self, text: str) -> None:
        """A remark on stderr, so that stdout stays the data asked for."""
        self._echo(text, err=True)

    def warning(self, message: str) -> None:
        """``warning: ...`` on stderr (nothing with ``-q``)."""
        if not self.quiet:
            self._echo(f"warning: {message}", err=True)

    def error(self, message: str) -> None:
        """``error: ...`` on stderr, whatever the mode."""
        self._echo(f"error: {message}", err=True)

    def confirm(self, prompt: str) -> bool:
        """A yes/no question (``[y/N]``), asked on stderr (stdout may be the JSON), or,
        while a live display is drawn, on its terminal under its frame, which holds still
        until the answer is given (see :meth:`Progress.paused`).

        ``click.confirm`` cannot ask there: it sends the question through ``input()`` into
        the display's streams, where rich reads ``[y/N]`` as markup and drops it, draws the
        frame after the question, and goes on redrawing it over what is typed."""
        if self.display is not None:
            with self.display.paused() as terminal:
                if terminal is not None:
                    return ask_yes_no(terminal, prompt)
        return click.confirm(prompt, default=False, err=True)

    def task_lines(self) -> LineEcho | None:
        """How tasks' output is shown live: ``task | line`` (all on stderr with ``--json``),
        none with ``-q``."""
        return None if self.quiet else line_echo(all_on_stderr=self.json)

    # --- a run's end ----------------------------------------------------------------------

    def failures(self, result: RunResult) -> None:
        """Each failed task with the user's own frames (the last few, or all with ``-v``),
        the end of what it printed (with ``-q``: it was not shown live), and what was
        skipped or cancelled. With ``--json`` all of it is in the JSON."""
        if self.json:
            return
        failed = [t for t in result.tasks.values() if t.status == "failed"]
        # once the store failed, every task ending meanwhile failed alike: named only
        either = [t.name for t in failed if isinstance(t.error, ResultNotStored) and t.error.either]
        for t in failed:
            if t.name in either:
                continue
            self.failure(f"\n{t.name} failed:")
            last = None if self.verbose else 3
            self.failure(indented(format_failure(t.error, last=last) if t.error else "failed"))
            if self.quiet and t.logs:  # not shown as it was printed
                self.failure("  its output ends with:")
                self.failure(indented(tail(t.logs), 4))
        # a task that skipped itself (lf.Skip, a YAML when: that is false) is no failure's
        skipped = [t for t in result.tasks.values() if t.status == "skipped"]
        chose = skip_reasons([t for t in skipped if isinstance(t.error, Skip)])
        cancelled = [t.name for t in result.tasks.values() if t.status == "cancelled"]
        for status, why, names in (
            ("Not stored either", "the store failed, see above", either),
            ("Skipped", "what they need failed", [t.name for t in skipped if t.error is None]),
            ("Skipped", "lf.Skip or a false when:", chose),
            ("Cancelled", "the run stopped", cancelled),
        ):
            if names:
                more = f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else ""
                self.failure(f"{status} ({why}): {', '.join(names[:MAX_NAMED])}{more}")
        if failed:
            self.failure()

    def results(self, result: RunResult, shown: tuple[str, ...]) -> None:
        """The values of ``shown``, or of the run's sinks: what the run was for."""
        graph_tasks = [n for layer in result.layers for n in layer]  # not a map's elements
        names = list(shown) or sinks(graph_tasks, result.edges)
        ready = [n for n in names if result.tasks[n].ok] if names else []
        if not ready:
            return
        self.say("Results:" if len(ready) > 1 else "Result:")
        for name in ready[: len(ready) if shown else MAX_RESULTS]:
            text = preview(result.tasks[name].value)
            if "\n" in text:
                self.say(f"  {name}:\n" + indented(text, 4))
            else:
                self.say(f"  {name} = {text}")
        if not shown and len(ready) > MAX_RESULTS:
            self.say(
                f"  ... and {len(ready) - MAX_RESULTS} more: --output NAME shows one, --json all"
            )

    def summary(self, result: RunResult, stored: bool) -> None:
        """The notes on a run (prediction, CPU, metrics, budget, why it stopped) and its
        final line, which stays the last (DESIGN 4). ``stored``: it can be resumed."""
        note = result.prediction_note()
        if note is not None:
            self.say(note[0].upper() + note[1:])
        cpu = result.cpu_note()
        if cpu is not None and "Warning" in cpu:  # the CPU line itself: in the summary
            self.say(cpu)
        if result.metrics:
            self.say("metrics: " + format_metrics(result.metrics))
        if result.budget:
            self.say("budget: " + budget_line(result.budget))
        if result.stop_reason:
            self.say(f"Stopped: {result.stop_reason}.")
            if stored:
                larger = " (and a larger budget)" if result.budget else ""
                self.say(f"Finished results were kept; continue with --resume{larger}.")
        self.say(
            final_line(
                result.status,
                result.counts(),
                len(result.tasks),
                result.duration,
                result.sequential_estimate,
            )
        )

    def interrupted(self, resume_command: str | None) -> None:
        """The closing lines of a run stopped by Ctrl-C (``resume_command``: the command
        that resumes it, when it was stored)."""
        self.say("Interrupted: finished results were kept; running steps were stopped.")
        if resume_command is not None:
            self.say(f"Resume with: {resume_command}")


def ask_yes_no(terminal: Held, prompt: str) -> bool:
    """``click.confirm(prompt, default=False)`` on ``terminal``: yes for y or yes, no for n,
    no or nothing, asked again after anything else; end of input or Ctrl-C: ``Abort``."""
    while True:
        terminal.write(f"{prompt} [y/N]: ")
        try:
            value = terminal.readline().strip().lower()
        except (KeyboardInterrupt, EOFError):
            raise click.Abort() from None
        if value in ("y", "yes"):
            return True
        if value in ("", "n", "no"):
            return False
        terminal.write("Error: invalid input\n")


def skip_reasons(skipped: list[Any]) -> list[str]:
    """``task (reason)`` for each task that skipped; a map's elements as one entry per map:
    ``even[...] (15 elements: odd 12, too short 3)``."""
    out: list[str] = []
    elements: dict[str, dict[str, int]] = {}
    for t in skipped:
        name, reason = t.name, t.error.reason
        owner = owner_of(name)
        if owner:
            if reason.startswith("upstream "):
                reason = "upstream skipped"
            why = elements.setdefault(owner, {})
            why[reason] = why.get(reason, 0) + 1
        else:
            out.append(f"{name} ({reason})")
    for owner, why in elements.items():
        total = sum(why.values())
        top = sorted(why.items(), key=lambda kv: -kv[1])
        reasons = ", ".join(f"{reason} {n}" for reason, n in top[:3])
        more = ", ..." if len(top) > 3 else ""
        out.append(f"{owner}[...] ({total} element{'s' * (total != 1)}: {reasons}{more})")
    return out


class WarningLines(logging.Handler):
    """layerflow's log on stderr as ``warning: ...`` and ``error: ...`` lines (the logger's
    level decides what ``-q`` hides). A record logged in a task whose lines are shown live
    is left to them: it is shown once, as the task's ``task | WARNING layerflow: ...``
    (kept in the task's logs too), not a second time without the task's name."""

    def __init__(self, out: Presenter) -> None:
        super().__init__(logging.WARNING)
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        if shown_as_task_output(record):
            return
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:  # a bug of ours: its traceback
            text += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        if record.levelno < logging.ERROR:
            self.out.warning(text)
        else:
            self.out.error(text)
