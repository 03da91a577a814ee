"""A fake rate-limited LLM provider on 127.0.0.1, to try pipelines that call LLM APIs offline.

``FakeAPI`` is a small HTTP server (the standard library's, one thread per connection) that
acts like an LLM provider, close enough that the official ``openai`` and ``anthropic`` clients
talk to it unchanged: each API key may make ``requests`` requests and spend ``tokens`` tokens
in any ``window`` seconds; over that, it answers ``429`` with the headers and error body the
real service sends, and counts the refusal. On request it answers a share of the calls
``503`` (OpenAI's "overloaded") or ``529 overloaded_error`` (Anthropic's). Its limits can
change while a run goes (:meth:`FakeAPI.set_limits`), as a provider's do.

    with FakeAPI(requests=50, window=0.25, latency=0.02) as api:
        client = openai.OpenAI(base_url=api.url + "/v1", api_key="key-1", max_retries=0)
        client.chat.completions.create(model="gpt-4o-mini", max_tokens=20,
                                       messages=[{"role": "user", "content": "hi"}])
        anthropic.Anthropic(base_url=api.url, api_key="key-1", max_retries=0).messages.create(
            model="claude-sonnet-4-5", max_tokens=20, messages=[{"role": "user", "content": "hi"}])

Endpoints (a prompt's tokens are its words; an answer's are ``max_tokens``, or
``max_completion_tokens``, or ``completion_tokens`` when the request names none; every answer
carries its ``usage``):

- ``POST /v1/chat/completions``: OpenAI's chat completions (the API key from
  ``Authorization: Bearer``). Every answer has OpenAI's ``x-ratelimit-limit-*``,
  ``x-ratelimit-remaining-*`` and ``x-ratelimit-reset-*`` headers (resets as Go durations:
  ``20ms``, ``1.5s``, ``6m0s``); a 429 has the body ``{"error": {"code":
  "rate_limit_exceeded", "type": "requests" or "tokens", ...}}``; an overload is a 503.
- ``POST /v1/messages``: Anthropic's messages (the key from ``x-api-key``), with its
  ``anthropic-ratelimit-*-limit/-remaining/-reset`` headers (resets as RFC 3339 times), a
  429 ``{"type": "error", "error": {"type": "rate_limit_error", ...}}`` and overloads as 529
  ``overloaded_error``.
- ``POST /v1/complete``: a plain API, ``{"prompt": str, "max_tokens": int}`` in,
  ``{"text": ..., "usage": {"prompt_tokens", "completion_tokens", "total_tokens"}}`` out.
- ``GET /v1/stats``: the counts :attr:`FakeAPI.stats` holds (``ok``, ``rejected`` (429s),
  ``overloaded``, ``tokens`` granted, ``peak_in_flight``).

A 429 carries ``Retry-After`` (``retry_after=False``: only the providers' reset headers).
Its seconds have decimals, since the fake's windows are short (a quarter of a second where a
real provider's are a minute); ``whole_seconds=True`` rounds them up, as the real services do.
"""

from __future__ import annotations

import json
import math
import random
import sys
import threading
import time
import uuid
from collections import deque
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeAPI"]


class _Key:
    """One API key's sliding windows: (arrival, tokens) of the requests it was granted."""

    def __init__(self) -> None:
        self.log: deque[tuple[float, int]] = deque()
        self.tokens = 0


class _Refusal:
    """Why a request was refused: the limit ``kind`` ("requests" or "tokens") it would
    cross, that limit, what the window holds of it, and the seconds until it would fit."""

    __slots__ = ("kind", "limit", "requested", "used", "wait")

    def __init__(self, kind: str, limit: int, used: int, requested: int, wait: float) -> None:
        self.kind = kind
        self.limit = limit
        self.used = used
        self.requested = requested
        self.wait = wait


