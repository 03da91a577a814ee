"""``layerflow plan``, ``graph`` and ``validate``: what a pipeline would do, without running it."""

from __future__ import annotations

import sys

import click

from ..pipeline import Pipeline
from .app import main
from .common import (
    EXIT_OK,
    UsageError,
    load_target,
    many,
    parse_sets,
    planned,
    shown_errors,
)
from .present import Presenter

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
    with shown_errors():
        sys.exit(_plan(file, workers, sets, plugins))


def _plan(file: str, workers: str | None, sets: tuple[str, ...], plugins: tuple[str, ...]) -> int:
    flow = load_target(file, plugins)
    counts: list[int | None] = [None]
    if workers:
        try:
            counts = [int(w) for w in workers.split(",")]
        except ValueError:
            raise UsageError(
                f"--max-workers takes numbers like 4 or 1,2,4,8, got {workers!r}"
            ) from None
        if any(c is not None and c < 1 for c in counts):
            raise UsageError("--max-workers must be at least 1")
    elif isinstance(flow, Pipeline) and "max_workers" in flow.settings:
        counts = [flow.settings["max_workers"]]
    the_plan = planned(flow, parse_sets(sets))
    out = Presenter()
    out.say(the_plan.explain(max_workers=counts[0]))
    if len(counts) > 1:
        timed = bool(the_plan.history)
        what = "durations from past runs" if timed else "every task 1 unit"
        out.say(f"\nwhat if ({what}):")
        out.say(f"  {'max_workers':>11}  {'predicted':>11}  {'speedup':>7}  bound by")
        for row in the_plan.what_if(counts):
            unit = "unit" if row.seconds == 1 else "units"
            shown = f"{row.seconds:.3g}s" if timed else f"{row.seconds:g} {unit}"
            out.say(f"  {row.max_workers:>11}  {shown:>11}  {row.speedup:>6.1f}x  {row.binding}")
    for line in the_plan.binding_limits():  # a pipeline's pools and limits, by default
        out.say(f"limit: {line}")
    return EXIT_OK


@main.command()
@click.argument("file")
@click.option("--format", "fmt", type=click.Choice(["mermaid", "dot", "text"]), default="text")
@click.option("--set", "sets", multiple=True, metavar="NAME=VALUE", help="Set a flow input.")
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE", help="Import step types.")
def graph(file: str, fmt: str, sets: tuple[str, ...], plugins: tuple[str, ...]) -> None:
    """Print the graph as Mermaid, Graphviz DOT, or text."""
    with shown_errors():
        sys.exit(_graph(file, fmt, sets, plugins))


def _graph(file: str, fmt: str, sets: tuple[str, ...], plugins: tuple[str, ...]) -> int:
    the_plan = planned(load_target(file, plugins), parse_sets(sets))
    out = Presenter()
    if fmt == "mermaid":
        out.data(the_plan.to_mermaid(), nl=False)
    elif fmt == "dot":
        out.data(the_plan.to_dot(), nl=False)
    else:
        for k, layer in enumerate(the_plan.layers):
            out.say(f"layer {k}:")
            for name in layer:
                deps = the_plan.dependencies(name)
                out.say(f"  {name}" + (f"  <- {', '.join(deps)}" if deps else ""))
    return EXIT_OK


@main.command()
@click.argument("file")
@click.option("--set", "sets", multiple=True, metavar="NAME=VALUE", help="Set a flow input.")
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE", help="Import step types.")
def validate(file: str, sets: tuple[str, ...], plugins: tuple[str, ...]) -> None:
    """Check a pipeline without running it."""
    with shown_errors():
        sys.exit(_validate(file, sets, plugins))


def _validate(file: str, sets: tuple[str, ...], plugins: tuple[str, ...]) -> int:
    flow = load_target(file, plugins)
    the_plan = planned(flow, parse_sets(sets))
    shown = f"{many(len(the_plan), 'task')} in {many(len(the_plan.layers), 'layer')}"
    if isinstance(flow, Pipeline) and flow.format != "layerflow":
        shown += f", read as {flow.format}'s format ({flow.format_reason})"
    Presenter().say(f"{file}: valid, {shown}")
    return EXIT_OK
