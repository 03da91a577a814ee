"""``layerflow runs``, ``show``, ``ui`` and ``cache``: the run store, read back."""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import click

from ..errors import (
    did_you_mean,
    safe_str,
)
from ..logview import tail, titled
from ..names import counted, element_of, owner_of
from ..preview import preview
from ..result import format_metrics
from .app import main
from .common import (
    EXIT_OK,
    REPORT_OPTION,
    TRACE_OPTION,
    Duration,
    UsageError,
    check_outputs,
    fail_usage,
    many,
    open_store,
    shown_errors,
    size_text,
    when_text,
    write_outputs,
)
from .present import Presenter, indented


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
    type=Duration(),
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
        fail_usage("--prune needs --keep N or --older-than D (e.g. --older-than 7d)")
    if not prune and (keep is not None or older_than is not None):
        fail_usage("--keep and --older-than say what --prune removes: add --prune")
    out = Presenter()
    with shown_errors():
        store = open_store(store_path)
        if prune:
            _prune(store, keep, older_than, out)
        else:
            _list_runs(store, limit, out)
        used = store.usage()
        out.say(
            f"store {store.folder}: {many(used['runs'], 'run')}, "
            f"{many(used['result_files'], 'result')}, {size_text(used['bytes'])}"
        )
    sys.exit(EXIT_OK)


def _list_runs(store: Any, limit: int, out: Presenter) -> None:
    rows = store.runs(limit)
    out.say(
        f"{'run id':<24} {'flow':<16} {'started':<19} {'duration':>9} "
        f"{'status':<11} {'tasks':>5}  metrics"
    )
    for r in rows:
        took = f"{r['finished_at'] - r['started_at']:.1f}s" if r["finished_at"] else "-"
        out.say(
            f"{r['run_id']:<24} {r['flow'][:16]:<16} {when_text(r['started_at']):<19} "
            f"{took:>9} {r['status']:<11} {r['tasks']:>5}  {format_metrics(r['metrics'])}"
        )


def _prune(store: Any, keep: int | None, older_than: float | None, out: Presenter) -> None:
    done = store.prune(keep=keep, older_than=older_than)
    if done.runs:
        shown = ", ".join(done.runs[:5]) + (", ..." if len(done.runs) > 5 else "")
        out.say(
            f"removed {many(len(done.runs), 'run')} ({shown}) and "
            f"{many(done.files, 'result')}: {size_text(done.freed)} freed"
        )
    else:
        out.say("nothing to prune")
    if done.still_running:
        out.say(
            f"kept {many(done.still_running, 'old run')} listed as running (still "
            f"running, or killed before it could end: --resume finishes it)"
        )


@main.command()
@click.argument("run_id")
@click.argument("task", required=False)
@click.option("--store", "store_path", default=None, metavar="PATH")
@click.option("--output", "output_name", default=None, metavar="NAME", help="Print a stored value.")
@click.option("--logs", is_flag=True, help="Print what TASK (or every task) printed and logged.")
@TRACE_OPTION
@REPORT_OPTION
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
    out = Presenter()
    with shown_errors():
        check_outputs(trace_path, report_path)
        store = open_store(store_path)
        tasks = store.tasks_of(run_id)
        if not tasks:
            raise UsageError(f"no run {run_id!r} in {store.folder}; see layerflow runs")
        by_name = {t["name"]: t for t in tasks}
        for wanted in (task, output_name):
            if wanted is not None and wanted not in by_name:
                tip = did_you_mean(wanted, by_name)
                raise UsageError(f"run {run_id} has no task {wanted!r}.{tip}")
        if output_name is not None:
            out.data(preview(_stored_value(store, run_id, output_name)))
        elif logs:
            found = store.logs_of(run_id, [task] if task is not None else by_name)
            if task is not None:
                out.data(found.get(task, ""), nl=False)
            elif found:
                out.data(titled(found), nl=False)
            if not found:
                out.aside(f"{task or 'no task'} printed nothing")
        elif task is not None:
            _show_task(store, run_id, by_name[task], out)
        else:
            _show_run(tasks, out)
        if trace_path is not None or report_path is not None:
            write_outputs(store.load_run(run_id), trace_path, report_path, out)
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
        raise UsageError(f"the stored value of {name!r} cannot be read: {safe_str(e)}") from None
    raise UsageError(f"run {run_id} has no stored value of {name!r}: it did not finish")


#: a map's elements listed one by one by ``show`` (the rest are counted, as in the summary)
_SHOWN_ELEMENTS = 5


def _show_run(tasks: list[dict[str, Any]], out: Presenter) -> None:
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
        out.say(_task_line(t))
        mine = elements.get(name)
        if not mine:
            continue
        counts: dict[str, int] = {}
        for e in mine:
            counts[e["status"]] = counts.get(e["status"], 0) + 1
        listed = ", ".join(f"{n} {status}" for status, n in counts.items())
        out.say(f"    {counted(len(mine), 'element')}: {listed}")
        odd = [e for e in mine if e["status"] != "succeeded"] or mine
        for e in odd[:_SHOWN_ELEMENTS]:
            out.say("  " + _task_line(e))
        if len(odd) > _SHOWN_ELEMENTS:
            out.say(f"      ... and {len(odd) - _SHOWN_ELEMENTS} more (show RUN TASK[k] for one)")
    for t in tasks:
        if t["status"] == "failed" and (t["traceback"] or t["error"]):
            out.say(f"\n{t['name']} failed:")
            out.say(indented(_last_frames(t["traceback"] or t["error"])))


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


def _show_task(store: Any, run_id: str, t: dict[str, Any], out: Presenter) -> None:
    took = f"{t['duration']:.2f}s" if t["duration"] is not None else "-"
    out.say(f"{t['name']}: {t['status']} in {took}, {many(t['attempts'] or 0, 'attempt')}")
    if t["started_at"]:
        out.say(f"  started {when_text(t['started_at'])}")
    if t["traceback"] or t["error"]:
        out.say(indented(t["traceback"] or t["error"]))
    elif t["status"] in ("succeeded", "reused", "cached"):
        with contextlib.suppress(UsageError):
            out.say("  value:\n" + indented(preview(_stored_value(store, run_id, t["name"])), 4))
    text = store.logs_of(run_id, [t["name"]]).get(t["name"])
    if text:  # the end of what it printed; --logs prints all of it
        out.say(f"  output (all of it: layerflow show {run_id} {t['name']} --logs):")
        out.say(indented(tail(text), 4))


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
    from ..ui import UIError, serve

    with shown_errors():
        try:
            server = serve(store_path, host=host, port=port)
        except UIError as e:  # its message says it all: no class name before it
            raise UsageError(str(e)) from None
    Presenter().say(f"layerflow ui: the store {server.store.folder} at {server.url} (Ctrl-C stops)")
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
    with shown_errors():
        n = open_store(store_path).cache_clear()
        Presenter().say(f"cleared {n} cached results")
    sys.exit(EXIT_OK)
