"""The run as a Chrome trace (Perfetto, chrome://tracing): process 1 has a thread per
worker lane with a complete event per attempt; process 2 has the waits (for a resource pool,
a rate window, a retry delay), each its own event."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .common import Run, owner, write_file

__all__ = ["chrome_trace", "write_chrome_trace"]


# --- Chrome trace ---------------------------------------------------------------------------

TRACE_COLORS = {  # chrome://tracing's reserved color names; Perfetto colors by name
    "succeeded": "good",
    "cached": "good",
    "failed": "terrible",
    "timed_out": "terrible",
    "rate_limited": "bad",
    "cancelled": "grey",
    "skipped": "grey",
}


def chrome_trace(run: Run) -> dict[str, Any]:
    """The run in Chrome's trace event format: ``{"traceEvents": [...]}`` with times in
    microseconds from the run's start."""
    t0 = run.started_at

    def us(t: float) -> float:
        return round((t - t0) * 1e6, 3)

    title = (
        f"layerflow {run.flow_name} {run.run_id}" if run.flow_name else f"layerflow {run.run_id}"
    )
    events: list[dict[str, Any]] = [meta("process_name", 1, 0, title)]
    events.append(meta("process_sort_index", 1, 0, sort_index=0))
    attempts, waits = run.attempts, run.waits
    for lane in range(max((a.lane for a in attempts), default=-1) + 1):
        events.append(meta("thread_name", 1, lane + 1, f"worker {lane + 1}"))
        events.append(meta("thread_sort_index", 1, lane + 1, sort_index=lane))
    critical = set(run.critical_path)
    for a in attempts:
        t = owner(run, a.task)
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
                "cname": TRACE_COLORS.get(a.outcome, "generic_work"),
                "args": args,
            }
        )
    if waits:
        events.append(meta("process_name", 2, 0, "waiting (limits and retries)"))
        events.append(meta("process_sort_index", 2, 0, sort_index=1))
        for lane in range(max(w.lane for w in waits) + 1):
            events.append(meta("thread_name", 2, lane + 1, f"waits {lane + 1}"))
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


def meta(
    name: str, pid: int, tid: int, label: str | None = None, *, sort_index: int | None = None
) -> dict[str, Any]:
    args: dict[str, Any] = {"name": label} if label is not None else {"sort_index": sort_index}
    return {"name": name, "ph": "M", "pid": pid, "tid": tid, "args": args}


def write_chrome_trace(run: Run, path: str | os.PathLike[str]) -> Path:
    """Write :func:`chrome_trace` as JSON to ``path``; return the path."""
    return write_file(path, json.dumps(chrome_trace(run), separators=(",", ":")) + "\n")
