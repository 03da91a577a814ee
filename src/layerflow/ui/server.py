"""The HTTP side of ``layerflow ui``: the standard library's ``ThreadingHTTPServer``, GET
only, on 127.0.0.1 unless told otherwise.

Routes: ``/`` (the runs), ``/run/ID`` (a run's page), ``/api/runs`` and ``/api/run/ID``
(the same as JSON of HTML pieces, which the page's script polls about once a second while
a run goes), ``/api/run/ID/task?name=NAME`` (a task's detail) and ``/static/NAME`` (the
page's stylesheets and script, by name from a fixed list: no request names a file). Nothing
is written: the store is read through :class:`Store`'s queries only. Every response
carries a Content-Security-Policy that allows no inline script and no other origin, and a
request whose ``Host`` is not this server's (its address, localhost, and when it answers
on every address, the machine's names and any IP address) is refused: a web page elsewhere
cannot read the store through DNS rebinding.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .. import report
from ..errors import StoreError
from ..events import logger
from ..markup import fill
from ..store import Store
from .pages import RunsSummary, asset, run_page, run_sections, runs_page, runs_table, task_detail
from .values import NotShown, shown_value, stored_value
from .view import RunView, load_view

__all__ = ["UIServer"]

_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_STATIC = {  # the only files served, by name
    "ui.css": "text/css; charset=utf-8",
    "ui.js": "text/javascript; charset=utf-8",
    "report.css": "text/css; charset=utf-8",
}
_ENDED_KEPT = 8  # ended runs' views kept (a task's detail reads its run again)
_VALUES_KEPT = 64  # stored values' previews kept (a value stored cannot change)
POLL = 1.0  # seconds between a live page's updates (more when a run is slow to read)
TIMEOUT = 30.0  # seconds a connection may take to send its request or read its answer

_ELSEWHERE = (
    "This page answers only at its own address: this machine's name or an IP address "
    "(not another name that leads here)."
)

_Reply = tuple[int, str | bytes, str]  # status, body, Content-Type


class UIServer(ThreadingHTTPServer):
    """The page server over one store (``serve_forever`` to run it, ``shutdown`` to stop)."""

    daemon_threads = True

    def __init__(self, store: Store, host: str = "127.0.0.1", port: int = 0) -> None:
        self.store = store
        self.summary = RunsSummary(store)
        self.ended: dict[str, RunView] = {}  # ended runs' views (they cannot change)
        self.values: dict[tuple[str, str], str | Exception] = {}  # (run, task) -> preview
        self.lock = threading.Lock()  # one store connection: reads one at a time
        super().__init__((host, port), _Handler)
        #: the names a request may give as its Host (any address too when ``everywhere``)
        self.names = {"127.0.0.1", "localhost", "::1", host.strip("[]").lower()}
        self.everywhere = host in ("0.0.0.0", "::", "")
        if self.everywhere:  # this machine's own names
            self.names |= {socket.gethostname().lower(), socket.getfqdn().lower()}

    @property
    def url(self) -> str:
        """Where the page is, e.g. ``http://127.0.0.1:8765/``."""
        host, port = self.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else str(host)
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"


