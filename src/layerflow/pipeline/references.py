"""Names and references between steps: duplicate names, references to steps or inputs
that do not exist, a foreach over something that cannot be a list, and cycles.

These are checked even when steps had problems of their own (a step left out for its own
problems is no missing reference), so that one round reports every kind of problem.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import CycleError, LayerflowError, did_you_mean, safe_str
from ..flow import Flow
from .model import Context, Step
from .problems import short

__all__ = ["check_graph", "check_names"]


def check_names(ctx: Context, entries: list[list[Step]], inputs: Mapping[str, Any]) -> None:
    """Duplicate names, references to steps that do not exist, names that clash."""
    problems = ctx.problems
    steps = [s for entry in entries for s in entry]
    by_name: dict[str, Step] = {}
    for s in steps:
        if s.name in by_name:
            made = [x.made for x in (by_name[s.name], s) if x.made]
            why = f" ({'; '.join(made)}): give it a name: of its own" if made else ""
            problems.add_line(s.line, f"duplicate step name{why}", s.name)
        by_name[s.name] = s
    names = list(by_name)
    for s in steps:
        for ref in [s.data.get("input_from"), *s.data.get("needs", []), *sorted(s.refs)]:
            if isinstance(ref, str) and ref not in by_name and ref not in ctx.dropped:
                problems.add_line(
                    s.line, f"no step named {ref!r}.{did_you_mean(ref, names)}", s.name
                )
        if s.name in inputs:
            problems.add_line(s.line, f"step {s.name!r} has the same name as an input")
        _check_foreach(ctx, s, by_name, inputs)
        for ref in sorted(s.input_refs & by_name.keys()):
            problems.add_line(
                s.line,
                f"{{{{inputs.{ref}}}}} names a step, not an input; use "
                f"{{{{steps.{ref}.output}}}} for its output",
                s.name,
            )


def _check_foreach(
    ctx: Context, s: Step, by_name: Mapping[str, Step], inputs: Mapping[str, Any]
) -> None:
    """What a foreach iterates over exists and can be a list."""
    problems = ctx.problems
    kind, ref = s.foreach or ("", "")
    line = s.foreach_line or s.line
    if kind == "step":
        source = by_name.get(ref)
        if source is None and ref not in ctx.dropped:
            tip = did_you_mean(ref, by_name)
            problems.add_line(line, f"foreach over no step named {ref!r}.{tip}", s.name)
        elif source is not None and source.kind == "run" and source.foreach is None:
            problems.add_line(
                line,
                f"foreach over {ref!r}, a run: step, whose output is one text, not a list: "
                f"iterate over a uses: or type: step that returns a list, a foreach step, a "
                f"list input or a literal list",
                s.name,
            )
    elif kind == "input":
        if ref in by_name:
            problems.add_line(
                line,
                f"foreach over {{{{inputs.{ref}}}}}, which names a step, not an input; use "
                f"{{{{steps.{ref}.output}}}} for its output",
                s.name,
            )
        elif ref not in inputs:
            problems.add_line(
                line,
                f"foreach over the input {ref!r}, which is not under inputs:."
                f"{did_you_mean(ref, inputs)} Declare it there with a list (its default, or [])",
                s.name,
            )
        elif inputs[ref] is not None and not isinstance(inputs[ref], list):
            problems.add_line(
                problems.lines.get(("inputs", ref), line),
                f"step {s.name!r} iterates over the input {ref!r}, whose default is "
                f"{short(inputs[ref])}, not a list",
            )


def check_graph(ctx: Context, flow: Flow, entries: list[list[Step]]) -> None:
    """Cycles (through needs/input_from) and other graph problems, with their lines."""
    lines = {s.name: s.line for entry in entries for s in entry}
    try:
        Flow.plan(flow)  # the structure only: inputs may still come with --set
    except LayerflowError as e:
        for p in getattr(e, "problems", [e]):
            if isinstance(p, CycleError):
                cycle = " -> ".join(p.cycle)
                ctx.problems.add_line(lines.get(p.cycle[0]), f"steps form a cycle: {cycle}")
            else:
                task = getattr(p, "task", None)
                line = lines.get(task) if isinstance(task, str) else None
                ctx.problems.add_line(line, safe_str(p))
