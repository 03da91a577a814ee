"""Push-back: an error that means "too many requests, try later", and how long to wait.

``lf.RateLimited(retry_after=...)`` says so explicitly. HTTP errors say so with their status:
429 (too many requests), 503 (unavailable) and 529 (Anthropic's "overloaded"). They are
recognized without importing any client library, by what they carry:

- the errors of ``httpx``, ``httpx2``, ``requests``, ``aiohttp``, ``urllib``, ``openai``,
  ``anthropic``, ``litellm``, ``google`` (``google-genai``: the status in ``.code``),
  ``mistralai``, ``cohere`` and ``groq``, by the module their type (or a base) comes from
  and their int HTTP status: ``.status_code``, ``.response.status_code``, ``.status`` or
  ``.code``;
- any other exception with an int HTTP status there *and* response headers (``.headers``,
  ``.response.headers`` or ``.raw_response.headers``);
- whatever a rule added with :func:`register` says.

A 429, or any push-back with an explicit wait, is *rate limiting*: the task's limits pause
for the wait, an adaptive limit shrinks, and the task is tried again without spending one of
its ``retries``. The wait is read from ``retry-after-ms``, ``Retry-After`` (seconds, with
decimals, or an HTTP date), and for a 429 without them from the providers' reset headers:
OpenAI's ``x-ratelimit-reset-requests`` / ``-tokens`` (``1s``, ``6m0s``, ``20ms``),
Anthropic's ``anthropic-ratelimit-*-reset`` (RFC 3339 times), ``x-ratelimit-reset`` /
``ratelimit-reset`` (seconds, or a Unix time); of several, the limit that ran out. A Google
error's ``RetryInfo`` (``retryDelay: "30s"``) counts as an explicit wait. A 503
or 529 without Retry-After is an *overload*: only that task waits, a short jittered backoff
that grows with each of its push-backs, and no key pauses (``PushBack.overload``).

An OpenAI 429 whose code is ``insufficient_quota`` (the account has no credit) is an
ordinary failure: waiting does not fix it.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

from .errors import InvalidOptionError, RateLimited

__all__ = [
    "PUSHBACK_STATUSES",
    "PushBack",
    "classify",
    "register",
    "retry_after_of",
    "unregister",
]

#: HTTP statuses that mean "slow down" rather than "this request is wrong"
PUSHBACK_STATUSES = frozenset({429, 503, 529})
#: the wait when a 429 gives no usable Retry-After nor reset header
DEFAULT_RETRY_AFTER = 1.0
#: a Retry-After longer than this is read as this (a misconfigured server must not park a
#: run for a day; the task's own timeout or the run's still apply)
MAX_RETRY_AFTER = 600.0
#: libraries whose HTTP errors are push-back by their status alone (their root module)
KNOWN_LIBRARIES = frozenset(
    {
        "httpx",
        "httpx2",
        "requests",
        "aiohttp",
        "urllib",
        "urllib3",
        "openai",
        "anthropic",
        "litellm",
        "google",
        "mistralai",
        "cohere",
        "groq",
    }
)


@dataclass(frozen=True)
class PushBack:
    """How a push-back asks to be treated. ``retry_after``: seconds the task's limits
    pause (rate limiting); None with ``overload``: only this task backs off. ``status``:
    the HTTP status, if any; ``library``: the root module of the error's type;
    ``sdk_retries``: how often the client library had already retried the request."""

    retry_after: float | None
    overload: bool = False
    status: int | None = None
    library: str = ""
    sdk_retries: int = 0


# user rules: (predicate, overload); asked first, in the order they were added
_RULES: list[tuple[Callable[[BaseException], Any], bool]] = []
_RULES_LOCK = threading.Lock()


def register(
    rule: Callable[[BaseException], Any], *, overload: bool = False
) -> Callable[[BaseException], Any]:
    """Add a rule that says which errors are push-back: ``rule(error)`` returns something
    false (not push-back, by this rule: the next rules and the built-in ones are asked),
    ``True`` (push-back; the wait read from the error's headers as for HTTP errors) or a
    number of seconds to wait. ``overload=True``: without a wait, only the task backs off
    (a 503 / 529) instead of its rate limits pausing. A rule that raises is skipped.
    Returns ``rule``, so it works as a decorator::

        lf.pushback.register(lambda e: isinstance(e, QuotaError))
        lf.pushback.register(lambda e: isinstance(e, BusyError), overload=True)
    """
    if not callable(rule):
        raise InvalidOptionError(f"lf.pushback.register takes a function, got {rule!r}")
    with _RULES_LOCK:
        _RULES.append((rule, bool(overload)))
    return rule


def unregister(rule: Callable[[BaseException], Any]) -> None:
    """Remove a rule added with :func:`register` (every time it was added)."""
    with _RULES_LOCK:
        _RULES[:] = [r for r in _RULES if r[0] is not rule]


def classify(error: BaseException | None) -> PushBack | None:
    """How ``error`` pushes back; None when it is an ordinary failure."""
    if error is None:
        return None
    if isinstance(error, RateLimited):
        return PushBack(min(error.retry_after, MAX_RETRY_AFTER))
    if _RULES:
        found = _by_rules(error)
        if found is not None:
            return found
    if not isinstance(error, Exception):
        return None  # KeyboardInterrupt, SystemExit(.code), a cancel: never push-back
    try:
        return _by_status(error)
    except Exception:  # an error object that cannot be read: an ordinary failure
        return None


def retry_after_of(error: BaseException | None) -> float | None:
    """Seconds the task's limits pause when ``error`` is rate limiting; None when it is an
    ordinary failure or an overload (which pauses no limit)."""
    found = classify(error)
    return None if found is None else found.retry_after


def _by_rules(error: BaseException) -> PushBack | None:
    for rule, overload in list(_RULES):
        try:
            verdict = rule(error)
        except Exception:
            continue
        if verdict is None or verdict is False:
            continue
        library = _library(error)
        if isinstance(verdict, (int, float)) and not isinstance(verdict, bool):
            if not verdict >= 0:
                continue
            return PushBack(min(float(verdict), MAX_RETRY_AFTER), library=library)
        if not verdict:
            continue
        try:
            status, headers = _status_and_headers(error)
        except Exception:
            status, headers = None, None
        wait = _explicit_wait(headers)
        if wait is None and not overload:
            wait = _reset_wait(headers)
        if wait is None and not overload:
            wait = DEFAULT_RETRY_AFTER
        return PushBack(wait, wait is None, status, library, _sdk_retries(error))
    return None


def _by_status(error: Exception) -> PushBack | None:
    status, headers = _status_and_headers(error)
    if status not in PUSHBACK_STATUSES:
        return None
    library = _library(error)
    if library not in KNOWN_LIBRARIES and headers is None:
        return None  # an int "status" with no response to it: not necessarily HTTP
    if status == 429 and _quota_exhausted(error):
        return None
    wait = _explicit_wait(headers)
    if wait is None:
        wait = _retry_info(error)
    if wait is None and status == 429:
        wait = _reset_wait(headers)
        if wait is None:
            wait = DEFAULT_RETRY_AFTER
    return PushBack(wait, wait is None, status, library, _sdk_retries(error))


def _library(error: BaseException) -> str:
    """The root module of ``error``'s type, or of the first base that is a known library
    (a user's subclass of ``openai.RateLimitError`` is still openai's)."""
    for cls in type(error).__mro__:
        root = cls.__module__.partition(".")[0]
        if root in KNOWN_LIBRARIES:
            return root
    return type(error).__module__.partition(".")[0]


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _headers_of(value: Any) -> Any:
    headers = getattr(value, "headers", None)
    return headers if headers is not None and hasattr(headers, "items") else None


def _status_and_headers(error: BaseException) -> tuple[int | None, Any]:
    """(HTTP status, response headers) of an HTTP error of any of the common shapes."""
    response = getattr(error, "response", None)  # httpx, requests, openai, google-genai
    status = _int(getattr(error, "status_code", None))  # openai, anthropic, mistralai, cohere
    if status is None and response is not None:
        status = _int(getattr(response, "status_code", None))
        if status is None:
            status = _int(getattr(response, "status", None))  # an aiohttp response
    if status is None:
        status = _int(getattr(error, "status", None))  # aiohttp.ClientResponseError
    if status is None:
        status = _int(getattr(error, "code", None))  # google-genai, urllib.error.HTTPError
    if status is None:
        return None, None
    headers = _headers_of(error)
    if headers is None and response is not None:
        headers = _headers_of(response)
    if headers is None:
        headers = _headers_of(getattr(error, "raw_response", None))  # mistralai
    return status, headers


def _quota_exhausted(error: BaseException) -> bool:
    """An OpenAI 429 for an account without credit: no wait fixes it."""
    code = getattr(error, "code", None)
    if code == "insufficient_quota":
        return True
    body = getattr(error, "body", None)
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        return isinstance(inner, Mapping) and inner.get("code") == "insufficient_quota"
    return False


def _sdk_retries(error: BaseException) -> int:
    """How often the client library had retried the request before raising: the
    ``x-stainless-retry-count`` header the openai, anthropic and groq clients send with
    each try, or litellm's ``num_retries``."""
    try:
        retries = _int(getattr(error, "num_retries", None))
        if retries:
            return retries
        response = getattr(error, "response", None)
        request = getattr(error, "request", None)
        if request is None and response is not None:
            request = getattr(response, "request", None)
        headers = _headers_of(request)
        if headers is not None:
            found = headers.get("x-stainless-retry-count")
            if found is not None:
                return max(int(found), 0)
    except Exception:  # a response without its request, a header that is not a number
        return 0
    return 0


def _retry_info(error: BaseException) -> float | None:
    """The ``retryDelay`` of a Google API error's ``RetryInfo`` detail (``"30s"``), which
    google-genai keeps in ``.details``; None without one."""
    details = getattr(error, "details", None)
    if isinstance(details, Mapping):
        details = details.get("error", details)
        details = details.get("details") if isinstance(details, Mapping) else None
    if not isinstance(details, list):
        return None
    for item in details:
        if isinstance(item, Mapping) and str(item.get("@type", "")).endswith("RetryInfo"):
            delay = item.get("retryDelay")
            seconds = reset_seconds(delay) if isinstance(delay, str) else None
            if seconds is not None:
                return min(seconds, MAX_RETRY_AFTER)
    return None


def _lower(headers: Any) -> dict[str, str] | None:
    if headers is None:
        return None
    try:
        return {str(k).lower(): str(v) for k, v in headers.items()}
    except Exception:  # headers of an unexpected shape: none
        return None


def _explicit_wait(headers: Any) -> float | None:
    """The wait ``Retry-After`` or ``retry-after-ms`` asks for; None without them."""
    found = _lower(headers)
    if not found:
        return None
    ms = found.get("retry-after-ms")
    if ms is not None:
        seconds = _seconds(ms)
        if seconds is not None:
            return min(seconds / 1000.0, MAX_RETRY_AFTER)
    value = found.get("retry-after")
    if value is None:
        return None
    seconds = _seconds(value)
    if seconds is None:
        try:  # an HTTP date: "Wed, 21 Oct 2026 07:28:00 GMT"
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return DEFAULT_RETRY_AFTER  # there, but unreadable: the default wait
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


_OPENAI_RESET = re.compile(r"x-ratelimit-reset-(.+)")
_ANTHROPIC_RESET = re.compile(r"anthropic-ratelimit-(.+)-reset")


def _reset_wait(headers: Any) -> float | None:
    """The wait the providers' reset headers imply: when the limit that ran out (the one
    with nothing remaining, else the least remaining share) is whole again."""
    found = _lower(headers)
    if not found:
        return None
    limits = []  # (remaining share, seconds until reset)
    for name, value in found.items():
        m = _OPENAI_RESET.fullmatch(name)
        if m is not None:
            remaining = found.get(f"x-ratelimit-remaining-{m.group(1)}")
            limit = found.get(f"x-ratelimit-limit-{m.group(1)}")
        else:
            m = _ANTHROPIC_RESET.fullmatch(name)
            if m is None:
                continue
            remaining = found.get(f"anthropic-ratelimit-{m.group(1)}-remaining")
            limit = found.get(f"anthropic-ratelimit-{m.group(1)}-limit")
        seconds = reset_seconds(value)
        if seconds is not None:
            limits.append((_share(remaining, limit), seconds))
    if not limits:
        for name in ("x-ratelimit-reset", "ratelimit-reset"):
            seconds = reset_seconds(found[name]) if name in found else None
            if seconds is not None:
                return min(seconds, MAX_RETRY_AFTER)
        return None
    exhausted = [s for share, s in limits if share is not None and share <= 0]
    if exhausted:
        return min(max(exhausted), MAX_RETRY_AFTER)
    known = [(share, s) for share, s in limits if share is not None]
    if known:
        return min(min(known)[1], MAX_RETRY_AFTER)
    return min(min(s for _, s in limits), MAX_RETRY_AFTER)


def _share(remaining: str | None, limit: str | None) -> float | None:
    """What remains of a limit, as a share of it (0: nothing); None when unknown."""
    left = _seconds(remaining) if remaining is not None else None
    if left is None:
        return None
    whole = _seconds(limit) if limit is not None else None
    if whole:
        return left / whole
    return 0.0 if left == 0 else 1.0


_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|us|µs|ns|m|s)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def reset_seconds(text: str) -> float | None:
    """Seconds from now until a reset a header gives as a Go duration (``6m0s``, ``20ms``),
    seconds (``1.5``), a Unix time, or an RFC 3339 or HTTP date; None if unreadable."""
    text = text.strip()
    if not text:
        return None
    plain = _seconds(text)
    if plain is not None:
        return max(plain - time.time(), 0.0) if plain > 1e9 else plain  # a Unix time
    parts = _DURATION.findall(text)
    if parts and "".join(a + b for a, b in parts) == text:
        return sum(float(a) * _UNITS[b] for a, b in parts)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if when.tzinfo is None:
        return None  # a local time of an unknown zone
    return max(when.timestamp() - time.time(), 0.0)


def _seconds(text: str) -> float | None:
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None
