"""Pictures of a finished run: a Chrome trace and a self-contained HTML report.

Pure functions of a :class:`~layerflow.result.RunResult` (a live run's, or one the store
loaded with ``Store.load_run``) that write one file each. Everything is drawn from what the
run recorded (its attempts, waits, layers, edges), never from calls inside the scheduler.

- :func:`chrome_trace` is Chrome's trace event format (Perfetto, chrome://tracing): process
  1 has a thread per worker lane with a complete event per attempt; process 2 has the waits
  (for a resource pool, a rate window, a retry delay), each its own event.
- :func:`html_report` is one HTML file with inline CSS, SVG and a little script, and a
  Content-Security-Policy that forbids every request: it works offline, as an attachment.
  Large runs draw at most ``MAX_BARS`` bars, ``MAX_NODES`` graph nodes and ``MAX_ROWS``
  table rows (the failed, the critical path and the longest first), and say so.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from .errors import (
    ReportError,  # noqa: F401 (re-exported)
    safe_str,
)
from .metrics import format_metrics
from .names import counted, owner_of
from .names import duration as _secs
from .tracebacks import traceback_text

# What these functions read: a layerflow.result.RunResult and its TaskRun and Attempt
# records, duck-typed, because result.py imports this module (run.to_html), not the reverse.
# (Any until the report's inputs get Protocols of their own: issue 33, the report package.)
RunResult: TypeAlias = Any
TaskRun: TypeAlias = Any
Attempt: TypeAlias = Any

__all__ = [
    "ReportError",
    "check_writable",
    "chrome_trace",
    "write_chrome_trace",
    "html_report",
    "write_html",
    "MAX_BARS",
    "MAX_NODES",
    "MAX_ROWS",
]

MAX_BARS = 10_000  # attempts drawn on the timeline
MAX_LANES = 300  # worker lanes drawn (an unbounded async run can have thousands)
MAX_WAIT_LANES = 60
MAX_NODES = 400  # graph nodes drawn
MAX_PER_LAYER = 40
MAX_LAYERS = 40
MAX_EDGES = 3_000
MAX_ROWS = 5_000  # table rows
MAX_GROUPS = 200  # rows of the table of task groups (labels)


@dataclass(frozen=True)
class Caps:
    """How much the timeline and the graph draw at most: the report's, and a notebook's
    smaller ones (``notebook.py``)."""

    bars: int = MAX_BARS
    lanes: int = MAX_LANES
    wait_lanes: int = MAX_WAIT_LANES
    labels: int = 3000
    nodes: int = MAX_NODES
    per_layer: int = MAX_PER_LAYER
    layers: int = MAX_LAYERS
    edges: int = MAX_EDGES


REPORT_CAPS = Caps()


def check_writable(path: str | os.PathLike[str]) -> Path:
    """The path, if a file can be created there; otherwise a :class:`ReportError` that
    says what is wrong and what to do (checked before a run, so it fails before running)."""
    p = Path(path)
    folder = p.parent
    if p.is_dir():
        raise ReportError(f"cannot write {p}: it is a folder; give a file name, e.g. {p}/run.html")
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise ReportError(
            f"cannot write {p}: the folder {folder} {what}; create it first "
            f"(mkdir -p {folder}) or choose another path"
        )
    return p


def _write(path: str | os.PathLike[str], text: str) -> Path:
    p = check_writable(path)
    try:
        p.write_text(text, encoding="utf-8")
    except OSError as e:
        raise ReportError(f"cannot write {p}: {e.strerror or e}") from None
    return p


def _task_cell(t: TaskRun, tries: list[Attempt], t0: float, details: dict[str, str]) -> str:
    """A task's name, unfolding to its detail: every attempt, and its value (a run loaded
    from the store has no values: they stay in their result files)."""
    what = details.get(t.name)
    lines = [what] if what else []
    lines += [
        f"attempt {a.attempt}: {a.outcome} at {_secs(a.started_at - t0)} for "
        f"{_secs(a.finished_at - a.started_at)}" + (f" ({_clip(a.error, 200)})" if a.error else "")
        for a in sorted(tries, key=lambda a: a.attempt)
    ]
    if t.ok and t.value is not None:
        from .preview import preview

        lines.append("value:\n" + preview(t.value, lines=12, chars=1500))
    if not lines and not t.logs:
        return _esc(t.name)
    return (
        f'<details class="task"><summary>{_esc(t.name)}</summary>'
        + (f'<pre class="tb">{_esc(chr(10).join(lines))}</pre>' if lines else "")
        + _logs_block(t.logs)
        + "</details>"
    )


#: what a report shows of one task's output (the store keeps its last megabyte)
_LOGS_SHOWN = 20_000


def _logs_block(logs: str) -> str:
    """What a task printed and logged, escaped: its end, if long."""
    if not logs:
        return ""
    if len(logs) > _LOGS_SHOWN:
        cut = logs[-_LOGS_SHOWN:]
        cut = cut[cut.find("\n") + 1 :] if "\n" in cut else cut  # whole lines
        logs = f"[… {len(logs) - len(cut):,} earlier characters: layerflow show --logs …]\n{cut}"
    return f'<pre class="tb logs" title="what it printed and logged">output:\n{_esc(logs)}</pre>'


def _error_cell(err: str, tb: str) -> str:
    """The error column: the error, and its traceback to unfold when there is one."""
    if tb and tb.strip() != err.strip():
        return (
            f'<td class="err"><details><summary title="{_esc(_clip(err, 2000))}">'
            f'{_esc(_clip(err, 160))}</summary><pre class="tb">{_esc(_clip(tb, 20000))}'
            "</pre></details></td>"
        )
    return f'<td class="err" title="{_esc(_clip(err, 2000))}">{_esc(_clip(err, 160))}</td>'


def _error_text(error: BaseException | None) -> str:
    """An error as people read it; one loaded from the store is its recorded text."""
    if error is None:
        return ""
    from .errors import RecordedError

    return str(error) if isinstance(error, RecordedError) else safe_str(error)


def _owner(run: RunResult, name: str) -> TaskRun | None:
    """The task's record, or for a map subtask ``m[3]`` without one, its map task's."""
    t = run.tasks.get(name)
    if t is None and name.endswith("]"):
        t = run.tasks.get(name.rsplit("[", 1)[0])
    return t


# --- Chrome trace ---------------------------------------------------------------------------

_TRACE_COLORS = {  # chrome://tracing's reserved color names; Perfetto colors by name
    "succeeded": "good",
    "cached": "good",
    "failed": "terrible",
    "timed_out": "terrible",
    "rate_limited": "bad",
    "cancelled": "grey",
    "skipped": "grey",
}


def chrome_trace(run: RunResult) -> dict[str, Any]:
    """The run in Chrome's trace event format: ``{"traceEvents": [...]}`` with times in
    microseconds from the run's start."""
    t0 = run.started_at

    def us(t: float) -> float:
        return round((t - t0) * 1e6, 3)

    title = (
        f"layerflow {run.flow_name} {run.run_id}" if run.flow_name else f"layerflow {run.run_id}"
    )
    events: list[dict[str, Any]] = [_meta("process_name", 1, 0, title)]
    events.append(_meta("process_sort_index", 1, 0, sort_index=0))
    attempts, waits = run.attempts, run.waits
    for lane in range(max((a.lane for a in attempts), default=-1) + 1):
        events.append(_meta("thread_name", 1, lane + 1, f"worker {lane + 1}"))
        events.append(_meta("thread_sort_index", 1, lane + 1, sort_index=lane))
    critical = set(run.critical_path)
    for a in attempts:
        t = _owner(run, a.task)
        args: dict[str, Any] = {
            "status": t.status if t is not None else a.outcome,
            "attempt": a.attempt,
            "attempts": t.attempts if t is not None else a.attempt,
            "layer": t.layer if t is not None else None,
            "outcome": a.outcome,
        }
        if a.error:
            args["error"] = a.error
        if t is not None and t.metrics and a.attempt == t.attempts:  # the task's last attempt
            args["metrics"] = t.metrics
        if a.task in critical:
            args["critical_path"] = True
        events.append(
            {
                "name": a.task,
                "cat": "task",
                "ph": "X",
                "ts": us(a.started_at),
                "dur": max(0.0, us(a.finished_at) - us(a.started_at)),
                "pid": 1,
                "tid": a.lane + 1,
                "cname": _TRACE_COLORS.get(a.outcome, "generic_work"),
                "args": args,
            }
        )
    if waits:
        events.append(_meta("process_name", 2, 0, "waiting (limits and retries)"))
        events.append(_meta("process_sort_index", 2, 0, sort_index=1))
        for lane in range(max(w.lane for w in waits) + 1):
            events.append(_meta("thread_name", 2, lane + 1, f"waits {lane + 1}"))
        for w in waits:
            events.append(
                {
                    "name": f"wait: {w.task}",
                    "cat": w.kind,
                    "ph": "X",
                    "ts": us(w.started_at),
                    "dur": max(0.0, us(w.finished_at) - us(w.started_at)),
                    "pid": 2,
                    "tid": w.lane + 1,
                    "cname": "yellow" if w.kind == "retry" else "olive",
                    "args": {"task": w.task, "kind": w.kind, "reason": w.reason},
                }
            )
    return {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {
            "run_id": run.run_id,
            "flow": run.flow_name,
            "status": run.status,
            "duration_s": run.duration,
            "sequential_estimate_s": run.sequential_estimate,
            "speedup": run.speedup,
            "metrics": run.metrics,
            "budget": run.budget,
            "stop_reason": run.stop_reason,
        },
    }