class _Server(ThreadingHTTPServer):
    # a burst of new connections (50 clients starting at once) must queue, not be reset:
    # the default backlog of 5 drops some, and the client sees a ReadError
    request_queue_size = 256

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return  # the client went away (a cancelled call, a closed client): not our error
        super().handle_error(request, client_address)


def go_duration(seconds: float) -> str:
    """Seconds as a Go duration, as OpenAI writes its reset headers: ``20ms``, ``1.5s``,
    ``6m0s``, ``1h2m3s``."""
    seconds = max(seconds, 0.0)
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, rest = divmod(rest, 60)
    text = f"{round(rest, 3):g}s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{text}"
    if minutes:
        return f"{int(minutes)}m{text}"
    return text


def _rfc3339(seconds_from_now: float) -> str:
    when = datetime.now(UTC) + timedelta(seconds=max(seconds_from_now, 0.0))
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _words(content: Any) -> int:
    """Tokens of a message's content: its words (a string, or a list of text parts)."""
    if isinstance(content, str):
        return len(content.split())
    if isinstance(content, list):
        return sum(_words(p.get("text", "")) for p in content if isinstance(p, dict))
    return 0


class FakeAPI:
    """A local HTTP server that enforces requests and tokens per window, per API key.

    ``requests`` / ``tokens``: how many per ``window`` seconds (None: no limit of that
    kind); ``latency``: seconds each granted request takes; ``completion_tokens``: tokens
    each answer uses when the request does not say (``max_tokens``); ``overload``: the
    share of requests answered 503 / 529 instead (not counted against the key's limits);
    ``seed``: for which ones; ``retry_after``: whether a 429 carries ``Retry-After``;
    ``whole_seconds``: its value rounded up to whole seconds.
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
        overload: float = 0.0,
        seed: int | None = None,
        retry_after: bool = True,
        whole_seconds: bool = False,
    ) -> None:
        if not 0 <= overload <= 1:
            raise ValueError(f"overload is a share of requests, 0 to 1; got {overload!r}")
        self.requests = requests
        self.tokens = tokens
        self.window = window
        self.latency = latency
        self.completion_tokens = completion_tokens
        self.overload = overload
        self.retry_after = retry_after
        self.whole_seconds = whole_seconds
        self._rng = random.Random(seed)
        self._overload_next = 0
        self._lock = threading.Lock()
        self._keys: dict[str, _Key] = {}
        self.stats: dict[str, int] = {
            "ok": 0,
            "rejected": 0,
            "overloaded": 0,
            "tokens": 0,
            "peak_in_flight": 0,
        }
        self._in_flight = 0
        self._server = _Server(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
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
                    if not isinstance(body, dict):
                        raise TypeError
                except (ValueError, TypeError):
                    self._reply(400, {"error": "the body must be a JSON object"})
                    return
                path = self.path.split("?", 1)[0]
                flavour = {
                    "/v1/chat/completions": "openai",
                    "/v1/messages": "anthropic",
                    "/v1/complete": "plain",
                }.get(path)
                if flavour is None:
                    self._reply(404, {"error": f"no such path {self.path}"})
                    return
                try:
                    prompt, wanted = api._measure(flavour, body)
                except (ValueError, TypeError, AttributeError):
                    self._reply(400, {"error": "the request's prompt or max_tokens is invalid"})
                    return
                if body.get("stream"):
                    self._reply(400, {"error": "the fake API does not stream"})
                    return
                auth = self.headers.get("Authorization", "")
                key = auth.removeprefix("Bearer ").strip() or self.headers.get("X-API-Key", "-")
                if api._overloaded():
                    self._reply(*api._overload_answer(flavour))
                    return
                refused = api._admit(key, prompt + wanted)
                headers = api._limit_headers(flavour, key)
                if refused is not None:
                    code, answer, extra = api._refusal_answer(flavour, body, refused)
                    self._reply(code, answer, {**headers, **extra})
                    return
                with api._lock:
                    api._in_flight += 1
                    api.stats["peak_in_flight"] = max(api.stats["peak_in_flight"], api._in_flight)
                try:
                    time.sleep(api.latency)
                finally:
                    with api._lock:
                        api._in_flight -= 1
                self._reply(200, api._answer(flavour, body, prompt, wanted), headers)

            def _reply(self, code: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        return Handler

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (OpenAI's client takes ``url + "/v1"`` as its
        ``base_url``, Anthropic's the URL itself)."""
        host, port = self._server.server_address[:2]
        return f"http://{str(host)}:{port}"  # (typed str or bytes: it is the str given)

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
        self,
        *,
        requests: int | None = None,
        tokens: int | None = None,
        window: float | None = None,
        overload: float | None = None,
    ) -> None:
        """Change the limits now (a provider lowering a key's quota mid-run), or the share
        of requests answered as overloaded."""
        with self._lock:
            if requests is not None:
                self.requests = requests
            if tokens is not None:
                self.tokens = tokens
            if window is not None:
                self.window = window
            if overload is not None:
                self.overload = overload

    def overload_next(self, count: int = 1) -> None:
        """Answer the next ``count`` requests as overloaded (503 / 529), whatever the
        ``overload`` share."""
        with self._lock:
            self._overload_next += count

    def _measure(self, flavour: str, body: dict[str, Any]) -> tuple[int, int]:
        """(prompt tokens, answer tokens) of a request."""
        wanted = body.get("max_tokens", body.get("max_completion_tokens"))
        wanted = int(wanted) if wanted is not None else self.completion_tokens
        if wanted < 0:
            raise ValueError("max_tokens < 0")
        if flavour == "plain":
            return len(str(body.get("prompt", "")).split()), wanted
        messages = body.get("messages") or []
        prompt = sum(_words(m.get("content")) for m in messages)
        if flavour == "anthropic":
            prompt += _words(body.get("system", ""))
        return prompt, wanted

    def _overloaded(self) -> bool:
        with self._lock:
            if self._overload_next > 0:
                self._overload_next -= 1
            elif not (self.overload and self._rng.random() < self.overload):
                return False
            self.stats["overloaded"] += 1
            return True

    def _admit(self, key: str, used: int) -> _Refusal | None:
        """Grant a request (None) or say why not and how many seconds until it would fit."""
        now = time.monotonic()
        with self._lock:
            k = self._window(key, now)
            refusal = None
            if self.requests is not None and len(k.log) >= self.requests:
                oldest = k.log[len(k.log) - self.requests][0] if self.requests else now
                wait = oldest + self.window - now
                refusal = _Refusal("requests", self.requests, len(k.log), 1, wait)
            if self.tokens is not None and k.tokens + used > self.tokens:
                excess = k.tokens + used - self.tokens
                for t, c in k.log:
                    excess -= c
                    if excess <= 0:
                        wait = t + self.window - now
                        break
                else:
                    wait = math.inf if used > self.tokens else self.window
                if refusal is None or wait > refusal.wait:
                    refusal = _Refusal("tokens", self.tokens, k.tokens, used, wait)
            if refusal is not None:
                self.stats["rejected"] += 1
                wait = refusal.wait
                refusal.wait = min(max(wait, 0.001), 3600.0) if math.isfinite(wait) else 3600.0
                return refusal
            k.log.append((now, used))
            k.tokens += used
            self.stats["ok"] += 1
            self.stats["tokens"] += used
            return None

    def _window(self, key: str, now: float) -> _Key:
        """Key ``key``'s window, without what has left it. Lock held."""
        k = self._keys.setdefault(key, _Key())
        while k.log and k.log[0][0] <= now - self.window:
            k.tokens -= k.log.popleft()[1]
        return k

    def _limit_headers(self, flavour: str, key: str) -> dict[str, str]:
        """The provider's rate-limit headers for ``key`` now: each limit, what remains of
        it, and when it is whole again."""
        if flavour == "plain":
            return {}
        now = time.monotonic()
        out: dict[str, str] = {}
        with self._lock:
            k = self._window(key, now)
            reset = k.log[-1][0] + self.window - now if k.log else 0.0
            kinds = [("requests", self.requests, len(k.log)), ("tokens", self.tokens, k.tokens)]
        for kind, limit, used in kinds:
            if limit is None:
                continue
            remaining = str(max(limit - used, 0))
            if flavour == "openai":
                out[f"x-ratelimit-limit-{kind}"] = str(limit)
                out[f"x-ratelimit-remaining-{kind}"] = remaining
                out[f"x-ratelimit-reset-{kind}"] = go_duration(reset)
            else:
                out[f"anthropic-ratelimit-{kind}-limit"] = str(limit)
                out[f"anthropic-ratelimit-{kind}-remaining"] = remaining
                out[f"anthropic-ratelimit-{kind}-reset"] = _rfc3339(reset)
        return out

    def _refusal_answer(
        self, flavour: str, body: dict[str, Any], refused: _Refusal
    ) -> tuple[int, Any, dict[str, str]]:
        """A 429 as the provider sends it: (status, body, headers beyond the limits')."""
        wait = refused.wait
        headers: dict[str, str] = {}
        if self.retry_after:
            shown = math.ceil(wait) if self.whole_seconds else round(wait, 3)
            headers["retry-after"] = f"{shown:g}"
        model = str(body.get("model", "model"))
        if flavour == "openai":
            what = (
                "requests per min (RPM)" if refused.kind == "requests" else "tokens per min (TPM)"
            )
            message = (
                f"Rate limit reached for {model} in organization org-fake on {what}: "
                f"Limit {refused.limit}, Used {refused.used}, Requested {refused.requested}. "
                f"Please try again in {go_duration(wait)}. Visit "
                "https://platform.openai.com/account/rate-limits to learn more."
            )
            error = {"message": message, "type": refused.kind, "param": None}
            return 429, {"error": {**error, "code": "rate_limit_exceeded"}}, headers
        if flavour == "anthropic":
            request_id = f"req_{uuid.uuid4().hex[:24]}"
            headers |= {"request-id": request_id, "x-should-retry": "true"}
            message = (
                f"This request would exceed the rate limit for your organization of "
                f"{refused.limit} {refused.kind} per minute. For details, refer to: "
                "https://docs.claude.com/en/api/rate-limits."
            )
            answer = {
                "type": "error",
                "error": {"type": "rate_limit_error", "message": message},
                "request_id": request_id,
            }
            return 429, answer, headers
        return 429, {"error": "rate limited", "retry_after": wait}, headers

    def _overload_answer(self, flavour: str) -> tuple[int, Any, dict[str, str]]:
        if flavour == "anthropic":
            request_id = f"req_{uuid.uuid4().hex[:24]}"
            answer = {
                "type": "error",
                "error": {"type": "overloaded_error", "message": "Overloaded"},
                "request_id": request_id,
            }
            return 529, answer, {"request-id": request_id, "x-should-retry": "true"}
        message = "The server is overloaded or not ready yet."
        if flavour == "openai":
            error = {"message": message, "type": "server_error", "param": None, "code": None}
            return 503, {"error": error}, {}
        return 503, {"error": message}, {}

    def _answer(
        self, flavour: str, body: dict[str, Any], prompt: int, wanted: int
    ) -> dict[str, Any]:
        words = " ".join(["lorem"] * min(wanted, 20))
        text = f"analysis of {prompt} words: {words}"
        model = str(body.get("model", "model"))
        if flavour == "openai":
            return {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "length",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": wanted,
                    "total_tokens": prompt + wanted,
                },
                "system_fingerprint": None,
            }
        if flavour == "anthropic":
            return {
                "id": f"msg_{uuid.uuid4().hex[:24]}",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": "max_tokens",
                "stop_sequence": None,
                "usage": {
                    "input_tokens": prompt,
                    "output_tokens": wanted,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                },
            }
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": wanted,
            "total_tokens": prompt + wanted,
        }
        return {"text": text, "usage": usage}
