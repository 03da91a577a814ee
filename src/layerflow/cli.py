"""The ``layerflow`` command: run, plan, graph and validate a pipeline.

Exit codes: 0 success, 1 a task failed, 2 invalid input or usage, 130 interrupted.
Nothing below this module knows about the command line.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import math
import os
import re
import shlex
import sys
import textwrap
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from .backends import BACKENDS
from .capture import echo as echo_output
from .errors import (
    LayerflowError,
    ResultNotStored,
    RunInterrupted,
    Skip,
    TaskFailed,
    did_you_mean,
    safe_str,
)
from .events import final_line
from .flow import Flow
from .limits import LayerReport
from .logview import line_echo, tail, titled
from .names import counted, element_of, owner_of
from .pipeline import Pipeline, PipelineError, load_pipeline, stop_commands
from .preview import preview, sinks
from .progress import Progress
from .result import RunResult, budget_line, format_metrics
from .targets import TargetError, load_flow
from .tracebacks import format_failure

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Usage(Exception):
    """A problem with what the user asked for: printed, exit code 2."""


def _warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


class _WarningLines(logging.Handler):
    """layerflow's log warnings on stderr as ``warning: ...`` lines (``-q``: errors only)."""

    def emit(self, record: logging.LogRecord) -> None:
        level = "warning" if record.levelno < logging.ERROR else "error"
        text = f"{level}: {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:  # a bug of ours: its traceback
            text += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        click.echo(text, err=True)


@contextlib.contextmanager
def _log_to_stderr(quiet: bool) -> Iterator[None]:
    """layerflow's log on stderr for one command, and the logger as it was afterwards (a
    command run in-process, as tests do, must not change logging for what follows)."""
    log = logging.getLogger("layerflow")
    handler = _WarningLines(logging.WARNING)
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.ERROR if quiet else logging.WARNING)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


def _load(target: str, plugins: tuple[str, ...], quiet: bool = False) -> Flow:
    """A pipeline file, or ``module:flow`` for a Python flow (``-q``: without warnings)."""
    path = Path(target)
    if path.suffix == ".py" and path.is_file():
        raise _Usage(f"{target} is Python: name the flow in it, as in {target}:flow")
    if path.suffix in (".yaml", ".yml") or path.exists():
        return load_pipeline(path, plugins=plugins)
    for module in plugins:
        importlib.import_module(module)
    return load_flow(target, warn=(lambda _: None) if quiet else _warn)


_INT = re.compile(r"-?(0|[1-9][0-9]*)")
_FLOAT = re.compile(r"-?(0|[1-9][0-9]*)\.[0-9]+([eE][-+]?[0-9]+)?")


def _scalar(raw: str) -> Any:
    if _INT.fullmatch(raw):
        return int(raw)
    if _FLOAT.fullmatch(raw):
        return float(raw)
    if raw in ("true", "false"):
        return raw == "true"
    return raw


def _parse_sets(values: tuple[str, ...]) -> dict[str, Any]:
    """``NAME=VALUE``: plain integers and decimals become numbers, ``true``/``false``
    booleans; everything else (``01234``, ``yes``, ``12:30``) stays text, as typed.
    ``[a, b, 3]`` is a list (what a YAML ``foreach`` iterates over): its elements split at
    commas and read the same way; JSON such as ``["a,b", 1]`` is read as JSON."""
    out: dict[str, Any] = {}
    for item in values:
        name, eq, raw = item.partition("=")
        if not eq or not name:
            raise _Usage(f"--set takes NAME=VALUE, got {item!r}")
        if raw.startswith("[") and raw.endswith("]"):
            try:
                out[name] = json.loads(raw)
            except ValueError:
                inner = raw[1:-1].strip()
                out[name] = [_scalar(x.strip()) for x in inner.split(",")] if inner else []
        else:
            out[name] = _scalar(raw)
    return out


def _options(flow: Flow, **options: Any) -> dict[str, Any]:
    return flow.run_options(**options) if isinstance(flow, Pipeline) else options


def _inputs(flow: Flow, sets: dict[str, Any]) -> dict[str, Any]:
    return {**flow.inputs, **sets} if isinstance(flow, Pipeline) else sets


def _planned(flow: Flow, sets: dict[str, Any]) -> Any:
    """The plan for these ``--set`` inputs: every problem before anything runs (exit 2, no
    traceback); for a pipeline, a missing input says where it is used and how to give it,
    and a ``--set`` name no step uses is an error with the closest input name."""
    inputs = _inputs(flow, sets)
    return flow.plan(inputs, given=sets) if isinstance(flow, Pipeline) else flow.plan(inputs)