def _meta(
    name: str, pid: int, tid: int, label: str | None = None, *, sort_index: int | None = None
) -> dict[str, Any]:
    args: dict[str, Any] = {"name": label} if label is not None else {"sort_index": sort_index}
    return {"name": name, "ph": "M", "pid": pid, "tid": tid, "args": args}


def write_chrome_trace(run: RunResult, path: str | os.PathLike[str]) -> Path:
    """Write :func:`chrome_trace` as JSON to ``path``; return the path."""
    return _write(path, json.dumps(chrome_trace(run), separators=(",", ":")) + "\n")


# --- HTML report ----------------------------------------------------------------------------


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _longest_first(items: list[Any], keep: Callable[[Any], bool], limit: int) -> list[Any]:
    """At most ``limit`` items: those ``keep`` says first, then the longest."""
    if len(items) <= limit:
        return items
    ranked = sorted(items, key=lambda x: (not keep(x), -(x.finished_at - x.started_at)))
    return ranked[:limit]


def _chain(names: list[str], n: int = 8) -> str:
    if len(names) <= 2 * n:
        shown = names
    else:
        shown = [*names[:n], f"… {len(names) - 2 * n} more …", *names[-n:]]
    return " → ".join(shown)


def html_report(run: RunResult) -> str:
    """The run as one self-contained HTML page (inline CSS, SVG and script; no request)."""
    notes: list[str] = []
    critical = set(run.critical_path)
    counts = run.counts()
    summary = _summary(run, counts) + _groups(run)
    timeline = _timeline(run, critical, notes)
    graph = _graph(run, critical, notes)
    table = _table(run, critical, notes)
    title = f"{run.flow_name} · {run.run_id}" if run.flow_name else run.run_id
    note_html = "".join(f"<li>{_esc(n)}</li>" for n in notes)
    return _PAGE.format(
        title=_esc(title),
        summary=summary,
        notes=f'<ul class="notes">{note_html}</ul>' if notes else "",
        timeline=timeline,
        graph=graph,
        table=table,
        legend=_legend(run),
        csp=_CSP,
        css=_CSS,
        js=_JS,
    )


