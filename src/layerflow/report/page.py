"""The HTML report: one self-contained page (CSS, SVG and a little script inline) with a
Content-Security-Policy that forbids every request, so that it works offline, as an
attachment. The page, its CSS and its script are package files (``static/``)."""

from __future__ import annotations

import math
import os
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

from ..names import counted
from .common import MAX_GROUPS, Markup, Run, chain, esc, join, owner, secs, tag, void, write_file
from .graph import graph
from .table import table
from .timeline import timeline

__all__ = ["bound_line", "html_report", "legend", "static", "summary", "write_html"]


@cache
def static(name: str) -> str:
    """A package file of the page: ``page.html``, ``report.css`` or ``report.js`` (read once)."""
    return files(__package__).joinpath("static", name).read_text(encoding="utf-8")


def html_report(run: Run) -> str:
    """The run as one self-contained HTML page (inline CSS, SVG and script; no request)."""
    notes: list[str] = []
    critical = set(run.critical_path)
    counts = run.counts()
    cards = join([summary(run, counts), groups(run)])
    bars = timeline(run, critical, notes)
    nodes = graph(run, critical, notes)
    rows = table(run, critical, notes)
    title = f"{run.flow_name} · {run.run_id}" if run.flow_name else run.run_id
    parts = {
        "title": title,
        "summary": cards,
        "notes": tag("ul", *[tag("li", n) for n in notes], class_="notes") if notes else "",
        "timeline": bars,
        "graph": nodes,
        "table": rows,
        "legend": legend(run),
        "csp": CSP,
        # the package's own files: the style and the one script the page runs
        "css": Markup(static("report.css")),
        "js": Markup(static("report.js")),
    }
    # every value escaped unless it is markup already (the parts above, or a package file)
    return static("page.html").format(**{k: esc(v) for k, v in parts.items()})


def write_html(run: Run, path: str | os.PathLike[str]) -> Path:
    """Write :func:`html_report` to ``path``; return the path."""
    return write_file(path, html_report(run))


def bound_line(run: Run) -> Markup:
    """What bound this run, in words, from the planner's analysis of its durations."""
    bound = run.bound_by
    if not bound or run.duration < 0.05:
        return Markup()
    waited: dict[str, float] = {}
    for w in run.waits:
        key = w.reason.replace("'", "")  # "pool 'gpu'" is the planner's "pool gpu"
        waited[key] = waited.get(key, 0.0) + (w.finished_at - w.started_at)
    lanes = max((a.lane for a in run.attempts), default=-1) + 1
    if bound == "critical path":
        why = (
            f"the critical path ({counted(len(run.critical_path), 'task')} one after another): "
            "more workers or larger pools would not make the run shorter"
        )
    elif bound == "workers":
        why = f"the workers ({lanes} at once): more would make the run shorter"
    elif bound == "layers":
        why = "the layers: each waits for the slowest task of the one before (try mode dynamic)"
    elif bound in waited:
        why = f"{bound}: tasks waited {secs(waited[bound])} for it in all"
    else:
        why = bound
    return tag("p", tag("strong", "What bound this run:"), " ", why, class_="tally")


def speedup_card(run: Run) -> Markup:
    """The speedup, or why there is none (a failed run, or one too short to compare)."""
    from ..events import SHORTEST_COMPARED

    if run.status != "succeeded":
        return join(["—", tag("div", f"the run {run.status}", class_="why")])
    if run.duration < SHORTEST_COMPARED:
        return join(["—", tag("div", "too short to compare", class_="why")])
    return esc(f"{run.speedup:.1f}×")