def _fail_usage(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_USAGE)


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Known errors become a message and exit code 2, never a traceback."""
    try:
        yield
    except (_Usage, PipelineError, TargetError) as e:
        _fail_usage(str(e))
    except LayerflowError as e:
        _fail_usage(safe_str(e))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="layerflow")
def main() -> None:
    """Run a graph of tasks and parallelize whatever is independent, automatically."""


# --- run ----------------------------------------------------------------------------------------


def _final_line(run: RunResult) -> str:
    return final_line(
        run.status, run.counts(), len(run.tasks), run.duration, run.sequential_estimate
    )


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


def _as_json(run: RunResult) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "status": run.status,
        "duration": run.duration,
        "sequential_estimate": run.sequential_estimate,
        "speedup": run.speedup,
        "predicted": run.predicted,
        "layers": run.layers,
        "metrics": run.metrics,
        "budget": run.budget,
        "stop_reason": run.stop_reason,
        # what was skipped, and why (lf.Skip's reason; None: something it needs failed)
        "skipped": {
            name: t.error.reason if isinstance(t.error, Skip) else None
            for name, t in run.tasks.items()
            if t.status == "skipped"
        },
        "tasks": {
            name: {
                "status": t.status,
                "duration": t.duration,
                "attempts": t.attempts,
                "layer": t.layer,
                "output": _jsonable(t.value) if t.ok else None,
                "error": safe_str(t.error) if t.error is not None else None,
                "traceback": format_failure(t.error, last=None) if t.error is not None else None,
                "metrics": t.metrics,
            }
            for name, t in run.tasks.items()
        },
    }


_TRACE_OPTION = click.option(
    "--trace",
    "trace_path",
    default=None,
    metavar="FILE.json",
    help="Write a Chrome trace (open it in Perfetto or chrome://tracing).",
)
_REPORT_OPTION = click.option(
    "--report",
    "report_path",
    default=None,
    metavar="FILE.html",
    help="Write a self-contained HTML report.",
)


def _check_outputs(*paths: str | None) -> None:
    """Refuse a --trace/--report path that cannot be written, before anything runs."""
    from .report import ReportError, check_writable

    for path in paths:
        if path is not None:
            try:
                check_writable(path)
            except ReportError as e:
                raise _Usage(str(e)) from None


def _write_outputs(
    run: RunResult, trace_path: str | None, report_path: str | None, stream: Any
) -> None:
    """Write the --trace and --report files of a run and say where (on ``stream``)."""
    from .report import ReportError

    try:
        if trace_path is not None:
            written = run.to_chrome_trace(trace_path)
            if stream is not None:
                print(f"Trace written to {written} (open it in Perfetto)", file=stream)
        if report_path is not None:
            written = run.to_html(report_path)
            if stream is not None:
                print(f"Report written to {written}", file=stream)
    except ReportError as e:
        raise _Usage(str(e)) from None


def _checkpoint(yes: bool):  # noqa: ANN202
    def ask(report: LayerReport) -> bool:
        counts = report.counts()
        prompt = (
            f"Layer {report.index} done: {counts.get('succeeded', 0)} succeeded, "
            f"{counts.get('failed', 0)} failed. Continue?"
        )
        if yes:
            click.echo(f"{prompt} [y/N] y (--yes)", err=True)
            return True
        return click.confirm(prompt, default=False, err=True)

    return ask


@main.command()
@click.argument("file")
@click.option("--set", "sets", multiple=True, metavar="NAME=VALUE", help="Set a flow input.")
@click.option("--max-workers", type=click.IntRange(min=1), help="How many tasks at once.")
@click.option("--mode", type=click.Choice(["dynamic", "layered", "sequential"]))
@click.option("--sequential", is_flag=True, help="One task at a time (same as --mode sequential).")
@click.option("--no-fail-fast", is_flag=True, help="Keep running independent branches.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), help="Seconds for the run.")
@click.option("--backend", type=click.Choice(BACKENDS))
@click.option(
    "--address",
    metavar="tcp://HOST:PORT",
    help="The Dask scheduler to run on (with --backend dask; default: a local cluster).",
)
@click.option("--checkpoint", is_flag=True, help="Ask before each next layer.")
@click.option("--yes", is_flag=True, help="Answer yes to every --checkpoint question.")
@click.option(
    "--budget",
    "budgets",
    multiple=True,
    metavar="NAME=AMOUNT",
    help="Stop cleanly once the run has recorded AMOUNT of NAME (e.g. cost=5).",
)
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE", help="Import step types.")
@click.option(
    "--resume",
    is_flag=False,
    flag_value="latest",
    default=None,
    metavar="[RUN_ID]",
    help="Reuse what a run finished (the latest unfinished one by default).",
)
@click.option(
    "--store",
    "store_path",
    default=None,
    metavar="PATH",
    help="Where runs are recorded (default .layerflow).",
)
@click.option("--no-store", is_flag=True, help="Do not record this run.")
@click.option(
    "--cache",
    "use_cache",
    is_flag=True,
    help="Reuse results of earlier runs with the same code and values.",
)
@_TRACE_OPTION
@_REPORT_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print only JSON on stdout.")
@click.option(
    "--output",
    "shown",
    multiple=True,
    metavar="NAME",
    help="Print this task's value at the end (default: the tasks nothing else uses).",
)
@click.option(
    "--otel",
    is_flag=True,
    help="OpenTelemetry spans for the run and each task attempt (same as LAYERFLOW_OTEL=1).",
)
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@click.option("-v", "--verbose", is_flag=True, help="Plain progress lines, and whole tracebacks.")
def run(
    file: str,
    sets: tuple[str, ...],
    max_workers: int | None,
    mode: str | None,
    sequential: bool,
    no_fail_fast: bool,
    timeout: float | None,
    backend: str | None,
    address: str | None,
    checkpoint: bool,
    yes: bool,
    budgets: tuple[str, ...],
    plugins: tuple[str, ...],
    resume: str | None,
    store_path: str | None,
    no_store: bool,
    use_cache: bool,
    trace_path: str | None,
    report_path: str | None,
    as_json: bool,
    shown: tuple[str, ...],
    otel: bool,
    quiet: bool,
    verbose: bool,
) -> None:
    """Run a pipeline FILE (YAML, or module:flow for a Python flow)."""
    if otel:
        _ask_for_spans()
    if no_store and (resume or store_path or use_cache):
        _fail_usage("--no-store cannot be combined with --resume, --store or --cache")
    if address is not None and backend != "dask":
        _fail_usage("--address is the Dask scheduler's: use it with --backend dask")
    store: Any = False if no_store else (store_path or True)
    with _errors(), _log_to_stderr(quiet):
        code = _run(
            file,
            sets,
            plugins,
            as_json,
            quiet,
            verbose,
            checkpoint,
            yes,
            (trace_path, report_path),
            shown,
            store=store,
            resume=True if resume == "latest" else resume,
            cache=use_cache or None,
            max_workers=max_workers,
            mode="sequential" if sequential else mode,
            fail_fast=False if no_fail_fast else None,
            timeout=timeout,
            backend=backend,
            address=address,
            budget=_parse_budgets(budgets),
        )
    sys.exit(code)


def _ask_for_spans() -> None:
    """``--otel``: this process's runs make spans (the provider is the program's: a
    ``module:flow`` file's module, or ``opentelemetry-instrument``, sets it up)."""
    from . import otel

    try:
        importlib.import_module("opentelemetry.trace")
    except ImportError:
        _fail_usage(f"--otel needs the OpenTelemetry API, which is not installed: {otel.INSTALL}")
    os.environ[otel.ENV] = "1"


