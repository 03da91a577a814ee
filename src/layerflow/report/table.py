"""The report's table of tasks: one row per task (a map's elements folded under it), each
unfolding to its attempts, value, error and output."""

from __future__ import annotations

from collections.abc import Iterable

from ..metrics import format_metrics
from ..names import counted, owner_of
from ..tracebacks import traceback_text
from .common import MAX_ROWS, Attempt, RunResult, TaskRun, clip, error_text, esc, secs

__all__ = ["error_cell", "logs_block", "table", "task_cell"]


def task_cell(t: TaskRun, tries: list[Attempt], t0: float, details: dict[str, str]) -> str:
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
    return (
        f'<details class="task"><summary>{esc(t.name)}</summary>'
        + (f'<pre class="tb">{esc(chr(10).join(lines))}</pre>' if lines else "")
        + logs_block(t.logs)
        + "</details>"
    )


#: what a report shows of one task's output (the store keeps its last megabyte)
LOGS_SHOWN = 20_000


def logs_block(logs: str) -> str:
    """What a task printed and logged, escaped: its end, if long."""
    if not logs:
        return ""
    if len(logs) > LOGS_SHOWN:
        cut = logs[-LOGS_SHOWN:]
        cut = cut[cut.find("\n") + 1 :] if "\n" in cut else cut  # whole lines
        logs = f"[… {len(logs) - len(cut):,} earlier characters: layerflow show --logs …]\n{cut}"
    return f'<pre class="tb logs" title="what it printed and logged">output:\n{esc(logs)}</pre>'


def error_cell(err: str, tb: str) -> str:
    """The error column: the error, and its traceback to unfold when there is one."""
    if tb and tb.strip() != err.strip():
        return (
            f'<td class="err"><details><summary title="{esc(clip(err, 2000))}">'
            f'{esc(clip(err, 160))}</summary><pre class="tb">{esc(clip(tb, 20000))}'
            "</pre></details></td>"
        )
    return f'<td class="err" title="{esc(clip(err, 2000))}">{esc(clip(err, 160))}</td>'


COLUMNS = (
    ("Task", "text"),
    ("Status", "text"),
    ("Layer", "num"),
    ("Attempts", "num"),
    ("Duration", "num"),
    ("Start", "num"),
    ("Error", "text"),
)


def cpu_by_row(run: RunResult) -> dict[str, float]:
    """CPU seconds per task, a map's elements added up under their task's row."""
    rows: dict[str, float] = {}
    for name, seconds in run.cpu.items():
        row = owner_of(name) or name
        rows[row] = rows.get(row, 0.0) + seconds
    return rows


def cpu_cell(seconds: float | None) -> str:
    if seconds is None:  # too short to be measured
        return '<td data-v="-1">-</td>'
    return f'<td data-v="{seconds:.6f}">{esc(secs(seconds))}</td>'


def table(run: RunResult, critical: set[str], notes: list[str]) -> str:
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
        err = error_text(t.error)
        if t.name in elements and not err:  # a map task: its elements, counted
            err = elements[t.name]
        start = t.started_at - t0 if t.started_at is not None else None
        crit = ' class="crit"' if t.name in critical else ""
        body.append(
            f"<tr{crit}><td>{task_cell(t, tries.get(t.name, []), t0, details)}</td>"
            f'<td><span class="pill s-{esc(t.status)}">{esc(t.status)}</span></td>'
            f'<td data-v="{t.layer}">{t.layer}</td>'
            f'<td data-v="{t.attempts}">{t.attempts}</td>'
            f'<td data-v="{t.duration:.6f}">{esc(secs(t.duration))}</td>'
            + (cpu_cell(cpu.get(t.name)) if cpu else "")
            + f'<td data-v="{start if start is not None else "Infinity"}">'
            f"{esc(secs(start) if start is not None else '-')}</td>"
            + error_cell(err, traceback_text(t.error) or "")
            + (f"<td>{esc(format_metrics(t.metrics))}</td>" if numbers else "")
            + "</tr>"
        )
    return f'<table id="tasks"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


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
