"""The report's graph: the tasks by layer, coloured by status, the critical path marked,
as SVG."""

from __future__ import annotations

from ..names import counted
from .common import REPORT_CAPS, Caps, RunResult, TaskRun, clip, error_text, esc, secs

__all__ = ["LABEL_CHAR", "fit", "graph", "tip_task"]

LABEL_CHAR = 6.2  # px per character of a bar's name (11px font): a name is drawn if it fits


def fit(name: str, width: float) -> str:
    """``name`` cut to what a bar ``width`` px wide can hold."""
    room = int((width - 6) / LABEL_CHAR)
    return name if len(name) <= room else name[: max(room - 1, 1)] + "…"


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


def graph(run: RunResult, critical: set[str], notes: list[str], caps: Caps = REPORT_CAPS) -> str:
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
            cls = f"node s-{esc(status)}" + (" crit" if name in critical else "")
            tip = tip_task(t, needs.get(name, []), name in critical) if t is not None else name
            nodes.append(
                f'<g class="{cls}" data-task="{esc(name)}" data-tip="{esc(tip)}">'
                f'<rect x="{x}" y="{y}" width="{node_w}" height="{node_h}" rx="5"/>'
                f'<text x="{x + 8}" y="{y + 16}">{esc(clip(name, 24))}</text></g>'
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