def _parse_budgets(budgets: tuple[str, ...]) -> dict[str, float] | None:
    """``--budget cost=5 --budget tokens=2e6`` as ``{"cost": 5.0, "tokens": 2000000.0}``."""
    out: dict[str, float] = {}
    for text in budgets:
        name, eq, amount = text.partition("=")
        try:
            value = float(amount)
        except ValueError:
            value = math.nan
        if not eq or not name.strip() or not math.isfinite(value) or value <= 0:
            raise _Usage(
                f"--budget takes NAME=AMOUNT with an amount > 0 (e.g. --budget cost=5), "
                f"got {text!r}"
            )
        out[name.strip()] = value
    return out or None


def _run(
    file: str,
    sets: tuple[str, ...],
    plugins: tuple[str, ...],
    as_json: bool,
    quiet: bool,
    verbose: bool,
    checkpoint: bool,
    yes: bool,
    outputs: tuple[str | None, str | None],
    shown: tuple[str, ...],
    **chosen: Any,
) -> int:
    _check_outputs(*outputs)
    flow = _load(file, plugins, quiet)
    given = {key: value for key, value in chosen.items() if value is not None}
    resume_hint = ""
    if checkpoint:
        if not yes and not sys.stdin.isatty():
            raise _Usage(
                "--checkpoint asks before each layer, but there is no terminal to ask on; "
                "add --yes to approve every layer, or run it from a terminal"
            )
        given["checkpoint"] = _checkpoint(yes)
    options = _options(flow, **given)
    values = _parse_sets(sets)
    inputs = _inputs(flow, values)
    stream = sys.stderr if as_json else sys.stdout
    live = stream.isatty() and not verbose
    if not quiet:  # the command line prints its own closing line
        groups: dict[str, list[str]] = {}  # a parallel_group's steps: lines of its own
        for t in flow.tasks:
            if t.group is not None:
                groups.setdefault(t.group.name, []).append(t.name)
        options["progress"] = Progress(stream, live=live, final=False, groups=groups)
    the_plan = _planned(flow, values)
    for name in shown:
        if name not in the_plan.graph.index:
            tip = did_you_mean(name, the_plan.graph.names)
            raise _Usage(f"--output {name}: the flow has no task {name!r}.{tip}")
    if options.get("resume") is True and options.get("store") is not False:
        store_at = options.get("store")
        unfinished, folder = _unfinished(the_plan, None if store_at is True else store_at)
        if unfinished is None:  # a run that is not there to resume: say so, run nothing
            if not quiet:
                click.echo(
                    f"Nothing to resume: the store {folder} has no unfinished run of "
                    f"{flow.name or file!r}. Run it without --resume to start afresh."
                )
            return EXIT_OK
    status = EXIT_OK
    # tasks' output: live lines `task | line` (above a live display), none with -q
    lines = not quiet
    try:
        with echo_output(line_echo(all_on_stderr=as_json) if lines else None):
            result = Flow.run(flow, inputs, **options)
    except TaskFailed as e:
        result = e.result
        status = EXIT_FAILED
    except RunInterrupted as e:
        stop_commands()
        result = e.result
        status = EXIT_INTERRUPTED
        if options.get("store") is not False:
            again, skip = [], False
            for a in sys.argv[1:]:  # the same command, without an earlier --resume [ID]
                if skip and not a.startswith("-") and a != file:
                    skip = False
                    continue
                skip = a == "--resume"
                if not skip:
                    again.append(a)
            resume_hint = "layerflow " + " ".join(shlex.quote(a) for a in again)
            resume_hint += f" --resume {result.run_id}"
    finally:
        stop_commands()
    if result.status == "failed":
        status = EXIT_FAILED
    _write_outputs(result, *outputs, None if quiet else stream)
    if as_json:
        click.echo(json.dumps(_as_json(result), indent=2))
    else:
        _print_failures(result, verbose, err=quiet, output=not lines)  # -q: errors, on stderr
    if not as_json and not quiet:
        _print_results(result, shown)
        note = result.prediction_note()
        if note is not None:  # before the final line, which stays the last (DESIGN 4)
            click.echo(note[0].upper() + note[1:])
        cpu = result.cpu_note()
        if cpu is not None and "Warning" in cpu:  # the CPU line itself: in the summary
            click.echo(cpu)
        if result.metrics:
            click.echo("metrics: " + format_metrics(result.metrics))
        if result.budget:
            click.echo("budget: " + budget_line(result.budget))
        if result.stop_reason:
            click.echo(f"Stopped: {result.stop_reason}.")
            if options.get("store") is not False:
                larger = " (and a larger budget)" if result.budget else ""
                click.echo(f"Finished results were kept; continue with --resume{larger}.")
        click.echo(_final_line(result))
        if status == EXIT_INTERRUPTED:
            click.echo("Interrupted: finished results were kept; running steps were stopped.")
            if options.get("store") is not False:
                click.echo(f"Resume with: {resume_hint}")
    return status