class _Handler(BaseHTTPRequestHandler):
    server: UIServer
    server_version = "layerflow-ui"
    protocol_version = "HTTP/1.1"
    timeout = TIMEOUT  # a stalled browser's connection is dropped, never waited on forever

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        logger.debug("ui: " + format, *args)

    # --- responses -----------------------------------------------------------------------
    # A route builds its reply (under the server's lock when it reads the store) and returns
    # it; it is sent after the lock is released: a browser that does not read its answer
    # holds up its own connection only (and that for ``timeout`` seconds at most).

    def _send(self, reply: _Reply) -> None:
        status, body, kind = reply
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Content-Security-Policy", _CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    @staticmethod
    def _html(body: str, status: int = 200) -> _Reply:
        return status, body, "text/html; charset=utf-8"

    @staticmethod
    def _json(value: Any, status: int = 200) -> _Reply:
        return status, json.dumps(value), "application/json"

    def _error_page(self, status: int, message: str, api: bool) -> _Reply:
        if api:
            return self._json({"error": message}, status)
        page = fill(
            asset("error.html"),
            title=f"{status} {HTTPStatus(status).phrase}",
            message=message,
        )
        return self._html(page, status)

    # --- requests ------------------------------------------------------------------------

    def do_HEAD(self) -> None:  # noqa: N802 (the base's name)
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802 (the base's name)
        url = urlsplit(self.path)
        path = url.path
        api = path.startswith("/api/")
        try:
            if not self._host_ok():
                reply = self._error_page(403, _ELSEWHERE, api)
            else:
                try:
                    reply = self._route(path, parse_qs(url.query), api)
                except StoreError as e:
                    reply = self._error_page(503, f"The store cannot be read: {e}", api)
                except Exception as e:  # a bug of the page's: said, and logged with its traceback
                    logger.exception("layerflow ui failed on %s", path)
                    reply = self._error_page(
                        500, f"layerflow ui failed: {type(e).__name__}: {e}", api
                    )
            self._send(reply)
        except OSError:  # the browser went away, or did not read its answer in time
            self.close_connection = True

    def _reject(self) -> None:
        try:
            self._send(
                self._error_page(
                    405, "This page only reads the store: GET only.", self.path.startswith("/api/")
                )
            )
        except OSError:
            self.close_connection = True

    do_POST = do_PUT = do_DELETE = do_PATCH = _reject  # noqa: N815 (the base's names)

    def _host_ok(self) -> bool:
        """Whether the request names this server: by one of ``names``, or, when it answers
        on every address, by any address (a page elsewhere reaches it by a name of its own
        that resolves here, DNS rebinding, never by an address)."""
        given = (self.headers.get("Host") or "").strip().lower()
        if given.startswith("["):  # [IPv6]:port
            name, _, port = given[1:].partition("]:")
        else:
            name, _, port = given.rpartition(":")
        if port != str(self.server.server_address[1]):
            return False
        if name in self.server.names:
            return True
        if not self.server.everywhere:
            return False
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    def _route(self, path: str, query: dict[str, list[str]], api: bool) -> _Reply:
        if path in ("/", "/index.html"):
            with self.server.lock:
                page = runs_page(self.server.store, self.server.summary)
            return self._html(page)
        if path == "/api/runs":
            with self.server.lock:
                table = runs_table(self.server.store, self.server.summary)
            return self._json({"html": table})
        if path.startswith("/static/"):
            name = path[len("/static/") :]
            if name not in _STATIC:
                return self._error_page(404, "No such file.", api)
            body = report.static("report.css") if name == "report.css" else asset(name)
            return 200, body, _STATIC[name]
        if path.startswith("/run/"):
            return self._run(unquote(path[len("/run/") :]), api)
        if path.startswith("/api/run/"):
            rest = unquote(path[len("/api/run/") :])
            if rest.endswith("/task"):
                names = query.get("name") or [""]
                return self._task(rest[: -len("/task")], names[0], api)
            return self._run(rest, api)
        return self._error_page(404, "There is no such page.", api)

    def _view(self, run_id: str) -> RunView:
        """The run as the page shows it; an ended run's read once (the latest few kept)."""
        ended = self.server.ended
        view = ended.get(run_id)
        if view is None:
            view = load_view(self.server.store, run_id)
            if view.ended:
                if len(ended) >= _ENDED_KEPT:
                    ended.pop(next(iter(ended)))
                ended[run_id] = view
        return view

    def _find(self, run_id: str, api: bool) -> RunView | _Reply:
        """The run's view, or the page saying there is no such run (under the lock)."""
        try:
            return self._view(run_id)
        except StoreError:
            if self.server.store.has_run(run_id):
                raise
            return self._error_page(
                404, f"There is no run {run_id!r} in the store {self.server.store.folder}.", api
            )

    def _run(self, run_id: str, api: bool) -> _Reply:
        store = self.server.store
        began = time.perf_counter()
        with self.server.lock:
            view = self._find(run_id, api)
            if not isinstance(view, RunView):
                return view
            if not api:
                return self._html(run_page(view, store))
            sections = run_sections(view)
        took = time.perf_counter() - began
        return self._json(
            {
                "live": view.live,
                "status": view.status,
                # a run slow to read is read less often: the page never loads the machine
                "poll": round(max(POLL, 3 * took) * 1000),
                "html": sections,
            }
        )

    def _task(self, run_id: str, name: str, api: bool) -> _Reply:
        """A task's detail. Its stored value is read under the lock, but loaded and
        previewed outside it (a large one takes a while), once: the preview is kept."""
        key = (run_id, name)
        data = None
        with self.server.lock:
            view = self._find(run_id, api)
            if not isinstance(view, RunView):
                return view
            found = view.result.tasks.get(name)
            if found is None:
                return self._error_page(404, f"Run {run_id} has no task {name!r}.", api)
            value = self.server.values.get(key) if found.ok else None
            if found.ok and value is None:
                try:
                    data = stored_value(self.server.store, run_id, name)
                except (NotShown, StoreError, OSError) as e:  # none yet: asked again later
                    value = e
        if data is not None:
            try:
                value = shown_value(data, run_id, name)
            except NotShown as e:
                value = e
            with self.server.lock:
                kept = self.server.values
                if len(kept) >= _VALUES_KEPT:
                    kept.pop(next(iter(kept)))
                kept[key] = value
        return self._json({"html": task_detail(view, name, value)})