def summary(run: Run, counts: dict[str, int]) -> Markup:
    """The run's numbers as cards, its tally by status, and why it stopped, what bound it
    and its critical path, when there is something to say."""
    lanes = max((a.lane for a in run.attempts), default=-1) + 1
    path = run.critical_path
    path_time = sum(run.tasks[n].duration for n in path if n in run.tasks)
    cells: list[tuple[str, Any]] = [
        ("Status", tag("span", run.status, class_=f"pill s-{run.status}")),
        ("Wall time", secs(run.duration)),
        ("Sequential estimate", secs(run.sequential_estimate)),
        ("Speedup", speedup_card(run)),
        ("Tasks", len(run.tasks)),
        ("Worker lanes", lanes),
    ]
    if run.cpu:
        cells.append(("CPU time", secs(sum(run.cpu.values()))))
    spent = run.budget or {}
    cells += [
        (k, f"{v:g}" + (f" of {spent[k]['budget']:g} budget" if k in spent else ""))
        for k, v in run.metrics.items()  # lf.record, and the budget it counts against
    ]
    cards = [
        tag("div", tag("div", k, class_="k"), tag("div", v, class_="v"), class_="card")
        for k, v in cells
    ]
    tally = ", ".join(f"{n} {s}" for s, n in counts.items())
    crit = (
        tag(
            "p",
            tag("strong", "Critical path"),
            f" ({counted(len(path), 'task')}, {secs(path_time)}): {chain(path)}",
            class_="crit-path",
        )
        if path
        else ""
    )
    stopped = (
        tag("p", tag("strong", "Stopped:"), " ", run.stop_reason, class_="tally")
        if run.stop_reason
        else ""
    )
    note = run.cpu_note()
    warn = (
        tag("p", tag("strong", "GIL:"), " ", note.split("Warning: ", 1)[1], class_="tally warn")
        if note is not None and "Warning: " in note
        else ""
    )
    return join(
        [tag("div", *cards, class_="cards"), tag("p", tally, class_="tally"), stopped]
        + [bound_line(run), warn, crit]
    )


def groups(run: Run) -> Markup:
    """Tasks by label (e.g. a Dask key's group): a 10,000-chunk array is a few rows."""
    if not run.labels:
        return Markup()
    rows: dict[str, list[Any]] = {}  # label -> [tasks, statuses, work, first start, last end]
    for name, t in run.tasks.items():
        row = rows.setdefault(run.labels.get(name, name), [0, {}, 0.0, math.inf, -math.inf])
        row[0] += 1
        row[1][t.status] = row[1].get(t.status, 0) + 1
        row[2] += t.duration
        if t.started_at is not None and t.finished_at is not None:
            row[3] = min(row[3], t.started_at)
            row[4] = max(row[4], t.finished_at)
    shown = sorted(rows.items(), key=lambda item: -item[1][2])[:MAX_GROUPS]
    body = [
        tag(
            "tr",
            tag("td", label),
            tag("td", n),
            tag("td", ", ".join(f"{c} {s}" for s, c in statuses.items())),
            tag("td", secs(work)),
            tag("td", secs(end - start) if end >= start else "-"),
        )
        for label, (n, statuses, work, start, end) in shown
    ]
    more = f" ({MAX_GROUPS} of {len(rows)}, the most work first)" if len(rows) > MAX_GROUPS else ""
    head = [tag("th", h, scope="col") for h in ("Group", "Tasks", "Statuses", "Work", "Wall span")]
    return join(
        [
            tag("h3", f"Groups{more}"),
            tag("table", tag("thead", tag("tr", *head)), tag("tbody", *body), class_="groups"),
        ]
    )


def legend(run: Run) -> Markup:
    """A key for what the timeline shows: only the outcomes and waits that are there."""
    outcomes = {a.outcome for a in run.attempts}
    retried = any(
        (t := owner(run, a.task)) is not None and a.attempt < t.attempts for a in run.attempts
    )
    kinds = {w.kind for w in run.waits}
    items = [
        (f"s-{o}", label, o in outcomes)
        for o, label in (
            ("succeeded", "succeeded"),
            ("cached", "cached"),
            ("failed", "failed"),
            ("timed_out", "timed out"),
            ("rate_limited", "pushed back"),
            ("skipped", "skipped (lf.Skip)"),
            ("cancelled", "cancelled"),
        )
    ]
    items.append(("retried s-failed", "failed, retried", retried))
    items += [
        (f"w-{k}", label, k in kinds)
        for k, label in (
            ("pool", "waiting for a pool"),
            ("rate_limit", "waiting for a rate limit"),
            ("retry", "waiting to retry"),
        )
    ]
    out = [
        tag("span", swatch(cls), label, class_="key") for cls, label, present in items if present
    ]
    if run.critical_path:
        critical = swatch("s-succeeded crit", x=1, y=1, width=12, height=8)
        out.append(tag("span", critical, "critical path (outlined)", class_="key"))
    out.append(tag("span", "wheel: zoom · drag: pan · double-click: reset", class_="key hint"))
    return join(out)


def swatch(cls: str, **box: int) -> Markup:
    """A legend's sample of a bar: a 14 by 10 picture (its rect the whole of it, or ``box``)."""
    rect = void("rect", class_=cls, **(box or {"width": 14, "height": 10}))
    return tag("svg", rect, width=14, height=10)


# nothing may be fetched: the page is whole without the network, and stays private
CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"