def _print_failures(
    result: RunResult, verbose: bool, err: bool = False, output: bool = False
) -> None:
    """Each failed task with the user's own frames: the last few, or all with -v; and
    with ``output``, the end of what it printed (unless that was shown live)."""
    failed = [t for t in result.tasks.values() if t.status == "failed"]
    # once the store failed, every task ending meanwhile failed alike: listed by name only
    either = [t.name for t in failed if isinstance(t.error, ResultNotStored) and t.error.either]
    for t in failed:
        if t.name in either:
            continue
        click.echo(f"\n{t.name} failed:", err=err)
        text = format_failure(t.error, last=None if verbose else 3) if t.error else "failed"
        click.echo(textwrap.indent(text, "  "), err=err)
        if output and t.logs:
            click.echo("  its output ends with:", err=err)
            click.echo(textwrap.indent(tail(t.logs), "    "), err=err)
    # a task that skipped itself (lf.Skip, a YAML when: that is false) is no failure's
    skipped = [t for t in result.tasks.values() if t.status == "skipped"]
    chose = _skip_reasons([t for t in skipped if isinstance(t.error, Skip)])
    for status, why, names in (
        ("Not stored either", "the store failed, see above", either),
        ("Skipped", "what they need failed", [t.name for t in skipped if t.error is None]),
        ("Skipped", "lf.Skip or a false when:", chose),
        ("Cancelled", "the run stopped", _named(result, "cancelled")),
    ):
        if names:
            more = f" and {len(names) - 20} more" if len(names) > 20 else ""
            click.echo(f"{status} ({why}): {', '.join(names[:20])}{more}", err=err)
    if failed:
        click.echo("", err=err)


