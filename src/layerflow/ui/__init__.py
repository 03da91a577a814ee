"""``layerflow ui``: a live local page over a run store.

The runs at ``/``; each run's page updates while the run goes (counts by status, progress,
the timeline, the graph coloured by status, waits on pools and rate limits, failures with
the user's tracebacks, each task's logs and value) from what the store records: results as
they commit, and each running run's heartbeat (``heartbeat.py``). Read-only, offline (no
CDN), on 127.0.0.1 unless told otherwise; every name, value and log line is shown as text.

    from layerflow.ui import serve
    server = serve(".layerflow", port=8765)   # then server.serve_forever()
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from ..errors import LayerflowError
from ..store import Store, default_store_path
from .server import UIServer

__all__ = ["UIError", "UIServer", "serve"]


class UIError(LayerflowError):
    """The page cannot be served: no store there, or the port is taken."""


def serve(
    store: str | os.PathLike[str] | Store | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
) -> UIServer:
    """A :class:`UIServer` over ``store`` (a folder, default ``.layerflow`` or
    ``$LAYERFLOW_STORE``; never created) bound to ``host``:``port`` (0: any free port).
    Call its ``serve_forever()``; ``shutdown()`` from another thread stops it."""
    if not isinstance(store, Store):
        folder = Path(store) if store is not None else default_store_path()
        if not (folder / "state.db").is_file():
            what = "is not a layerflow store" if folder.exists() else "does not exist"
            raise UIError(
                f"no store at {folder}: the folder {what}. Point --store at the folder "
                f"your runs recorded to (layerflow run records in .layerflow in its working "
                f"directory; flow.run in the folder given as store=), or run a flow first"
            )
        store = Store(folder)
    try:
        return UIServer(store, host, port)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise UIError(
                f"port {port} on {host} is in use (another layerflow ui, or another "
                f"program): choose another with --port N, or --port 0 for any free one"
            ) from None
        raise UIError(f"cannot serve on {host}:{port}: {e.strerror or e}") from None
