"""``layerflow run``: run a pipeline file or a Python flow, show its progress, results and
failures, write its report or trace, and say how it ended (the exit code)."""

from __future__ import annotations

import importlib
import json
import math
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import click

from ..backends import BACKENDS
from ..capture import echo as echo_output
from ..errors import (
    RunInterrupted,
    Skip,
    TaskFailed,
    did_you_mean,
    safe_str,
)
from ..flow import Flow
from ..limits import LayerReport
from ..pipeline import stop_commands
from ..progress import Progress
from ..result import RunResult
from ..tracebacks import format_failure
from .app import main
from .common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    REPORT_OPTION,
    TRACE_OPTION,
    UsageError,
    check_outputs,
    fail_usage,
    flow_inputs,
    load_target,
    log_to_stderr,
    parse_sets,
    planned,
    run_options,
    shown_errors,
    write_outputs,
)
from .present import Presenter

# --- run ----------------------------------------------------------------------------------------


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


def _checkpoint(yes: bool, out: Presenter):  # noqa: ANN202
    """The question asked after each layer (``--yes``: answered, and said so)."""

    def ask(report: LayerReport) -> bool:
        counts = report.counts()
        prompt = (
            f"Layer {report.index} done: {counts.get('succeeded', 0)} succeeded, "
            f"{counts.get('failed', 0)} failed. Continue?"
        )
        if yes:
            out.aside(f"{prompt} [y/N] y (--yes)")
            return True
        return out.confirm(prompt)

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
@TRACE_OPTION
@REPORT_OPTION
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
        fail_usage("--no-store cannot be combined with --resume, --store or --cache")
    if address is not None and backend != "dask":
        fail_usage("--address is the Dask scheduler's: use it with --backend dask")
    store: Any = False if no_store else (store_path or True)
    out = Presenter(json=as_json, quiet=quiet, verbose=verbose)
    with shown_errors(), log_to_stderr(out):
        code = _run(
            file,
            sets,
            plugins,
            out,
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
    from .. import otel

    try:
        importlib.import_module("opentelemetry.trace")
    except ImportError:
        fail_usage(f"--otel needs the OpenTelemetry API, which is not installed: {otel.INSTALL}")
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
            raise UsageError(
                f"--budget takes NAME=AMOUNT with an amount > 0 (e.g. --budget cost=5), "
                f"got {text!r}"
            )
        out[name.strip()] = value
    return out or None


def _run(
    file: str,
    sets: tuple[str, ...],
    plugins: tuple[str, ...],
    out: Presenter,
    checkpoint: bool,
    yes: bool,
    outputs: tuple[str | None, str | None],
    shown: tuple[str, ...],
    **chosen: Any,
) -> int:
    """Check what was asked (every problem before anything runs), run it, tell how it went;
    the exit code."""
    check_outputs(*outputs)
    flow = load_target(file, plugins, out)
    options = _options(flow, chosen, checkpoint, yes, out)
    values = parse_sets(sets)
    the_plan = planned(flow, values)
    _check_shown(the_plan, shown)
    if _nothing_to_resume(flow, file, the_plan, options, out):
        return EXIT_OK
    result, status = _execute(flow, flow_inputs(flow, values), options, out)
    stored = options.get("store") is not False
    write_outputs(result, *outputs, out)
    _tell(result, status, shown, stored, file, out)
    return status


def _options(
    flow: Flow, chosen: dict[str, Any], checkpoint: bool, yes: bool, out: Presenter
) -> dict[str, Any]:
    """The run's options: those given, the checkpoint question, and its progress display."""
    given = {key: value for key, value in chosen.items() if value is not None}
    if checkpoint:
        if not yes and not sys.stdin.isatty():
            raise UsageError(
                "--checkpoint asks before each layer, but there is no terminal to ask on; "
                "add --yes to approve every layer, or run it from a terminal"
            )
        given["checkpoint"] = _checkpoint(yes, out)
    options = run_options(flow, **given)
    if not out.quiet:  # the command line prints its own closing line
        groups: dict[str, list[str]] = {}  # a parallel_group's steps: lines of its own
        for t in flow.tasks:
            if t.group is not None:
                groups.setdefault(t.group.name, []).append(t.name)
        options["progress"] = Progress(out.stream, live=out.live, final=False, groups=groups)
        out.display = options["progress"]  # the checkpoint's question holds it still
    return options


def _check_shown(the_plan: Any, shown: tuple[str, ...]) -> None:
    """Each ``--output NAME`` names a task of the flow."""
    for name in shown:
        if name not in the_plan.graph.index:
            tip = did_you_mean(name, the_plan.graph.names)
            raise UsageError(f"--output {name}: the flow has no task {name!r}.{tip}")


def _nothing_to_resume(
    flow: Flow, file: str, the_plan: Any, options: dict[str, Any], out: Presenter
) -> bool:
    """``--resume`` of a run that is not there: say so (the caller runs nothing)."""
    if options.get("resume") is not True or options.get("store") is False:
        return False
    store_at = options.get("store")
    unfinished, folder = _unfinished(the_plan, None if store_at is True else store_at)
    if unfinished is not None:
        return False
    out.say(
        f"Nothing to resume: the store {folder} has no unfinished run of "
        f"{flow.name or file!r}. Run it without --resume to start afresh."
    )
    return True


def _execute(
    flow: Flow, inputs: dict[str, Any], options: dict[str, Any], out: Presenter
) -> tuple[RunResult, int]:
    """Run the flow, its tasks' output shown as ``out`` says; the result and the exit code
    (a failed task, Ctrl-C: the result all the same)."""
    status = EXIT_OK
    try:
        with echo_output(out.task_lines()):
            result = Flow.run(flow, inputs, **options)
    except TaskFailed as e:
        result = e.result
        status = EXIT_FAILED
    except RunInterrupted as e:
        stop_commands()
        result = e.result
        status = EXIT_INTERRUPTED
    finally:
        stop_commands()
    if result.status == "failed":
        status = EXIT_FAILED
    return result, status


def _tell(
    result: RunResult,
    status: int,
    shown: tuple[str, ...],
    stored: bool,
    file: str,
    out: Presenter,
) -> None:
    """How the run went: the JSON, or its failures, results and closing lines."""
    if out.json:
        out.data(json.dumps(_as_json(result), indent=2))
        return
    out.failures(result)
    if out.quiet:  # -q: the failures only (the rest would not be shown: not built either)
        return
    out.results(result, shown)
    out.summary(result, stored)
    if status == EXIT_INTERRUPTED:
        out.interrupted(_resume_command(file, result.run_id) if stored else None)


def _resume_command(file: str, run_id: str) -> str:
    """The command that was run, without an earlier ``--resume [ID]``, resuming ``run_id``."""
    again, skip = [], False
    for a in sys.argv[1:]:
        if skip and not a.startswith("-") and a != file:
            skip = False
            continue
        skip = a == "--resume"
        if not skip:
            again.append(a)
    return "layerflow " + " ".join(shlex.quote(a) for a in again) + f" --resume {run_id}"


def _unfinished(the_plan: Any, store_at: str | None) -> tuple[str | None, Path]:
    """The latest unfinished run of the plan's flow in the store, and the store's folder."""
    from ..recorder import flow_key
    from ..store import Store, default_store_path

    folder = Path(store_at) if store_at else default_store_path()
    if not (folder / "state.db").is_file():
        return None, folder
    store = Store(folder)
    try:
        return store.latest_unfinished(flow_key(the_plan.graph)), folder
    finally:
        store.close()