def _skip_reasons(skipped: list[Any]) -> list[str]:
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


def _named(result: RunResult, status: str) -> list[str]:
    return [t.name for t in result.tasks.values() if t.status == status]


_MAX_RESULTS = 10  # sinks shown at the end of a run; --output shows any


def _print_results(result: RunResult, shown: tuple[str, ...]) -> None:
    """The values of ``shown``, or of the run's sinks: what the run was for."""
    graph_tasks = [n for layer in result.layers for n in layer]  # not a map's elements
    names = list(shown) or sinks(graph_tasks, result.edges)
    ready = [n for n in names if result.tasks[n].ok] if names else []
    if not ready:
        return
    click.echo("Results:" if len(ready) > 1 else "Result:")
    for name in ready[: len(ready) if shown else _MAX_RESULTS]:
        text = preview(result.tasks[name].value)
        if "\n" in text:
            click.echo(f"  {name}:\n" + textwrap.indent(text, "    "))
        else:
            click.echo(f"  {name} = {text}")
    if not shown and len(ready) > _MAX_RESULTS:
        click.echo(
            f"  ... and {len(ready) - _MAX_RESULTS} more: --output NAME shows one, --json all"
        )


def _unfinished(the_plan: Any, store_at: str | None) -> tuple[str | None, Path]:
    """The latest unfinished run of the plan's flow in the store, and the store's folder."""
    from .recorder import flow_key
    from .store import Store, default_store_path

    folder = Path(store_at) if store_at else default_store_path()
    if not (folder / "state.db").is_file():
        return None, folder
    store = Store(folder)
    try:
        return store.latest_unfinished(flow_key(the_plan.graph)), folder
    finally:
        store.close()


# --- plan, graph, validate ------------------------------------------------------------------


@main.command()
@click.argument("file")
@click.option(
    "--max-workers",
    "workers",
    default=None,
    metavar="N[,N...]",
    help="Worker counts to predict for (a what-if table for several).",
)
@click.option("--set", "sets", multiple=True, metavar="NAME=VALUE", help="Set a flow input.")
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE", help="Import step types.")
def plan(file: str, workers: str | None, sets: tuple[str, ...], plugins: tuple[str, ...]) -> None:
    """Show the layers, the critical path and the predicted time and speedup."""
    with _errors():
        sys.exit(_plan(file, workers, sets, plugins))


def _plan(file: str, workers: str | None, sets: tuple[str, ...], plugins: tuple[str, ...]) -> int:
    flow = _load(file, plugins)
    counts: list[int | None] = [None]
    if workers:
        try:
            counts = [int(w) for w in workers.split(",")]
        except ValueError:
            raise _Usage(
                f"--max-workers takes numbers like 4 or 1,2,4,8, got {workers!r}"
            ) from None
        if any(c is not None and c < 1 for c in counts):
            raise _Usage("--max-workers must be at least 1")
    elif isinstance(flow, Pipeline) and "max_workers" in flow.settings:
        counts = [flow.settings["max_workers"]]
    the_plan = _planned(flow, _parse_sets(sets))
    click.echo(the_plan.explain(max_workers=counts[0]))
    if len(counts) > 1:
        timed = bool(the_plan.history)
        what = "durations from past runs" if timed else "every task 1 unit"
        click.echo(f"\nwhat if ({what}):")
        click.echo(f"  {'max_workers':>11}  {'predicted':>11}  {'speedup':>7}  bound by")
        for row in the_plan.what_if(counts):
            unit = "unit" if row.seconds == 1 else "units"
            shown = f"{row.seconds:.3g}s" if timed else f"{row.seconds:g} {unit}"
            click.echo(f"  {row.max_workers:>11}  {shown:>11}  {row.speedup:>6.1f}x  {row.binding}")
    for line in the_plan.binding_limits():  # a pipeline's pools and limits, by default
        click.echo(f"limit: {line}")
    return EXIT_OK


