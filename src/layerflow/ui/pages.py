"""The pages' pieces as HTML: the runs list, a run's sections (drawn by the HTML report's
own functions: summary, timeline, graph, table, the what-bound line) and a task's detail.
Every piece is escaped here or by the report (``layerflow.markup``); the templates and the
stylesheet and script are package files (``static/``)."""

from __future__ import annotations

import time
from importlib import resources
from typing import Any

from .. import report
from ..errors import RecordedError
from ..markup import Markup, esc, fill, join, tag, void
from ..metrics import format_metrics
from ..names import counted
from ..store import Store
from .view import RunView, liveness

__all__ = ["asset", "run_page", "run_sections", "runs_page", "runs_table", "task_detail"]

#: the order statuses are counted and drawn in (the progress bar's segments)
ORDER = (
    "succeeded",
    "cached",
    "reused",
    "failed",
    "skipped",
    "cancelled",
    "unfinished",
    "running",
    "retrying",
    "waiting",
    "pending",
)
MAX_FAILURES = 50
#: a run's statuses as shown while it has not ended on record (``view.py``)
_UNENDED = ("running", "not responding", "crashed")
MAX_WAITING = 50
#: what a live page draws at most: it is drawn again every second or so
LIVE_CAPS = report.Caps(bars=3000, labels=1000)


def asset(name: str) -> str:
    """A file of ``static/`` as text."""
    return resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def _pill(status: str) -> Markup:
    return tag("span", status, class_=f"pill s-{status.replace(' ', '-')}")


def _tally(counts: dict[str, int]) -> Markup:
    ordered = [s for s in ORDER if counts.get(s)] + [
        s for s in counts if s not in ORDER and counts[s]
    ]
    return join(
        tag("span", tag("b", str(counts[s])), f" {s}", class_=f"count c-{s}") for s in ordered
    )


def _bar(counts: dict[str, int], total: int) -> Markup:
    """The progress bar: a segment per status, in ``ORDER`` (SVG: no inline style)."""
    total = max(total, sum(counts.values()), 1)
    x, parts = 0.0, []
    for s in ORDER:
        n = counts.get(s, 0)
        if not n:
            continue
        w = 1000 * n / total
        parts.append(
            tag(
                "rect",
                tag("title", f"{n} {s}"),
                x=f"{x:.2f}",
                y="0",
                width=f"{w:.2f}",
                height="14",
                class_=f"seg s-{s}",
            )
        )
        x += w
    return tag(
        "svg",
        *parts,
        class_="progress",
        viewBox="0 0 1000 14",
        preserveAspectRatio="none",
        role="img",
        aria_label="progress by status",
    )


# --- the runs ------------------------------------------------------------------------------


