"""Pictures of a finished run: a Chrome trace and a self-contained HTML report.

Pure functions of a :class:`~layerflow.result.RunResult` (a live run's, or one the store
loaded with ``Store.load_run``) that write one file each. Everything is drawn from what the
run recorded (its attempts, waits, layers, edges), never from calls inside the scheduler.

- ``trace``: :func:`chrome_trace`, Chrome's trace event format (Perfetto, chrome://tracing).
- ``page``: :func:`html_report`, one HTML file with inline CSS, SVG and a little script
  (package files in ``static/``), and a Content-Security-Policy that forbids every request.
  It is assembled from ``timeline``, ``graph`` and ``table``, which ``layerflow ui`` and the
  notebook view reuse. Large runs draw at most ``MAX_BARS`` bars, ``MAX_NODES`` graph nodes
  and ``MAX_ROWS`` table rows (the failed, the critical path and the longest first), and
  say so.
- ``common``: what the parts read of a run (``Run``, ``Shape``), the caps, writing a file.
  Every element is built by ``layerflow.markup`` (``tag``, ``void``), which escapes every
  name, value, error and log line.
"""

from ..errors import ReportError
from .common import (
    MAX_BARS,
    MAX_NODES,
    MAX_ROWS,
    REPORT_CAPS,
    Caps,
    Run,
    Shape,
    check_writable,
    clip,
    error_text,
    esc,
    secs,
)
from .graph import graph
from .page import html_report, legend, static, summary, write_html
from .table import table
from .timeline import timeline
from .trace import chrome_trace, write_chrome_trace

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
    "REPORT_CAPS",
    "Caps",
    "Run",
    "Shape",
    "clip",
    "error_text",
    "esc",
    "graph",
    "legend",
    "secs",
    "static",
    "summary",
    "table",
    "timeline",
]
