"""Push-back: an error that means "too many requests, try later", and how long to wait.

``lf.RateLimited(retry_after=...)`` says so explicitly. The HTTP 429 and 503 errors of
``httpx``, ``requests`` and ``aiohttp`` say so too, and are recognized by their type's module
and their status code, without importing those libraries; their ``Retry-After`` header is read
in seconds (``"2"``, ``"0.5"``) or as an HTTP date, and ``retry-after-ms`` (sent by some LLM
APIs) in milliseconds. A push-back pauses the task's limits and tries the task again without
spending one of its ``retries``.
"""

from __future__ import annotations

import math
import time
from email.utils import parsedate_to_datetime
from typing import Any

from .errors import RateLimited

__all__ = ["PUSHBACK_STATUSES", "retry_after_of"]

#: HTTP statuses that mean "slow down" rather than "this request is wrong"
PUSHBACK_STATUSES = frozenset({429, 503})
#: the wait when a 429 or 503 gives no usable Retry-After
DEFAULT_RETRY_AFTER = 1.0
#: a Retry-After longer than this is read as this (a misconfigured server must not park a
#: run for a day; the task's own timeout or the run's still apply)
MAX_RETRY_AFTER = 600.0
_HTTP_LIBRARIES = ("httpx", "requests", "aiohttp")


def retry_after_of(error: BaseException | None) -> float | None:
    """Seconds to wait when ``error`` is push-back; None when it is an ordinary failure."""
    if error is None:
        return None
    if isinstance(error, RateLimited):
        return min(error.retry_after, MAX_RETRY_AFTER)
    if type(error).__module__.partition(".")[0] not in _HTTP_LIBRARIES:
        return None
    try:
        status, headers = _status_and_headers(error)
    except Exception:  # an error object that cannot be read: an ordinary failure
        return None
    if status not in PUSHBACK_STATUSES:
        return None
    return _retry_after(headers)


def _status_and_headers(error: BaseException) -> tuple[int | None, Any]:
    """(HTTP status, response headers) of an httpx, requests or aiohttp error."""
    response = getattr(error, "response", None)  # httpx.HTTPStatusError, requests.HTTPError
    if response is not None:
        status = getattr(response, "status_code", None)
        if isinstance(status, int):
            return status, getattr(response, "headers", None)
    status = getattr(error, "status", None)  # aiohttp.ClientResponseError
    if isinstance(status, int):
        return status, getattr(error, "headers", None)
    return None, None


def _retry_after(headers: Any) -> float:
    """The wait a response's headers ask for (case-insensitive names)."""
    if headers is None:
        return DEFAULT_RETRY_AFTER
    try:
        found = {str(k).lower(): str(v) for k, v in headers.items()}
    except Exception:  # headers of an unexpected shape: the default wait
        return DEFAULT_RETRY_AFTER
    ms = found.get("retry-after-ms")
    if ms is not None:
        seconds = _seconds(ms)
        if seconds is not None:
            return min(seconds / 1000.0, MAX_RETRY_AFTER)
    value = found.get("retry-after")
    if value is None:
        return DEFAULT_RETRY_AFTER
    seconds = _seconds(value)
    if seconds is None:
        try:  # an HTTP date: "Wed, 21 Oct 2026 07:28:00 GMT"
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return DEFAULT_RETRY_AFTER
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _seconds(text: str) -> float | None:
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None
