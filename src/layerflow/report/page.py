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
from .common import MAX_GROUPS, RunResult, chain, esc, owner, secs, write_file
from .graph import graph
from .table import table
from .timeline import timeline

__all__ = ["bound_line", "html_report", "legend", "static", "summary", "write_html"]


@cache
def static(name: str) -> str:
    """A package file of the page: ``page.html``, ``report.css`` or ``report.js`` (read once)."""
    return files(__package__).joinpath("static", name).read_text(encoding="utf-8")


def html_report(run: RunResult) -> str:
    """The run as one self-contained HTML page (inline CSS, SVG and script; no request)."""
    notes: list[str] = []
    critical = set(run.critical_path)
    counts = run.counts()
    cards = summary(run, counts) + groups(run)
    bars = timeline(run, critical, notes)
    nodes = graph(run, critical, notes)
    rows = table(run, critical, notes)
    title = f"{run.flow_name} · {run.run_id}" if run.flow_name else run.run_id
    note_html = "".join(f"<li>{esc(n)}</li>" for n in notes)
    return static("page.html").format(
        title=esc(title),
        summary=cards,
        notes=f'<ul class="notes">{note_html}</ul>' if notes else "",
        timeline=bars,
        graph=nodes,
        table=rows,
        legend=legend(run),
        csp=CSP,
        css=static("report.css"),
        js=static("report.js"),
    )


def write_html(run: RunResult, path: str | os.PathLike[str]) -> Path:
    """Write :func:`html_report` to ``path``; return the path."""
    return write_file(path, html_report(run))


def bound_line(run: RunResult) -> str:
    """What bound this run, in words, from the planner's analysis of its durations."""
    bound = run.bound_by
    if not bound or run.duration < 0.05:
        return ""
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
    return f'<p class="tally"><strong>What bound this run:</strong> {esc(why)}</p>'


def speedup_card(run: RunResult) -> str:
    """The speedup, or why there is none (a failed run, or one too short to compare)."""
    from ..events import SHORTEST_COMPARED

    if run.status != "succeeded":
        return f'—<div class="why">the run {esc(run.status)}</div>'
    if run.duration < SHORTEST_COMPARED:
        return '—<div class="why">too short to compare</div>'
    return f"{run.speedup:.1f}×"


def summary(run: RunResult, counts: dict[str, int]) -> str:
    lanes = max((a.lane for a in run.attempts), default=-1) + 1
    path = run.critical_path
    path_time = sum(run.tasks[n].duration for n in path if n in run.tasks)
    cells = [
        ("Status", f'<span class="pill s-{esc(run.status)}">{esc(run.status)}</span>'),
        ("Wall time", esc(secs(run.duration))),
        ("Sequential estimate", esc(secs(run.sequential_estimate))),
        ("Speedup", speedup_card(run)),
        ("Tasks", f"{len(run.tasks)}"),
        ("Worker lanes", f"{lanes}"),
    ]
    if run.cpu:
        cells.append(("CPU time", esc(secs(sum(run.cpu.values())))))
    spent = run.budget or {}
    cells += [
        (esc(k), esc(f"{v:g}") + (f" of {spent[k]['budget']:g} budget" if k in spent else ""))
        for k, v in run.metrics.items()  # lf.record, and the budget it counts against
    ]
    cards = "".join(
        f'<div class="card"><div class="k">{k}</div><div class="v">{v}</div></div>'
        for k, v in cells
    )
    tally = ", ".join(f"{n} {esc(s)}" for s, n in counts.items())
    crit = (
        f'<p class="crit-path"><strong>Critical path</strong> ({counted(len(path), "task")}, '
        f"{esc(secs(path_time))}): {esc(chain(path))}</p>"
        if path
        else ""
    )
    stopped = (
        f'<p class="tally"><strong>Stopped:</strong> {esc(run.stop_reason)}</p>'
        if run.stop_reason
        else ""
    )
    bound = bound_line(run)
    note = run.cpu_note()
    warn = (
        f'<p class="tally warn"><strong>GIL:</strong> {esc(note.split("Warning: ", 1)[1])}</p>'
        if note is not None and "Warning: " in note
        else ""
    )
    return (
        f'<div class="cards">{cards}</div><p class="tally">{tally}</p>{stopped}{bound}{warn}{crit}'
    )


def groups(run: RunResult) -> str:
    """Tasks by label (e.g. a Dask key's group): a 10,000-chunk array is a few rows."""
    if not run.labels:
        return ""
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
    body = "".join(
        f"<tr><td>{esc(label)}</td><td>{n}</td>"
        f"<td>{esc(', '.join(f'{c} {s}' for s, c in statuses.items()))}</td>"
        f"<td>{esc(secs(work))}</td>"
        f"<td>{esc(secs(end - start) if end >= start else '-')}</td></tr>"
        for label, (n, statuses, work, start, end) in shown
    )
    more = f" ({MAX_GROUPS} of {len(rows)}, the most work first)" if len(rows) > MAX_GROUPS else ""
    return (
        f'<h3>Groups{more}</h3><table class="groups"><thead><tr><th scope="col">Group</th>'
        '<th scope="col">Tasks</th><th scope="col">Statuses</th><th scope="col">Work</th>'
        f'<th scope="col">Wall span</th></tr></thead><tbody>{body}</tbody></table>'
    )


def legend(run: RunResult) -> str:
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
        f'<span class="key"><svg width="14" height="10"><rect class="{cls}" width="14" '
        f'height="10"/></svg>{label}</span>'
        for cls, label, present in items
        if present
    ]
    if run.critical_path:
        out.append(
            '<span class="key"><svg width="14" height="10"><rect class="s-succeeded crit" '
            'x="1" y="1" width="12" height="8"/></svg>critical path (outlined)</span>'
        )
    out.append('<span class="key hint">wheel: zoom · drag: pan · double-click: reset</span>')
    return "".join(out)


# nothing may be fetched: the page is whole without the network, and stays private
CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"
