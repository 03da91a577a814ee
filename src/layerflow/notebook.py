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

from .names import counted, duration
from .report import Caps, clip, error_text, esc, graph, static, summary, timeline
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


def _tooltips(svg: str) -> str:
    """The report's ``data-tip`` hover texts as SVG ``<title>``s (no script needed), and
    without the zoom script's data (``data-t0``/``data-t1``), which nothing here reads."""
    svg = re.sub(r' data-t[01]="[^"]*"', "", svg)
    svg = re.sub(
        r'<rect ([^>]*?) data-tip="([^"]*)"([^>]*)/>', r"<rect \1\3><title>\2</title></rect>", svg
    )
    return re.sub(r'<g ([^>]*?) data-tip="([^"]*)"([^>]*)>', r"<g \1\3><title>\2</title>", svg)


def _unique(svg: str, n: int) -> str:
    """The report's ids made unique to this output (two outputs, two clip paths)."""
    svg = svg.replace(' id="timeline"', "").replace(' id="graph"', "")
    return svg.replace('id="plot"', f'id="lf-plot-{n}"').replace("url(#plot)", f"url(#lf-plot-{n})")


def _fragment(title: str, body: str, notes: list[str]) -> str:
    n = next(_ids)
    scope = f".lf-nb-{n}"
    style = _scoped(static("report.css"), scope) + _EXTRA.format(s=scope)
    note_html = "".join(f"<li>{esc(note)}</li>" for note in notes)
    notes_block = f'<ul class="notes">{note_html}</ul>' if notes else ""
    return (
        f'<div class="lf-nb lf-nb-{n}"><style>{style}</style>'
        f'<div class="lf-title">{title}</div>{body}{notes_block}</div>'
    )


def run_html(run: Any) -> str:
    """A finished run as an HTML fragment: summary cards, timeline, graph by layer."""
    notes: list[str] = []
    critical = set(run.critical_path)
    cards = summary(run, run.counts())
    bars = _tooltips(timeline(run, critical, notes, NOTEBOOK_CAPS))
    nodes = _tooltips(graph(run, critical, notes, NOTEBOOK_CAPS))
    n = next(_ids)
    name = f"{run.flow_name} · {run.run_id}" if run.flow_name else run.run_id
    body = (
        f'<section class="lf-summary">{cards}</section>{_failures(run)}'
        f'<div class="lf-h">Timeline</div><div class="scroll">{_unique(bars, n)}</div>'
        f'<div class="lf-h">Graph by layer</div><div class="scroll">{_unique(nodes, n)}</div>'
    )
    if len(run.tasks) > NOTEBOOK_CAPS.nodes:
        notes.append("run.to_html(path) writes the whole report, with every task's row.")
    return _fragment(f"layerflow run {esc(name)}", body, notes)


def _failures(run: Any) -> str:
    """The first failed tasks, each with its error and, unfolded, its traceback."""
    failed = [t for t in run.tasks.values() if t.status == "failed"]
    if not failed:
        return ""
    items = []
    for t in failed[:MAX_FAILURES]:
        error = clip(error_text(t.error), 300)
        tb = clip(traceback_text(t.error) or "", 8000)
        items.append(
            f"<details><summary><strong>{esc(t.name)}</strong>: {esc(error)}</summary>"
            f'<pre class="tb">{esc(tb)}</pre></details>'
        )
    more = len(failed) - MAX_FAILURES
    if more > 0:
        items.append(f"<p>… and {counted(more, 'more failed task')}</p>")
    return f'<div class="lf-h">Failed</div><div class="lf-failed">{"".join(items)}</div>'


def plan_html(plan: Any) -> str:
    """A plan as an HTML fragment: its numbers as cards, and the graph by layer (the
    critical path by past durations where the store has them, else by task count)."""
    notes: list[str] = []
    layers = plan.layers
    path = plan.critical_path()
    cards = [
        ("Tasks", f"{len(plan)}"),
        ("Layers", f"{len(layers)}"),
        ("Widest layer", f"{max((len(lay) for lay in layers), default=0)}"),
        ("Critical path", counted(len(path), "task")),
    ]
    if plan.history:  # a prediction from past runs' durations
        row = plan.what_if([None])[0]
        cards.append(("Predicted", esc(duration(row.seconds))))
        cards.append(("Speedup", f"{row.speedup:.1f}×"))
        notes.append(f"Durations: {plan.history_note()}.")
    if plan.inputs:
        cards.append(("Inputs", esc(", ".join(plan.inputs))))
    html_cards = "".join(
        f'<div class="card"><div class="k">{k}</div><div class="v">{v}</div></div>'
        for k, v in cards
    )
    shape = SimpleNamespace(layers=layers, edges=plan.edges(), tasks={}, critical_path=path)
    drawn = _tooltips(graph(shape, set(path), notes, NOTEBOOK_CAPS))
    crit = (
        f'<p class="crit-path"><strong>Critical path</strong>: {esc(" → ".join(path[:16]))}'
        f"{' → …' if len(path) > 16 else ''}</p>"
        if path
        else ""
    )
    drawn = _unique(drawn, next(_ids))
    body = (
        f'<div class="cards">{html_cards}</div>{crit}'
        f'<div class="lf-h">Graph by layer</div><div class="scroll">{drawn}</div>'
    )
    title = f"layerflow plan {esc(plan.name)}" if plan.name else "layerflow plan"
    return _fragment(title, body, notes)