def write_html(run: RunResult, path: str | os.PathLike[str]) -> Path:
    """Write :func:`html_report` to ``path``; return the path."""
    return _write(path, html_report(run))


def _bound_line(run: RunResult) -> str:
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
        why = f"{bound}: tasks waited {_secs(waited[bound])} for it in all"
    else:
        why = bound
    return f'<p class="tally"><strong>What bound this run:</strong> {_esc(why)}</p>'


def _speedup_card(run: RunResult) -> str:
    """The speedup, or why there is none (a failed run, or one too short to compare)."""
    from .events import SHORTEST_COMPARED

    if run.status != "succeeded":
        return f'—<div class="why">the run {_esc(run.status)}</div>'
    if run.duration < SHORTEST_COMPARED:
        return '—<div class="why">too short to compare</div>'
    return f"{run.speedup:.1f}×"


def _summary(run: RunResult, counts: dict[str, int]) -> str:
    lanes = max((a.lane for a in run.attempts), default=-1) + 1
    path = run.critical_path
    path_time = sum(run.tasks[n].duration for n in path if n in run.tasks)
    cells = [
        ("Status", f'<span class="pill s-{_esc(run.status)}">{_esc(run.status)}</span>'),
        ("Wall time", _esc(_secs(run.duration))),
        ("Sequential estimate", _esc(_secs(run.sequential_estimate))),
        ("Speedup", _speedup_card(run)),
        ("Tasks", f"{len(run.tasks)}"),
        ("Worker lanes", f"{lanes}"),
    ]
    if run.cpu:
        cells.append(("CPU time", _esc(_secs(sum(run.cpu.values())))))
    spent = run.budget or {}
    cells += [
        (_esc(k), _esc(f"{v:g}") + (f" of {spent[k]['budget']:g} budget" if k in spent else ""))
        for k, v in run.metrics.items()  # lf.record, and the budget it counts against
    ]
    cards = "".join(
        f'<div class="card"><div class="k">{k}</div><div class="v">{v}</div></div>'
        for k, v in cells
    )
    tally = ", ".join(f"{n} {_esc(s)}" for s, n in counts.items())
    crit = (
        f'<p class="crit-path"><strong>Critical path</strong> ({counted(len(path), "task")}, '
        f"{_esc(_secs(path_time))}): {_esc(_chain(path))}</p>"
        if path
        else ""
    )
    stopped = (
        f'<p class="tally"><strong>Stopped:</strong> {_esc(run.stop_reason)}</p>'
        if run.stop_reason
        else ""
    )
    bound = _bound_line(run)
    note = run.cpu_note()
    warn = (
        f'<p class="tally warn"><strong>GIL:</strong> {_esc(note.split("Warning: ", 1)[1])}</p>'
        if note is not None and "Warning: " in note
        else ""
    )
    return (
        f'<div class="cards">{cards}</div><p class="tally">{tally}</p>{stopped}{bound}{warn}{crit}'
    )


def _groups(run: RunResult) -> str:
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
        f"<tr><td>{_esc(label)}</td><td>{n}</td>"
        f"<td>{_esc(', '.join(f'{c} {s}' for s, c in statuses.items()))}</td>"
        f"<td>{_esc(_secs(work))}</td>"
        f"<td>{_esc(_secs(end - start) if end >= start else '-')}</td></tr>"
        for label, (n, statuses, work, start, end) in shown
    )
    more = f" ({MAX_GROUPS} of {len(rows)}, the most work first)" if len(rows) > MAX_GROUPS else ""
    return (
        f'<h3>Groups{more}</h3><table class="groups"><thead><tr><th scope="col">Group</th>'
        '<th scope="col">Tasks</th><th scope="col">Statuses</th><th scope="col">Work</th>'
        f'<th scope="col">Wall span</th></tr></thead><tbody>{body}</tbody></table>'
    )


def _tip_attempt(a: Attempt, t: TaskRun | None, t0: float, critical: bool) -> str:
    lines = [a.task]
    tries = t.attempts if t is not None else a.attempt
    layer = f" · layer {t.layer}" if t is not None else ""
    lines.append(f"attempt {a.attempt} of {tries} · {a.outcome.replace('_', ' ')}{layer}")
    lines.append(
        f"{_secs(a.started_at - t0)} → {_secs(a.finished_at - t0)} "
        f"({_secs(a.finished_at - a.started_at)})"
    )
    if a.error:
        lines.append(_clip(a.error, 300))
    if critical:
        lines.append("on the critical path")
    return "\n".join(lines)


def _ticks(span: float) -> list[float]:
    raw = span / 8 if span > 0 else 1
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    return [k * step for k in range(int(span / step) + 1)]


_LABEL_CHAR = 6.2  # px per character of a bar's name (11px font): a name is drawn if it fits
MAX_LABELS = REPORT_CAPS.labels
MIN_BAR = 3.0  # px: an instant task still shows


def _wait_rows(waits: list[Any]) -> list[tuple[str, str, list[Any]]]:
    """Waits summarized per limit: one row per pool or rate limit (and one for retries),
    the limit held up most first, as (kind, label, its waits)."""
    rows: dict[tuple[str, str], list[Any]] = {}
    for w in waits:
        label = "retry delays" if w.kind == "retry" else w.reason
        rows.setdefault((w.kind, label), []).append(w)
    ranked = sorted(rows.items(), key=lambda kv: -sum(w.finished_at - w.started_at for w in kv[1]))
    return [(kind, label, ws) for (kind, label), ws in ranked]