class RunsSummary:
    """Each run's line of the runs list; a finished run's is read once (it cannot change)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.done: dict[str, tuple[Markup, str, str]] = {}  # run id -> tally, budget, status

    def line(self, row: dict[str, Any], now: float) -> tuple[str, Markup, str, float | None]:
        """(status as shown, tasks by status, budget spent, end: now while it runs, else
        when it ended or was last heard from, None if unknown) of a row of ``Store.runs``."""
        run_id = row["run_id"]
        if row["status"] != "running":
            known = self.done.get(run_id)
            if known is None:
                counts = self.store.task_counts(run_id)
                graph = self.store.run_graph(run_id) or {}
                budget = ((graph.get("options") or {}).get("budget")) or {}
                metrics = row["metrics"] or {}
                spent = ", ".join(
                    f"{k} {metrics.get(k, 0):g}" + (f" of {budget[k]:g}" if k in budget else "")
                    for k in {**metrics, **budget}
                )
                known = self.done[run_id] = (_tally(counts), spent, row["status"])
            return known[2], known[0], known[1], row["finished_at"]
        live = self.store.live(run_id)
        status, _ = liveness(row["started_at"], live, now, run_id)
        state = (live or {}).get("state") or {}
        counts = dict(state.get("counts") or {})
        if not counts:
            counts = {"pending": row["tasks"] or 0}
        if status != "running" and counts.get("running"):
            counts["unfinished"] = counts.pop("running")
        budget = state.get("budget") or {}
        spent = ", ".join(f"{k} {v['spent']:g} of {v['budget']:g}" for k, v in budget.items())
        end = now if status == "running" else (live or {}).get("at")  # crashed: its last beat
        return status, _tally(counts), spent, end


def runs_table(store: Store, summary: RunsSummary, limit: int = 100) -> Markup:
    """The latest runs, newest first, each linked to its page."""
    rows = store.runs(limit)
    if not rows:
        return tag(
            "p",
            f"No runs in {store.folder} yet: run a flow with this store (layerflow run FILE, or "
            f"flow.run(store=...)) and it shows up here.",
            class_="empty",
        )
    now = time.time()
    body = []
    for row in rows:
        status, tally, spent, end = summary.line(row, now)
        took = max(end - row["started_at"], 0.0) if end and row["started_at"] else None
        href = "/run/" + _quote(row["run_id"])
        body.append(
            tag(
                "tr",
                tag("td", tag("a", row["run_id"], href=href)),
                tag("td", row["flow"] or "-"),
                tag("td", _pill(status)),
                tag("td", _when(row["started_at"])),
                tag("td", report.secs(took) if took is not None else "-", class_="num"),
                tag("td", tally),
                tag("td", spent or format_metrics(row["metrics"] or {}) or "-"),
                class_=f"run r-{status.replace(' ', '-')}",
            )
        )
    head = join(
        tag("th", h, scope="col")
        for h in ("Run", "Flow", "Status", "Started", "Duration", "Tasks", "Budget spent")
    )
    return tag("table", tag("thead", tag("tr", head)), tag("tbody", *body), id="runs")


def runs_page(store: Store, summary: RunsSummary) -> Markup:
    """``/``: the runs list (refreshed by the script)."""
    return fill(asset("runs.html"), store=str(store.folder), table=runs_table(store, summary))


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


# --- one run -------------------------------------------------------------------------------


def _failures(view: RunView) -> Markup:
    failed = [t for t in view.result.tasks.values() if t.error is not None and t.status == "failed"]
    if not failed:
        return Markup("")
    items = []
    for t in failed[:MAX_FAILURES]:
        error = t.error
        tb = getattr(error, "traceback", None) if isinstance(error, RecordedError) else None
        text = report.error_text(error)
        items.append(
            tag(
                "li",
                tag("button", t.name, type="button", class_="task-link", data_task=t.name),
                tag("span", f" after {counted(t.attempts, 'attempt')}: ", class_="muted"),
                tag("code", report.clip(text.splitlines()[0] if text else "", 300)),
                tag("pre", tb or text, class_="tb") if tb or "\n" in text else "",
            )
        )
    more = (
        tag("p", f"... and {len(failed) - MAX_FAILURES} more (see the table)", class_="muted")
        if len(failed) > MAX_FAILURES
        else ""
    )
    return join(
        [tag("h2", f"Failures ({len(failed)})"), tag("ul", *items, class_="failures"), more]
    )


def _waiting(view: RunView, now: float) -> Markup:
    if not view.waiting:
        return Markup("")
    items = [
        tag(
            "li",
            tag("button", name, type="button", class_="task-link", data_task=name),
            f" waiting for {reason}, {report.secs(max(now - since, 0.0))}",
        )
        for name, reason, since in view.waiting[:MAX_WAITING]
    ]
    more = len(view.waiting) - MAX_WAITING
    if more > 0:
        items.append(tag("li", f"... and {more} more", class_="muted"))
    return join(
        [tag("h2", f"Waiting for pools and rate limits ({len(view.waiting)})"), tag("ul", *items)]
    )


def _header(view: RunView) -> Markup:
    result = view.result
    done = sum(n for s, n in view.counts.items() if s in ORDER[:6])  # ended
    heard = (
        f" · last heartbeat {_when(view.heard)}" if view.heard and view.status != "running" else ""
    )
    return join(
        [
            tag(
                "p",
                tag("b", f"{done} of {view.total}"),
                " tasks done · ",
                _tally(view.counts),
                class_="counts",
            ),
            _bar(view.counts, view.total),
            tag(
                "p",
                f"started {_when(result.started_at)} · {report.secs(result.duration)}"
                + (" so far" if view.live else "")
                + heard,
                class_="muted",
            ),
        ]
    )


def _legend(result: Any) -> Markup:
    """The report's key to the timeline, with the running attempts' colours when any."""
    ours = [
        tag(
            "span",
            tag(
                "svg",
                void("rect", class_=f"bar s-{outcome}", width=14, height=10),
                width=14,
                height=10,
            ),
            label,
            class_="key",
        )
        for outcome, label in (("running", "running"), ("unfinished", "running when it stopped"))
        if any(a.outcome == outcome for a in result.attempts)
    ]
    return join([*ours, report.legend(result)])


def run_sections(view: RunView, now: float | None = None) -> dict[str, str]:
    """A run's page sections as HTML, by the id of the element each fills."""
    now = time.time() if now is None else now
    result = view.result
    notes: list[str] = []
    critical = set(result.critical_path)
    summary = report.summary(result, view.counts)
    caps = LIVE_CAPS if view.live else report.REPORT_CAPS
    timeline = report.timeline(result, critical, notes, caps)
    graph = report.graph(result, critical, notes, caps)
    table = report.table(result, critical, notes)
    banner = view.note or (
        f"Stopped: {result.stop_reason}" if result.stop_reason and not view.live else ""
    )
    return {
        "status": _pill(view.status),
        "banner": esc(banner),
        "progress": _header(view),
        "summary": summary,
        "failures": _failures(view),
        "waiting": _waiting(view, now),
        "notes": join(tag("li", n) for n in notes),
        "legend": _legend(result),
        "timeline": timeline,
        "graph": graph,
        "table": table,
    }


