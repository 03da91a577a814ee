"""What the commands share: loading a target, reading --set values, the exit codes, the
--trace/--report files, and how an error reaches the person (a message, never a traceback
from inside layerflow). What is written, and on which stream, is ``present``'s."""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from ..errors import (
    LayerflowError,
    safe_str,
)
from ..flow import Flow
from ..names import counted
from ..pipeline import Pipeline, PipelineError, load_pipeline
from ..result import RunResult
from ..targets import TargetError, load_flow
from .present import Presenter, WarningLines

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """A problem with what the user asked for: printed, exit code 2."""


@contextlib.contextmanager
def log_to_stderr(out: Presenter) -> Iterator[None]:
    """layerflow's log through ``out`` for one command (``-q``: errors only), and the logger
    as it was afterwards (a command run in-process, as tests do, must not change logging for
    what follows)."""
    log = logging.getLogger("layerflow")
    handler = WarningLines(out)
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.ERROR if out.quiet else logging.WARNING)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


def load_target(target: str, plugins: tuple[str, ...], out: Presenter | None = None) -> Flow:
    """A pipeline file, or ``module:flow`` for a Python flow (its warnings through ``out``)."""
    path = Path(target)
    if path.suffix == ".py" and path.is_file():
        raise UsageError(f"{target} is Python: name the flow in it, as in {target}:flow")
    if path.suffix in (".yaml", ".yml") or path.exists():
        return load_pipeline(path, plugins=plugins)
    for module in plugins:
        importlib.import_module(module)
    return load_flow(target, warn=(out or Presenter()).warning)


INT = re.compile(r"-?(0|[1-9][0-9]*)")
FLOAT = re.compile(r"-?(0|[1-9][0-9]*)\.[0-9]+([eE][-+]?[0-9]+)?")


def scalar(raw: str) -> Any:
    if INT.fullmatch(raw):
        return int(raw)
    if FLOAT.fullmatch(raw):
        return float(raw)
    if raw in ("true", "false"):
        return raw == "true"
    return raw


def parse_sets(values: tuple[str, ...]) -> dict[str, Any]:
    """``NAME=VALUE``: plain integers and decimals become numbers, ``true``/``false``
    booleans; everything else (``01234``, ``yes``, ``12:30``) stays text, as typed.
    ``[a, b, 3]`` is a list (what a YAML ``foreach`` iterates over): its elements split at
    commas and read the same way; JSON such as ``["a,b", 1]`` is read as JSON."""
    out: dict[str, Any] = {}
    for item in values:
        name, eq, raw = item.partition("=")
        if not eq or not name:
            raise UsageError(f"--set takes NAME=VALUE, got {item!r}")
        if raw.startswith("[") and raw.endswith("]"):
            try:
                out[name] = json.loads(raw)
            except ValueError:
                inner = raw[1:-1].strip()
                out[name] = [scalar(x.strip()) for x in inner.split(",")] if inner else []
        else:
            out[name] = scalar(raw)
    return out


def run_options(flow: Flow, **options: Any) -> dict[str, Any]:
    return flow.run_options(**options) if isinstance(flow, Pipeline) else options


def flow_inputs(flow: Flow, sets: dict[str, Any]) -> dict[str, Any]:
    return {**flow.inputs, **sets} if isinstance(flow, Pipeline) else sets


def planned(flow: Flow, sets: dict[str, Any]) -> Any:
    """The plan for these ``--set`` inputs: every problem before anything runs (exit 2, no
    traceback); for a pipeline, a missing input says where it is used and how to give it,
    and a ``--set`` name no step uses is an error with the closest input name."""
    inputs = flow_inputs(flow, sets)
    return flow.plan(inputs, given=sets) if isinstance(flow, Pipeline) else flow.plan(inputs)


def fail_usage(message: str) -> None:
    """``error: message`` and exit code 2."""
    Presenter().error(message)
    sys.exit(EXIT_USAGE)


@contextlib.contextmanager
def shown_errors() -> Iterator[None]:
    """Known errors become a message and exit code 2, never a traceback."""
    try:
        yield
    except (UsageError, PipelineError, TargetError) as e:
        fail_usage(str(e))
    except LayerflowError as e:
        fail_usage(safe_str(e))


TRACE_OPTION = click.option(
    "--trace",
    "trace_path",
    default=None,
    metavar="FILE.json",
    help="Write a Chrome trace (open it in Perfetto or chrome://tracing).",
)
REPORT_OPTION = click.option(
    "--report",
    "report_path",
    default=None,
    metavar="FILE.html",
    help="Write a self-contained HTML report.",
)


def check_outputs(*paths: str | None) -> None:
    """Refuse a --trace/--report path that cannot be written, before anything runs."""
    from ..report import ReportError, check_writable

    for path in paths:
        if path is not None:
            try:
                check_writable(path)
            except ReportError as e:
                raise UsageError(str(e)) from None


def write_outputs(
    run: RunResult, trace_path: str | None, report_path: str | None, out: Presenter
) -> None:
    """Write the --trace and --report files of a run and say where (through ``out``)."""
    from ..report import ReportError

    try:
        if trace_path is not None:
            written = run.to_chrome_trace(trace_path)
            out.say(f"Trace written to {written} (open it in Perfetto)")
        if report_path is not None:
            written = run.to_html(report_path)
            out.say(f"Report written to {written}")
    except ReportError as e:
        raise UsageError(str(e)) from None


def open_store(path: str | None) -> Any:
    from ..store import Store, default_store_path

    folder = Path(path) if path else default_store_path()
    if not folder.exists():
        raise UsageError(f"no store at {folder}: nothing has been recorded there yet")
    return Store(folder)


def when_text(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


class Duration(click.ParamType):
    """``30s``, ``30m``, ``12h``, ``7d``, ``2w`` as seconds."""

    name = "duration"
    _UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):  # noqa: ANN201
        if isinstance(value, (int, float)):
            return float(value)
        found = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhdw])\s*", str(value))
        if found is None:
            self.fail(
                f"{value!r} is not a duration: a number and a unit (s, m, h, d or w), "
                f"e.g. 30m, 12h or 7d",
                param,
                ctx,
            )
        return float(found[1]) * self._UNITS[found[2]]


def many(n: int, what: str) -> str:
    return counted(n, what)


def size_text(n: float) -> str:
    """Bytes as people read them: 512 B, 4.2 MB."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover (the loop returns)
