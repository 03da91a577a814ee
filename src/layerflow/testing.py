"""A fake rate-limited API on 127.0.0.1, to try pipelines that call LLM or web APIs offline.

``FakeAPI`` is a small HTTP server (the standard library's, one thread per request) that acts
like an LLM provider: each API key may make ``requests`` requests and spend ``tokens``
tokens in any ``window`` seconds; over that, it answers ``429 Too Many Requests`` with a
``Retry-After`` (seconds, with decimals) and counts the refusal. Its limits can change while
a run goes (:meth:`FakeAPI.set_limits`), as a provider's do.

    with FakeAPI(requests=50, window=0.25, latency=0.02) as api:
        httpx.post(api.url + "/v1/complete", json={"prompt": "hi", "max_tokens": 20},
                   headers={"Authorization": "Bearer key-1"})

``POST /v1/complete`` takes ``{"prompt": str, "max_tokens": int}`` and answers
``{"text": ..., "usage": {"prompt_tokens", "completion_tokens", "total_tokens"}}``; a prompt's
tokens are its words. ``GET /v1/stats`` answers the counts :attr:`FakeAPI.stats` holds.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeAPI"]


class _Key:
    """One API key's sliding windows: (arrival, tokens) of the requests it was granted."""

    def __init__(self) -> None:
        self.log: deque[tuple[float, int]] = deque()
        self.tokens = 0


class _Server(ThreadingHTTPServer):
    # a burst of new connections (50 clients starting at once) must queue, not be reset:
    # the default backlog of 5 drops some, and the client sees a ReadError
    request_queue_size = 256


class FakeAPI:
    """A local HTTP server that enforces requests and tokens per window, per API key.

    ``requests`` / ``tokens``: how many per ``window`` seconds (None: no limit of that
    kind); ``latency``: seconds each granted request takes; ``completion_tokens``: tokens
    each answer uses when the request does not say (``max_tokens``).
    """

    def __init__(
        self,
        *,
        requests: int | None = 50,
        tokens: int | None = None,
        window: float = 1.0,
        latency: float = 0.02,
        completion_tokens: int = 50,
        port: int = 0,
    ) -> None:
        self.requests = requests
        self.tokens = tokens
        self.window = window
        self.latency = latency
        self.completion_tokens = completion_tokens
        self._lock = threading.Lock()
        self._keys: dict[str, _Key] = {}
        self.stats: dict[str, int] = {"ok": 0, "rejected": 0, "tokens": 0, "peak_in_flight": 0}
        self._in_flight = 0
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms stall

            def log_message(self, *args: Any) -> None:  # quiet: tests and benchmarks read stats
                pass

            def do_GET(self) -> None:
                if self.path == "/v1/stats":
                    with api._lock:
                        self._reply(200, dict(api.stats))
                else:
                    self._reply(404, {"error": f"no such path {self.path}"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                    prompt = str(body.get("prompt", ""))
                    wanted = int(body.get("max_tokens", api.completion_tokens))
                except (ValueError, TypeError, AttributeError):
                    self._reply(400, {"error": "the body must be JSON with prompt and max_tokens"})
                    return
                if self.path != "/v1/complete":
                    self._reply(404, {"error": f"no such path {self.path}"})
                    return
                auth = self.headers.get("Authorization", "")
                key = auth.removeprefix("Bearer ").strip() or self.headers.get("X-API-Key", "-")
                used = len(prompt.split()) + wanted
                wait = api._admit(key, used)
                if wait is not None:
                    self._reply(
                        429,
                        {"error": "rate limited", "retry_after": wait},
                        {"Retry-After": f"{wait:.3f}"},
                    )
                    return
                with api._lock:
                    api._in_flight += 1
                    api.stats["peak_in_flight"] = max(api.stats["peak_in_flight"], api._in_flight)
                try:
                    time.sleep(api.latency)
                finally:
                    with api._lock:
                        api._in_flight -= 1
                words = " ".join(["lorem"] * min(wanted, 20))
                usage = {
                    "prompt_tokens": len(prompt.split()),
                    "completion_tokens": wanted,
                    "total_tokens": used,
                }
                self._reply(
                    200, {"text": f"analysis of {len(prompt)} chars: {words}", "usage": usage}
                )

            def _reply(self, code: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self._server = _Server(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeAPI:
        """Serve in a background thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="layerflow-fake-api", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_limits(
        self, *, requests: int | None = None, tokens: int | None = None, window: float | None = None
    ) -> None:
        """Change the limits now (a provider lowering a key's quota mid-run)."""
        with self._lock:
            if requests is not None:
                self.requests = requests
            if tokens is not None:
                self.tokens = tokens
            if window is not None:
                self.window = window

    def _admit(self, key: str, used: int) -> float | None:
        """Grant a request (None) or say how many seconds until it would fit."""
        now = time.monotonic()
        with self._lock:
            k = self._keys.setdefault(key, _Key())
            while k.log and k.log[0][0] <= now - self.window:
                k.tokens -= k.log.popleft()[1]
            wait = 0.0
            if self.requests is not None and len(k.log) >= self.requests:
                wait = k.log[len(k.log) - self.requests][0] + self.window - now
            if self.tokens is not None and k.tokens + used > self.tokens:
                excess = k.tokens + used - self.tokens
                for t, c in k.log:
                    excess -= c
                    if excess <= 0:
                        wait = max(wait, t + self.window - now)
                        break
                else:
                    wait = math.inf if used > self.tokens else self.window
            if wait > 0:
                self.stats["rejected"] += 1
                return min(max(wait, 0.001), 3600.0) if math.isfinite(wait) else 3600.0
            k.log.append((now, used))
            k.tokens += used
            self.stats["ok"] += 1
            self.stats["tokens"] += used
            return None
