"""A run or a plan shown inline in a notebook (Jupyter, VS Code): ``_repr_html_``.

The report's own pieces (``report.py``: the summary cards, the timeline, the graph by
layer), drawn with smaller caps so that a notebook stays light however big the run, as one
HTML fragment: its style scoped to the fragment (a notebook page holds many outputs and
its own style), no script (a notebook may not run one; a tooltip is an SVG ``<title>``),
no request (every picture is inline SVG), and every name and value escaped, as in the
report.
"""

from __future__ import annotations

import itertools
import re
from types import SimpleNamespace
from typing import Any

from .markup import Markup, esc, join, tag
from .names import counted, duration
from .report import Caps, Run, clip, error_text, graph, static, summary, timeline
from .tracebacks import traceback_text

__all__ = ["plan_html", "run_html", "NOTEBOOK_CAPS"]

#: failed tasks shown with their error (the report's table has them all)
MAX_FAILURES = 5

#: what a notebook draws at most (the report draws far more: it is a page of its own)
NOTEBOOK_CAPS = Caps(
    bars=800, lanes=48, wait_lanes=8, labels=400, nodes=120, per_layer=16, layers=16, edges=400
)

_ids = itertools.count(1)  # unique ids per output: a notebook page holds many


def _scoped(css: str, scope: str) -> str:
    """The report's style with every rule applied inside ``scope`` only."""

    def rule(match: re.Match[str]) -> str:
        selectors = []
        for sel in match.group(1).split(","):
            sel = sel.strip()
            if sel in (":root", "body"):
                selectors.append(scope)
            elif sel.startswith("#"):  # the report page's tooltip and ids: not here
                continue
            else:
                selectors.append(f"{scope} {sel}")
        return f"{','.join(selectors)}{{{match.group(2)}}}" if selectors else ""

    return re.sub(r"([^{}]+)\{([^{}]*)\}", rule, css)


_EXTRA = """
{s}{{padding:4px 0;font:13px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif}}
{s} .lf-title{{font-weight:600;margin:0 0 8px;word-break:break-all}}
{s} .lf-h{{font-weight:600;margin:12px 0 4px}}
{s} .scroll{{max-height:380px}}{s} svg.timeline{{cursor:default}}
{s} .card{{min-width:110px;padding:6px 12px}}{s} .card .v{{font-size:16px}}
"""


def _unique(svg: Markup, n: int) -> Markup:
    """The report's ids made unique to this output (two outputs, two clip paths): the
    report's own constant attributes, replaced by others with a number."""
    text = svg.replace(' id="timeline"', "").replace(' id="graph"', "")
    text = text.replace('id="plot"', f'id="lf-plot-{n}"').replace(
        "url(#plot)", f"url(#lf-plot-{n})"
    )
    return Markup(text)


def _fragment(title: Markup, body: list[Markup | str], notes: list[str]) -> Markup:
    n = next(_ids)
    scope = f".lf-nb-{n}"
    # the report's own style, scoped: a package file, not a value
    style = Markup(_scoped(static("report.css"), scope) + _EXTRA.format(s=scope))
    notes_block = tag("ul", *[tag("li", note) for note in notes], class_="notes") if notes else ""
    return tag(
        "div",
        tag("style", style),
        tag("div", title, class_="lf-title"),
        *body,
        notes_block,
        class_=f"lf-nb lf-nb-{n}",
    )


def run_html(run: Run) -> Markup:
    """A finished run as an HTML fragment: summary cards, timeline, graph by layer."""
    notes: list[str] = []
    critical = set(run.critical_path)
    cards = summary(run, run.counts())
    # hover texts as SVG <title>s: a notebook runs no script
    bars = timeline(run, critical, notes, NOTEBOOK_CAPS, titles=True)
    nodes = graph(run, critical, notes, NOTEBOOK_CAPS, titles=True)
    n = next(_ids)
    name = f"{run.flow_name} · {run.run_id}" if run.flow_name else run.run_id
    body: list[Markup | str] = [
        tag("section", cards, class_="lf-summary"),
        _failures(run),
        tag("div", "Timeline", class_="lf-h"),
        tag("div", _unique(bars, n), class_="scroll"),
        tag("div", "Graph by layer", class_="lf-h"),
        tag("div", _unique(nodes, n), class_="scroll"),
    ]
    if len(run.tasks) > NOTEBOOK_CAPS.nodes:
        notes.append("run.to_html(path) writes the whole report, with every task's row.")
    return _fragment(esc(f"layerflow run {name}"), body, notes)


def _failures(run: Run) -> Markup:
    """The first failed tasks, each with its error and, unfolded, its traceback."""
    failed = [t for t in run.tasks.values() if t.status == "failed"]
    if not failed:
        return Markup()
    items = []
    for t in failed[:MAX_FAILURES]:
        error = clip(error_text(t.error), 300)
        tb = clip(traceback_text(t.error) or "", 8000)
        items.append(
            tag(
                "details",
                tag("summary", tag("strong", t.name), ": ", error),
                tag("pre", tb, class_="tb"),
            )
        )
    more = len(failed) - MAX_FAILURES
    if more > 0:
        items.append(tag("p", f"… and {counted(more, 'more failed task')}"))
    return join([tag("div", "Failed", class_="lf-h"), tag("div", *items, class_="lf-failed")])


def plan_html(plan: Any) -> Markup:
    """A plan as an HTML fragment: its numbers as cards, and the graph by layer (the
    critical path by past durations where the store has them, else by task count)."""
    notes: list[str] = []
    layers = plan.layers
    path = plan.critical_path()
    cards: list[tuple[str, str]] = [
        ("Tasks", f"{len(plan)}"),
        ("Layers", f"{len(layers)}"),
        ("Widest layer", f"{max((len(lay) for lay in layers), default=0)}"),
        ("Critical path", counted(len(path), "task")),
    ]
    if plan.history:  # a prediction from past runs' durations
        row = plan.what_if([None])[0]
        cards.append(("Predicted", duration(row.seconds)))
        cards.append(("Speedup", f"{row.speedup:.1f}×"))
        notes.append(f"Durations: {plan.history_note()}.")
    if plan.inputs:
        cards.append(("Inputs", ", ".join(plan.inputs)))
    html_cards = [
        tag("div", tag("div", k, class_="k"), tag("div", v, class_="v"), class_="card")
        for k, v in cards
    ]
    shape = SimpleNamespace(layers=layers, edges=plan.edges(), tasks={}, critical_path=path)
    drawn = _unique(graph(shape, set(path), notes, NOTEBOOK_CAPS, titles=True), next(_ids))
    crit = (
        tag(
            "p",
            tag("strong", "Critical path"),
            ": " + " → ".join(path[:16]) + (" → …" if len(path) > 16 else ""),
            class_="crit-path",
        )
        if path
        else ""
    )
    body: list[Markup | str] = [
        tag("div", *html_cards, class_="cards"),
        crit,
        tag("div", "Graph by layer", class_="lf-h"),
        tag("div", drawn, class_="scroll"),
    ]
    title = f"layerflow plan {plan.name}" if plan.name else "layerflow plan"
    return _fragment(esc(title), body, notes)
