"""``layerflow run``: run a pipeline file or a Python flow, show its progress, results and
failures, write its report or trace, and say how it ended (the exit code)."""

from __future__ import annotations

import importlib
import json
import math
import os
import shlex
import sys
import textwrap
from pathlib import Path
from typing import Any

import click

from ..backends import BACKENDS
from ..capture import echo as echo_output
from ..errors import (
    ResultNotStored,
    RunInterrupted,
    Skip,
    TaskFailed,
    did_you_mean,
    safe_str,
)
from ..events import final_line
from ..flow import Flow
from ..limits import LayerReport
from ..logview import line_echo, tail
from ..names import owner_of
from ..pipeline import stop_commands
from ..preview import preview, sinks
from ..progress import Progress
from ..result import RunResult, budget_line, format_metrics
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
    with shown_errors(), log_to_stderr(quiet):
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
    as_json: bool,
    quiet: bool,
    verbose: bool,
    checkpoint: bool,
    yes: bool,
    outputs: tuple[str | None, str | None],
    shown: tuple[str, ...],
    **chosen: Any,
) -> int:
    check_outputs(*outputs)
    flow = load_target(file, plugins, quiet)
    given = {key: value for key, value in chosen.items() if value is not None}
    resume_hint = ""
    if checkpoint:
        if not yes and not sys.stdin.isatty():
            raise UsageError(
                "--checkpoint asks before each layer, but there is no terminal to ask on; "
                "add --yes to approve every layer, or run it from a terminal"
            )
        given["checkpoint"] = _checkpoint(yes)
    options = run_options(flow, **given)
    values = parse_sets(sets)
    inputs = flow_inputs(flow, values)
    stream = sys.stderr if as_json else sys.stdout
    live = stream.isatty() and not verbose
    if not quiet:  # the command line prints its own closing line
        groups: dict[str, list[str]] = {}  # a parallel_group's steps: lines of its own
        for t in flow.tasks:
            if t.group is not None:
                groups.setdefault(t.group.name, []).append(t.name)
        options["progress"] = Progress(stream, live=live, final=False, groups=groups)
    the_plan = planned(flow, values)
    for name in shown:
        if name not in the_plan.graph.index:
            tip = did_you_mean(name, the_plan.graph.names)
            raise UsageError(f"--output {name}: the flow has no task {name!r}.{tip}")
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
    write_outputs(result, *outputs, None if quiet else stream)
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