def _timeline(
    run: RunResult, critical: set[str], notes: list[str], caps: Caps = REPORT_CAPS
) -> str:
    t0 = run.started_at
    attempts, waits = run.attempts, run.waits
    if not attempts:
        return '<p class="empty">No task ran in this run.</p>'
    end = max(run.finished_at, max(a.finished_at for a in attempts))
    span = max(end - t0, 1e-6)
    drawn = [a for a in attempts if a.lane < caps.lanes]
    if len(drawn) < len(attempts):
        notes.append(
            f"The timeline draws the first {caps.lanes} of "
            f"{max(a.lane for a in attempts) + 1} worker lanes."
        )
    if len(drawn) > caps.bars:
        notes.append(
            f"The timeline draws {caps.bars:,} of {len(drawn):,} attempts: "
            "the critical path, then the longest."
        )
        drawn = _longest_first(drawn, lambda a: a.task in critical, caps.bars)
    all_rows = _wait_rows(waits)
    wait_rows = all_rows[: caps.wait_lanes]
    mapped = {name.rsplit("[", 1)[0] for name in run.tasks if name.endswith("]")}
    never = sum(1 for t in run.tasks.values() if not t.attempts and t.name not in mapped)
    if never:
        task_s = "task never started" if never == 1 else "tasks never started"
        notes.append(
            f"{never} {task_s} (skipped, cancelled, reused or pending): "
            "no bar on the timeline, a row in the table."
        )
    lanes = min(max(a.lane for a in attempts) + 1, caps.lanes)
    rows = lanes + len(wait_rows)
    h = max(3, min(22, 900 // max(rows, 1)))
    gutter, width, top = 150, 1000, 26
    gap = 22 if wait_rows else 0
    height = top + lanes * h + gap + len(wait_rows) * h + 6
    bar_h = max(2, h - 4)

    def x(t: float) -> float:
        return gutter + (t - t0) / span * width

    out = [
        f'<svg id="timeline" class="timeline" width="{gutter + width + 40}" height="{height}" '
        f'viewBox="0 0 {gutter + width + 40} {height}" role="img" data-span="{span:.9g}" '
        f'data-gutter="{gutter}" data-width="{width}" '
        f'aria-label="timeline of the run by worker lane (wheel: zoom, drag: pan)">'
        f'<defs><clipPath id="plot"><rect x="{gutter}" y="0" width="{width}" '
        f'height="{height}"/></clipPath></defs><g class="ticks">'
    ]
    for tick in _ticks(span):
        tx = x(t0 + tick)
        out.append(
            f'<line class="tick" x1="{tx:.1f}" y1="{top - 4}" x2="{tx:.1f}" y2="{height}"/>'
            f'<text class="axis" x="{tx:.1f}" y="{top - 8}">{_esc(_secs(tick) if tick else "0")}'
            "</text>"
        )
    out.append("</g>")
    labels = h >= 11
    for lane in range(lanes):
        y = top + lane * h
        if lane % 2 == 0 and lanes <= 200:
            out.append(f'<rect class="lane" x="{gutter}" y="{y}" width="{width}" height="{h}"/>')
        if labels:
            out.append(
                f'<text class="lbl" x="{gutter - 8}" y="{y + h - 5}">worker {lane + 1}</text>'
            )
    out.append('<g class="plot" clip-path="url(#plot)">')
    named = 0
    for a in drawn:
        t = _owner(run, a.task)
        classes = f"bar s-{a.outcome}"
        if a.task in critical:
            classes += " crit"
        if t is not None and a.attempt < t.attempts:
            classes += " retried"
        x0 = x(a.started_at)
        w = max(MIN_BAR, x(a.finished_at) - x0)
        y = top + a.lane * h + (h - bar_h) / 2
        tip = _tip_attempt(a, t, t0, a.task in critical)
        out.append(
            f'<rect class="{classes}" x="{x0:.2f}" y="{y:.1f}" width="{w:.2f}" '
            f'height="{bar_h}" data-t0="{a.started_at - t0:.9g}" '
            f'data-t1="{a.finished_at - t0:.9g}" data-task="{_esc(a.task)}" '
            f'data-tip="{_esc(tip)}"/>'
        )
        if labels and named < caps.labels:  # the name on the bar, shown when it fits
            named += 1
            fits = w - 6 >= _LABEL_CHAR * min(len(a.task), 4)
            out.append(
                f'<text class="bl" x="{x0 + 3:.2f}" y="{y + bar_h / 2 + 4:.1f}" '
                f'data-t0="{a.started_at - t0:.9g}" data-t1="{a.finished_at - t0:.9g}" '
                f'data-name="{_esc(a.task)}"{"" if fits else " hidden"}>'
                f"{_esc(_fit(a.task, w))}</text>"
            )
    if wait_rows:
        base = top + lanes * h + gap
        out.append(
            f'<line class="sep" x1="{gutter}" y1="{base - 4}" x2="{gutter + width}" '
            f'y2="{base - 4}"/>'
        )
        for row, (kind, _label, ws) in enumerate(wait_rows):
            y = base + row * h + (h - bar_h) / 2
            for w in ws[: caps.bars // 4]:
                x0 = x(w.started_at)
                ww = max(MIN_BAR, x(w.finished_at) - x0)
                tip = (
                    f"{w.task}\nwaiting: {w.reason}\n{_secs(w.started_at - t0)} → "
                    f"{_secs(w.finished_at - t0)} ({_secs(w.finished_at - w.started_at)})"
                )
                out.append(
                    f'<rect class="wait w-{_esc(kind)}" x="{x0:.2f}" y="{y:.1f}" '
                    f'width="{ww:.2f}" height="{bar_h}" data-t0="{w.started_at - t0:.9g}" '
                    f'data-t1="{w.finished_at - t0:.9g}" data-task="{_esc(w.task)}" '
                    f'data-tip="{_esc(tip)}"/>'
                )
    out.append("</g>")
    if wait_rows and labels:
        base = top + lanes * h + gap
        out.append(f'<text class="lbl group" x="{gutter - 8}" y="{base - 7}">waiting for</text>')
        for row, (_kind, label, ws) in enumerate(wait_rows):
            total = sum(w.finished_at - w.started_at for w in ws)
            name = label  # "pool 'gpu'", "rate limit 'api'", "retry delays"
            tip = f"{name}: {len(ws)} waits, {_secs(total)} in all"
            out.append(
                f'<text class="lbl" x="{gutter - 8}" y="{base + row * h + h - 5}" '
                f'data-tip="{_esc(tip)}">{_esc(_clip(name, 22))}</text>'
            )
    if len(all_rows) > caps.wait_lanes:
        notes.append(f"The timeline draws the {caps.wait_lanes} limits that held tasks longest.")
    out.append("</svg>")
    return "".join(out)


def _fit(name: str, width: float) -> str:
    """``name`` cut to what a bar ``width`` px wide can hold."""
    room = int((width - 6) / _LABEL_CHAR)
    return name if len(name) <= room else name[: max(room - 1, 1)] + "…"


def _tip_task(t: TaskRun, needs: list[str], critical: bool) -> str:
    plural = "s" if t.attempts != 1 else ""
    lines = [
        t.name,
        f"{t.status} · layer {t.layer} · {t.attempts} attempt{plural} · {_secs(t.duration)}",
    ]
    if needs:
        more = f" (+{len(needs) - 8} more)" if len(needs) > 8 else ""
        lines.append("needs: " + ", ".join(needs[:8]) + more)
    if t.error is not None:
        lines.append(_clip(_error_text(t.error), 300))
    if critical:
        lines.append("on the critical path")
    return "\n".join(lines)


def _graph(run: RunResult, critical: set[str], notes: list[str], caps: Caps = REPORT_CAPS) -> str:
    layers = run.layers
    if not layers:
        return '<p class="empty">The run has no tasks.</p>'
    edges = run.edges
    if not edges and len(layers) > 1:
        notes.append("The graph's edges were not recorded for this run: nodes only.")
    needs: dict[str, list[str]] = {}
    for up, down in edges:
        needs.setdefault(down, []).append(up)
    col_w, node_w, node_h, vgap, top, left = 190, 164, 24, 10, 30, 12
    pos: dict[str, tuple[float, float]] = {}
    nodes: list[str] = []
    drawn_total = 0
    tallest = 0
    for li, layer in enumerate(layers[: caps.layers]):
        room = max(0, min(caps.per_layer, caps.nodes - drawn_total))
        shown = layer
        if len(layer) > room:  # the critical path first, then the layer's order
            keep = [n for n in layer if n in critical][:room]
            keep += [n for n in layer if n not in critical][: room - len(keep)]
            chosen = set(keep)
            shown = [n for n in layer if n in chosen]
        x = left + li * col_w
        nodes.append(f'<text class="axis" x="{x}" y="{top - 12}">layer {li}</text>')
        for k, name in enumerate(shown):
            y = top + k * (node_h + vgap)
            pos[name] = (x, y)
            t = run.tasks.get(name)
            status = t.status if t is not None else "pending"
            cls = f"node s-{_esc(status)}" + (" crit" if name in critical else "")
            tip = _tip_task(t, needs.get(name, []), name in critical) if t is not None else name
            nodes.append(
                f'<g class="{cls}" data-task="{_esc(name)}" data-tip="{_esc(tip)}">'
                f'<rect x="{x}" y="{y}" width="{node_w}" height="{node_h}" rx="5"/>'
                f'<text x="{x + 8}" y="{y + 16}">{_esc(_clip(name, 24))}</text></g>'
            )
        rows = len(shown)
        if len(layer) > len(shown):
            y = top + rows * (node_h + vgap)
            hidden = len(layer) - len(shown)
            nodes.append(
                f'<g class="node more" data-tip="{counted(hidden, "more task")} in layer {li} '
                f'(not drawn)">'
                f'<rect x="{x}" y="{y}" width="{node_w}" height="{node_h}" rx="5"/>'
                f'<text x="{x + 8}" y="{y + 16}">+ {hidden} more</text></g>'
            )
            rows += 1
        drawn_total += len(shown)
        tallest = max(tallest, rows)
    total = sum(len(layer) for layer in layers)
    if drawn_total < total:
        notes.append(
            f"The graph draws {drawn_total:,} of {total:,} tasks "
            f"(at most {caps.per_layer} per layer, {caps.layers} layers, {caps.nodes} in all)."
        )
    crit_pairs = set(zip(run.critical_path, run.critical_path[1:], strict=False))
    lines: list[str] = []
    drawable = [(u, d) for u, d in edges if u in pos and d in pos]
    if len(drawable) > caps.edges:
        notes.append(
            f"The graph draws {caps.edges:,} of {len(drawable):,} edges between drawn tasks."
        )
        drawable.sort(key=lambda e: e not in crit_pairs)
        drawable = drawable[: caps.edges]
    for up, down in drawable:
        (x1, y1), (x2, y2) = pos[up], pos[down]
        x1, y1, y2 = x1 + node_w, y1 + node_h / 2, y2 + node_h / 2
        dx = (x2 - x1) / 2
        cls = "edge crit" if (up, down) in crit_pairs else "edge"
        lines.append(
            f'<path class="{cls}" d="M{x1:.0f},{y1:.0f} C{x1 + dx:.0f},{y1:.0f} '
            f'{x2 - dx:.0f},{y2:.0f} {x2:.0f},{y2:.0f}"/>'
        )
    width = left + min(len(layers), caps.layers) * col_w
    height = top + tallest * (node_h + vgap) + 4
    return (
        f'<svg id="graph" class="graph" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="the graph by layers">'
        f'<g class="edges">{"".join(lines)}</g>{"".join(nodes)}</svg>'
    )


_COLUMNS = (
    ("Task", "text"),
    ("Status", "text"),
    ("Layer", "num"),
    ("Attempts", "num"),
    ("Duration", "num"),
    ("Start", "num"),
    ("Error", "text"),
)


def _cpu_by_row(run: RunResult) -> dict[str, float]:
    """CPU seconds per task, a map's elements added up under their task's row."""
    rows: dict[str, float] = {}
    for name, seconds in run.cpu.items():
        row = owner_of(name) or name
        rows[row] = rows.get(row, 0.0) + seconds
    return rows


def _cpu_cell(seconds: float | None) -> str:
    if seconds is None:  # too short to be measured
        return '<td data-v="-1">-</td>'
    return f'<td data-v="{seconds:.6f}">{_esc(_secs(seconds))}</td>'


def _table(run: RunResult, critical: set[str], notes: list[str]) -> str:
    tasks: Iterable[TaskRun] = run.tasks.values()
    rows, elements = _fold_elements(list(tasks))
    if len(rows) > MAX_ROWS:
        notes.append(
            f"The table lists {MAX_ROWS:,} of {len(rows):,} tasks: the failed, the critical "
            "path, then the longest; sorting sorts those."
        )
        pick = sorted(
            range(len(rows)),
            key=lambda k: (
                rows[k].status != "failed",
                rows[k].name not in critical,
                -rows[k].duration,
            ),
        )[:MAX_ROWS]
        rows = [rows[k] for k in sorted(pick)]
    numbers = bool(run.metrics)  # a column for what tasks gave lf.record, when any did
    columns = (*_COLUMNS, ("Metrics", "text")) if numbers else _COLUMNS
    cpu = _cpu_by_row(run)  # a column for CPU time, when a task was long enough to measure
    if cpu:
        columns = (*columns[:5], ("CPU", "num"), *columns[5:])
    head = "".join(
        f'<th data-type="{kind}" tabindex="0" scope="col">{name}</th>' for name, kind in columns
    )
    t0 = run.started_at
    details = run.details
    tries: dict[str, list[Attempt]] = {}
    for a in run.attempts:
        tries.setdefault(a.task, []).append(a)
    body = []
    for t in rows:
        err = _error_text(t.error)
        if t.name in elements and not err:  # a map task: its elements, counted
            err = elements[t.name]
        start = t.started_at - t0 if t.started_at is not None else None
        crit = ' class="crit"' if t.name in critical else ""
        body.append(
            f"<tr{crit}><td>{_task_cell(t, tries.get(t.name, []), t0, details)}</td>"
            f'<td><span class="pill s-{_esc(t.status)}">{_esc(t.status)}</span></td>'
            f'<td data-v="{t.layer}">{t.layer}</td>'
            f'<td data-v="{t.attempts}">{t.attempts}</td>'
            f'<td data-v="{t.duration:.6f}">{_esc(_secs(t.duration))}</td>'
            + (_cpu_cell(cpu.get(t.name)) if cpu else "")
            + f'<td data-v="{start if start is not None else "Infinity"}">'
            f"{_esc(_secs(start) if start is not None else '-')}</td>"
            + _error_cell(err, traceback_text(t.error) or "")
            + (f"<td>{_esc(format_metrics(t.metrics))}</td>" if numbers else "")
            + "</tr>"
        )
    return f'<table id="tasks"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _fold_elements(rows: list[TaskRun]) -> tuple[list[TaskRun], dict[str, str]]:
    """A map's elements that succeeded are counted on their task's row, not listed (a
    10,000-element map would bury the rest); the others keep their rows. Also gives each
    map task's counts as text: ``2000 elements: 1979 succeeded, 21 skipped``."""
    names = {t.name for t in rows}
    counts: dict[str, dict[str, int]] = {}
    kept = []
    for t in rows:
        owner = owner_of(t.name)
        if owner in names:
            mine = counts.setdefault(owner, {})
            mine[t.status] = mine.get(t.status, 0) + 1
            if t.status == "succeeded":
                continue
        kept.append(t)
    text = {
        owner: f"{counted(sum(c.values()), 'element')}: "
        + ", ".join(f"{n} {s}" for s, n in c.items())
        for owner, c in counts.items()
    }
    return kept, text


def _legend(run: RunResult) -> str:
    """A key for what the timeline shows: only the outcomes and waits that are there."""
    outcomes = {a.outcome for a in run.attempts}
    retried = any(
        (t := _owner(run, a.task)) is not None and a.attempt < t.attempts for a in run.attempts
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
_CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"

_CSS = """
:root{--succeeded:#2e9d5b;--cached:#3b82c4;--reused:#6aa5d8;--failed:#d64541;
--timed_out:#a8326b;--rate_limited:#e39b2d;--cancelled:#9aa0a6;--skipped:#c8ccd2;
--pending:#e1e4e8;--running:#e1e4e8;--stopped:#e39b2d;--interrupted:#9aa0a6;
--ink:#1f2328;--muted:#656d76;--line:#d0d7de}
*{box-sizing:border-box}
body{margin:0;padding:24px 32px;font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;
color:var(--ink);background:#fff}
h1{font-size:20px;margin:0 0 14px;word-break:break-all}
h2{font-size:16px;margin:28px 0 8px}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid var(--line);border-radius:8px;padding:8px 14px;min-width:130px}
.card .k{color:var(--muted);font-size:12px}.card .v{font-size:18px;font-weight:600}
.tally{color:var(--muted);margin:10px 0 4px}.crit-path{margin:4px 0;word-break:break-word}
.notes{background:#fff8e5;border:1px solid #f0dca0;border-radius:6px;padding:8px 8px 8px 28px}
.scroll{overflow:auto;border:1px solid var(--line);border-radius:8px;max-height:80vh}
.legend{display:flex;flex-wrap:wrap;gap:4px 14px;color:var(--muted);font-size:12px;margin:4px 0 8px}
.key svg{vertical-align:-1px;margin-right:4px}
svg text{font:11px system-ui,sans-serif;fill:var(--ink)}
.axis{fill:var(--muted)}.lbl{text-anchor:end;fill:var(--muted)}.group{font-weight:600}
.tick{stroke:#eef0f2}.sep{stroke:var(--line)}.lane{fill:#f6f8fa}
.s-succeeded{fill:var(--succeeded)}.s-cached{fill:var(--cached)}.s-reused{fill:var(--reused)}
.s-failed{fill:var(--failed)}.s-timed_out{fill:var(--timed_out)}
.s-rate_limited{fill:var(--rate_limited)}.s-cancelled{fill:var(--cancelled)}
.s-skipped{fill:var(--skipped)}.s-pending,.s-running{fill:var(--pending)}
.retried{opacity:.55}
.w-pool{fill:#9b7fd4}.w-rate_limit{fill:#e9b949}.w-retry{fill:#f08c8c}.wait{opacity:.7}
rect.crit{stroke:#111;stroke-width:1.6}
rect.bar:hover,rect.wait:hover,.node:hover rect{stroke:#000;stroke-width:2}
.node rect{stroke:#fff;stroke-width:1}.node.crit rect{stroke:#111;stroke-width:2.2}
.node text{fill:#fff;stroke:none;font-weight:500;pointer-events:none}
.node.s-skipped text,.node.s-pending text,.node.s-cancelled text,.node.more text{fill:var(--ink)}
.node.more rect{fill:#f6f8fa;stroke:var(--line)}
.edge{fill:none;stroke:#a5adb7;stroke-width:1.2}.edge.crit{stroke:#111;stroke-width:2.2}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:4px 10px;border-bottom:1px solid #eaeef2;vertical-align:top}
th{position:sticky;top:0;background:#f6f8fa;cursor:pointer;user-select:none;white-space:nowrap}
th:hover{background:#eaeef2}th[data-type=num]{text-align:right}
th[aria-sort=ascending]::after{content:" ▲"}
th[aria-sort=descending]::after{content:" ▼"}
td:nth-child(3),td:nth-child(4),td:nth-child(5),td:nth-child(6){text-align:right;
font-variant-numeric:tabular-nums}
td:first-child{word-break:break-all}tr.crit td:first-child{box-shadow:inset 3px 0 #111}
td.err{color:#8c1d18;max-width:480px;word-break:break-word}
td.err summary,details.task summary{cursor:pointer}
#tasks td[data-v]{white-space:nowrap}
.card .why{font-size:12px;font-weight:normal;color:#666}
.warn{color:#8a5a00}
.bl{font-size:11px;fill:#fff;pointer-events:none}
.key.hint{color:var(--muted);margin-left:auto}
svg.timeline{cursor:grab}
pre.tb{white-space:pre-wrap;font-size:12px;color:#222;background:#f6f6f6;padding:6px;
margin:4px 0 0;max-height:320px;overflow:auto}
.pill{display:inline-block;padding:0 8px;border-radius:10px;color:#fff;font-size:12px;
background:var(--pending)}
.pill.s-succeeded{background:var(--succeeded)}.pill.s-cached{background:var(--cached)}
.pill.s-reused{background:var(--reused)}.pill.s-failed{background:var(--failed)}
.pill.s-cancelled,.pill.s-interrupted{background:var(--cancelled)}
.pill.s-skipped,.pill.s-pending,.pill.s-running{background:var(--skipped);color:var(--ink)}
.pill.s-stopped{background:var(--stopped)}
#tip{position:fixed;z-index:10;max-width:460px;padding:7px 10px;border-radius:6px;
background:#1f2328;color:#fff;font-size:12px;white-space:pre-line;pointer-events:none;
box-shadow:0 4px 14px rgba(0,0,0,.25);word-break:break-word}
#tip[hidden]{display:none}
.empty{color:var(--muted)}
footer{margin-top:28px;color:var(--muted);font-size:12px}
"""

_JS = """
(function () {
  var tip = document.getElementById("tip");
  function move(e) {
    if (tip.hidden) return;
    var pad = 14, x = e.clientX + pad, y = e.clientY + pad, r = tip.getBoundingClientRect();
    if (x + r.width > window.innerWidth - 4) x = Math.max(4, e.clientX - r.width - pad);
    if (y + r.height > window.innerHeight - 4) y = Math.max(4, e.clientY - r.height - pad);
    tip.style.left = x + "px";
    tip.style.top = y + "px";
  }
  document.addEventListener("mouseover", function (e) {
    var el = e.target.closest ? e.target.closest("[data-tip]") : null;
    if (!el) { tip.hidden = true; return; }
    tip.textContent = el.getAttribute("data-tip");
    tip.hidden = false;
    move(e);
  });
  document.addEventListener("mousemove", move);
  var svg = document.getElementById("timeline");
  if (svg) zoomable(svg);
  function zoomable(svg) {
    // zoom and pan change the time window, then place every bar and name again: text
    // keeps its size, which a scaled viewBox would not
    var span = parseFloat(svg.dataset.span), g = parseFloat(svg.dataset.gutter),
      w = parseFloat(svg.dataset.width), v0 = 0, v1 = span;
    var items = svg.querySelectorAll("[data-t0]"), ticks = svg.querySelector("g.ticks");
    var height = svg.viewBox.baseVal.height;
    function px(t) { return g + (t - v0) / (v1 - v0) * w; }
    function secs(s) {  // as _secs writes them
      if (s >= 60) {
        var r = Math.round(s), m = Math.floor(r / 60), sec = r % 60;
        return m + "m " + (sec < 10 ? "0" : "") + sec + "s";
      }
      var u = s >= 1 ? [1, "s"] : s >= 1e-3 ? [1e-3, "ms"] : [1e-6, "\u00b5s"];
      return (s / u[0]).toPrecision(3) + " " + u[1];
    }
    function draw() {
      items.forEach(function (el) {
        var a = px(parseFloat(el.dataset.t0)), b = px(parseFloat(el.dataset.t1));
        var width = Math.max(3, b - a);
        if (el.tagName === "text") {
          el.setAttribute("x", a + 3);
          var name = el.dataset.name, room = Math.floor((width - 6) / 6.2);
          el.textContent =
            name.length <= room ? name : name.slice(0, Math.max(room - 1, 1)) + "\u2026";
          el.removeAttribute("hidden");
          el.style.display = room >= Math.min(name.length, 4) ? "" : "none";
        } else {
          el.setAttribute("x", a);
          el.setAttribute("width", width);
        }
      });
      var raw = (v1 - v0) / 8, mag = Math.pow(10, Math.floor(Math.log10(raw)));
      var step = [1, 2, 5, 10].map(function (m) { return m * mag; })
        .find(function (s) { return s >= raw; });
      var out = "";
      for (var t = Math.ceil(v0 / step) * step; t <= v1 + 1e-12; t += step) {
        var x = px(t).toFixed(1);
        out += '<line class="tick" x1="' + x + '" y1="22" x2="' + x + '" y2="' + height + '"/>' +
          '<text class="axis" x="' + x + '" y="18">' + (t ? secs(t) : "0") + "</text>";
      }
      ticks.innerHTML = out;
    }
    function at(e) {  // the time under the pointer
      var r = svg.getBoundingClientRect(), scale = svg.viewBox.baseVal.width / r.width;
      var xs = (e.clientX - r.left) * scale;
      return v0 + (Math.min(Math.max(xs, g), g + w) - g) / w * (v1 - v0);
    }
    svg.addEventListener("wheel", function (e) {
      e.preventDefault();
      var t = at(e), f = e.deltaY < 0 ? 0.8 : 1.25;
      var len = Math.min(span, Math.max(span * 1e-4, (v1 - v0) * f));
      v0 = Math.max(0, t - (t - v0) / (v1 - v0) * len);
      v1 = Math.min(span, v0 + len);
      v0 = Math.max(0, v1 - len);
      draw();
    }, {passive: false});
    var drag = null;
    svg.addEventListener("mousedown", function (e) { drag = {x: e.clientX, v0: v0, v1: v1}; });
    window.addEventListener("mouseup", function () { drag = null; });
    window.addEventListener("mousemove", function (e) {
      if (!drag) return;
      var r = svg.getBoundingClientRect(), scale = svg.viewBox.baseVal.width / r.width;
      var dt = (drag.x - e.clientX) * scale / w * (drag.v1 - drag.v0);
      var len = drag.v1 - drag.v0;
      v0 = Math.min(Math.max(0, drag.v0 + dt), span - len);
      v1 = v0 + len;
      draw();
    });
    svg.addEventListener("dblclick", function () { v0 = 0; v1 = span; draw(); });
    svg.zoomTo = function (a, b) { v0 = a; v1 = b; draw(); };  // for tests and links
  }
  var table = document.getElementById("tasks");
  if (!table) return;
  var heads = table.tHead.rows[0].cells, body = table.tBodies[0];
  Array.prototype.forEach.call(heads, function (th, col) {
    function sort() {
      var asc = th.getAttribute("aria-sort") !== "ascending", num = th.dataset.type === "num";
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var key = function (row) {
        var c = row.cells[col];
        var shown = c.querySelector("summary") || c;  // a detail's name, not its body
        return num ? parseFloat(c.dataset.v) : shown.textContent.toLowerCase();
      };
      var rows = Array.prototype.slice.call(body.rows).map(function (r) { return [key(r), r]; });
      var sign = asc ? 1 : -1;
      rows.sort(function (a, b) { return (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0) * sign; });
      var frag = document.createDocumentFragment();
      rows.forEach(function (p) { frag.appendChild(p[1]); });
      body.appendChild(frag);
    }
    th.addEventListener("click", sort);
    th.addEventListener("keydown", function (e) {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sort(); }
    });
  });
})();
"""

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>layerflow · {title}</title>
<style>{css}</style>
</head>
<body>
<h1>layerflow run {title}</h1>
<section id="summary">{summary}</section>
{notes}
<h2>Timeline</h2>
<div class="legend">{legend}</div>
<div class="scroll">{timeline}</div>
<h2>Graph by layer</h2>
<div class="scroll">{graph}</div>
<h2>Tasks</h2>
<p class="legend">Click a column header to sort; click again to reverse.</p>
<div class="scroll">{table}</div>
<footer>Written by layerflow; this file makes no network request and works offline.</footer>
<div id="tip" role="tooltip" hidden></div>
<script>{js}</script>
</body>
</html>
"""