def run_page(view: RunView, store: Store) -> Markup:
    """``/run/ID``: the run's page, whole (the script then keeps it up to date)."""
    result = view.result
    title = f"{result.flow_name} · {result.run_id}" if result.flow_name else result.run_id
    sections = run_sections(view)
    return fill(
        asset("run.html"),
        title=title,
        run_id=result.run_id,
        live="1" if view.live else "",
        store=str(store.folder),
        **{k: Markup(v) for k, v in sections.items()},
    )


def task_detail(view: RunView, name: str, value: str | Exception | None = None) -> Markup:
    """One task: status, attempts, error with the user's traceback, its logs and, when it
    succeeded, ``value``: its stored value's preview, or why there is none (``values.py``
    reads it as plain data only)."""
    t = view.result.tasks.get(name)
    if t is None:
        raise KeyError(name)
    t0 = view.result.started_at
    facts = [
        ("status", _pill(t.status)),
        ("layer", str(t.layer)),
        ("attempts", str(t.attempts)),
        ("started", f"+{report.secs(t.started_at - t0)}" if t.started_at else "-"),
        ("ran for", report.secs(t.duration)),
    ]
    if t.metrics:
        facts.append(("recorded", format_metrics(t.metrics)))
    parts: list[Any] = [
        tag("h3", name),
        tag("dl", *[join([tag("dt", k), tag("dd", v)]) for k, v in facts]),
    ]
    tries = [a for a in view.result.attempts if a.task == name]
    if len(tries) > 1 or any(a.error for a in tries):
        parts.append(tag("h4", "Attempts"))
        parts.append(
            tag(
                "ol",
                *[
                    tag(
                        "li",
                        f"{a.outcome.replace('_', ' ')} at +{report.secs(a.started_at - t0)} "
                        f"for {report.secs(a.finished_at - a.started_at)}"
                        + (f": {a.error}" if a.error else ""),
                    )
                    for a in sorted(tries, key=lambda a: a.attempt)
                ],
            )
        )
    if t.error is not None:
        tb = getattr(t.error, "traceback", None) or report.error_text(t.error)
        parts += [tag("h4", "Error"), tag("pre", tb, class_="tb")]
    logs = getattr(t, "logs", "") or ""
    if logs:
        said = tag("pre", logs, class_="logs")
    elif view.result.status in _UNENDED and t.status != "succeeded":  # its output: not stored
        said = tag(
            "p",
            ("Nothing stored yet" if view.live else "Nothing stored")
            + ": what a task prints and logs is stored when it succeeds, or when its run ends"
            + ("." if view.live else ", and this run never ended."),
            class_="muted",
        )
    else:
        said = tag("p", "Nothing printed or logged.", class_="muted")
    parts += [tag("h4", "Logs"), said]
    if t.ok and value is not None:
        shown = (
            tag("p", f"Value: {value}", class_="muted")
            if isinstance(value, Exception)
            else tag("pre", value, class_="value")
        )
        parts += [tag("h4", "Value"), shown]
    return join(parts)