@main.command()
@click.argument("file")
@click.option("--format", "fmt", type=click.Choice(["mermaid", "dot", "text"]), default="text")
@click.option("--set", "sets", multiple=True, metavar="NAME=VALUE", help="Set a flow input.")
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE", help="Import step types.")
def graph(file: str, fmt: str, sets: tuple[str, ...], plugins: tuple[str, ...]) -> None:
    """Print the graph as Mermaid, Graphviz DOT, or text."""
    with _errors():
        sys.exit(_graph(file, fmt, sets, plugins))


def _graph(file: str, fmt: str, sets: tuple[str, ...], plugins: tuple[str, ...]) -> int:
    the_plan = _planned(_load(file, plugins), _parse_sets(sets))
    if fmt == "mermaid":
        click.echo(the_plan.to_mermaid(), nl=False)
    elif fmt == "dot":
        click.echo(the_plan.to_dot(), nl=False)
    else:
        for k, layer in enumerate(the_plan.layers):
            click.echo(f"layer {k}:")
            for name in layer:
                deps = the_plan.dependencies(name)
                click.echo(f"  {name}" + (f"  <- {', '.join(deps)}" if deps else ""))
    return EXIT_OK


@main.command()
@click.argument("file")
@click.option("--set", "sets", multiple=True, metavar="NAME=VALUE", help="Set a flow input.")
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE", help="Import step types.")
def validate(file: str, sets: tuple[str, ...], plugins: tuple[str, ...]) -> None:
    """Check a pipeline without running it."""
    with _errors():
        sys.exit(_validate(file, sets, plugins))


def _validate(file: str, sets: tuple[str, ...], plugins: tuple[str, ...]) -> int:
    flow = _load(file, plugins)
    the_plan = _planned(flow, _parse_sets(sets))
    shown = f"{_many(len(the_plan), 'task')} in {_many(len(the_plan.layers), 'layer')}"
    if isinstance(flow, Pipeline) and flow.format != "layerflow":
        shown += f", read as {flow.format}'s format ({flow.format_reason})"
    click.echo(f"{file}: valid, {shown}")
    return EXIT_OK


def _open_store(path: str | None) -> Any:
    from .store import Store, default_store_path

    folder = Path(path) if path else default_store_path()
    if not folder.exists():
        raise _Usage(f"no store at {folder}: nothing has been recorded there yet")
    return Store(folder)


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


class _Duration(click.ParamType):
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


def _many(n: int, what: str) -> str:
    return counted(n, what)


