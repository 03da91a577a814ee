"""The report's table of tasks: one row per task (a map's elements folded under it), each
unfolding to its attempts, value, error and output."""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

from ..metrics import format_metrics
from ..names import counted, owner_of
from ..tracebacks import traceback_text
from .common import (
    MAX_ROWS,
    Attempt,
    Markup,
    Run,
    TaskRun,
    clip,
    error_text,
    esc,
    pattern,
    secs,
    tag,
)

__all__ = ["error_cell", "logs_block", "table", "task_cell"]


def task_cell(t: TaskRun, tries: list[Attempt], t0: float, details: dict[str, str]) -> Markup:
    """A task's name, unfolding to its detail: every attempt, and its value (a run loaded
    from the store has no values: they stay in their result files)."""
    what = details.get(t.name)
    lines = [what] if what else []
    lines += [
        f"attempt {a.attempt}: {a.outcome} at {secs(a.started_at - t0)} for "
        f"{secs(a.finished_at - a.started_at)}" + (f" ({clip(a.error, 200)})" if a.error else "")
        for a in sorted(tries, key=lambda a: a.attempt)
    ]
    if t.ok and t.value is not None:
        from ..preview import preview

        lines.append("value:\n" + preview(t.value, lines=12, chars=1500))
    if not lines and not t.logs:
        return esc(t.name)
    if not lines:  # a task that never started, with output (a rare row)
        return tag("details", tag("summary", t.name), logs_block(t.logs), class_="task")
    return DETAILS(t.name, "\n".join(lines), logs_block(t.logs))


#: what a report shows of one task's output (the store keeps its last megabyte)
LOGS_SHOWN = 20_000


def logs_block(logs: str) -> Markup:
    """What a task printed and logged, escaped: its end, if long."""
    if not logs:
        return Markup()
    if len(logs) > LOGS_SHOWN:
        cut = logs[-LOGS_SHOWN:]
        cut = cut[cut.find("\n") + 1 :] if "\n" in cut else cut  # whole lines
        logs = f"[… {len(logs) - len(cut):,} earlier characters: layerflow show --logs …]\n{cut}"
    return tag("pre", "output:\n", logs, class_="tb logs", title="what it printed and logged")


def error_cell(err: str, tb: str) -> Markup:
    """The error column: the error, and its traceback to unfold when there is one."""
    if tb and tb.strip() != err.strip():
        return ERROR_TRACED(clip(err, 2000), clip(err, 160), clip(tb, 20000))
    return ERROR(clip(err, 2000), clip(err, 160))


# --- what is made by the thousand: patterns, made once by tag() -----------------------------


def _details(name: str, lines: str, logs: str) -> Markup:
    return tag("details", tag("summary", name), tag("pre", lines, class_="tb"), logs, class_="task")


def _error(title: str, text: str) -> Markup:
    return tag("td", text, class_="err", title=title)


def _error_traced(title: str, text: str, tb: str) -> Markup:
    folded = tag("details", tag("summary", text, title=title), tag("pre", tb, class_="tb"))
    return tag("td", folded, class_="err")


def _cpu(seconds: float, shown: str) -> Markup:
    return tag("td", shown, data_v=seconds)


def _row(
    task: str,
    status: str,
    layer: int,
    attempts: int,
    duration: float,
    took: str,
    cpu: str,
    start: float | str,
    began: str,
    error: str,
    metrics: str,
    *,
    crit: bool = False,
) -> Markup:
    """A task's row; ``data-v`` is what the page's script sorts by. ``cpu``, ``error`` and
    ``metrics`` are whole cells (or nothing), made by the patterns above."""
    return tag(
        "tr",
        tag("td", task),
        tag("td", tag("span", status, class_=f"pill s-{status}")),
        tag("td", layer, data_v=layer),
        tag("td", attempts, data_v=attempts),
        tag("td", took, data_v=duration),
        cpu,
        tag("td", began, data_v=start),
        error,
        metrics,
        class_="crit" if crit else None,
    )


DETAILS = pattern(_details)
ERROR = pattern(_error)
ERROR_TRACED = pattern(_error_traced)
CPU = pattern(_cpu, seconds=".6f")
NO_CPU = tag("td", "-", data_v=-1)
METRICS = pattern(lambda text: tag("td", text))
ROW = pattern(_row, duration=".6f")
CRIT_ROW = pattern(partial(_row, crit=True), duration=".6f")  # on the critical path


COLUMNS = (
    ("Task", "text"),
    ("Status", "text"),
    ("Layer", "num"),
    ("Attempts", "num"),
    ("Duration", "num"),
    ("Start", "num"),
    ("Error", "text"),
)


def cpu_by_row(run: Run) -> dict[str, float]:
    """CPU seconds per task, a map's elements added up under their task's row."""
    rows: dict[str, float] = {}
    for name, seconds in run.cpu.items():
        row = owner_of(name) or name
        rows[row] = rows.get(row, 0.0) + seconds
    return rows


def cpu_cell(seconds: float | None) -> Markup:
    if seconds is None:  # too short to be measured
        return NO_CPU
    return CPU(seconds, secs(seconds))


def table(run: Run, critical: set[str], notes: list[str]) -> Markup:
    """The tasks as a sortable table (the page's script sorts it by ``data-v``)."""
    tasks: Iterable[TaskRun] = run.tasks.values()
    rows, elements = fold_elements(list(tasks))
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
    columns = (*COLUMNS, ("Metrics", "text")) if numbers else COLUMNS
    cpu = cpu_by_row(run)  # a column for CPU time, when a task was long enough to measure
    if cpu:
        columns = (*columns[:5], ("CPU", "num"), *columns[5:])
    head = [tag("th", name, data_type=kind, tabindex=0, scope="col") for name, kind in columns]
    t0 = run.started_at
    details = run.details
    tries: dict[str, list[Attempt]] = {}
    for a in run.attempts:
        tries.setdefault(a.task, []).append(a)
    body = []
    for t in rows:
        err = error_text(t.error)
        if t.name in elements and not err:  # a map task: its elements, counted
            err = elements[t.name]
        start = t.started_at - t0 if t.started_at is not None else None
        row = CRIT_ROW if t.name in critical else ROW
        body.append(
            row(
                task_cell(t, tries.get(t.name, []), t0, details),
                t.status,
                t.layer,
                t.attempts,
                t.duration,
                secs(t.duration),
                cpu_cell(cpu.get(t.name)) if cpu else "",
                start if start is not None else "Infinity",
                secs(start) if start is not None else "-",
                error_cell(err, traceback_text(t.error) or ""),
                METRICS(format_metrics(t.metrics)) if numbers else "",
            )
        )
    return tag("table", tag("thead", tag("tr", *head)), tag("tbody", *body), id="tasks")


def fold_elements(rows: list[TaskRun]) -> tuple[list[TaskRun], dict[str, str]]:
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
