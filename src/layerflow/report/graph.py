"""The report's graph: the tasks by layer, coloured by status, the critical path marked,
as SVG."""

from __future__ import annotations

from ..names import counted
from .common import (
    REPORT_CAPS,
    Caps,
    Markup,
    Shape,
    TaskRun,
    clip,
    error_text,
    pattern,
    secs,
    tag,
    void,
)

__all__ = ["LABEL_CHAR", "fit", "graph", "tip_task"]

LABEL_CHAR = 6.2  # px per character of a bar's name (11px font): a name is drawn if it fits


def fit(name: str, width: float) -> str:
    """``name`` cut to what a bar ``width`` px wide can hold."""
    room = int((width - 6) / LABEL_CHAR)
    return name if len(name) <= room else name[: max(room - 1, 1)] + "…"


NODE_W, NODE_H = 164, 24  # px: a task's box


# what is drawn by the hundred: patterns, made once by tag() and void()
def _node(cls: str, task: str, tip: str, x: int, y: int, tx: int, ty: int, text: str) -> Markup:
    box = void("rect", x=x, y=y, width=NODE_W, height=NODE_H, rx=5)
    return tag("g", box, tag("text", text, x=tx, y=ty), class_=cls, data_task=task, data_tip=tip)


def _edge(cls: str, d: str) -> Markup:
    return void("path", class_=cls, d=d)


NODE = pattern(_node)
EDGE = pattern(_edge)


def tip_task(t: TaskRun, needs: list[str], critical: bool) -> str:
    plural = "s" if t.attempts != 1 else ""
    lines = [
        t.name,
        f"{t.status} · layer {t.layer} · {t.attempts} attempt{plural} · {secs(t.duration)}",
    ]
    if needs:
        more = f" (+{len(needs) - 8} more)" if len(needs) > 8 else ""
        lines.append("needs: " + ", ".join(needs[:8]) + more)
    if t.error is not None:
        lines.append(clip(error_text(t.error), 300))
    if critical:
        lines.append("on the critical path")
    return "\n".join(lines)


def graph(
    run: Shape,
    critical: set[str],
    notes: list[str],
    caps: Caps = REPORT_CAPS,
    *,
    titles: bool = False,
) -> Markup:
    """The graph by layer as SVG (a run's, or a plan's shape); ``titles`` as in
    :func:`~layerflow.report.timeline.timeline`."""
    layers = run.layers
    if not layers:
        return tag("p", "The run has no tasks.", class_="empty")
    edges = run.edges
    if not edges and len(layers) > 1:
        notes.append("The graph's edges were not recorded for this run: nodes only.")
    needs: dict[str, list[str]] = {}
    for up, down in edges:
        needs.setdefault(down, []).append(up)
    col_w, node_w, node_h, vgap, top, left = 190, NODE_W, NODE_H, 10, 30, 12

    def node(cls: str, x: int, y: int, text: str, tip: str, task: str | None = None) -> Markup:
        """A task's box with its name, and its hover text."""
        if task is not None and not titles:
            return NODE(cls, task, tip, x, y, x + 8, y + 16, text)
        box = void("rect", x=x, y=y, width=NODE_W, height=NODE_H, rx=5)
        label = tag("text", text, x=x + 8, y=y + 16)
        if titles:
            return tag("g", tag("title", tip), box, label, class_=cls, data_task=task)
        return tag("g", box, label, class_=cls, data_task=task, data_tip=tip)

    pos: dict[str, tuple[int, int]] = {}
    nodes: list[Markup] = []
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
        nodes.append(tag("text", f"layer {li}", class_="axis", x=x, y=top - 12))
        for k, name in enumerate(shown):
            y = top + k * (node_h + vgap)
            pos[name] = (x, y)
            t = run.tasks.get(name)
            status = t.status if t is not None else "pending"
            cls = f"node s-{status}" + (" crit" if name in critical else "")
            tip = tip_task(t, needs.get(name, []), name in critical) if t is not None else name
            nodes.append(node(cls, x, y, clip(name, 24), tip, task=name))
        rows = len(shown)
        if len(layer) > len(shown):
            y = top + rows * (node_h + vgap)
            hidden = len(layer) - len(shown)
            tip = f"{counted(hidden, 'more task')} in layer {li} (not drawn)"
            nodes.append(node("node more", x, y, f"+ {hidden} more", tip))
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
    lines: list[Markup] = []
    drawable = [(u, d) for u, d in edges if u in pos and d in pos]
    if len(drawable) > caps.edges:
        notes.append(
            f"The graph draws {caps.edges:,} of {len(drawable):,} edges between drawn tasks."
        )
        drawable.sort(key=lambda e: e not in crit_pairs)
        drawable = drawable[: caps.edges]
    for up, down in drawable:
        (left1, top1), (x2, top2) = pos[up], pos[down]
        x1, y1, y2 = left1 + node_w, top1 + node_h / 2, top2 + node_h / 2
        dx = (x2 - x1) / 2
        cls = "edge crit" if (up, down) in crit_pairs else "edge"
        # a curve from the right of one box to the left of the other: numbers only
        d = f"M{x1:.0f},{y1:.0f} C{x1 + dx:.0f},{y1:.0f} {x2 - dx:.0f},{y2:.0f} {x2:.0f},{y2:.0f}"
        lines.append(EDGE(cls, d))
    width = left + min(len(layers), caps.layers) * col_w
    height = top + tallest * (node_h + vgap) + 4
    return tag(
        "svg",
        tag("g", *lines, class_="edges"),
        *nodes,
        id="graph",
        class_="graph",
        width=width,
        height=height,
        viewBox=f"0 0 {width} {height}",
        role="img",
        aria_label="the graph by layers",
    )