def _size(n: float) -> str:
    """Bytes as people read them: 512 B, 4.2 MB."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover (the loop returns)


@main.command()
@click.option("--store", "store_path", default=None, metavar="PATH")
@click.option("--limit", default=20, show_default=True, help="How many runs.")
@click.option(
    "--prune",
    is_flag=True,
    help="Remove old runs and the results nothing else uses (with --keep, --older-than).",
)
@click.option(
    "--keep",
    type=click.IntRange(min=0),
    default=None,
    metavar="N",
    help="With --prune: keep the N newest runs.",
)
@click.option(
    "--older-than",
    type=_Duration(),
    default=None,
    metavar="D",
    help="With --prune: remove runs started more than D ago (30m, 12h, 7d).",
)
def runs(
    store_path: str | None,
    limit: int,
    prune: bool,
    keep: int | None,
    older_than: float | None,
) -> None:
    """List recorded runs, newest first, and what the store holds; --prune removes old
    runs (never one still running)."""
    if prune and keep is None and older_than is None:
        _fail_usage("--prune needs --keep N or --older-than D (e.g. --older-than 7d)")
    if not prune and (keep is not None or older_than is not None):
        _fail_usage("--keep and --older-than say what --prune removes: add --prune")
    with _errors():
        store = _open_store(store_path)
        if prune:
            _prune(store, keep, older_than)
        else:
            _list_runs(store, limit)
        used = store.usage()
        click.echo(
            f"store {store.folder}: {_many(used['runs'], 'run')}, "
            f"{_many(used['result_files'], 'result')}, {_size(used['bytes'])}"
        )
    sys.exit(EXIT_OK)


def _list_runs(store: Any, limit: int) -> None:
    rows = store.runs(limit)
    click.echo(
        f"{'run id':<24} {'flow':<16} {'started':<19} {'duration':>9} "
        f"{'status':<11} {'tasks':>5}  metrics"
    )
    for r in rows:
        took = f"{r['finished_at'] - r['started_at']:.1f}s" if r["finished_at"] else "-"
        click.echo(
            f"{r['run_id']:<24} {r['flow'][:16]:<16} {_when(r['started_at']):<19} "
            f"{took:>9} {r['status']:<11} {r['tasks']:>5}  {format_metrics(r['metrics'])}"
        )


def _prune(store: Any, keep: int | None, older_than: float | None) -> None:
    done = store.prune(keep=keep, older_than=older_than)
    if done.runs:
        shown = ", ".join(done.runs[:5]) + (", ..." if len(done.runs) > 5 else "")
        click.echo(
            f"removed {_many(len(done.runs), 'run')} ({shown}) and "
            f"{_many(done.files, 'result')}: {_size(done.freed)} freed"
        )
    else:
        click.echo("nothing to prune")
    if done.still_running:
        click.echo(
            f"kept {_many(done.still_running, 'old run')} listed as running (still "
            f"running, or killed before it could end: --resume finishes it)"
        )


@main.command()
@click.argument("run_id")
@click.argument("task", required=False)
@click.option("--store", "store_path", default=None, metavar="PATH")
@click.option("--output", "output_name", default=None, metavar="NAME", help="Print a stored value.")
@click.option("--logs", is_flag=True, help="Print what TASK (or every task) printed and logged.")
@_TRACE_OPTION
@_REPORT_OPTION
def show(
    run_id: str,
    task: str | None,
    store_path: str | None,
    output_name: str | None,
    logs: bool,
    trace_path: str | None,
    report_path: str | None,
) -> None:
    """Show one recorded run: every task's status, duration and error (and the traceback of
    each failure); TASK: one task in detail; --output NAME: a task's stored value; --logs:
    what TASK (without TASK: each task) printed and logged."""
    with _errors():
        _check_outputs(trace_path, report_path)
        store = _open_store(store_path)
        tasks = store.tasks_of(run_id)
        if not tasks:
            raise _Usage(f"no run {run_id!r} in {store.folder}; see layerflow runs")
        by_name = {t["name"]: t for t in tasks}
        for wanted in (task, output_name):
            if wanted is not None and wanted not in by_name:
                tip = did_you_mean(wanted, by_name)
                raise _Usage(f"run {run_id} has no task {wanted!r}.{tip}")
        if output_name is not None:
            click.echo(preview(_stored_value(store, run_id, output_name)))
        elif logs:
            found = store.logs_of(run_id, [task] if task is not None else by_name)
            if task is not None:
                click.echo(found.get(task, ""), nl=False)
            elif found:
                click.echo(titled(found), nl=False)
            if not found:
                click.echo(f"{task or 'no task'} printed nothing", err=True)
        elif task is not None:
            _show_task(store, run_id, by_name[task])
        else:
            _show_run(tasks)
        if trace_path is not None or report_path is not None:
            _write_outputs(store.load_run(run_id), trace_path, report_path, sys.stdout)
    sys.exit(EXIT_OK)


def _stored_value(store: Any, run_id: str, name: str) -> Any:
    found = store.finished_results(run_id).get(name)
    element = element_of(name)
    try:
        if found is not None:
            return store.load_value(found[1])
        if element is not None:  # a map's element: packed with others
            try:
                return store.stored_element(run_id, *element)
            except KeyError:
                pass
    except Exception as e:  # a file pruned, damaged, or of code that is gone
        raise _Usage(f"the stored value of {name!r} cannot be read: {safe_str(e)}") from None
    raise _Usage(f"run {run_id} has no stored value of {name!r}: it did not finish")


#: a map's elements listed one by one by ``show`` (the rest are counted, as in the summary)
_SHOWN_ELEMENTS = 5


def _show_run(tasks: list[dict[str, Any]]) -> None:
    names = {t["name"] for t in tasks}
    elements: dict[str, list[dict[str, Any]]] = {}
    for t in tasks:
        owner = owner_of(t["name"])
        if owner in names:
            elements.setdefault(owner, []).append(t)
    for t in tasks:
        name = t["name"]
        if owner_of(name) in names:
            continue  # shown under its task
        click.echo(_task_line(t))
        mine = elements.get(name)
        if not mine:
            continue
        counts: dict[str, int] = {}
        for e in mine:
            counts[e["status"]] = counts.get(e["status"], 0) + 1
        listed = ", ".join(f"{n} {status}" for status, n in counts.items())
        click.echo(f"    {counted(len(mine), 'element')}: {listed}")
        odd = [e for e in mine if e["status"] != "succeeded"] or mine
        for e in odd[:_SHOWN_ELEMENTS]:
            click.echo("  " + _task_line(e))
        if len(odd) > _SHOWN_ELEMENTS:
            click.echo(
                f"      ... and {len(odd) - _SHOWN_ELEMENTS} more (show RUN TASK[k] for one)"
            )
    for t in tasks:
        if t["status"] == "failed" and (t["traceback"] or t["error"]):
            click.echo(f"\n{t['name']} failed:")
            click.echo(textwrap.indent(_last_frames(t["traceback"] or t["error"]), "  "))


def _task_line(t: dict[str, Any]) -> str:
    took = f"{t['duration']:.2f}s" if t["duration"] is not None else "-"
    line = f"  {t['name']:<24} {t['status']:<10} {took:>9}"
    if t["attempts"] and t["attempts"] > 1:
        line += f"  {counted(t['attempts'], 'attempt')}"
    if t["error"]:
        line += f"  {t['error'].splitlines()[0][:100]}"
    return line


def _last_frames(text: str, frames: int = 3) -> str:
    """A stored traceback cut to its last ``frames`` frames (``show RUN TASK``: all)."""
    lines = text.splitlines()
    starts = [k for k, line in enumerate(lines) if line.startswith('  File "')]
    if len(starts) <= frames:
        return text
    keep = lines[starts[-frames] :]
    hidden = len(starts) - frames
    return f"Traceback (most recent call last) ({hidden} earlier frames not shown):\n" + (
        "\n".join(keep)
    )


def _show_task(store: Any, run_id: str, t: dict[str, Any]) -> None:
    took = f"{t['duration']:.2f}s" if t["duration"] is not None else "-"
    click.echo(f"{t['name']}: {t['status']} in {took}, {_many(t['attempts'] or 0, 'attempt')}")
    if t["started_at"]:
        click.echo(f"  started {_when(t['started_at'])}")
    if t["traceback"] or t["error"]:
        click.echo(textwrap.indent(t["traceback"] or t["error"], "  "))
    elif t["status"] in ("succeeded", "reused", "cached"):
        with contextlib.suppress(_Usage):
            click.echo(
                "  value:\n"
                + textwrap.indent(preview(_stored_value(store, run_id, t["name"])), "    ")
            )
    text = store.logs_of(run_id, [t["name"]]).get(t["name"])
    if text:  # the end of what it printed; --logs prints all of it
        click.echo(f"  output (all of it: layerflow show {run_id} {t['name']} --logs):")
        click.echo(textwrap.indent(tail(text), "    "))


@main.command()
@click.option("--store", "store_path", default=None, metavar="PATH")
@click.option(
    "--port",
    default=8765,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="The port (0: any free one).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="The address to answer on (another than 127.0.0.1 lets other machines read the store).",
)
def ui(store_path: str | None, port: int, host: str) -> None:
    """A live local page over the store: the runs, and each run as it goes (read-only)."""
    from .ui import UIError, serve

    with _errors():
        try:
            server = serve(store_path, host=host, port=port)
        except UIError as e:  # its message says it all: no class name before it
            raise _Usage(str(e)) from None
    click.echo(f"layerflow ui: the store {server.store.folder} at {server.url} (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    sys.exit(EXIT_OK)


@main.group()
def cache() -> None:
    """The result cache."""


@cache.command("clear")
@click.option("--store", "store_path", default=None, metavar="PATH")
def cache_clear(store_path: str | None) -> None:
    """Forget every cached result."""
    with _errors():
        n = _open_store(store_path).cache_clear()
        click.echo(f"cleared {n} cached results")
    sys.exit(EXIT_OK)


if __name__ == "__main__":
    main()
