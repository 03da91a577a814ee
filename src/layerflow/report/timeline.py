"""The report's timeline: a lane per worker with a bar per attempt, and the waits for pools,
rate windows and retries below them, as SVG."""

from __future__ import annotations

import math
from typing import Any

from .common import (
    REPORT_CAPS,
    Attempt,
    Caps,
    RunResult,
    TaskRun,
    clip,
    esc,
    longest_first,
    owner,
    secs,
)
from .graph import LABEL_CHAR, fit

__all__ = ["timeline", "tip_attempt"]


def tip_attempt(a: Attempt, t: TaskRun | None, t0: float, critical: bool) -> str:
    lines = [a.task]
    tries = t.attempts if t is not None else a.attempt
    layer = f" · layer {t.layer}" if t is not None else ""
    lines.append(f"attempt {a.attempt} of {tries} · {a.outcome.replace('_', ' ')}{layer}")
    lines.append(
        f"{secs(a.started_at - t0)} → {secs(a.finished_at - t0)} "
        f"({secs(a.finished_at - a.started_at)})"
    )
    if a.error:
        lines.append(clip(a.error, 300))
    if critical:
        lines.append("on the critical path")
    return "\n".join(lines)


def ticks(span: float) -> list[float]:
    raw = span / 8 if span > 0 else 1
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    return [k * step for k in range(int(span / step) + 1)]


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


def timeline(run: RunResult, critical: set[str], notes: list[str], caps: Caps = REPORT_CAPS) -> str:
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
        drawn = longest_first(drawn, lambda a: a.task in critical, caps.bars)
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
    for tick in ticks(span):
        tx = x(t0 + tick)
        out.append(
            f'<line class="tick" x1="{tx:.1f}" y1="{top - 4}" x2="{tx:.1f}" y2="{height}"/>'
            f'<text class="axis" x="{tx:.1f}" y="{top - 8}">{esc(secs(tick) if tick else "0")}'
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
        t = owner(run, a.task)
        classes = f"bar s-{a.outcome}"
        if a.task in critical:
            classes += " crit"
        if t is not None and a.attempt < t.attempts:
            classes += " retried"
        x0 = x(a.started_at)
        w = max(MIN_BAR, x(a.finished_at) - x0)
        y = top + a.lane * h + (h - bar_h) / 2
        tip = tip_attempt(a, t, t0, a.task in critical)
        out.append(
            f'<rect class="{classes}" x="{x0:.2f}" y="{y:.1f}" width="{w:.2f}" '
            f'height="{bar_h}" data-t0="{a.started_at - t0:.9g}" '
            f'data-t1="{a.finished_at - t0:.9g}" data-task="{esc(a.task)}" '
            f'data-tip="{esc(tip)}"/>'
        )
        if labels and named < caps.labels:  # the name on the bar, shown when it fits
            named += 1
            fits = w - 6 >= LABEL_CHAR * min(len(a.task), 4)
            out.append(
                f'<text class="bl" x="{x0 + 3:.2f}" y="{y + bar_h / 2 + 4:.1f}" '
                f'data-t0="{a.started_at - t0:.9g}" data-t1="{a.finished_at - t0:.9g}" '
                f'data-name="{esc(a.task)}"{"" if fits else " hidden"}>'
                f"{esc(fit(a.task, w))}</text>"
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
                    f"{w.task}\nwaiting: {w.reason}\n{secs(w.started_at - t0)} → "
                    f"{secs(w.finished_at - t0)} ({secs(w.finished_at - w.started_at)})"
                )
                out.append(
                    f'<rect class="wait w-{esc(kind)}" x="{x0:.2f}" y="{y:.1f}" '
                    f'width="{ww:.2f}" height="{bar_h}" data-t0="{w.started_at - t0:.9g}" '
                    f'data-t1="{w.finished_at - t0:.9g}" data-task="{esc(w.task)}" '
                    f'data-tip="{esc(tip)}"/>'
                )
    out.append("</g>")
    if wait_rows and labels:
        base = top + lanes * h + gap
        out.append(f'<text class="lbl group" x="{gutter - 8}" y="{base - 7}">waiting for</text>')
        for row, (_kind, label, ws) in enumerate(wait_rows):
            total = sum(w.finished_at - w.started_at for w in ws)
            name = label  # "pool 'gpu'", "rate limit 'api'", "retry delays"
            tip = f"{name}: {len(ws)} waits, {secs(total)} in all"
            out.append(
                f'<text class="lbl" x="{gutter - 8}" y="{base + row * h + h - 5}" '
                f'data-tip="{esc(tip)}">{esc(clip(name, 22))}</text>'
            )
    if len(all_rows) > caps.wait_lanes:
        notes.append(f"The timeline draws the {caps.wait_lanes} limits that held tasks longest.")
    out.append("</svg>")
    return "".join(out)
