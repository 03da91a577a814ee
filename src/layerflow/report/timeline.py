"""The report's timeline: a lane per worker with a bar per attempt, and the waits for pools,
rate windows and retries below them, as SVG."""

from __future__ import annotations

import math
from functools import partial

from .common import (
    REPORT_CAPS,
    Attempt,
    Caps,
    Markup,
    Run,
    TaskRun,
    Wait,
    clip,
    longest_first,
    num,
    owner,
    pattern,
    secs,
    tag,
    void,
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


# what is drawn by the thousand: patterns, made once by void() and tag()
def _bar(
    cls: str,
    x: float,
    y: float,
    width: float,
    height: int,
    t0: float,
    t1: float,
    task: str,
    tip: str,
) -> Markup:
    return void(
        "rect",
        class_=cls,
        x=x,
        y=y,
        width=width,
        height=height,
        data_t0=t0,
        data_t1=t1,
        data_task=task,
        data_tip=tip,
    )


def _name(
    x: float, y: float, t0: float, t1: float, task: str, text: str, *, hidden: bool = False
) -> Markup:
    return tag(
        "text", text, class_="bl", x=x, y=y, data_t0=t0, data_t1=t1, data_name=task, hidden=hidden
    )


TIMES = {"t0": ".9g", "t1": ".9g"}  # seconds from the run's start, for the zoom script
BAR = pattern(_bar, x=".2f", y=".1f", width=".2f", **TIMES)
NAME = pattern(_name, x=".2f", y=".1f", **TIMES)  # a bar's name, where it fits
# the script shows it when zooming in makes room for it
HIDDEN_NAME = pattern(partial(_name, hidden=True), x=".2f", y=".1f", **TIMES)
MIN_BAR = 3.0  # px: an instant task still shows


def _wait_rows(waits: list[Wait]) -> list[tuple[str, str, list[Wait]]]:
    """Waits summarized per limit: one row per pool or rate limit (and one for retries),
    the limit held up most first, as (kind, label, its waits)."""
    rows: dict[tuple[str, str], list[Wait]] = {}
    for w in waits:
        label = "retry delays" if w.kind == "retry" else w.reason
        rows.setdefault((w.kind, label), []).append(w)
    ranked = sorted(rows.items(), key=lambda kv: -sum(w.finished_at - w.started_at for w in kv[1]))
    return [(kind, label, ws) for (kind, label), ws in ranked]


def timeline(
    run: Run,
    critical: set[str],
    notes: list[str],
    caps: Caps = REPORT_CAPS,
    *,
    titles: bool = False,
) -> Markup:
    """The timeline as SVG. Hover texts are ``data-tip`` attributes that the page's script
    shows, or with ``titles`` SVG ``<title>`` children, for a page without a script (a
    notebook), which then also leaves out the zoom script's times (``data-t0``/``data-t1``)."""
    t0 = run.started_at
    attempts, waits = run.attempts, run.waits
    if not attempts:
        return tag("p", "No task ran in this run.", class_="empty")
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

    def bar(
        cls: str, x0: float, y: float, w: float, task: str, began: float, ended: float, tip: str
    ) -> Markup:
        """A bar (an attempt or a wait) with its hover text."""
        if titles:
            shape = {"x": num(x0, ".2f"), "y": num(y, ".1f"), "width": num(w, ".2f")}
            return tag("rect", tag("title", tip), class_=cls, **shape, height=bar_h, data_task=task)
        return BAR(cls, x0, y, w, bar_h, began - t0, ended - t0, task, tip)

    out = [
        tag(
            "defs",
            tag("clipPath", void("rect", x=gutter, y=0, width=width, height=height), id="plot"),
        )
    ]
    ticked = []
    for tick in ticks(span):
        tx = num(x(t0 + tick), ".1f")
        ticked.append(void("line", class_="tick", x1=tx, y1=top - 4, x2=tx, y2=height))
        ticked.append(tag("text", secs(tick) if tick else "0", class_="axis", x=tx, y=top - 8))
    out.append(tag("g", *ticked, class_="ticks"))
    labels = h >= 11
    for lane in range(lanes):
        ly = top + lane * h
        if lane % 2 == 0 and lanes <= 200:
            out.append(void("rect", class_="lane", x=gutter, y=ly, width=width, height=h))
        if labels:
            out.append(tag("text", f"worker {lane + 1}", class_="lbl", x=gutter - 8, y=ly + h - 5))
    plot: list[Markup] = []
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
        plot.append(bar(classes, x0, y, w, a.task, a.started_at, a.finished_at, tip))
        if labels and named < caps.labels:  # the name on the bar, shown when it fits
            named += 1
            fits = w - 6 >= LABEL_CHAR * min(len(a.task), 4)
            ty = y + bar_h / 2 + 4
            if titles:  # no zoom, so no times
                plot.append(
                    tag(
                        "text",
                        fit(a.task, w),
                        class_="bl",
                        x=num(x0 + 3, ".2f"),
                        y=num(ty, ".1f"),
                        data_name=a.task,
                        hidden=not fits,
                    )
                )
            else:
                label = NAME if fits else HIDDEN_NAME
                t_0, t_1 = a.started_at - t0, a.finished_at - t0
                plot.append(label(x0 + 3, ty, t_0, t_1, a.task, fit(a.task, w)))
    if wait_rows:
        base = top + lanes * h + gap
        plot.append(
            void("line", class_="sep", x1=gutter, y1=base - 4, x2=gutter + width, y2=base - 4)
        )
        for row, (kind, _label, ws) in enumerate(wait_rows):
            y = base + row * h + (h - bar_h) / 2
            for wt in ws[: caps.bars // 4]:
                x0 = x(wt.started_at)
                ww = max(MIN_BAR, x(wt.finished_at) - x0)
                tip = (
                    f"{wt.task}\nwaiting: {wt.reason}\n{secs(wt.started_at - t0)} → "
                    f"{secs(wt.finished_at - t0)} ({secs(wt.finished_at - wt.started_at)})"
                )
                plot.append(
                    bar(f"wait w-{kind}", x0, y, ww, wt.task, wt.started_at, wt.finished_at, tip)
                )
    out.append(tag("g", *plot, class_="plot", clip_path="url(#plot)"))
    if wait_rows and labels:
        base = top + lanes * h + gap
        out.append(tag("text", "waiting for", class_="lbl group", x=gutter - 8, y=base - 7))
        for row, (_kind, limit, ws) in enumerate(wait_rows):
            total = sum(wt.finished_at - wt.started_at for wt in ws)
            # limit: "pool 'gpu'", "rate limit 'api'", "retry delays"
            out.append(
                tag(
                    "text",
                    clip(limit, 22),
                    class_="lbl",
                    x=gutter - 8,
                    y=base + row * h + h - 5,
                    data_tip=f"{limit}: {len(ws)} waits, {secs(total)} in all",
                )
            )
    if len(all_rows) > caps.wait_lanes:
        notes.append(f"The timeline draws the {caps.wait_lanes} limits that held tasks longest.")
    return tag(
        "svg",
        *out,
        id="timeline",
        class_="timeline",
        width=gutter + width + 40,
        height=height,
        viewBox=f"0 0 {gutter + width + 40} {height}",
        role="img",
        data_span=num(span, ".9g"),
        data_gutter=gutter,
        data_width=width,
        aria_label="timeline of the run by worker lane (wheel: zoom, drag: pan)",
    )
